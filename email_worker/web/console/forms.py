"""Reading a console form: ``application/x-www-form-urlencoded``, with a size limit.

The console's forms are plain HTML forms without files, so their body is read here
(no multipart parser needed). Use :data:`FormFields` as a dependency of a POST route; a
field given twice keeps its first value.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from fastapi import Depends, Request

from email_worker.web.bodies import read_body

FORM_LIMIT = 256 * 1024  # typed template data fits; anything larger is not a console form


class FormError(Exception):
    """The body is not a console form: too large, or not URL-encoded UTF-8."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message


async def form_fields(request: Request) -> Mapping[str, str]:
    """The fields of the request's form; FormError (413, 415 or 400) if it is not one."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await read_body(request, FORM_LIMIT)
    if body is None:
        raise FormError(413, f"The form is larger than {FORM_LIMIT // 1024} KiB.")
    if content_type != "application/x-www-form-urlencoded" and (body or content_type):
        raise FormError(415, "The console takes only its own forms (URL-encoded).")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        raise FormError(400, "The form could not be read.") from None
    fields: dict[str, str] = {}
    for name, value in pairs:
        fields.setdefault(name, value)
    return fields


FormFields = Depends(form_fields)

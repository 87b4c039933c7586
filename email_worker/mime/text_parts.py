"""The MIME body of a message: a text part, or text and HTML, and any attachments.

Text and HTML go as multipart/alternative; with attachments, that part comes first
in a multipart/mixed, each file after it.  Bodies are 7-bit safe for any SMTP
server: plain short ASCII lines go as they are, anything else in quoted-printable or
base64, whichever is shorter (RFC 2045).  Line breaks of every kind (CR LF, LF, CR)
become CRLF, and the body ends with one.
"""

from __future__ import annotations

import binascii
import re
import secrets
from collections.abc import Sequence

_CHARSET = 'charset="utf-8"'
_NOT_PRINTABLE = re.compile(r"[^\t\n -~]")

Fields = list[tuple[str, str]]


def text_body(text: str) -> tuple[str, bytes]:
    """The transfer encoding and the wire form of one text part's content.

    Raises UnicodeEncodeError for text that is not valid Unicode (a lone surrogate).
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if not text.endswith("\n"):
        text += "\n"
    if _is_seven_bit(text):
        return "7bit", text.encode("ascii").replace(b"\n", b"\r\n")
    data = text.encode("utf-8")
    quoted = binascii.b2a_qp(data, istext=True)
    base64_length = (len(data) + text.count("\n") + 2) // 3 * 4
    if len(quoted) <= base64_length + base64_length // 76:
        return "quoted-printable", quoted.replace(b"\n", b"\r\n")
    encoded = binascii.b2a_base64(data.replace(b"\n", b"\r\n"), newline=False)
    lines = [encoded[i : i + 76] for i in range(0, len(encoded), 76)]
    return "base64", b"\r\n".join(lines) + b"\r\n"


def mime_body(text: str, html: str | None) -> tuple[Fields, bytes]:
    """The content header fields (name, line) and the body: text first, then HTML."""
    if html is None:
        encoding, body = text_body(text)
        return _part_fields("plain", encoding), body
    return multipart("alternative", [_part("plain", text), _part("html", html)])


def mixed_body(text: str, html: str | None, attachments: Sequence[bytes]) -> tuple[Fields, bytes]:
    """A multipart/mixed body: the text (and HTML) first, then each attachment part."""
    fields, body = mime_body(text, html)
    first = "".join(line for _, line in fields).encode("ascii") + b"\r\n" + body
    return multipart("mixed", [first, *attachments])


def multipart(subtype: str, parts: Sequence[bytes]) -> tuple[Fields, bytes]:
    """The content field and body of a multipart of ``parts`` (each its header and body)."""
    boundary = _boundary(parts)
    delimiter = b"\r\n--" + boundary.encode("ascii")
    # The CRLF before a delimiter belongs to it (RFC 2046 section 5.1.1): each part's
    # own final line break stays in the part.
    body = delimiter[2:] + b"\r\n" + (delimiter + b"\r\n").join(parts) + delimiter + b"--\r\n"
    content_type = f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n'
    return [("Content-Type", content_type)], body


def _is_seven_bit(text: str) -> bool:
    """Printable ASCII (tabs too) in lines within 78 characters, none ending in white space.

    Such a body needs no transfer encoding; a relay may strip white space at a line's end.
    """
    return (
        text.isascii()
        and not _NOT_PRINTABLE.search(text)
        and " \n" not in text
        and "\t\n" not in text
        and max(map(len, text.split("\n"))) <= 78
    )


def _part(subtype: str, text: str) -> bytes:
    encoding, body = text_body(text)
    fields = "".join(line for _, line in _part_fields(subtype, encoding))
    return fields.encode("ascii") + b"\r\n" + body


def _part_fields(subtype: str, encoding: str) -> Fields:
    return [
        ("Content-Type", f"Content-Type: text/{subtype}; {_CHARSET}\r\n"),
        ("Content-Transfer-Encoding", f"Content-Transfer-Encoding: {encoding}\r\n"),
    ]


def _boundary(parts: Sequence[bytes]) -> str:
    """A boundary that occurs in no part.

    "=_" cannot occur in quoted-printable or base64 text; a 7-bit part is searched too.
    """
    while True:
        boundary = "=_" + secrets.token_hex(12)
        if not any(boundary.encode("ascii") in part for part in parts):
            return boundary

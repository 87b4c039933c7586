"""Validate a send request into an :class:`EmailRequest`; pure, no I/O.

The same function runs in the producer's process (before anything is enqueued)
and again in the worker (a producer may publish without this package).  Every
problem raises :class:`InvalidEmailRequest` naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from email_worker.addresses import InvalidAddress, normalize
from email_worker.config import Settings, get_settings
from email_worker.config.address_lists import AllowedSenders, parse_allowed_senders
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import (
    GENERIC,
    MARKETING_CATEGORIES,
    Kind,
    UnknownPriority,
    kind_for_task,
    queue_priority,
)
from email_worker.mime.attachments import decoded_size, encoded_size, validate_attachments
from email_worker.mime.email_request import EmailRequest
from email_worker.mime.header_fields import RESERVED_HEADER_PREFIXES, RESERVED_HEADERS
from email_worker.privacy import mask_address

MAX_RECIPIENTS = 50
MAX_HEADER_VALUE = 998  # RFC 5322 section 2.1.1: a line is at most 998 characters
MAX_HEADERS = 50
MAX_NAME = 256
MAX_DATA_BYTES = 256 * 1024
MAX_METADATA_KEYS = 50
MAX_METADATA_BYTES = 16 * 1024
# Limits on the shape of any value a caller hands over (``data``, ``metadata``, or a
# whole message): deeper nesting kills a worker in pickle or json long before a
# template could use it.
MAX_DEPTH = 32
MAX_ITEMS = 10_000

_FIELD_NAME = re.compile(r"^[!-9;-~]{1,76}$")  # printable ASCII but colon (RFC 5322 ftext)
# Control characters: C0 (TAB included), DEL and C1, and the line and paragraph separators.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
# A NUL in JSON text: ``\u0000`` not itself escaped by a backslash.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_KIND_LABEL = re.compile(r"^[a-z][a-z0-9_]{0,49}$")
TEMPLATE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")

ACCEPTED_FIELDS = frozenset(
    {
        "to",
        "cc",
        "bcc",
        "template_id",
        "data",
        "subject",
        "html",
        "text",
        "kind",
        "priority",
        "tracked",
        "from_email",
        "from_name",
        "reply_to",
        "headers",
        "metadata",
        "idempotency_key",
        "provider",
        "only_recipients",
        "attachments",
    }
)


def allowed_senders(settings: Settings) -> AllowedSenders:
    """ALLOWED_FROM_DOMAINS, or EMAIL_FROM's address and domain when it is empty."""
    return parse_allowed_senders(settings.allowed_from_domains, settings.email_from)


def check_marketing_allowed(category: str, settings: Settings) -> None:
    """Refuse a marketing or bulk email live mode cannot send with an unsubscribe link."""
    if category not in MARKETING_CATEGORIES:
        return
    problem = settings.marketing_problem()
    if problem:
        raise InvalidEmailRequest("kind", f"{category} email cannot be sent: {problem}")


def validate_request(
    kind: Kind,
    kwargs: Mapping[str, Any],
    *,
    template_exists: Callable[[str], bool],
    template_variables: Callable[[str], frozenset[str]] | None = None,
    max_message_bytes: int = 10 * 1024 * 1024,
    senders: AllowedSenders | None = None,
    settings: Settings | None = None,
) -> EmailRequest:
    """Check a send request for ``kind`` and return it normalised, or raise InvalidEmailRequest.

    ``template_variables`` names the variables a template needs; ``data`` must hold them
    all. A ``from_email`` must be one of ``senders`` (by default, those of ``settings``);
    ``settings`` are the caller's (by default, this process's).
    Recipients given twice (in to, cc or bcc, in any case) are kept once, where first given.
    """
    unknown = sorted(set(kwargs) - ACCEPTED_FIELDS)
    if unknown:
        raise InvalidEmailRequest(unknown[0], "unknown argument")
    label = kwargs.get("kind")
    if label not in (None, kind.name):
        if kind is not GENERIC:
            raise InvalidEmailRequest("kind", f"this task always sends {kind.name!r}")
        if not isinstance(label, str) or not _KIND_LABEL.match(label):
            raise InvalidEmailRequest("kind", "expected a short name such as 'invoice_reminder'")
        if kind_for_task(f"email_worker.send_{label}") is not None:
            # Its stored job would be sent by that kind's task, with that kind's template.
            raise InvalidEmailRequest("kind", f"{label!r} has a task of its own: send_{label}")

    check_marketing_allowed(kind.category, settings or get_settings())

    seen: set[str] = set()
    to = _unique(_addresses("to", kwargs.get("to"), required=True), seen)
    cc = _unique(_addresses("cc", kwargs.get("cc")), seen)
    bcc = _unique(_addresses("bcc", kwargs.get("bcc")), seen)
    if len(seen) > MAX_RECIPIENTS:
        raise InvalidEmailRequest("to", f"at most {MAX_RECIPIENTS} recipients in all")

    template_id, subject, html, text = _content(kind, kwargs, template_exists, max_message_bytes)
    data = _data(kwargs.get("data"))
    if template_id is not None and template_variables is not None:
        missing = sorted(template_variables(template_id) - data.keys())
        if missing:
            raise InvalidEmailRequest(
                "data", f"missing variables of template {template_id!r}: {', '.join(missing)}"
            )
    attachments = validate_attachments(kwargs.get("attachments"))
    if attachments:
        _check_message_size(attachments, (html, text), max_message_bytes)
    from_email = _from_email(kwargs.get("from_email"), senders, settings)
    priority = kwargs.get("priority", kind.priority)
    try:
        queue = queue_priority(priority)
    except UnknownPriority as exc:
        raise InvalidEmailRequest("priority", str(exc)) from None

    only = _addresses("only_recipients", kwargs.get("only_recipients"))
    if any(a.lower() not in seen for a in only):
        raise InvalidEmailRequest("only_recipients", "must be among to, cc and bcc")

    return EmailRequest(
        kind=label or kind.name,
        to=to,
        cc=cc,
        bcc=bcc,
        template_id=template_id,
        data=data,
        subject=subject,
        html=html,
        text=text,
        from_email=from_email,
        from_name=_header_text("from_name", kwargs.get("from_name"), MAX_NAME),
        reply_to=_addresses("reply_to", kwargs.get("reply_to")),
        headers=_headers(kwargs.get("headers")),
        metadata=_metadata(kwargs.get("metadata")),
        priority=queue,
        tracked=_bool("tracked", kwargs.get("tracked", kind.tracked)),
        idempotency_key=_idempotency_key(kwargs.get("idempotency_key")),
        provider=_provider(kwargs.get("provider"), settings),
        only_recipients=only,
        attachments=attachments,
    )


def normalize_address(field_name: str, value: Any) -> str:
    """Validate one address; IDN domains become their ASCII (punycode) form."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidEmailRequest(field_name, "expected an email address")
    if _has_line_break(value):
        raise InvalidEmailRequest(field_name, "an address cannot contain CR or LF")
    if "=?" in value:
        # Mail readers decode an encoded word even in an address: it would show another one.
        raise InvalidEmailRequest(field_name, "an address cannot contain '=?' (an encoded word)")
    try:
        return normalize(value.strip())
    except InvalidAddress as exc:
        raise InvalidEmailRequest(field_name, f"not a valid email address ({exc})") from None


def _from_email(
    value: Any, senders: AllowedSenders | None, settings: Settings | None
) -> str | None:
    if not value:
        return None
    address = _addresses("from_email", value)[0]
    if not (senders or allowed_senders(settings or get_settings())).allows(address):
        raise InvalidEmailRequest(
            "from_email",
            f"{mask_address(address)} is not an allowed sender; see ALLOWED_FROM_DOMAINS",
        )
    return address


def _unique(addresses: list[str], seen: set[str]) -> list[str]:
    """``addresses`` without those in ``seen`` or repeated, which are added to ``seen``."""
    kept = []
    for address in addresses:
        key = address.lower()  # an IDN domain is in its ASCII form already
        if key not in seen:
            seen.add(key)
            kept.append(address)
    return kept


def _check_message_size(
    attachments: list[dict[str, str]], bodies: tuple[str | None, ...], max_bytes: int
) -> None:
    """Refuse files that, in base64 (4/3 of their size) with the bodies, pass ``max_bytes``."""
    files = sum(encoded_size(decoded_size(a["content"])) for a in attachments)
    total = files + sum(len(body.encode("utf-8")) for body in bodies if body)
    if total > max_bytes:
        raise InvalidEmailRequest(
            "attachments",
            f"the message would be {total} bytes, over MAX_MESSAGE_BYTES ({max_bytes}): "
            "attachments are sent in base64, 4/3 of their size",
        )


def _addresses(field_name: str, value: Any, *, required: bool = False) -> list[str]:
    if value is None or value == [] or value == "":
        if required:
            raise InvalidEmailRequest(field_name, "at least one recipient is required")
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Sequence) or isinstance(items, bytes):
        raise InvalidEmailRequest(field_name, "expected an address or a list of addresses")
    return [
        normalize_address(f"{field_name}[{i}]" if len(items) > 1 else field_name, v)
        for i, v in enumerate(items)
    ]


def _content(
    kind: Kind,
    kwargs: Mapping[str, Any],
    template_exists: Callable[[str], bool],
    max_bytes: int,
) -> tuple[str | None, str | None, str | None, str | None]:
    template_id = kwargs.get("template_id")
    subject, html, text = kwargs.get("subject"), kwargs.get("html"), kwargs.get("text")
    if kind is not GENERIC:
        if template_id not in (None, kind.template):
            raise InvalidEmailRequest("template_id", f"send_{kind.name} uses its own template")
        template_id = kind.template
    inline = any(v is not None for v in (subject, html, text))
    if template_id is not None:
        if inline:
            raise InvalidEmailRequest(
                "template_id", "give either template_id or inline subject/html/text, not both"
            )
        if not isinstance(template_id, str) or not TEMPLATE_ID.match(template_id):
            raise InvalidEmailRequest("template_id", f"not a valid template id: {template_id!r}")
        if not template_exists(template_id):
            raise InvalidEmailRequest("template_id", f"unknown template {template_id!r}")
        return template_id, None, None, None
    if not inline:
        raise InvalidEmailRequest("template_id", "give a template_id or an inline subject")
    subject = _header_text("subject", subject, MAX_HEADER_VALUE)
    if not subject:
        raise InvalidEmailRequest("subject", "an inline email needs a subject")
    if html is None and text is None:
        raise InvalidEmailRequest("html", "an inline email needs html, text or both")
    for name, body in (("html", html), ("text", text)):
        if body is None:
            continue
        if not isinstance(body, str):
            raise InvalidEmailRequest(name, "expected a string")
        if "\x00" in body:
            raise InvalidEmailRequest(name, "cannot contain NUL characters")
        if _SURROGATE.search(body):
            raise InvalidEmailRequest(name, _NOT_UNICODE)
        if len(body.encode("utf-8")) > max_bytes:
            raise InvalidEmailRequest(name, f"larger than {max_bytes} bytes")
    if kwargs.get("data"):
        raise InvalidEmailRequest(
            "data",
            "inline content is sent as given; data is only for templates (give a template_id)",
        )
    return None, subject, html, text


# Values that hold no others: checked by their type alone (a subclass takes the walk).
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})


def check_value_shape(
    field_name: str, value: Any, *, max_depth: int = MAX_DEPTH, max_items: int = MAX_ITEMS
) -> None:
    """Refuse a value nested deeper than ``max_depth`` or holding over ``max_items`` elements.

    Mappings, lists, tuples and sets are containers; a container at the top is level 1,
    and every entry of a mapping and every element counts as one item.  The walk is
    iterative, level by level, and stops at the first limit passed, so any input is
    checked in bounded time.
    """
    if type(value) in _SCALARS:
        return  # most values and message headers: nothing to walk
    level: list[Any] = [value]
    depth = items = 0
    while level:
        below: list[Any] = []
        for node in level:
            if isinstance(node, Mapping):
                children: Any = (*node.keys(), *node.values())
            elif isinstance(node, list | tuple | set | frozenset):
                children = node
            else:
                continue
            if depth >= max_depth:
                raise InvalidEmailRequest(field_name, f"nested deeper than {max_depth} levels")
            items += len(node)
            if items > max_items:
                raise InvalidEmailRequest(field_name, f"more than {max_items} elements in all")
            below.extend(children)
        if below:
            depth += 1
        level = below


def _json_size(field_name: str, value: Any) -> int:
    """The size of ``value`` as UTF-8 JSON, refusing what JSON or a database cannot hold."""
    try:
        encoded = json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidEmailRequest(field_name, f"must be JSON-serialisable ({exc})") from None
    if "\\u0000" in encoded and _JSON_NUL.search(encoded):
        raise InvalidEmailRequest(field_name, "cannot contain NUL characters")
    if encoded.isascii():
        return len(encoded)
    try:
        return len(encoded.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEmailRequest(field_name, _NOT_UNICODE) from None


def _data(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEmailRequest("data", "expected a mapping of template variables")
    check_value_shape("data", value)
    if _json_size("data", value) > MAX_DATA_BYTES:
        raise InvalidEmailRequest("data", f"larger than {MAX_DATA_BYTES} bytes as JSON")
    data = dict(value)
    for key in data:
        if not isinstance(key, str) or not key.isidentifier():
            raise InvalidEmailRequest(f"data.{key}", "variable names must be identifiers")
    return data


def _headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidEmailRequest("headers", "expected a mapping of header names to values")
    if len(value) > MAX_HEADERS:
        raise InvalidEmailRequest("headers", f"at most {MAX_HEADERS} custom headers")
    headers: dict[str, str] = {}
    for name, raw in value.items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise InvalidEmailRequest("headers", f"not a valid header name: {name!r}")
        if name.lower() in RESERVED_HEADERS or name.lower().startswith(RESERVED_HEADER_PREFIXES):
            raise InvalidEmailRequest(f"headers.{name}", "is set by email-worker itself")
        headers[name] = _header_text(f"headers.{name}", raw, MAX_HEADER_VALUE) or ""
    return headers


def _header_text(field_name: str, value: Any, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEmailRequest(field_name, "expected a string")
    if len(value) > limit:
        raise InvalidEmailRequest(field_name, f"longer than {limit} characters")
    if _has_line_break(value):
        raise InvalidEmailRequest(field_name, "cannot contain CR, LF or NUL characters")
    control = _CONTROL.search(value)
    if control:
        raise InvalidEmailRequest(
            field_name, f"cannot contain control characters (U+{ord(control.group()):04X})"
        )
    if _SURROGATE.search(value):
        raise InvalidEmailRequest(field_name, _NOT_UNICODE)
    return value


def _has_line_break(value: str) -> bool:
    # NUL, and everything str.splitlines() breaks on: the email package folds on those too.
    return "\x00" in value or "".join(value.splitlines()) != value


def _metadata(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping) or len(value) > MAX_METADATA_KEYS:
        raise InvalidEmailRequest(
            "metadata", f"expected a mapping of at most {MAX_METADATA_KEYS} keys"
        )
    check_value_shape("metadata", value)
    size = _json_size("metadata", value)  # first: a key in an error below must be printable
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str | int | float | bool | None):
            raise InvalidEmailRequest(f"metadata.{key}", "values must be strings or numbers")
    if size > MAX_METADATA_BYTES:
        raise InvalidEmailRequest("metadata", f"larger than {MAX_METADATA_BYTES} bytes as JSON")
    return dict(value)


_NOT_UNICODE = "not valid Unicode text (it holds a lone surrogate)"


def _bool(field_name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidEmailRequest(field_name, "expected true or false")
    return value


def _idempotency_key(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 255 or not value.isprintable():
        raise InvalidEmailRequest("idempotency_key", "expected 1 to 255 printable characters")
    return value


def _provider(value: Any, settings: Settings | None) -> str | None:
    if value is None:
        return None
    from email_worker.providers import provider_choice_problem  # providers import this module

    problem = provider_choice_problem(value, settings or get_settings(), configured_here=False)
    if problem is not None:
        raise InvalidEmailRequest("provider", problem)
    return str(value)

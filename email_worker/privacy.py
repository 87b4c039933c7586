"""Keep personal data out of logs, task listings and error messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_ADDRESS = re.compile(
    r"([A-Za-z0-9._%+\-=!#$&*/?^{|}~]+)@([A-Za-z0-9.\-]+\.[A-Za-z]{2,}|\[[^\]]+\])"
)
_ADDRESS_FIELDS = frozenset({"to", "cc", "bcc", "reply_to", "from_email", "only_recipients"})
_KEYED_FIELDS = frozenset({"data", "metadata", "headers"})
# Fields whose value says how a message is handled, not what it says or to whom.
_PLAIN_FIELDS = frozenset({"kind", "priority", "tracked", "provider", "template_id", "job_id"})
_SHOWN_ITEMS = 20  # a summary lists at most this many keys or addresses
_SHOWN_CHARS = 100  # and cuts a name or label after this many characters


def mask_address(address: str) -> str:
    """``ann.lee@example.com`` -> ``a***@example.com``: enough to tell domains apart."""
    local, _, domain = address.rpartition("@")
    if not local:
        return "***"
    return f"{local[0]}***@{_cut(domain)}"


def masked_recipients(to: Any) -> str | None:
    """The first recipient masked, and how many more: ``a***@example.com (+2 more)``."""
    addresses = [to] if isinstance(to, str) else to if isinstance(to, list | tuple) else []
    if not addresses:
        return None
    first = addresses[0]
    shown = mask_address(first) if isinstance(first, str) else _shape(first)
    return f"{shown} (+{len(addresses) - 1} more)" if len(addresses) > 1 else shown


def redact_text(text: str) -> str:
    """Mask every email address inside free text, such as a provider's error reply."""
    if "@" not in text:
        return text  # the common case, for every label of every send: no regex to run
    return _ADDRESS.sub(lambda m: mask_address(m.group(0)), text)


def redacted_request(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A version of send-task kwargs safe to show in logs and monitors (Flower).

    Whatever a producer sent (values of any type, any size or depth), the summary
    holds masked addresses, the keys of mappings, lengths of texts and short labels.
    """
    shown: dict[str, Any] = {}
    for key, value in list(kwargs.items())[: _SHOWN_ITEMS * 2]:
        name = _cut(str(key))
        if key in _ADDRESS_FIELDS:
            shown[name] = _masked_addresses(value)
        elif key in _KEYED_FIELDS and isinstance(value, Mapping):
            # The keys say what was sent; the values may be personal.
            shown[name] = sorted(_cut(str(k)) for k in list(value)[:_SHOWN_ITEMS])
        elif key in _PLAIN_FIELDS and (value is None or isinstance(value, bool | int | float)):
            shown[name] = value
        elif key in _PLAIN_FIELDS and isinstance(value, str):
            shown[name] = redact_text(_cut(value))
        else:
            shown[name] = _shape(value)
    return shown


def _masked_addresses(value: Any) -> Any:
    if isinstance(value, str):
        return mask_address(value)
    if isinstance(value, list | tuple):
        return [mask_address(v) if isinstance(v, str) else _shape(v) for v in value[:_SHOWN_ITEMS]]
    return _shape(value)


def _shape(value: Any) -> str:
    """What a value is without what it says: ``<str, 12 chars>``, ``<dict, 3 items>``."""
    if isinstance(value, str):
        return f"<{len(value)} chars>"
    if isinstance(value, Mapping | list | tuple):
        return f"<{type(value).__name__}, {len(value)} items>"
    return f"<{type(value).__name__}>"


def _cut(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."

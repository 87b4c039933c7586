"""Keep personal data out of logs, task listings and error messages."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

_ADDRESS = re.compile(
    r"([A-Za-z0-9._%+\-=!#$&*/?^{|}~]+)@([A-Za-z0-9.\-]+\.[A-Za-z]{2,}|\[[^\]]+\])"
)


def mask_address(address: str) -> str:
    """``ann.lee@example.com`` -> ``a***@example.com``: enough to tell domains apart."""
    local, _, domain = address.rpartition("@")
    if not local:
        return "***"
    return f"{local[0]}***@{domain}"


def redact_text(text: str) -> str:
    """Mask every email address inside free text, such as a provider's error reply."""
    return _ADDRESS.sub(lambda m: mask_address(m.group(0)), text)


def redacted_request(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A version of send-task kwargs safe to show in logs and monitors (Flower)."""
    shown: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in {"to", "cc", "bcc", "reply_to", "from_email"}:
            shown[key] = _mask_many(value)
        elif key in {"data", "metadata", "headers"} and isinstance(value, Mapping):
            shown[key] = sorted(value)  # the keys say what was sent; the values may be personal
        elif key in {"html", "text", "subject", "from_name", "idempotency_key"} and isinstance(
            value, str
        ):
            shown[key] = f"<{len(value)} chars>"
        else:
            shown[key] = value
    return shown


def _mask_many(value: Any) -> Any:
    if isinstance(value, str):
        return mask_address(value)
    if isinstance(value, Iterable):
        return [mask_address(str(v)) for v in value]
    return value

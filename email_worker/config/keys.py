"""The form of the keys personal data is sealed and looked up with (``ENCRYPTION_KEYS``)."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from typing import Any

KEY_BYTES = 32  # AES-256


def parse_keys(text: str) -> tuple[bytes, ...]:
    """The keys of a comma-separated ``ENCRYPTION_KEYS``: each 32 bytes in base64."""
    keys = []
    for number, item in enumerate((part.strip() for part in text.split(",")), 1):
        if not item:
            continue
        try:
            key = base64.urlsafe_b64decode(item + "=" * (-len(item) % 4))
        except (binascii.Error, ValueError):
            raise ValueError(f"key {number} is not base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(
                f"key {number} is {len(key)} bytes, not {KEY_BYTES} "
                "(make one with `email-worker generate-key`)"
            )
        keys.append(key)
    return tuple(keys)


def check_keys(value: Any) -> None:
    """The setting's own check: a list of well-formed keys, or nothing."""
    parse_keys(value.reveal() if hasattr(value, "reveal") else str(value))


def check_lookup_key(value: Any) -> None:
    """The lookup key: at least 32 characters when it is set."""
    text = value.reveal() if hasattr(value, "reveal") else str(value)
    if text and len(text) < KEY_BYTES:
        raise ValueError(f"must be at least {KEY_BYTES} characters")


def check_console_key(value: Any) -> None:
    """The console's signing key: at least 32 characters when it is set."""
    check_lookup_key(value)


def check_networks(value: Any) -> None:
    """A list of IP addresses or networks (``10.0.0.5``, ``10.0.0.0/24``)."""
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None

"""The values settings hold and how text becomes them: secrets, durations, ports, lists.

Each parser takes what the environment (a string) or ``config.yaml`` (any YAML value)
gives and returns the typed value, or raises ValueError saying what was expected; the
checks refuse a parsed value that has the right type but not the right form.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from typing import Any

from email_worker.addresses import InvalidAddress, normalize

PROVIDER_NAMES = ("outbox", "console", "smtp", "sendgrid", "ses")
"""The providers EMAIL_PROVIDER and a request's ``provider`` may name."""

NON_DELIVERING_PROVIDERS = ("outbox", "console")
"""Providers that keep emails on the worker host (files, the log) instead of delivering them."""


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


class Secret:
    """A string that never shows itself in a repr, str or error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value, for handing to a client library."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Parse ``30``, ``"30"``, ``"1.5s"``, ``"5m"`` or ``"1h30m"`` into seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError("expected a duration such as 30s, 5m or 1h") from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def parse_bool(value: Any) -> bool:
    """``true``/``false``, ``yes``/``no``, ``on``/``off`` or ``1``/``0``."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def parse_int(value: Any) -> int:
    """A whole number."""
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


# Docker links and Kubernetes set NAME_PORT to the service's address in this form.
_SERVICE_LINK = re.compile(r"(?:tcp|udp|sctp)://(?:\[[0-9a-f:.]+\]|[^\s/:@\[\]]+):(\d+)/?", re.I)


def parse_port(value: Any) -> int:
    """A port number, or the port of a service link such as ``tcp://10.1.2.3:6379``."""
    link = _SERVICE_LINK.fullmatch(value.strip()) if isinstance(value, str) else None
    return int(link.group(1)) if link else parse_int(value)


def parse_float(value: Any) -> float:
    """A number, whole or not."""
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError("expected a number") from None


def parse_str(value: Any) -> str:
    """Any text; an empty YAML value is the empty string."""
    return "" if value is None else str(value)


def parse_secret(value: Any) -> Secret:
    """Text kept out of every repr and message."""
    return Secret(parse_str(value))


def parse_list(value: Any) -> tuple[str, ...]:
    """A comma-separated string (environment) or a YAML list, as a tuple of stripped items."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(text for item in items if (text := str(item).strip()))


def parse_mapping(value: Any) -> tuple[tuple[str, str], ...]:
    """``name=value,name=value`` (environment) or a YAML mapping, as sorted pairs."""
    if isinstance(value, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in value.items()]
    else:
        pairs = []
        for item in parse_list(value):
            name, equals, text = item.partition("=")
            if not equals or not name.strip() or not text.strip():
                raise ValueError(f"expected name=value pairs separated by commas, got {item!r}")
            pairs.append((name.strip(), text.strip()))
    return tuple(sorted(pairs))


def check_not_blank(value: str) -> None:
    """Refuse text that is empty or only spaces."""
    if not value.strip():
        raise ValueError("cannot be empty")


def check_address(value: str) -> None:
    """Refuse text that is not an email address."""
    try:
        normalize(value)  # email_validator's answer, without its import for a plain address
    except InvalidAddress as exc:
        raise ValueError(f"not a valid email address ({exc})") from None


def split_resolver(value: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address as (address, port)."""
    text = value.strip()
    wrong = f"expected an IP address, optionally with :port, got {value!r}"
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(wrong)
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise ValueError(wrong) from None
    if not 0 < number < 65536:
        raise ValueError(f"the port must be between 1 and 65535, got {value!r}")
    return host, number


def check_resolver(value: str) -> None:
    """Refuse a DNS resolver that is not an IP address with an optional port."""
    if value.strip():
        split_resolver(value)


def check_providers(names: Iterable[str]) -> None:
    """Refuse a provider name not in :data:`PROVIDER_NAMES`."""
    unknown = [name for name in names if name not in PROVIDER_NAMES]
    if unknown:
        raise ValueError(
            f"unknown provider {unknown[0]!r}; known providers: {', '.join(PROVIDER_NAMES)}"
        )


def check_kind_providers(pairs: tuple[tuple[str, str], ...]) -> None:
    """Refuse a kind mapped to an unknown provider."""
    check_providers(provider for _, provider in pairs)

"""How one setting is declared and how a raw value becomes it.

A setting is a dataclass field whose metadata names its environment variable, its
``config.yaml`` path, its parser, its constraints (choices, a minimum, a check) and a
one-line description for the reference. :func:`convert` applies all of them to a raw
value and names where the value came from when it refuses one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

from email_worker.config.values import Secret, SettingsError, parse_secret, parse_str


def setting(
    default: Any,
    env: str,
    yaml_path: str,
    parse: Callable[[Any], Any] = parse_str,
    *,
    doc: str,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    check: Callable[[Any], None] | None = None,
    secret: bool = False,
) -> Any:
    """Declare a setting: a dataclass field carrying where it is read and what it accepts."""
    if secret:
        parse = parse_secret
        default = Secret(default)
    return dataclasses.field(
        default=default,
        metadata={
            "env": env,
            "yaml": yaml_path,
            "parse": parse,
            "choices": choices,
            "minimum": minimum,
            "check": check,
            "secret": secret,
            "doc": doc,
        },
    )


def convert(raw: Any, source: str, meta: Mapping[str, Any]) -> Any:
    """``raw`` as the setting ``meta`` describes, or a SettingsError naming ``source``."""
    try:
        value = meta["parse"](raw)
    except ValueError as exc:
        shown = "" if meta["secret"] else f", got {raw!r}"
        raise SettingsError(f"{source}: {exc}{shown}") from None
    if meta["choices"] and value.lower() not in meta["choices"]:
        raise SettingsError(f"{source}: must be one of {', '.join(meta['choices'])}, got {raw!r}")
    if meta["choices"]:
        value = value.lower()
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise SettingsError(f"{source}: must be at least {meta['minimum']:g}, got {raw!r}")
    check_value(value, source, meta)
    return value


def check_value(value: Any, source: str, meta: Mapping[str, Any]) -> None:
    """Run a setting's own check; its error names ``source``, the variable or place read."""
    if meta["check"] is None:
        return
    try:
        meta["check"](value)
    except ValueError as exc:
        # The address-list parsers name the plain variable themselves.
        reason = str(exc).removeprefix(f"{meta['env']}: ")
        raise SettingsError(f"{source}: {reason}") from None

"""The settings table of ``docs/settings.md``, written from the settings model.

``python -m email_worker.config.reference docs/settings.md`` rewrites the table between
the page's markers (without a path it prints the table).  Each setting's variable, its
``config.yaml`` path, default, accepted values and description come from its
declaration, so the page cannot drift from the code: a test compares the two.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from email_worker.config.model import Settings
from email_worker.config.values import (
    Secret,
    parse_bool,
    parse_duration,
    parse_float,
    parse_int,
    parse_list,
    parse_mapping,
    parse_port,
)

REGENERATE = "python -m email_worker.config.reference docs/settings.md"
"""The command that writes the reference."""

_KINDS = {
    parse_bool: "boolean",
    parse_duration: "duration",
    parse_float: "number",
    parse_int: "whole number",
    parse_list: "list",
    parse_mapping: "mapping",
    parse_port: "port or service link",
}
_UNITS = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))

BEGIN = "<!-- settings table: begin -->"
END = "<!-- settings table: end -->"
HEADER = (
    "| variable | config.yaml | default | accepts | meaning |\n| --- | --- | --- | --- | --- |\n"
)


def _duration(seconds: float) -> str:
    if seconds and seconds == int(seconds):
        left, parts = int(seconds), []
        for unit, size in _UNITS:
            if left >= size:
                parts.append(f"{left // size}{unit}")
                left %= size
        return "".join(parts)
    return f"{seconds:g}s"


def _default(value: Any, meta: Mapping[str, Any]) -> str:
    if isinstance(value, Secret):
        return "-"
    if meta["parse"] is parse_duration:
        text = _duration(value)
    elif meta["parse"] is parse_mapping:
        text = ",".join(f"{name}={item}" for name, item in value)
    elif meta["parse"] is parse_list:
        text = ",".join(value)
    elif isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, float):
        text = f"{value:g}"
    else:
        text = str(value)
    return f"`{text}`" if text else "-"


def _accepts(meta: Mapping[str, Any]) -> str:
    if meta["choices"]:
        return ", ".join(f"`{choice}`" for choice in meta["choices"])
    kind = "secret" if meta["secret"] else _KINDS.get(meta["parse"], "text")
    if meta["minimum"] is not None:
        kind += f", at least {meta['minimum']:g}"
    return kind


def table() -> str:
    """The settings table in Markdown, one row per setting, in declaration order."""
    rows = []
    for spec in dataclasses.fields(Settings):
        meta = spec.metadata
        cells = (
            f"`{meta['env']}`",
            f"`{meta['yaml']}`",
            _default(spec.default, meta),
            _accepts(meta),
            meta["doc"].replace("|", "\\|"),
        )
        rows.append(f"| {' | '.join(cells)} |\n")
    return HEADER + "".join(rows)


def with_table(page: str) -> str:
    """``page`` with the text between its table markers replaced by :func:`table`."""
    start, end = page.find(BEGIN), page.find(END)
    if start < 0 or end < start:
        raise ValueError(f"the page has no {BEGIN} ... {END} markers")
    return f"{page[: start + len(BEGIN)]}\n{table()}{page[end:]}"


def main(argv: list[str]) -> None:
    """Rewrite the table in the page named by ``argv``, or print the table."""
    if not argv:
        print(table(), end="")
        return
    page = Path(argv[0])
    page.write_text(with_table(page.read_text(encoding="utf-8")), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])

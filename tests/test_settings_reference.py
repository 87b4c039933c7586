"""The settings reference in docs/settings.md is the one the settings model writes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from email_worker.config import Settings
from email_worker.config.reference import REGENERATE, table, with_table

PAGE = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_the_documented_table_is_the_one_the_model_writes() -> None:
    page = PAGE.read_text(encoding="utf-8")
    assert with_table(page) == page, f"docs/settings.md is out of date: run `{REGENERATE}`"


def test_every_setting_has_a_row_with_its_variable_path_and_description() -> None:
    rows = table().splitlines()[2:]
    fields = dataclasses.fields(Settings)
    assert len(rows) == len(fields)
    for row, spec in zip(rows, fields, strict=True):
        variable, path, _default, accepts, meaning = (
            c.strip() for c in row.strip("|").split(" | ")
        )
        assert variable == f"`{spec.metadata['env']}`"
        assert path == f"`{spec.metadata['yaml']}`"
        assert accepts and meaning


def test_the_table_shows_defaults_constraints_and_no_secret() -> None:
    rows = {row.split(" | ")[0].strip("| `"): row for row in table().splitlines()[2:]}
    assert "| `1m30s` | duration, at least 60 |" in rows["BROKER_VISIBILITY_TIMEOUT"]
    assert "| `6379` | port or service link, at least 1 |" in rows["REDIS_PORT"]
    assert "`json`, `text`" in rows["LOG_FORMAT"]
    assert "| - | secret |" in rows["REDIS_PASSWORD"]

"""The README's test command runs the code checks, each as a step of its own, before the suite."""

from __future__ import annotations

from tests.test_quickstart import readme_commands

CHECKS = (
    ".venv/bin/ruff check .",
    ".venv/bin/ruff format --check .",
    ".venv/bin/mypy",
    ".venv/bin/lint-imports",
)


def test_the_test_command_runs_lint_format_types_and_the_import_contract_first() -> None:
    steps = [step.strip() for step in readme_commands()[1].strip().split("&&")]
    suite = steps.index(".venv/bin/pytest")
    assert all(check in steps[:suite] for check in CHECKS), steps

"""The longest test files start first, so the parallel run does not wait on one at its end.

With ``--dist loadfile`` each file runs whole in one test process, and the files are handed
out in collection order as processes come free. Handing out the longest first (and the
quick ones to fill the gaps) ends the run soonest; xdist's own reordering, by the number of
tests in a file, would hand out the one long test last.

How long a file takes is read from ``durations.txt`` beside this module: seconds per file,
as measured by ``pytest --update-durations`` (the sum of each test's set-up, call and
tear-down). A file it does not list yet is placed by its markers: a long ``timeout`` or
``slow`` tests put it among the long ones.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest

from tests.support.paths import ROOT

DURATIONS = Path(__file__).with_name("durations.txt")
UNLISTED_SLOW = 30.0
"""Seconds guessed for a file not yet measured whose tests start servers or processes."""
UNLISTED = 5.0


def _measured() -> dict[str, float]:
    try:
        lines = DURATIONS.read_text().splitlines()
    except FileNotFoundError:
        return {}
    found: dict[str, float] = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            seconds, name = line.split(maxsplit=1)
            found[name] = float(seconds)
    return found


def _guess(items: list[pytest.Item]) -> float:
    timeouts = [
        float(marker.args[0])
        for item in items
        for marker in item.iter_markers("timeout")
        if marker.args
    ]
    slow = any(item.get_closest_marker("slow") for item in items)
    return max([UNLISTED_SLOW if slow else UNLISTED, *(t / 10 for t in timeouts)])


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-durations",
        action="store_true",
        help=f"write each test file's measured seconds to {_name(DURATIONS)}",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the files longest first, keeping the order of the tests within each file."""
    by_file: dict[Path, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    measured = _measured()
    length = {
        path: measured.get(_name(path)) or _guess(file_items)
        for path, file_items in by_file.items()
    }
    items.sort(key=lambda item: length[item.path], reverse=True)


_seconds: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Add up each file's time (reports from every xdist process reach the controller)."""
    _seconds[report.nodeid.split("::")[0]] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    if not session.config.getoption("update_durations") or hasattr(session.config, "workerinput"):
        return
    lines = [f"{seconds:.1f} {name}" for name, seconds in sorted(_seconds.items())]
    header = "# seconds per test file, written by `pytest --update-durations`\n"
    DURATIONS.write_text(header + "\n".join(lines) + "\n")

"""The longest test files start first, so the parallel run does not wait on one at its end.

With ``--dist loadfile`` each file runs whole in one test process, and the files are handed
out in collection order. A file whose tests declare a longer timeout (the quick start builds
a clean clone) or start servers and subprocesses (``slow``) is collected before the quick
ones, which then fill the gaps; xdist's own reordering, by the number of tests in a file,
would hand out the one long test last.
"""

from __future__ import annotations

from pathlib import Path

import pytest


def _expected_length(items: list[pytest.Item]) -> tuple[float, bool]:
    timeouts = [
        float(marker.args[0])
        for item in items
        for marker in item.iter_markers("timeout")
        if marker.args
    ]
    return max(timeouts, default=0.0), any(item.get_closest_marker("slow") for item in items)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Order the files longest first, keeping the order of the tests within each file."""
    by_file: dict[Path, list[pytest.Item]] = {}
    for item in items:
        by_file.setdefault(item.path, []).append(item)
    length = {path: _expected_length(file_items) for path, file_items in by_file.items()}
    items.sort(key=lambda item: length[item.path], reverse=True)

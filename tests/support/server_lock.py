"""Tests that change a server every test shares run alone, even when the suite runs in parallel.

A test marked ``exclusive`` (it makes Redis refuse a command, or stops the replica) holds
the lock exclusively; every other test holds it shared, across its set-up, call and
tear-down. The lock is a file in the temporary folder, so it also keeps apart two runs
on one machine, which share the same servers. A second file is a turnstile: a test waiting
for the exclusive lock holds it, so no new shared holder can starve the waiting one.
"""

from __future__ import annotations

import fcntl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

FOLDER = Path(tempfile.gettempdir())
SERVERS = FOLDER / "email-worker-tests-servers.lock"
TURNSTILE = FOLDER / "email-worker-tests-turnstile.lock"


@contextmanager
def _locked(path: Path, operation: int) -> Iterator[None]:
    with path.open("a") as handle:
        fcntl.flock(handle, operation)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def shared_servers(exclusive: bool) -> Iterator[None]:
    """Hold the servers alone (``exclusive``) or beside other ordinary tests."""
    if exclusive:
        with _locked(TURNSTILE, fcntl.LOCK_EX), _locked(SERVERS, fcntl.LOCK_EX):
            yield
        return
    with _locked(TURNSTILE, fcntl.LOCK_EX):
        pass  # waits while an exclusive test waits or runs
    with _locked(SERVERS, fcntl.LOCK_SH):
        yield


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> object:
    with shared_servers(item.get_closest_marker("exclusive") is not None):
        return (yield)

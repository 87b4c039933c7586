"""Waiting on real servers and processes: ask again until the answer comes, or fail."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    condition: Callable[[], T],
    what: str,
    timeout: float = 30.0,
    *,
    interval: float = 0.05,
    log: Path | None = None,
) -> T:
    """Ask ``condition`` until it returns something true, and return that.

    A connection error counts as "not yet": the server may still be starting. After
    ``timeout`` seconds the test fails naming ``what``, the last answer, and the end of
    ``log`` when one is given.
    """
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = condition()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            shown = "\n" + log.read_text(errors="replace")[-3000:] if log is not None else ""
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}; last: {last!r}{shown}"
            )
        time.sleep(interval)


def wait_for_log(log: Path, text: str, timeout: float = 30.0) -> str:
    """Wait until ``text`` appears in the log; return the whole log."""
    wait_for(
        lambda: text in log.read_text(errors="replace"),
        f"{text!r} in the log",
        timeout,
        interval=0.1,
        log=log,
    )
    return log.read_text(errors="replace")

"""The worker's cancelled time-limit timers are dropped, and its live ones still fire.

A prefork worker's main process sets a soft and a hard time-limit timer for every task;
kombu keeps a cancelled timer in its heap until it would have fired, so a busy worker
holds tens of thousands of dead entries. ``DropCancelledTimers`` removes them every few
seconds. These tests run it on kombu's own timer, the one the worker's event loop uses.
"""

from __future__ import annotations

import time

from celery import Celery
from kombu.asynchronous.timer import Timer

from email_worker.celeryapp.app import app
from email_worker.celeryapp.worker_timers import SMALL_HEAP, DropCancelledTimers, drop_cancelled


def due_entries(timer: Timer) -> list[str]:
    """Run every entry that is due, as the worker's event loop does; what each returned."""
    fired: list[str] = []
    for _wait, entry in timer:
        if entry is None:
            break
        fired.append(entry())
    return fired


def test_cancelled_timers_leave_the_heap_and_the_live_ones_fire_in_order() -> None:
    timer = Timer()
    now = time.monotonic()
    count = 3 * SMALL_HEAP
    entries = [timer.call_at(now - 1 + i / 100_000, lambda i=i: f"limit {i}") for i in range(count)]
    for i, entry in enumerate(entries):
        if i % 3:
            entry.cancel()  # the task ended in time: two of every three
    assert drop_cancelled(timer) == 2 * SMALL_HEAP
    assert len(timer) == SMALL_HEAP
    assert due_entries(timer) == [f"limit {i}" for i in range(0, count, 3)]


def test_a_small_heap_or_one_mostly_live_is_left_as_it_is() -> None:
    timer = Timer()
    later = time.monotonic() + 60
    small = [timer.call_at(later, str) for _ in range(SMALL_HEAP - 1)]
    for entry in small:
        entry.cancel()
    assert drop_cancelled(timer) == 0 and len(timer) == SMALL_HEAP - 1

    busy = Timer()
    entries = [busy.call_at(later, str) for _ in range(4 * SMALL_HEAP)]
    for entry in entries[:SMALL_HEAP]:
        entry.cancel()  # a quarter cancelled: not worth rebuilding the heap for
    assert drop_cancelled(busy) == 0 and len(busy) == 4 * SMALL_HEAP


def test_only_this_apps_worker_runs_the_step() -> None:
    assert DropCancelledTimers in app.steps["worker"]
    host = Celery("host_service", set_as_current=False)
    assert DropCancelledTimers not in host.steps["worker"]

"""Cancelled time-limit timers leave the worker's timer heap when the email is done.

Each task a prefork worker runs gets a soft and a hard time-limit timer in the main
process's event loop. When the task ends in time, Celery cancels them, but kombu's timer
keeps a cancelled entry in its heap until the time it would have fired: with
``PROCESS_TIMEOUT`` of 30 s, a worker sending 700 emails a second holds some 20,000
dead entries, about 6 MB, and the heap's memory stays with the process after the burst.
This step drops the cancelled entries every few seconds, when they are most of the heap.
"""

from __future__ import annotations

import heapq
from typing import Any

from celery import bootsteps

# How often the heap is looked at, and the size below which it is left alone.
EVERY_SECONDS = 2.0
SMALL_HEAP = 1000


def drop_cancelled(timer: Any) -> int:
    """Remove the cancelled entries of a kombu timer's heap; how many were removed."""
    heap = getattr(timer, "_queue", None)
    if not isinstance(heap, list) or len(heap) < SMALL_HEAP:
        return 0
    live = [event for event in heap if not getattr(event[2], "canceled", False)]
    removed = len(heap) - len(live)
    if removed * 2 < len(heap):
        return 0
    heapq.heapify(live)
    heap[:] = live  # the same list: the loop iterating the timer holds it
    return removed


class DropCancelledTimers(bootsteps.StartStopStep):
    """Every few seconds, in the worker's event loop, drop its cancelled timers."""

    requires = ("celery.worker.components:Hub",)

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        hub = getattr(worker, "hub", None)
        if hub is not None:
            self.tref = hub.call_repeatedly(EVERY_SECONDS, drop_cancelled, hub.timer)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

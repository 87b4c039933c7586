"""The task that applies stored provider events: after each webhook, and on beat's schedule.

A worker's main process imports this module to know the task by name; the task imports
the database layer as it runs, in a pool process.
"""

from __future__ import annotations

import logging
import uuid

from email_worker.celeryapp.app import app

log = logging.getLogger(__name__)


@app.task(name="email_worker.apply_pending_events", ignore_result=True, send_events=False)
def apply_pending_events(event_ids: list[str] | None = None) -> int:
    """Apply the given stored events, or all unapplied ones of the window; returns how many."""
    from email_worker.db import events
    from email_worker.db.session import primary_session

    ids = _uuids(event_ids) if event_ids is not None else None
    applied = 0
    after = None
    while True:
        with primary_session() as session:
            taken, done, after = events.apply_pending(session, ids, after=after)
        applied += done
        if taken < events.BATCH or ids is not None:
            break
    if applied:
        log.info("provider events applied", extra={"count": applied})
    return applied


def _uuids(values: list[str]) -> list[uuid.UUID]:
    from email_worker.db import events

    found = []
    for value in values[: events.BATCH]:
        try:
            found.append(uuid.UUID(str(value)))
        except ValueError:
            continue
    return found

"""Bulk sends as operators see them: their counts per status, and cancelling one."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any

from email_worker.db import bulk as db
from email_worker.db.session import primary_session, session_scope

log = logging.getLogger(__name__)


class BulkNotFound(LookupError):
    """No bulk send has this id."""


@dataclass(frozen=True)
class BulkSummary:
    """A bulk as operators see it."""

    id: uuid.UUID
    template_id: str
    kind: str
    status: str
    provider: str | None
    total: int
    created_at: Any
    cancelled_at: Any
    counts: dict[str, int]

    def as_json(self) -> dict[str, Any]:
        """The summary as JSON-ready values."""
        return {
            "id": str(self.id),
            "template_id": self.template_id,
            "kind": self.kind,
            "status": self.status,
            "provider": self.provider,
            "total": self.total,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "cancelled_at": self.cancelled_at.isoformat() if self.cancelled_at else None,
            "counts": self.counts,
        }


def show_bulk(bulk_id: uuid.UUID | str) -> BulkSummary:
    """The bulk's template, status, times and counts per status, read from the replica."""
    key = uuid.UUID(str(bulk_id))
    with session_scope() as session:
        found = db.get_bulk(session, key)
        if found is None:
            raise BulkNotFound(f"no bulk {key}")
        counts = db.status_counts(session, key)
    return BulkSummary(
        id=found.id,
        template_id=found.template_id,
        kind=found.kind,
        status=found.status,
        provider=found.provider,
        total=found.total,
        created_at=found.created_at,
        cancelled_at=found.cancelled_at,
        counts=counts,
    )


def cancel_bulk(bulk_id: uuid.UUID | str) -> int:
    """Cancel a bulk: its recipients not yet sent never are. Returns how many were cancelled."""
    key = uuid.UUID(str(bulk_id))
    with primary_session() as session:
        cancelled = db.cancel_bulk(session, key)
    if cancelled is None:
        raise BulkNotFound(f"no bulk {key}")
    log.info("bulk cancelled", extra={"bulk_id": str(key), "recipients": cancelled})
    return cancelled

"""What the console's overview shows: queue depths, the last hour's sends and failures by
kind and provider, the providers' health and circuits, and bulk sends in progress.

Each part is read on its own, bounded by HEALTH_TIMEOUT where it asks a server: a part
whose source cannot be reached says so (``problem``) and the others are still shown.
Nothing here calls a provider: their health is what the circuits in Redis remember.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from email_worker.config import Settings, get_settings
from email_worker.db import activity
from email_worker.db.models import utcnow
from email_worker.db.session import session_scope
from email_worker.kinds import PRIORITIES

log = logging.getLogger(__name__)

WINDOW = dt.timedelta(hours=1)
T = TypeVar("T")


@dataclass(frozen=True)
class Part:
    """One part of the overview: its rows, or why they could not be read."""

    rows: list[Any] = field(default_factory=list)
    problem: str | None = None


@dataclass(frozen=True)
class QueueDepth:
    """Messages waiting in one queue."""

    priority: str  # high, default, low, or periodic (beat's tasks)
    queue: str
    waiting: int


@dataclass(frozen=True)
class ProviderHealth:
    """A provider in use, and its circuit as every worker shares it."""

    name: str
    configured: bool
    state: str  # closed, open, half_open, or unknown (Redis not answering)
    consecutive_failures: int
    last_error: str | None  # masked before it was stored
    last_error_at: str | None
    open_until: str | None
    delivers: bool  # False for console and outbox: they send no email

    @property
    def open(self) -> bool:
        return self.state in ("open", "half_open")


@dataclass(frozen=True)
class Overview:
    """Everything the overview page shows."""

    read_at: dt.datetime
    since: dt.datetime
    queues: Part
    sends: Part
    providers: Part
    bulks: Part

    @property
    def open_circuits(self) -> list[ProviderHealth]:
        return [p for p in self.providers.rows if p.open]


def _part(what: str, read: Callable[[], list[T]]) -> Part:
    try:
        return Part(read())
    except Exception as exc:  # noqa: BLE001  one source down leaves the others on the page
        log.warning("overview part not read", extra={"part": what, "error": type(exc).__name__})
        return Part(problem=f"The {what} cannot be read now ({type(exc).__name__}).")


def queue_depths(settings: Settings) -> list[QueueDepth]:
    """Messages waiting in each email queue, and beat's, as /metrics reads them."""
    from email_worker.celeryapp.app import app
    from email_worker.observability.health import queue_sizes

    names = {priority: settings.queues[priority] for priority in PRIORITIES}
    names["periodic"] = settings.periodic_queue
    sizes = queue_sizes(app, list(names.values()), settings.health_timeout)
    return [
        QueueDepth(priority, queue, sizes[queue])
        for priority, queue in names.items()
        if queue in sizes
    ]


def recent_sends(since: dt.datetime) -> list[activity.KindProviderCount]:
    """Tracked jobs sent, failed or bounced since ``since``, by kind and provider."""
    with session_scope() as session:
        return activity.sends_since(session, since)


def provider_health(settings: Settings) -> list[ProviderHealth]:
    """Each provider in use with its circuit; no provider is called."""
    from email_worker.providers.failover import providers_health

    return [
        ProviderHealth(
            name=name,
            configured=bool(health.get("configured")),
            state=str(health.get("state", "unknown")),
            consecutive_failures=int(health.get("consecutive_failures") or 0),
            last_error=health.get("last_error"),
            last_error_at=_shown(health.get("last_error_at")),
            open_until=_shown(health.get("opens_until")),
            delivers=health.get("delivers", True) is not False,
        )
        for name, health in providers_health(settings).items()
    ]


def _shown(moment: str | None) -> str | None:
    """An ISO 8601 time from the circuits as the page shows it: ``2026-12-04 12:54:46 UTC``."""
    if not moment:
        return None
    try:
        parsed = dt.datetime.fromisoformat(moment)
    except ValueError:
        return moment
    return parsed.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def bulks_in_progress() -> list[activity.BulkProgress]:
    """Bulk sends pending or sending, newest first."""
    with session_scope() as session:
        return activity.bulks_in_progress(session)


def read_overview() -> Overview:
    """Every part of the overview, each read on its own."""
    settings = get_settings()
    now = utcnow()
    since = now - WINDOW
    return Overview(
        read_at=now,
        since=since,
        queues=_part("queue depths", lambda: queue_depths(settings)),
        sends=_part("sends of the last hour", lambda: recent_sends(since)),
        providers=_part("providers' health", lambda: provider_health(settings)),
        bulks=_part("bulk sends", bulks_in_progress),
    )

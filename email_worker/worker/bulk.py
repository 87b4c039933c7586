"""Bulk sends: one template to many recipients, each with data of its own.

``send_bulk`` is checked in the producer's process like every send. On a worker it
stores the bulk and its recipients under the task id (a redelivered message finds
them stored) and publishes ``send_bulk_batch`` tasks, each for a range of positions.
A batch claims its due recipients under a lease, renders and sends each one, and
records every outcome in one statement. A recipient refused for good is failed
alone; one refused for now is ``retrying`` and its batch runs again after a backoff,
for it only. A provider that can merge (SendGrid's ``send_merged``) gets one request
per batch for the recipients whose email is the template's one rendering with their
values put in; the others are sent one by one.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from markupsafe import escape
from sqlalchemy.exc import SQLAlchemyError

from email_worker.config import Settings, get_settings
from email_worker.db import bulk as db
from email_worker.db.primary_retry import with_pauses
from email_worker.db.session import primary_session
from email_worker.db.suppressions import is_suppressed
from email_worker.errors import (
    AccountError,
    PermanentError,
    Throttled,
    TransientError,
)
from email_worker.mime.content import RenderedEmail
from email_worker.mime.email_request import EmailRequest
from email_worker.mime.messages import OutgoingEmail, Sender, build_message
from email_worker.privacy import redact_text
from email_worker.producer.bulk_requests import BATCH_TASK, DEFAULT_PRIORITY, check_bulk
from email_worker.producer.stored_jobs import DatabaseUnavailable, job_id_for
from email_worker.providers import Provider, get_provider
from email_worker.rendering.renderer import get_renderer
from email_worker.worker.delivery import lease_seconds, reason, send_out, unsubscribe_for

log = logging.getLogger(__name__)

BULK_CATEGORY = "bulk"  # List-Unsubscribe, and unsubscribes and complaints are respected
MERGED_REQUEST_LIMIT = 1000  # SendGrid: at most 1,000 personalizations per request
# Transient failures in a row after which a batch stops and waits: the provider is down,
# not one mailbox.
TRANSIENT_STREAK = 3
_TEXT_MARK, _HTML_MARK = "-ew3t-", "-ew3h-"
_MARKER = re.compile(r"-ew3[th]-[A-Za-z_][A-Za-z0-9_]*-")


def store_bulk(app: Any, task_id: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """Store a bulk under its task id (once), then publish a batch task per range."""
    request = check_bulk(kwargs)
    bulk_id = job_id_for(task_id)
    settings = get_settings()
    try:
        with primary_session() as session:
            created = db.create_bulk(
                session,
                bulk_id=bulk_id,
                template_id=request.shared.template_id or "",
                kind=request.shared.kind,
                payload=request.shared_payload(),
                provider=request.shared.provider,
                recipients=request.recipients,
            )
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(
            f"cannot store the bulk on the primary database ({type(exc).__name__})"
        ) from None
    size = batch_size(provider_name(request.shared.provider))
    queue = settings.queues[request.shared.priority]
    total = len(request.recipients)
    # Published again on a redelivery: a batch whose recipients are done claims nothing.
    with app.producer_or_acquire() as producer:
        for first in range(0, total, size):
            app.send_task(
                BATCH_TASK,
                kwargs={
                    "bulk_id": str(bulk_id),
                    "first": first,
                    "last": min(first + size, total),
                    "priority": request.shared.priority,
                },
                queue=queue,
                producer=producer,
            )
    with primary_session() as session:
        db.mark_bulk_sending(session, bulk_id)
    batches = -(-total // size)
    log.info(
        "bulk stored",
        extra={"bulk_id": str(bulk_id), "recipients": total, "batches": batches, "new": created},
    )
    return {"bulk_id": str(bulk_id), "recipients": total, "batches": batches, "new": created}


def provider_name(requested: str | None) -> str:
    """The provider a bulk sends through: the one it asked for, else the first configured."""
    return requested or get_settings().provider_chain(None)[0]


def bulk_provider(requested: str | None) -> Provider:
    """The provider instance a bulk's batches send through."""
    return get_provider(provider_name(requested))


def batch_size(provider: str) -> int:
    """Recipients per batch task: BULK_BATCH_SIZE, at most 1,000 for SendGrid's requests."""
    size = get_settings().bulk_batch_size
    return min(size, MERGED_REQUEST_LIMIT) if provider == "sendgrid" else size


@dataclass
class _Prepared:
    position: int
    email: OutgoingEmail
    substitutions: dict[str, str] | None = None  # for a merged send
    merge_key: str = ""


class _Batch:
    """One claimed batch: its recipients' outcomes as they are decided."""

    def __init__(self, bulk_id: uuid.UUID, max_attempts: int, backoff: Any) -> None:
        self.bulk_id = bulk_id
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.results: list[db.RecipientResult] = []
        self.untried: list[int] = []
        self.streak = 0

    def sent(self, position: int, provider: str, message_id: str | None) -> None:
        self.streak = 0
        self.results.append(db.RecipientResult(position, db.SENT, provider, message_id))

    def refused(self, position: int, provider: str, why: str) -> None:
        self.results.append(db.RecipientResult(position, db.REFUSED, provider, error=why))

    def failed(self, position: int, exc: BaseException, provider: str | None = None) -> None:
        self.results.append(db.RecipientResult(position, db.FAILED, provider, error=reason(exc)))

    def throttled(self, position: int, exc: Throttled) -> None:
        """No token for now: the recipient waits for the one it booked, uncounted."""
        self.results.append(
            db.RecipientResult(
                position,
                db.RETRYING,
                exc.provider,
                error=None,
                retry_in=exc.retry_after,
                counted=False,
            )
        )

    def transient(self, position: int, attempts: int, exc: BaseException, provider: str) -> None:
        self.streak += 1
        if attempts >= self.max_attempts:
            error = f"no attempts left: {reason(exc)}"
            self.results.append(db.RecipientResult(position, db.FAILED, provider, error=error))
            return
        self.results.append(
            db.RecipientResult(
                position,
                db.RETRYING,
                provider,
                error=reason(exc),
                retry_in=float(self.backoff(attempts - 1)),
            )
        )


def send_batch(task: Any, bulk_id: str, first: int, last: int, priority: str) -> dict[str, Any]:
    """Send the due recipients of one batch and record them; retry while some wait."""
    settings = get_settings()
    key = uuid.UUID(bulk_id)
    try:
        with primary_session() as session:
            found = db.get_bulk(session, key)
            payload = dict(found.payload or {}) if found is not None else {}
            claimed = db.claim_recipients(
                session, key, first, last, lease_seconds=lease_seconds(settings)
            )
    except SQLAlchemyError as exc:
        raise DatabaseUnavailable(
            f"cannot claim the batch on the primary database ({type(exc).__name__})"
        ) from None
    if found is None:
        log.warning("no such bulk; nothing to send", extra={"bulk_id": bulk_id})
        return {"bulk_id": bulk_id, "skipped": True}
    batch = _Batch(key, settings.max_retries + 1, task.backoff)
    if claimed:
        provider = bulk_provider(payload.get("provider"))
        _send_claimed(batch, provider, payload, claimed, settings, deadline=_deadline(task))
        _record(key, claimed[0].lease_expires_at, batch)
    with primary_session() as session:
        due_in = db.next_due_in(session, key, first, last)
        done = db.complete_if_done(session, key) if due_in is None else False
    counts: dict[str, int] = {}
    for result in batch.results:
        counts[result.status] = counts.get(result.status, 0) + 1
    log.info(
        "bulk batch sent",
        extra={"bulk_id": bulk_id, "first": first, "last": last, **counts, "completed": done},
    )
    if due_in is not None:
        # Retrying recipients, given back ones, or a lost worker's lease: come back then.
        queue = settings.queues.get(priority, settings.queues[DEFAULT_PRIORITY])
        raise task.retry(countdown=due_in + 0.05, queue=queue)
    return {"bulk_id": bulk_id, "first": first, "last": last, **counts}


def _deadline(task: Any) -> float:
    """When to stop starting new sends: well before the soft time limit."""
    limit = task.app.conf.task_soft_time_limit
    return time.monotonic() + (limit * 0.8 if limit else float("inf"))


def _send_claimed(
    batch: _Batch,
    provider: Provider,
    payload: dict[str, Any],
    claimed: Sequence[Any],
    settings: Settings,
    *,
    deadline: float,
) -> None:
    """Render, build and send each claimed recipient, noting every outcome in ``batch``."""
    renderer = get_renderer()
    sender = Sender(settings.email_from, settings.email_from_name)
    base = EmailRequest(**{**payload, "to": [claimed[0].address]})
    # Merged requests share one message: not in a staging DELIVERY_MODE (each recipient is
    # sorted on its own). Each recipient's unsubscribe link travels in its own headers.
    merging = callable(getattr(provider, "send_merged", None)) and settings.delivery_mode == "live"
    markers: dict[str, RenderedEmail | None] = {}
    groups: dict[str, list[_Prepared]] = {}
    attempts = {row.position: row.attempts for row in claimed}
    for index, row in enumerate(claimed):
        if time.monotonic() > deadline or batch.streak >= TRANSIENT_STREAK:
            batch.untried = [r.position for r in claimed[index:]]
            return
        try:
            request = replace(base, to=[row.address], data=dict(row.data))
            content = renderer.render(request.template_id or "", request.data)
            email = build_message(
                request,
                content,
                sender=sender,
                message_id_domain=settings.message_id_domain,
                message_key=f"{batch.bulk_id}-{row.position}",
                unsubscribe=unsubscribe_for(
                    request, f"{batch.bulk_id}-{row.position}", BULK_CATEGORY, settings
                ),
            )
            if len(email.as_bytes()) > settings.max_message_bytes:
                raise PermanentError(
                    f"message is larger than MAX_MESSAGE_BYTES ({settings.max_message_bytes})"
                )
            merge = _merge_plan(request, content, markers) if merging else None
            if merge is not None:
                merge_key, substitutions = merge
                groups.setdefault(merge_key, []).append(
                    _Prepared(row.position, email, substitutions, merge_key)
                )
                continue
            _send_one(batch, request, row.position, attempts[row.position], email, settings)
        except SoftTimeLimitExceeded as exc:
            # Whether this one went out is unknown: it counts as an attempt.
            batch.transient(row.position, attempts[row.position], exc, provider.name)
            batch.untried = [r.position for r in claimed[index + 1 :]]
            return
        except AccountError as exc:
            log.critical("bulk send refused for the account", extra={"reason": reason(exc)})
            for later in claimed[index:]:
                batch.failed(later.position, exc, provider.name)
            return
        except Exception as exc:  # anything about this recipient's email fails it alone
            batch.failed(row.position, exc, provider.name)
    for merge_key, prepared in groups.items():
        prepared = _not_suppressed(batch, prepared, provider.name)
        for start in range(0, len(prepared), MERGED_REQUEST_LIMIT):
            chunk = prepared[start : start + MERGED_REQUEST_LIMIT]
            marker_content = markers[merge_key]
            assert marker_content is not None
            _send_merged(batch, provider, base, marker_content, chunk, attempts, sender, settings)


def _not_suppressed(batch: _Batch, prepared: list[_Prepared], provider: str) -> list[_Prepared]:
    """Leave out of a merged request the recipients on the suppression list (one query)."""
    addresses = [p.email.envelope.recipients[0] for p in prepared]
    with primary_session() as session:
        suppressed = is_suppressed(session, addresses, BULK_CATEGORY)
    kept = []
    for p, address in zip(prepared, addresses, strict=True):
        if address.lower() in suppressed:
            batch.refused(p.position, provider, "on the suppression list")
        else:
            kept.append(p)
    return kept


def _send_one(
    batch: _Batch,
    request: EmailRequest,
    position: int,
    attempts: int,
    email: OutgoingEmail,
    settings: Settings,
) -> None:
    # The same way as one email: DELIVERY_MODE, the failover chain, the rate limit.
    try:
        provider, result = send_out(email, request, settings=settings, category=BULK_CATEGORY)
    except Throttled as exc:
        batch.throttled(position, exc)
        return
    except TransientError as exc:
        batch.transient(position, attempts, exc, getattr(exc, "provider", "") or "")
        return
    if result.refused:
        batch.refused(position, provider, redact_text("; ".join(result.refused.values())))
    else:
        batch.sent(position, provider, result.message_id)


def _merge_plan(
    request: EmailRequest, real: RenderedEmail, markers: dict[str, RenderedEmail | None]
) -> tuple[str, dict[str, str]] | None:
    """How to send this recipient in a merged request, or None when its email cannot be.

    The template is rendered once per shape of data with a marker in place of each
    plain value; the recipient is merged only if putting its values in for the markers
    gives exactly its own rendering (a template that tests or loops over a value does not).
    """
    plain = {
        k: v
        for k, v in request.data.items()
        if isinstance(v, str | int | float) and not isinstance(v, bool)
    }
    if any("-ew3" in str(v) for v in plain.values()):
        return None
    rest = {k: v for k, v in request.data.items() if k not in plain}
    merge_key = json.dumps([sorted(plain), rest], sort_keys=True, default=str)
    if merge_key not in markers:
        markers[merge_key] = _marker_rendering(request.template_id or "", plain, rest)
    marked = markers[merge_key]
    if marked is None:
        return None
    substitutions = {f"{_TEXT_MARK}{k}-": str(v) for k, v in plain.items()}
    substitutions.update({f"{_HTML_MARK}{k}-": str(escape(str(v))) for k, v in plain.items()})
    filled = RenderedEmail(
        subject=_substitute(marked.subject, substitutions),
        text=_substitute(marked.text, substitutions),
        html=None if marked.html is None else _substitute(marked.html, substitutions),
    )
    return (merge_key, substitutions) if filled == real else None


def _marker_rendering(
    template_id: str, plain: Mapping[str, Any], rest: Mapping[str, Any]
) -> RenderedEmail | None:
    renderer = get_renderer()
    try:
        text = renderer.render(template_id, {**rest, **{k: f"{_TEXT_MARK}{k}-" for k in plain}})
        html = renderer.render(template_id, {**rest, **{k: f"{_HTML_MARK}{k}-" for k in plain}})
    except PermanentError:
        return None
    return RenderedEmail(subject=text.subject, text=text.text, html=html.html)


def _substitute(text: str, substitutions: Mapping[str, str]) -> str:
    return _MARKER.sub(lambda m: substitutions.get(m.group(0), m.group(0)), text)


def _own_headers(email: OutgoingEmail) -> dict[str, str]:
    """The header fields of one recipient's copy that no other copy shares: its unsubscribe."""
    headers = email.parts.headers if email.parts is not None else {}
    return {k: v for k, v in headers.items() if k.lower().startswith("list-unsubscribe")}


def _send_merged(
    batch: _Batch,
    provider: Any,
    base: EmailRequest,
    content: RenderedEmail,
    chunk: Sequence[_Prepared],
    attempts: Mapping[int, int],
    sender: Sender,
    settings: Settings,
) -> None:
    """One request for many recipients: the marker rendering and each one's values."""
    from email_worker.providers.sendgrid import MergedBatch, MergedRecipient

    try:
        email = build_message(
            replace(base, to=[chunk[0].email.envelope.recipients[0]]),
            content,
            sender=sender,
            message_id_domain=settings.message_id_domain,
            message_key=str(batch.bulk_id),
        )
        recipients = tuple(
            MergedRecipient(
                key=p.email.key,
                to=p.email.envelope.recipients[0],
                substitutions=p.substitutions or {},
                headers=_own_headers(p.email),
            )
            for p in chunk
        )
        message_id = provider.send_merged(MergedBatch(email=email, recipients=recipients))
    except TransientError as exc:
        for p in chunk:
            batch.transient(p.position, attempts[p.position], exc, provider.name)
        return
    except Exception as exc:
        for p in chunk:
            batch.failed(p.position, exc, provider.name)
        return
    for p in chunk:
        batch.sent(p.position, provider.name, message_id)


def _record(bulk_id: uuid.UUID, lease: Any, batch: _Batch) -> None:
    """Record the batch's outcomes; a primary that is briefly away is waited for."""

    def write() -> None:
        with primary_session() as session:
            db.record_results(session, bulk_id, lease, batch.results)
            db.release_recipients(session, bulk_id, lease, batch.untried)

    try:
        with_pauses(write)
    except SQLAlchemyError as exc:
        # The lease runs out and the recipients are claimed again: sent twice at worst.
        raise DatabaseUnavailable(
            f"cannot record the batch on the primary database ({type(exc).__name__})"
        ) from None

"""Provider webhooks: ``POST /webhooks/sendgrid`` and ``POST /webhooks/ses`` (through SNS).

A request is verified before anything is read from it; a forged, unsigned, stale or
foreign one gets 403 and nothing is stored. Verified events are stored (each once, in
one transaction, a chunk at a time as the body is read) and the answer goes out at
once; the apply task is published after the answer. A database that cannot be reached
gets 503, so the provider delivers the events again later.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Iterable, Iterator
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from email_worker.config import get_settings
from email_worker.db.events import BATCH, store_events
from email_worker.db.models import utcnow
from email_worker.db.session import primary_session
from email_worker.tracking import sendgrid_webhook, sns
from email_worker.tracking.events import DeliveryEvent, ses_events
from email_worker.web.bodies import read_body

log = logging.getLogger(__name__)
router = APIRouter(prefix="/webhooks", tags=["webhooks"])

APPLY_TASK = "email_worker.apply_pending_events"
# Any body up to this is stored, whatever its number of events: it is read one at a time.
MAX_SENDGRID_BODY = 8 * 1024 * 1024


def sns_fetch() -> sns.Fetch:
    """How SNS URLs are fetched (certificates, subscription confirmations)."""
    return sns.http_get


@functools.lru_cache(maxsize=8)
def _verifier(topic_arns: tuple[str, ...], fetch: sns.Fetch) -> sns.SnsVerifier:
    return sns.SnsVerifier(topic_arns, fetch)


def sns_verifier(fetch: Annotated[sns.Fetch, Depends(sns_fetch)]) -> sns.SnsVerifier:
    """The process's SNS verifier for SES_SNS_TOPIC_ARNS, with its certificate cache."""
    return _verifier(tuple(get_settings().ses_sns_topic_arns), fetch)


@router.post("/sendgrid")
async def sendgrid_events(request: Request, background: BackgroundTasks) -> JSONResponse:
    """Store a signed batch of SendGrid events."""
    body = await read_body(request, MAX_SENDGRID_BODY)
    if body is None:
        return _answer(413, "request too large")
    settings = get_settings()
    try:
        await run_in_threadpool(
            sendgrid_webhook.verify,
            body,
            request.headers.get(sendgrid_webhook.SIGNATURE_HEADER),
            request.headers.get(sendgrid_webhook.TIMESTAMP_HEADER),
            public_key=settings.sendgrid_webhook_public_key,
            max_age=settings.webhook_max_age,
        )
    except sendgrid_webhook.SignatureRefused as exc:
        log.warning("sendgrid webhook refused", extra={"reason": str(exc)})
        return _answer(403, "forbidden")
    try:
        return await _store(sendgrid_webhook.parse(body, utcnow()), background)
    except sendgrid_webhook.MalformedBatch:
        return _answer(400, "the body is not a JSON array of events")


@router.post("/ses")
async def ses_notifications(
    request: Request,
    background: BackgroundTasks,
    verifier: Annotated[sns.SnsVerifier, Depends(sns_verifier)],
) -> JSONResponse:
    """Verify an SNS message; confirm a subscription or store the SES events it carries."""
    body = await read_body(request, sns.MAX_BODY)
    if body is None:
        return _answer(413, "request too large")
    try:
        message = sns.parse(body)
        kind = await run_in_threadpool(verifier.verify, message)
        if kind == sns.SUBSCRIPTION_CONFIRMATION:
            await run_in_threadpool(verifier.confirm_subscription, message)
            log.info("SNS subscription confirmed", extra={"topic": message["TopicArn"]})
            return _answer(200, "subscription confirmed")
    except sns.SnsRefused as exc:
        log.warning("SNS message refused", extra={"reason": str(exc)})
        return _answer(403, "forbidden")
    except sns.SnsUnavailable as exc:
        log.warning("SNS unreachable", extra={"reason": str(exc)})
        return _answer(503, "SNS could not be reached; deliver again later")
    if kind != sns.NOTIFICATION:
        return _answer(200, "ignored")
    try:
        notification = json.loads(message["Message"])
    except (ValueError, RecursionError):
        return _answer(200, "not an SES event")  # verified, so SNS must not retry it
    return await _store(ses_events(notification, message["MessageId"], utcnow()), background)


async def _store(events: Iterable[DeliveryEvent], background: BackgroundTasks) -> JSONResponse:
    try:
        received, stored = await run_in_threadpool(_store_now, events)
    except SQLAlchemyError as exc:
        log.warning("webhook events not stored", extra={"error": type(exc).__name__})
        return _answer(503, "the database is unavailable; deliver again later")
    if stored:
        background.add_task(_publish_apply, stored)
    return JSONResponse({"received": received, "stored": len(stored)})


def _store_now(events: Iterable[DeliveryEvent]) -> tuple[int, list[uuid.UUID]]:
    """Store the events in one transaction; how many were read, and the ids of the new ones."""
    received = 0

    def counted() -> Iterator[DeliveryEvent]:
        nonlocal received
        for event in events:
            received += 1
            yield event

    with primary_session() as session:
        stored = store_events(session, counted())
    return received, stored


def _publish_apply(event_ids: list[uuid.UUID]) -> None:
    """Ask a worker to apply the new events; beat applies them anyway if this fails."""
    from email_worker.celeryapp.app import app

    # A large batch is applied by one task that takes every pending event, BATCH at a
    # time, rather than by a message holding all their ids.
    ids = [str(i) for i in event_ids] if len(event_ids) <= BATCH else None
    try:
        app.send_task(APPLY_TASK, kwargs={"event_ids": ids})
    except Exception as exc:  # the broker is down: the events are stored, beat applies them
        log.warning("apply task not published", extra={"error": type(exc).__name__})


def _answer(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status)

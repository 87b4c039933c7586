"""Own tracking links: the open pixel, the click redirect and one-click unsubscribe.

Every link carries a signed token (:mod:`email_worker.tracking.tokens`); the click
target and the unsubscribed address come only from a verified token. A hit is stored
in ``email_events`` (provider ``tracking``) under an id made of the token's digest and
the minute, so repeated hits of one link within a minute are one event, and the job
moves forward. Failing to record never breaks the link: the redirect and the pixel
are answered anyway.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import logging
import re
import uuid

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError

from email_worker.config import get_settings
from email_worker.db import events, suppressions
from email_worker.db.models import EmailEvent, EmailJob
from email_worker.db.session import primary_session
from email_worker.privacy import mask_address
from email_worker.tracking import events as ev
from email_worker.tracking import links, tokens

log = logging.getLogger("email_worker.web.links")
router = APIRouter(tags=["tracking"])

PROVIDER = "tracking"
# The smallest transparent GIF.
PIXEL = bytes.fromhex(
    "47494638396101000100800000000000ffffff21f90401000000002c000000000100010000020144003b"
)
NO_STORE = {"Cache-Control": "no-store, private", "Referrer-Policy": "no-referrer"}
# Image proxies that fetch every image when mail arrives, not when a person reads it:
# Gmail ("GoogleImageProxy", via ggpht.com), Yahoo ("YahooMailProxy"), and Apple Mail
# Privacy Protection, which sends only "Mozilla/5.0" (its address ranges are not public).
MACHINE_AGENTS = re.compile(r"GoogleImageProxy|ggpht\.com|YahooMailProxy|^Mozilla/5\.0$")


def _claims(token: str, purpose: str) -> tokens.TokenClaims | None:
    settings = get_settings()
    keys = tokens.signing_keys(settings.tracking_secret.reveal())
    try:
        return tokens.verify_token(token, keys, purpose, ttl=settings.tracking_token_ttl)
    except tokens.InvalidToken:
        return None


def is_machine_open(user_agent: str) -> bool:
    """Whether an open comes from a mail provider's image proxy rather than a reader."""
    return bool(MACHINE_AGENTS.search(user_agent.strip()))


@router.get("/t/o/{token}", response_class=Response)
def open_pixel(token: str, request: Request) -> Response:
    """A 1x1 GIF, always; the open is recorded only for a valid token."""
    claims = _claims(token, tokens.OPEN)
    if claims is not None:
        machine = is_machine_open(request.headers.get("user-agent", ""))
        _record(token, claims, "opened", machine_open=machine)
    return Response(PIXEL, media_type="image/gif", headers=NO_STORE)


@router.get("/t/c/{token}", response_class=Response, status_code=302)
def click(token: str) -> Response:
    """302 to the token's http(s) target; 404 for any token not ours."""
    claims = _claims(token, tokens.CLICK)
    if claims is None or not links.is_web_url(claims.target) or _unsafe(claims.target):
        return Response("Not found", status_code=404, media_type="text/plain", headers=NO_STORE)
    _record(token, claims, "clicked")
    return RedirectResponse(claims.target, status_code=302, headers=NO_STORE)


@router.get("/u/{token}", response_class=HTMLResponse)
def unsubscribe_page(token: str) -> HTMLResponse:
    """A confirmation page whose button POSTs: a link scanner's GET unsubscribes no one."""
    claims = _claims(token, tokens.UNSUBSCRIBE)
    if claims is None:
        return _page("Link not valid", "This link is not valid or has expired.", 404)
    who = html.escape(mask_address(claims.target))
    form = (
        f"<p>Stop marketing emails to {who}?</p>"
        '<form method="post"><button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", form, 200)


@router.post("/u/{token}", response_class=HTMLResponse)
def unsubscribe(token: str) -> HTMLResponse:
    """One-click unsubscribe (RFC 8058): the address is suppressed for marketing at once."""
    claims = _claims(token, tokens.UNSUBSCRIBE)
    if claims is None or "@" not in claims.target:
        return _page("Link not valid", "This link is not valid or has expired.", 404)
    try:
        with primary_session() as session:
            suppressions.add_suppression(
                session,
                claims.target,
                reason="unsubscribe",
                scope=suppressions.SCOPE_MARKETING,
                source="one-click",
                job_id=_job_id(claims.key),
            )
    except SQLAlchemyError as exc:
        log.warning("unsubscribe not stored", extra={"error": type(exc).__name__})
        return _page("Try again later", "We could not unsubscribe you just now.", 503)
    return _page("Unsubscribed", "You will get no more of these emails.", 200)


def _record(
    token: str, claims: tokens.TokenClaims, event: str, *, machine_open: bool = False
) -> None:
    """Store the hit once per token and minute, and move the job forward."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    digest = hashlib.sha256(token.encode("ascii")).hexdigest()[:40]
    # A proxy's prefetch and a reader's open within one minute are two events.
    hit = ev.DeliveryEvent(
        provider=PROVIDER,
        provider_event_id=f"{digest}:{int(now.timestamp()) // 60}:{'m' if machine_open else 'r'}",
        event_type=event,
        occurred_at=now,
        machine_open=machine_open,
        payload={"key": claims.key[:100], "target": claims.target[:2000]},
    )
    job_id = _job_id(claims.key)
    try:
        with primary_session() as session:
            for stored in events.store_events(session, [hit]):
                row = session.get(EmailEvent, stored)
                assert row is not None  # just inserted
                if job_id is not None and session.get(EmailJob, job_id) is not None:
                    row.job_id = job_id
                    events.apply_event(session, row)
                else:
                    row.applied_at = now  # a fast-path email: no job to move
    except SQLAlchemyError as exc:
        log.warning("tracking hit not recorded", extra={"error": type(exc).__name__})


def _job_id(key: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(key)
    except ValueError:
        return None


def _unsafe(url: str) -> bool:
    return any(ord(c) < 0x21 or ord(c) == 0x7F for c in url)


def _page(title: str, body: str, status: int) -> HTMLResponse:
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width">'
        f"<title>{title}</title></head>"
        f'<body style="font-family:sans-serif;max-width:32em;margin:3em auto">'
        f"<h1>{title}</h1>{body}</body></html>"
    )
    return HTMLResponse(page, status_code=status, headers=NO_STORE)

"""Which recipients get an email now and which are held, by DELIVERY_MODE; pure, no I/O.

``live`` sends to everyone; ``outbox`` holds every email (written to the outbox, sent
to no one); ``allowlist`` sends only to ALLOWED_RECIPIENTS and holds the copy for
everyone else, so a staging deployment can run on real data and reach only its team.
Entries are addresses (``qa@example.com``) or domains (``@example.com``, that exact
domain: subdomains need entries of their own); case does not matter, and an
international domain matches in either its Unicode or its ASCII form.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import TYPE_CHECKING

from email_worker.config.address_lists import allowed_recipients

if TYPE_CHECKING:
    from email_worker.config import Settings
    from email_worker.mime.messages import OutgoingEmail

DELIVERY_MODES = ("live", "allowlist", "outbox")


def recipient_allowed(address: str, allowed: Iterable[str]) -> bool:
    """Whether ``address`` matches an entry of ``allowed`` (an address, or ``@domain``)."""
    return allowed_recipients(tuple(allowed)).allows(address)


def split_by_mode(
    email: OutgoingEmail, settings: Settings
) -> tuple[OutgoingEmail | None, OutgoingEmail | None]:
    """The email to send now and the email to hold in the outbox; either may be None.

    In ``allowlist`` mode both have the same message bytes, each with the envelope
    narrowed to its recipients (Bcc recipients are only in the envelope, so they are
    sorted like any other).
    """
    mode = settings.delivery_mode
    if mode == "live":
        return email, None
    if mode == "outbox":
        return None, email
    if mode != "allowlist":
        raise ValueError(f"DELIVERY_MODE must be one of {', '.join(DELIVERY_MODES)}")
    allowed = allowed_recipients(tuple(settings.allowed_recipients))
    recipients = email.envelope.recipients
    live = tuple(r for r in recipients if allowed.allows(r))
    if len(live) == len(recipients):
        return email, None
    if not live:
        return None, email
    sent = set(live)
    held = tuple(r for r in recipients if r not in sent)
    return _to(email, live), _to(email, held)


def _to(email: OutgoingEmail, recipients: tuple[str, ...]) -> OutgoingEmail:
    envelope = dataclasses.replace(email.envelope, recipients=recipients)
    return dataclasses.replace(email, envelope=envelope)

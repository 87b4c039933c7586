"""The registry of email kinds: what each kind sends, on which queue, and how it retries.

Adding a kind is one :class:`Kind` entry here plus a template folder
``email_worker/templates/<template>/`` holding ``subject.txt``, ``body.html`` and
optionally ``body.txt``. The task ``send_<name>`` is made from the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MARKETING_CATEGORIES = frozenset({"marketing", "bulk"})
"""Categories that carry List-Unsubscribe and the sender's postal address, and respect
unsubscribes."""

PRIORITIES = ("high", "default", "low")
"""Queue suffixes, most urgent first."""

_PRIORITY_NAMES = {"high": "high", "normal": "default", "default": "default", "low": "low"}
# A stored job keeps its priority as the first number of its band (0-2, 3-6, 7-9).
_ROW_PRIORITY = {"high": 0, "default": 3, "low": 7}


class UnknownPriority(ValueError):
    """A priority that is neither a known name nor a number from 0 to 9."""


def queue_priority(priority: str | int) -> str:
    """Map a priority name (high, normal, low) or number (0 = most urgent .. 9) to a queue suffix.

    Numbers follow Celery's convention for the Redis transport, where 0 is the most
    urgent: 0-2 are high, 3-6 normal, 7-9 low.
    """
    if isinstance(priority, bool):
        raise UnknownPriority(f"priority must be high, normal, low or 0-9, got {priority!r}")
    if isinstance(priority, int):
        if not 0 <= priority <= 9:
            raise UnknownPriority(f"priority must be between 0 and 9, got {priority}")
        return "high" if priority <= 2 else "default" if priority <= 6 else "low"
    name = _PRIORITY_NAMES.get(str(priority).strip().lower())
    if name is None:
        raise UnknownPriority(f"priority must be high, normal, low or 0-9, got {priority!r}")
    return name


def row_priority(queue: str) -> int:
    """The number a stored job keeps for a queue suffix; :func:`queue_priority` maps it back."""
    return _ROW_PRIORITY[queue]


@dataclass(frozen=True)
class RetryPolicy:
    """How a kind retries transient failures: exponential backoff with jitter, capped."""

    max_retries: int | None = None  # None: the MAX_RETRIES setting
    base_delay: float | None = None  # None: the RETRY_DELAY setting
    max_delay: float | None = None  # None: the RETRY_BACKOFF_MAX setting


@dataclass(frozen=True)
class Kind:
    """One kind of email: its template, queue, tracking default and retry policy."""

    name: str
    template: str
    priority: str = "default"
    tracked: bool = False
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    description: str = ""
    provider: str | None = None  # None: EMAIL_KIND_PROVIDERS, else EMAIL_PROVIDER
    # transactional | security | marketing | bulk: marketing and bulk carry List-Unsubscribe
    # and respect unsubscribes; security kinds are never open/click tracked.
    category: str = "transactional"
    track_opens_clicks: bool | None = None  # None: on unless the category is security
    sample_data: Mapping[str, Any] = field(default_factory=dict)

    def retries_allowed(self, default: int) -> int:
        """How many retries a transient failure gets: the kind's own limit, else ``default``."""
        return default if self.retry.max_retries is None else self.retry.max_retries

    @property
    def task_name(self) -> str:
        """The Celery task name producers use, e.g. ``email_worker.send_welcome_email``."""
        return f"email_worker.send_{self.name}"


GENERIC = Kind(
    name="email",
    template="",
    description="Any template by template_id, or inline subject with html and/or text.",
)

KINDS: tuple[Kind, ...] = (
    Kind(
        name="email_verification",
        template="email_verification",
        priority="high",
        tracked=True,
        category="security",
        retry=RetryPolicy(max_retries=5, base_delay=2.0, max_delay=120.0),
        description="Confirm ownership of an address after sign-up or an address change.",
        sample_data={
            "user_name": "Ann Lee",
            "verification_url": "https://app.example.com/verify?token=3f9c2a",
            "expires_in_hours": 24,
        },
    ),
    Kind(
        name="password_reset",
        template="password_reset",
        priority="high",
        tracked=True,
        category="security",
        retry=RetryPolicy(max_retries=5, base_delay=2.0, max_delay=120.0),
        description="A link to choose a new password.",
        sample_data={
            "user_name": "Ann Lee",
            "reset_url": "https://app.example.com/reset?token=8d1e77",
            "expires_in_minutes": 30,
            "request_ip": "203.0.113.7",
        },
    ),
    Kind(
        name="welcome_email",
        template="welcome_email",
        priority="default",
        description="Greets a new user once the account exists.",
        sample_data={
            "user_name": "Ann Lee",
            "product_name": "Example Bookings",
            "login_url": "https://app.example.com/login",
        },
    ),
    Kind(
        name="booking_confirmation",
        template="booking_confirmation",
        priority="default",
        tracked=True,
        description="Confirms a booking with its reference, date and venue.",
        sample_data={
            "user_name": "Ann Lee",
            "booking_reference": "BK-20261127-0042",
            "event_name": "Jazz at the Riverside",
            "event_date": "Saturday 12 December 2026, 19:30",
            "venue": "Riverside Hall, 1 Quay Street",
            "seats": ["Row F, seat 11", "Row F, seat 12"],
            "total": "84.00",
            "currency": "EUR",
            "manage_url": "https://app.example.com/bookings/BK-20261127-0042",
        },
    ),
    Kind(
        name="booking_cancellation",
        template="booking_cancellation",
        priority="default",
        tracked=True,
        description="Confirms that a booking was cancelled and what is refunded.",
        sample_data={
            "user_name": "Ann Lee",
            "booking_reference": "BK-20261127-0042",
            "event_name": "Jazz at the Riverside",
            "event_date": "Saturday 12 December 2026, 19:30",
            "refund_amount": "84.00",
            "currency": "EUR",
            "reason": "Cancelled at your request",
        },
    ),
    Kind(
        name="payment_receipt",
        template="payment_receipt",
        priority="default",
        tracked=True,
        retry=RetryPolicy(max_retries=8),
        description="A receipt for a successful payment.",
        sample_data={
            "user_name": "Ann Lee",
            "receipt_number": "R-77120",
            "paid_at": "27 November 2026, 10:02 UTC",
            "items": [
                {"description": "Jazz at the Riverside, 2 seats", "amount": "80.00"},
                {"description": "Booking fee", "amount": "4.00"},
            ],
            "total": "84.00",
            "currency": "EUR",
            "payment_method": "Visa ending 4242",
        },
    ),
    Kind(
        name="payment_failed",
        template="payment_failed",
        priority="high",
        tracked=True,
        retry=RetryPolicy(max_retries=8),
        description="Tells the customer a payment did not go through and how to fix it.",
        sample_data={
            "user_name": "Ann Lee",
            "amount": "84.00",
            "currency": "EUR",
            "failure_reason": "The card was declined by the issuing bank.",
            "retry_url": "https://app.example.com/billing/retry?invoice=inv_5521",
        },
    ),
    Kind(
        name="newsletter",
        template="newsletter",
        priority="low",
        category="marketing",
        description="News and offers; carries one-click unsubscribe and respects the list.",
        sample_data={
            "user_name": "Ann Lee",
            "product_name": "Example Bookings",
            "headline": "New concerts this month",
            "intro": "Three evenings at the Riverside Hall, and early seats for members.",
            "events": [
                {"name": "Jazz at the Riverside", "url": "https://app.example.com/e/jazz"},
                {"name": "String Quartet Night", "url": "https://app.example.com/e/strings"},
            ],
        },
    ),
)

_BY_NAME: dict[str, Kind] = {kind.name: kind for kind in (GENERIC, *KINDS)}
_BY_TASK: dict[str, Kind] = {kind.task_name: kind for kind in _BY_NAME.values()}


class UnknownKind(ValueError):
    """A kind name that is not in the registry."""


def get_kind(name: str) -> Kind:
    """Return the kind registered under ``name``."""
    try:
        return _BY_NAME[name]
    except KeyError:
        known = ", ".join(sorted(_BY_NAME))
        raise UnknownKind(f"unknown kind {name!r}; known kinds: {known}") from None


def find_kind(name: str) -> Kind | None:
    """The kind registered under ``name``, or None (a generic email may carry any label)."""
    return _BY_NAME.get(name)


def kind_for_task(task_name: str) -> Kind | None:
    """Return the kind whose task is ``task_name``, or None for a task that sends no email."""
    return _BY_TASK.get(task_name)


def all_kinds() -> tuple[Kind, ...]:
    """Every registered kind, the generic one first."""
    return (GENERIC, *KINDS)


def backoff_delay(retries: int, *, base: float, cap: float, rng: Any = None) -> float:
    """Seconds before retry number ``retries + 1``: exponential, capped, with equal jitter.

    The delay doubles each time (base, 2*base, 4*base, ...) up to ``cap``; half of it
    is fixed and half random, so a burst of failures does not retry in lockstep.
    Without ``rng`` there is no jitter: the whole delay, for waits no burst shares.
    """
    ceiling = min(cap, base * (2**retries))
    if rng is None:
        return ceiling
    return ceiling / 2 + rng() * ceiling / 2

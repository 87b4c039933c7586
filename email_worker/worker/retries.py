"""Which failures a send tries again: the email tasks' ``autoretry_for`` and delivery's own.

A module of its own, so that :mod:`email_worker.tasks` declares the tasks' retry policy
without importing the delivery code, which a producer never runs.
"""

from __future__ import annotations

from celery.exceptions import SoftTimeLimitExceeded

from email_worker.errors import TransientError

# Failures worth another attempt; everything else fails the send at once.
TRANSIENT = (TransientError, SoftTimeLimitExceeded)

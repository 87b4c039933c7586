"""Writes that wait out a primary database briefly away (a restart, a failover) before giving up."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import SQLAlchemyError

# Pauses between attempts at a write before the caller is told it failed.
RECORD_PAUSES = (0.2, 0.5, 1.0, 2.0)

T = TypeVar("T")


def with_pauses(write: Callable[[], T], pauses: tuple[float, ...] = RECORD_PAUSES) -> T:
    """Run ``write``; after a database error, again after each of ``pauses``; then raise it."""
    for pause in pauses:
        try:
            return write()
        except SQLAlchemyError:
            time.sleep(pause)
    return write()

"""The suppression list as a send reads it: one answer through psycopg and through SQLAlchemy.

On PostgreSQL a worker reads the list through psycopg alone (a fast-path send loads no
SQLAlchemy); on SQLite, the quick start's database, through the database layer's session.
Asked per send (``SUPPRESSION_REFRESH=0``) or from the process's copy, either reading
stops the same recipients as the operator's view of the list.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from email_worker.db import suppressions
from email_worker.db.session import primary_session
from email_worker.policy.suppression_list import ListUnavailable, SuppressionList
from tests.support.pg import HOST
from tests.support.ports import free_port

ENTRIES = (
    ("Gone@Example.com", "hard_bounce", "all"),
    ("left@müller.com", "unsubscribe", "marketing"),
)
ASKED = ["gone@example.com", "LEFT@xn--mller-kva.com", "here@example.com"]
EVERY_KIND = {"gone@example.com"}
MARKETING_ONLY = {"gone@example.com", "left@xn--mller-kva.com"}
EXPECTED = {
    "transactional": EVERY_KIND,
    "security": EVERY_KIND,
    "marketing": MARKETING_ONLY,
    "bulk": MARKETING_ONLY,
}


def test_every_reading_of_the_list_stops_the_same_recipients(postgresql_or_sqlite: str) -> None:
    with primary_session() as session:
        for address, reason, scope in ENTRIES:
            suppressions.add_suppression(session, address, reason, scope, "test")
    for category, stopped in EXPECTED.items():
        with primary_session() as session:
            assert suppressions.is_suppressed(session, ASKED, category) == stopped, category
        assert SuppressionList(refresh=0).blocked(ASKED, category) == stopped, category
        assert SuppressionList(refresh=60).blocked(ASKED, category) == stopped, category
    assert SuppressionList(refresh=0).blocked([], "marketing") == set()


def test_a_primary_that_cannot_be_reached_is_named_by_the_error_alone(
    point_at: Callable[..., None], database: str
) -> None:
    point_at(f"postgresql+psycopg://postgres@{HOST}:{free_port()}/{database}")
    for refresh in (0, 60):
        with pytest.raises(ListUnavailable, match=r"^DatabaseUnreachable$"):
            SuppressionList(refresh=refresh).blocked(["ann@example.com"], "marketing")

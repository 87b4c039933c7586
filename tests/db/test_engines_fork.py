"""A forked child never talks over its parent's pooled database connections."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from multiprocessing.queues import Queue
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from email_worker.config import Settings
from email_worker.db.engines import create_engine_for, primary_url

BACKEND = text("SELECT pg_backend_pid()")


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    """An engine of the service's own making, with one connection in its pool."""
    made = create_engine_for(primary_url(settings), settings)
    yield made
    made.dispose()


def backend(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(BACKEND).scalar_one())


def child_backend(engine: Engine, results: Queue[Any]) -> None:
    try:
        results.put(backend(engine))
    except Exception as exc:  # reported to the parent, which fails the test
        results.put(repr(exc))


def test_a_forked_child_connects_on_its_own_and_the_parent_keeps_its_connection(
    engine: Engine,
) -> None:
    parent = backend(engine)  # the connection now waits in the pool
    fork = multiprocessing.get_context("fork")
    results: Queue[Any] = fork.Queue()
    child = fork.Process(target=child_backend, args=(engine, results))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == 0
    in_child = results.get(timeout=5)
    assert isinstance(in_child, int), in_child
    assert in_child != parent
    # The parent's pooled connection was neither used nor closed by the child.
    assert backend(engine) == parent

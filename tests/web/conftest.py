"""Fixtures of the console's tests: signed-in clients, and sign-in limits forgotten."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis
from fastapi.testclient import TestClient

from tests.support.console import forget_sign_in_attempts, make_user, sign_in
from tests.support.web import web_app


@pytest.fixture
def fresh_sign_in_limits(redis_client: redis.Redis) -> Iterator[None]:
    """No sign-in attempt of an earlier test counts against this one (every test client
    signs in from one address), and none of this test's against the next."""
    forget_sign_in_attempts(redis_client)
    yield
    forget_sign_in_attempts(redis_client)


@pytest.fixture
def support(client: TestClient, fresh_sign_in_limits: None) -> TestClient:
    """The test client, signed in as a support user."""
    make_user("sam", "support")
    sign_in(client, "sam")
    return client


@pytest.fixture
def viewer(support: TestClient) -> Iterator[TestClient]:
    """A second client, signed in as a viewer."""
    make_user("vic", "viewer")
    with TestClient(web_app()) as other:
        sign_in(other, "vic")
        yield other

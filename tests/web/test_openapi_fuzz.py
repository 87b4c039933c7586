"""No request the API's own OpenAPI document allows, or nearly allows, makes a server error."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import purge_queues
from tests.web.test_api import web_app

schema = schemathesis.openapi.from_asgi("/openapi.json", web_app()).include(path_regex="^/v1/")


@pytest.fixture
def key(clean_tables: None, redis_client: redis.Redis) -> Iterator[str]:
    from email_worker.db.api_keys import create_api_key

    purge_queues(redis_client)
    # With every scope, so the admin endpoints are reached too, not only refused.
    yield create_api_key("fuzzer", ("send", "read", "admin"))[1]
    purge_queues(redis_client)


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_a_server_error(case: schemathesis.Case, key: str) -> None:
    if case.headers and "Idempotency-Key" in case.headers:
        # A fresh key each time, or nearly every body would be a repeat with another body.
        case.headers["Idempotency-Key"] += f"-{uuid.uuid4()}"
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=[not_a_server_error])

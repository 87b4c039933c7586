"""No request the API's own OpenAPI document allows, or nearly allows, makes a server error."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from tests.conftest import purge_queues
from tests.support.web import web_app

schema = schemathesis.openapi.from_asgi("/openapi.json", web_app()).include(path_regex="^/v1/")


# A key of each scope (refusals too must not be server errors), one with every scope so
# every endpoint is reached, and a test key narrowed to a kind and a sender, with a rate.
KEYS: dict[str, dict[str, Any]] = {
    **{scope: {"scopes": (scope,)} for scope in ("send", "read", "read_all", "admin")},
    "every scope": {"scopes": ("send", "read", "read_all", "admin")},
    "narrowed test key": {
        "scopes": ("send", "read"),
        "kinds": ("invoice",),
        "senders": ("noreply@mail.example.com",),
        "rate": (1000, 1),
        "test": True,
    },
}


@pytest.fixture(params=list(KEYS))
def key(
    request: pytest.FixtureRequest, clean_tables: None, redis_client: redis.Redis
) -> Iterator[str]:
    from email_worker.db.api_keys import Rate, create_api_key

    rules = dict(KEYS[request.param])
    scopes = rules.pop("scopes")
    if "rate" in rules:
        rules["rate"] = Rate(*rules["rate"])
    purge_queues(redis_client)
    yield create_api_key("fuzzer", scopes, **rules)[1]
    purge_queues(redis_client)


@schema.parametrize()
@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_request_makes_a_server_error(case: schemathesis.Case, key: str) -> None:
    if case.headers and "Idempotency-Key" in case.headers:
        # A fresh key each time, or nearly every body would be a repeat with another body.
        case.headers["Idempotency-Key"] += f"-{uuid.uuid4()}"
    case.call_and_validate(headers={"Authorization": f"Bearer {key}"}, checks=[not_a_server_error])

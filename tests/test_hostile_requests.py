"""Hostile input to the producer is refused with an error naming the field; nothing is queued.

No worker runs in this module: what a test publishes would stay in Redis.
"""

from __future__ import annotations

from typing import Any

import pytest

from email_worker.errors import InvalidEmailRequest
from tests.conftest import purge_queues, queue_length


@pytest.fixture(autouse=True)
def empty_queues(redis_client, celery_app):  # type: ignore[no-untyped-def]
    purge_queues(redis_client)
    yield
    purge_queues(redis_client)


def nested(levels: int) -> dict[str, Any]:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


INLINE = {"to": "ann@example.com", "subject": "Hi", "text": "x"}
TEMPLATE = {"to": "ann@example.com", "template_id": "generic_notice"}
NOTICE = {"title": "Hi", "message": "m"}


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({**INLINE, "subject": "x \ud800 y"}, "subject"),
        ({**INLINE, "html": "x \ud800 y"}, "html"),
        ({**INLINE, "text": "x \ud800 y"}, "text"),
        ({**INLINE, "from_name": "x \ud800 y"}, "from_name"),
        ({**INLINE, "headers": {"X-Ref": "x \ud800 y"}}, "headers.X-Ref"),
        ({**INLINE, "metadata": {"ref": "x \ud800 y"}}, "metadata"),
        ({**INLINE, "metadata": {"x \ud800 y": "ref"}}, "metadata"),
        ({**INLINE, "tracked": True, "metadata": {"ref": "x \ud800 y"}}, "metadata"),
        ({**TEMPLATE, "data": {**NOTICE, "message": "x \ud800 y"}}, "data"),
        ({**TEMPLATE, "data": {**NOTICE, "x\ud800": "y"}}, "data"),
        ({**TEMPLATE, "tracked": True, "data": {**NOTICE, "message": "x \ud800 y"}}, "data"),
        ({**TEMPLATE, "data": {**NOTICE, "deep": nested(480)}}, "data"),
        ({**TEMPLATE, "data": {**NOTICE, "deep": nested(100_000)}}, "data"),
        ({**TEMPLATE, "tracked": True, "data": {**NOTICE, "deep": nested(100_000)}}, "data"),
        ({**INLINE, "subject": "a\x1bb"}, "subject"),
        ({**INLINE, "data": NOTICE}, "data"),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_hostile_input_is_refused_in_the_producer(redis_client, kwargs: dict, field: str) -> None:  # type: ignore[no-untyped-def]
    from email_worker.tasks import send_email

    with pytest.raises(InvalidEmailRequest) as caught:
        send_email.apply_async(kwargs=kwargs)
    assert caught.value.field == field
    str(caught.value).encode("utf-8")  # the error itself can be printed and logged
    assert sum(queue_length(redis_client, p) for p in ("high", "default", "low")) == 0

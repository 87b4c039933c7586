"""Messages as a producer that does not use this package publishes them, hostile ones too."""

from __future__ import annotations

import json
import uuid
from typing import Any

from celery import Celery


def foreign_app() -> Celery:
    """A plain Celery app on the same broker: a producer that does not use this package."""
    return Celery("another-service", broker="redis://127.0.0.1:6379/0", set_as_current=False)


def publish_raw(
    app: Celery,
    queue: str,
    body: str,
    *,
    task: str = "email_worker.send_email",
    content_type: str = "application/json",
    **headers: Any,
) -> str:
    """Publish a Celery protocol-2 message whose body is given as already serialised."""
    task_id = str(uuid.uuid4())
    declared = app.amqp.queues[queue]
    with app.producer_or_acquire() as producer:
        producer.publish(
            body,
            exchange=declared.exchange,
            routing_key=declared.routing_key,
            declare=[declared],
            content_type=content_type,
            content_encoding="utf-8",
            headers={"lang": "py", "task": task, "id": task_id, "root_id": task_id, **headers},
        )
    return task_id


def nested(depth: int, leaf: Any = "x") -> Any:
    """A value nested ``depth`` lists deep."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def too_deep_to_decode(depth: int, kwargs: dict[str, Any]) -> str:
    """A task body whose ``data`` is nested deeper than a JSON decoder can follow."""
    data = '{"value": ' + "[" * depth + "]" * depth + "}"
    return "[[], " + json.dumps(kwargs)[:-1] + f', "data": {data}}}, {{}}]'

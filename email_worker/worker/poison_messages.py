"""Messages whose execution kills worker processes: counted, then set aside.

A worker's main process counts each start of a message (by task id) and forgets it
once the message is acknowledged or dropped. A count that outlives the message means
a worker process died with it in hand: killed, out of memory, or crashed. After
:data:`MAX_WORKER_LOSSES` such deaths the next delivery goes to the dead-letter queue
``<QUEUE_NAME>.dead-letter``, which no worker consumes.

With a Redis broker the counts live in that Redis, so they survive the death of a
worker's main process and are shared by every worker. With any other broker they are
kept in the main process: deaths of pool processes are counted, a main process that
dies forgets its counts, and each worker counts on its own.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import redis
from celery import Celery
from kombu import Exchange, Queue
from kombu.message import Message

from email_worker.config import get_settings
from email_worker.redis_client import is_redis_url, redis_client

log = logging.getLogger(__name__)

MAX_WORKER_LOSSES = 3  # deaths of a worker process with one message before it is set aside
_REDIS_TIMEOUT = 5.0


class LossCounter(Protocol):
    """Starts of a message not yet followed by its acknowledgement, by task id."""

    def count(self, task_id: str) -> int:
        """Starts so far that did not finish."""

    def add(self, task_id: str) -> None:
        """Note one more start."""

    def clear(self, task_id: str) -> None:
        """Forget the message: it finished, or it was set aside."""


class RedisLossCounter:
    """Counts kept in the broker's Redis, expiring well after any redelivery."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: int) -> None:
        self._client, self._prefix, self._ttl = client, prefix, ttl

    def key(self, task_id: str) -> str:
        """The Redis key of one message's count."""
        return f"{self._prefix}.worker-losses.{task_id}"

    def count(self, task_id: str) -> int:
        """Starts so far that did not finish."""
        return int(self._client.get(self.key(task_id)) or 0)

    def add(self, task_id: str) -> None:
        """Note one more start."""
        with self._client.pipeline() as pipe:
            pipe.incr(self.key(task_id))
            pipe.expire(self.key(task_id), self._ttl)
            pipe.execute()

    def clear(self, task_id: str) -> None:
        """Forget the message."""
        self._client.delete(self.key(task_id))


class MemoryLossCounter:
    """Counts kept in the worker's main process, for brokers other than Redis."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def count(self, task_id: str) -> int:
        """Starts so far that did not finish."""
        return self._counts.get(task_id, 0)

    def add(self, task_id: str) -> None:
        """Note one more start."""
        self._counts[task_id] = self._counts.get(task_id, 0) + 1

    def clear(self, task_id: str) -> None:
        """Forget the message."""
        self._counts.pop(task_id, None)


_counter: LossCounter | None = None


def loss_counter(app: Celery) -> LossCounter:
    """This process's counter: in the broker's Redis when the broker is Redis."""
    global _counter
    if _counter is None:
        url = app.conf.broker_write_url or app.conf.broker_url or ""
        if is_redis_url(url):
            settings = get_settings()
            client = redis_client(url, timeout=_REDIS_TIMEOUT, settings=settings)
            # A message can come back after a visibility timeout per death of a main process.
            ttl = int(max(24 * 3600, 4 * settings.visibility_timeout))
            _counter = RedisLossCounter(client, settings.queue_name, ttl)
        else:
            _counter = MemoryLossCounter()
    return _counter


def dead_letter_queue() -> Queue:
    """``<QUEUE_NAME>.dead-letter``: where set-aside messages wait for an operator."""
    name = f"{get_settings().queue_name}.dead-letter"
    return Queue(name, Exchange(name, type="direct"), routing_key=name)


def publish_dead_letter(app: Celery, message: Message) -> str:
    """Publish a message to the dead-letter queue, body and headers as received."""
    queue = dead_letter_queue()
    options: dict[str, Any] = {
        "exchange": queue.exchange,
        "routing_key": queue.routing_key,
        "declare": [queue],
        "headers": dict(message.headers or {}),
        "content_type": message.content_type,
        "content_encoding": message.content_encoding,
        "retry": True,
        "retry_policy": {"max_retries": 3},
    }
    with app.producer_or_acquire() as producer:
        producer.publish(message.body, **options)
    return str(queue.name)

"""The Redis transport of the app: one client per channel, and it still reads as Redis."""

from __future__ import annotations

from celery import Celery
from kombu.transport import redis

from email_worker.celeryapp.app import app
from email_worker.celeryapp.redis_transport import Transport


def test_the_apps_connection_reads_as_redis_and_its_channel_keeps_one_client() -> None:
    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)
        assert connection.as_uri().startswith("redis://")  # what Flower and the banner parse
        assert connection.info()["transport"] == "redis"
        channel = connection.default_channel
        client = channel._create_client()
        assert channel._create_client() is client
        for _ in range(3):
            channel._put("email-worker-transport-test", {"body": "x", "properties": {}})
        assert client.llen("email-worker-transport-test") == 3
        client.delete("email-worker-transport-test")


def test_a_host_apps_connection_keeps_kombus_own_transport() -> None:
    host = Celery("host-service", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    with host.connection_for_write() as connection:
        assert type(connection.transport) is redis.Transport
        channel = connection.default_channel
        assert channel._create_client() is not channel._create_client()

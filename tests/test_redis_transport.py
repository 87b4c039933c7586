"""The Redis transport of the app: one client per channel, and it still reads as Redis."""

from __future__ import annotations

import gc
import multiprocessing
import weakref
from multiprocessing.connection import Connection as Pipe

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
        with channel.conn_or_acquire() as client, channel.conn_or_acquire() as again:
            assert again is client
        for _ in range(3):
            channel._put("email-worker-transport-test", {"body": "x", "properties": {}})
        assert client.llen("email-worker-transport-test") == 3
        client.delete("email-worker-transport-test")


def test_a_host_apps_connection_keeps_kombus_own_transport() -> None:
    host = Celery("host-service", broker="redis://127.0.0.1:6379/0", set_as_current=False)
    with host.connection_for_write() as connection:
        assert type(connection.transport) is redis.Transport
        channel = connection.default_channel
        with channel.conn_or_acquire() as client, channel.conn_or_acquire() as again:
            assert again is not client


def _report_child_connection(channel: redis.Channel, parent_id: int, pipe: Pipe) -> None:
    with channel.conn_or_acquire() as client:
        pipe.send((client.client_id() != parent_id, client.connection_pool is channel.pool))


def test_a_forked_child_sends_on_sockets_of_its_own() -> None:
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as client:
            parent_id = client.client_id()
        receiving, sending = multiprocessing.Pipe(duplex=False)
        # A forked process, as Celery's prefork pool starts its children.
        child = multiprocessing.get_context("fork").Process(
            target=_report_child_connection, args=(channel, parent_id, sending)
        )
        child.start()
        own_connection, on_the_channels_pool = receiving.recv()
        child.join(30)
        assert child.exitcode == 0
        assert own_connection and on_the_channels_pool
        with channel.conn_or_acquire() as still:
            assert still is client and still.client_id() == parent_id


def test_a_closed_channel_releases_its_client_and_connection() -> None:
    with app.connection_for_write() as watching, app.connection_for_write() as connection:
        channel = connection.default_channel
        with channel.conn_or_acquire() as client:
            client_id = str(client.client_id())
        released = weakref.ref(client)
        del client
        with watching.default_channel.conn_or_acquire() as observer:
            assert client_id in {entry["id"] for entry in observer.client_list()}
            channel.close()
            gc.collect()
            assert released() is None
            assert client_id not in {entry["id"] for entry in observer.client_list()}

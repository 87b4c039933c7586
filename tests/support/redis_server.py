"""A private ``redis-server`` a test starts, stops, fills and empties, on a free port.

Fault tests break this one, never the shared server on 6379 that other tests use.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.support.ports import free_port
from tests.support.waiting import wait_for

REDIS_SERVER = "redis-server"
FILL_KEY = "test-ballast"


class RedisServer:
    """One ``redis-server`` process on ``port``, its files in ``folder``; no persistence."""

    def __init__(
        self, folder: Path, port: int | None = None, *, maxmemory: str | None = None
    ) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """``redis://`` URL of database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        """A client with short timeouts: the server may be stopped or full."""
        return redis.Redis(port=self.port, socket_timeout=5, socket_connect_timeout=2)

    def start(self) -> RedisServer:
        """Start the server (again, after :meth:`kill`) and wait until it answers."""
        arguments = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1"]
        arguments += ["--save", "", "--appendonly", "no", "--dir", str(self.folder)]
        if self.maxmemory:
            arguments += ["--maxmemory", self.maxmemory, "--maxmemory-policy", "noeviction"]
        self.process = subprocess.Popen(
            arguments,
            stdout=(self.folder / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(self._answers, f"redis-server on port {self.port}")
        return self

    def _answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            return bool(self.client().ping())

    def kill(self) -> None:
        """SIGKILL the server: its data goes with it (nothing is saved)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def fill(self) -> int:
        """Write ballast until Redis is at ``maxmemory`` and refuses every write.

        A refused write frees its own buffer, which would leave room for a small message
        now and then; so once the ballast is refused, ``maxmemory`` is set a little below
        what Redis uses. Returns how many bytes of ballast were stored.
        """
        client = self.client()
        stored = 0
        value = b"x" * 64 * 1024
        for index in range(100_000):
            try:
                client.set(f"{FILL_KEY}:{index}", value)
            except redis.exceptions.OutOfMemoryError:
                break
            stored += len(value)
        else:
            raise AssertionError("Redis never refused a write: is maxmemory set?")
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory", used - 256 * 1024)
        return stored

    def make_room(self) -> None:
        """Delete the ballast :meth:`fill` wrote (DEL is allowed when memory is full)."""
        client = self.client()
        keys = list(client.scan_iter(f"{FILL_KEY}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        if self.maxmemory:
            client.config_set("maxmemory", self.maxmemory)


@contextlib.contextmanager
def private_redis(folder: Path, *, maxmemory: str | None = None) -> Iterator[RedisServer]:
    """A private server for the length of a block, killed however the block ends."""
    server = RedisServer(folder, maxmemory=maxmemory).start()
    try:
        yield server
    finally:
        server.kill()

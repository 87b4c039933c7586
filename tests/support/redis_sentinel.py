"""A Redis master, its replica and three Sentinels: real ``redis-server`` processes of a test.

Quorum 2, a master is judged down after ``down_after_ms`` without an answer, and no
persistence (a restarted server starts empty, as the test expects nothing of disk).
Every process has a process group of its own and is killed when the set is stopped.
"""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import redis

from tests.support.ports import free_port
from tests.support.waiting import wait_for

REDIS_SERVER = "/usr/bin/redis-server"
MASTER_NAME = "mymaster"


class RedisProcess:
    """One ``redis-server`` (a data server or a Sentinel) with its configuration file."""

    def __init__(
        self, folder: Path, name: str, lines: list[str], *, sentinel: bool, password: str = ""
    ) -> None:
        self.name = name
        self.password = password
        self.port = free_port()
        self.folder = folder / name
        self.folder.mkdir(parents=True)
        self.conf = self.folder / ("sentinel.conf" if sentinel else "redis.conf")
        # Sentinel rewrites its file (the master it follows, the peers it found).
        self.conf.write_text(
            "\n".join(
                [
                    "bind 127.0.0.1",
                    f"port {self.port}",
                    f'dir "{self.folder}"',
                    f'logfile "{self.folder / "log"}"',
                    *lines,
                ]
            )
            + "\n"
        )
        self.sentinel = sentinel
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        args = [REDIS_SERVER, str(self.conf), *(["--sentinel"] if self.sentinel else [])]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        wait_for(self.answers, f"{self.name} to answer", timeout=10, log=self.folder / "log")

    def client(self, timeout: float = 2.0) -> redis.Redis:
        return redis.Redis(
            port=self.port,
            password=self.password or None,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    def answers(self) -> bool:
        with self.client() as client:
            try:
                return bool(client.ping())
            except redis.RedisError:
                return False

    def kill(self) -> None:
        """SIGKILL, at once, as a crashed machine."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def log(self) -> str:
        path = self.folder / "log"
        return path.read_text(errors="replace") if path.exists() else ""


class SentinelSet:
    """A master, its replica and three Sentinels monitoring them as :data:`MASTER_NAME`."""

    def __init__(
        self,
        folder: Path,
        *,
        down_after_ms: int = 1000,
        password: str = "",
        sentinel_password: str = "",
    ) -> None:
        """``password``: the master's and replica's (``requirepass``); ``sentinel_password``:
        the Sentinels' own."""
        self.password = password
        self.sentinel_password = sentinel_password
        data = ["save ''", "appendonly no", "repl-diskless-sync no"]
        if password:
            data += [f"requirepass {password}", f"masterauth {password}"]
        self.master = RedisProcess(folder, "master", data, sentinel=False, password=password)
        self.replica = RedisProcess(
            folder,
            "replica",
            [*data, f"replicaof 127.0.0.1 {self.master.port}"],
            sentinel=False,
            password=password,
        )
        monitor = [
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master.port} 2",
            f"sentinel down-after-milliseconds {MASTER_NAME} {down_after_ms}",
            f"sentinel failover-timeout {MASTER_NAME} {max(3 * down_after_ms, 3000)}",
            f"sentinel parallel-syncs {MASTER_NAME} 1",
        ]
        if password:
            monitor.append(f"sentinel auth-pass {MASTER_NAME} {password}")
        if sentinel_password:
            monitor += [
                f"requirepass {sentinel_password}",
                f"sentinel sentinel-pass {sentinel_password}",
            ]
        self.sentinels = [
            RedisProcess(folder, f"sentinel{i}", monitor, sentinel=True, password=sentinel_password)
            for i in range(3)
        ]
        self.servers = [self.master, self.replica]

    @property
    def broker_url(self) -> str:
        """``sentinel://[:password@]...;sentinel://.../0``: Celery's and kombu's form."""
        auth = f":{self.password}@" if self.password else ""
        return ";".join(f"sentinel://{auth}{s.address}" for s in self.sentinels) + "/0"

    @property
    def env(self) -> dict[str, str]:
        """Settings of a worker, beat or producer on this set."""
        return {
            "BROKER_URL": self.broker_url,
            "REDIS_SENTINEL_MASTER": MASTER_NAME,
            "REDIS_SENTINEL_PASSWORD": self.sentinel_password,
        }

    def start(self) -> None:
        for server in (*self.servers, *self.sentinels):
            server.start()
        wait_for(self._replica_in_sync, "the replica to sync", timeout=20)
        wait_for(self._sentinels_agree, "the Sentinels to find each other", timeout=20)

    def stop(self) -> None:
        for server in (*self.sentinels, *self.servers):
            server.kill()

    def master_address(self) -> tuple[str, int] | None:
        """The master the Sentinels name, from the first that answers."""
        for sentinel in self.sentinels:
            if sentinel.process is None or sentinel.process.poll() is not None:
                continue
            with sentinel.client() as client:
                try:
                    host, port = client.sentinel_get_master_addr_by_name(MASTER_NAME)
                except redis.RedisError:
                    continue
                return host.decode() if isinstance(host, bytes) else str(host), int(port)
        return None

    def current_master(self) -> RedisProcess:
        address = self.master_address()
        return next(s for s in self.servers if address == ("127.0.0.1", s.port))

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica while the master runs."""
        with self.sentinels[0].client() as client:
            client.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)

    def wait_for_new_master(self, old: RedisProcess, timeout: float = 30.0) -> RedisProcess:
        """The server the Sentinels name once they stopped naming ``old``, answering as master."""

        def promoted() -> RedisProcess | None:
            address = self.master_address()
            if address is None or address == ("127.0.0.1", old.port):
                return None
            new = next(s for s in self.servers if address == ("127.0.0.1", s.port))
            with new.client() as client:
                return new if client.info("replication")["role"] == "master" else None

        return wait_for(promoted, "the Sentinels to name a new master", timeout=timeout)

    def _replica_in_sync(self) -> bool:
        with self.replica.client() as client:
            info = client.info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            with sentinel.client() as client:
                state = client.sentinel_master(MASTER_NAME)
            if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                return False
        return True


@contextmanager
def sentinel_set(folder: Path, **options: Any) -> Iterator[SentinelSet]:
    """A started :class:`SentinelSet` (``options`` as it takes), killed however the block
    ends."""
    servers = SentinelSet(folder, **options)
    try:
        servers.start()
        yield servers
    finally:
        servers.stop()

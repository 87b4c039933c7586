"""A private PostgreSQL primary and streaming standby that a test may crash and promote.

The shared servers (5432/5433) must never be stopped or promoted: other tests use them at
the same time. :func:`private_pair` makes a cluster of its own in a temporary directory
with ``initdb``, clones a standby from it with ``pg_basebackup -R``, starts both with
``pg_ctl`` on free ports (their Unix sockets in the same directory), and stops both however
the block ends. The binaries run as the ``postgres`` user when the tests run as root.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.support.ports import free_port
from tests.support.waiting import wait_for

HOST = "127.0.0.1"
PG_BIN = Path("/usr/lib/postgresql/15/bin")
# Fast and small: a test's cluster holds a few hundred rows and dies with the test.
SERVER_OPTIONS = (
    "fsync=off",
    "full_page_writes=off",
    "wal_level=replica",
    "max_wal_senders=4",
    "wal_keep_size=64MB",
    "shared_buffers=16MB",
    "max_connections=60",
    "hot_standby=on",
    "wal_receiver_status_interval=1s",
    "wal_retrieve_retry_interval=500ms",
)


def _as_postgres(command: list[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _run(*command: str, timeout: float = 60) -> None:
    result = subprocess.run(
        _as_postgres(list(command)), capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
        )


@dataclass
class PgServer:
    """One private PostgreSQL server: its data directory, port and log."""

    data: Path
    port: int
    sockets: Path
    options: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """``host:port`` as the service reports it."""
        return f"{HOST}:{self.port}"

    @property
    def log(self) -> Path:
        return self.data.parent / f"{self.data.name}.log"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        settings = [
            f"port={self.port}",
            f"listen_addresses={HOST}",
            f"unix_socket_directories={self.sockets}",
            *SERVER_OPTIONS,
            *self.options,
        ]
        flags = " ".join(f"-c {setting}" for setting in settings)
        _run(
            str(PG_BIN / "pg_ctl"),
            *("-D", str(self.data), "-l", str(self.log), "-o", flags, "-w", "-t", "60", "start"),
            timeout=90,
        )

    def crash(self) -> None:
        """Stop at once, as a crash does: no checkpoint, clients cut off."""
        _run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop")

    def stop(self) -> None:
        """Stop if still running; never fails (for clean-up)."""
        with suppress(Exception):
            _run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def promote(self) -> None:
        """Promote a standby and wait until it takes writes."""
        _run(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60", "promote")

    def connect(self, database: str = "postgres") -> psycopg.Connection:
        """A new autocommit connection as the superuser."""
        return psycopg.connect(
            host=HOST,
            port=self.port,
            user="postgres",
            dbname=database,
            autocommit=True,
            connect_timeout=3,
        )

    def in_recovery(self) -> bool:
        with self.connect() as connection:
            row = connection.execute("SELECT pg_is_in_recovery()").fetchone()
            return bool(row and row[0])

    def url(self, database: str) -> str:
        """A SQLAlchemy URL of ``database`` on this server alone."""
        return f"postgresql+psycopg://postgres@{HOST}:{self.port}/{database}"


@dataclass
class PgPair:
    """A private primary and its streaming standby."""

    primary: PgServer
    standby: PgServer

    def create_database(self, name: str) -> None:
        """Create ``name`` on the primary and wait until the standby has it."""
        with self.primary.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"')

        def on_standby() -> bool:
            try:
                with self.standby.connect(name):
                    return True
            except psycopg.OperationalError:
                return False

        wait_for(on_standby, f"{name} on the private standby", timeout=30)


def _writable_directory() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="email-worker-pg-"))
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    return folder


@contextmanager
def private_pair(*, synchronous: bool = True) -> Iterator[PgPair]:
    """A primary and a standby of their own, stopped and deleted after the block.

    With ``synchronous`` the primary confirms a commit only once the standby has it on
    disk (``synchronous_standby_names``), so promoting the standby loses no commit.
    """
    folder = _writable_directory()
    sockets = folder / "sockets"
    primary_options = ("synchronous_standby_names='*'",) if synchronous else ()
    primary = PgServer(folder / "primary", free_port(), sockets, primary_options)
    standby = PgServer(folder / "standby", free_port(), sockets)
    try:
        _run("mkdir", "-p", str(sockets))
        _run(
            str(PG_BIN / "initdb"),
            *("-D", str(primary.data), "-U", "postgres", "--auth=trust", "--no-sync"),
            "--encoding=UTF8",
        )
        primary.start()
        _run(
            str(PG_BIN / "pg_basebackup"),
            *("-h", HOST, "-p", str(primary.port), "-U", "postgres"),
            *("-D", str(standby.data), "-R", "-X", "stream", "--no-sync"),
            timeout=120,
        )
        standby.start()
        wait_for(standby.in_recovery, "the private standby to stream", timeout=30)
        yield PgPair(primary, standby)
    finally:
        standby.stop()
        primary.stop()
        shutil.rmtree(folder, ignore_errors=True)

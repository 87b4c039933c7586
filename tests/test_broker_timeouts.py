"""A broker that accepts connections and never answers fails a producer's call, not hangs it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator

import pytest

from tests.support.paths import ROOT


@pytest.fixture
def black_hole() -> Iterator[int]:
    """A TCP port that accepts every connection and never sends a byte back."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                connection, _ = listener.accept()
            except OSError:
                return
            held.append(connection)

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for connection in held:
        connection.close()


@pytest.mark.parametrize(
    ("timeout", "bound"),
    [(None, 15.0), ("1s", 4.0)],
    ids=["default BROKER_TIMEOUT", "BROKER_TIMEOUT=1s"],
)
def test_a_publish_to_a_silent_redis_fails_within_seconds(
    black_hole: int, timeout: str | None, bound: float
) -> None:
    code = """
        import time
        from email_worker.tasks import send_welcome_email
        started = time.monotonic()
        try:
            send_welcome_email.apply_async(kwargs={
                "to": "ann@example.com",
                "data": {"user_name": "Ann", "product_name": "Example Bookings",
                         "login_url": "https://app.example.com/login"},
            })
        except Exception as exc:
            print(f"{time.monotonic() - started:.1f} {type(exc).__name__}: {exc}")
    """
    env = {**os.environ, "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(black_hole)}
    env["BROKER_TIMEOUT"] = timeout or ""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,  # without broker timeouts the call never returns
    )
    assert done.returncode == 0, done.stderr
    seconds, error = done.stdout.strip().split(" ", 1)
    assert float(seconds) < bound
    # redis-py names the socket ("socket" before 8.2, its address since).
    assert re.fullmatch(r"OperationalError: Timeout reading from (socket|127\.0\.0\.1:\d+)", error)

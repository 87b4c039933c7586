"""The web app as ``email-worker web`` serves it: in process, or as a process of its own."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi import FastAPI

from tests.support.ports import free_port
from tests.support.processes import start_python, stop


def web_app() -> FastAPI:
    """The app as ``email-worker web`` serves it."""
    from email_worker.web.app import create_app

    return create_app()


@contextmanager
def web_process(log: Path, **env: str) -> Iterator[str]:
    """``email-worker web`` on a free port; yields its base URL once it answers."""
    port = free_port()
    process = start_python(
        *("-m", "email_worker.cli", "web", "--host", "127.0.0.1"),
        log=log,
        env={"WEB_PORT": str(port), "LOG_LEVEL": "info", **env},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            try:
                httpx.get(f"{url}/openapi.json", timeout=1)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield url
    finally:
        stop(process, timeout=20)

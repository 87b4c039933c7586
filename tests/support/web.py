"""The web app as ``email-worker web`` serves it, for tests that call it in process."""

from __future__ import annotations

from fastapi import FastAPI


def web_app() -> FastAPI:
    """The app as ``email-worker web`` serves it."""
    from email_worker.web.app import create_app

    return create_app()

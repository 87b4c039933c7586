"""The request class of every email task: what the worker does with a message before and around a send."""

from __future__ import annotations

from celery.worker.request import Request


class EmailTaskRequest(Request):  # type: ignore[misc]
    """A Celery request for an email task."""

"""The Overview page: queues, recent sends and failures, providers, bulk sends."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from email_worker.web.console.accounts import ConsoleUser, Viewer
from email_worker.web.console.pages import render

router = APIRouter()


@router.get("/overview")
def overview(request: Request, user: ConsoleUser = Viewer) -> HTMLResponse:
    """The overview of the service."""
    return render(request, "overview.html", {}, user)

"""The Emails pages: search, and one job's page with its timeline and message."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from email_worker.web.console.accounts import ConsoleUser, Viewer
from email_worker.web.console.pages import render

router = APIRouter()


@router.get("/emails")
def email_search(request: Request, user: ConsoleUser = Viewer) -> HTMLResponse:
    """The search form and its results."""
    return render(request, "emails.html", {"jobs": []}, user)

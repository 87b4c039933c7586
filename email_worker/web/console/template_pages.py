"""The Templates pages: the built-in and stored templates, a preview, a test send."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from email_worker.web.console.accounts import ConsoleUser, Viewer
from email_worker.web.console.pages import render

router = APIRouter()


@router.get("/templates")
def template_list(request: Request, user: ConsoleUser = Viewer) -> HTMLResponse:
    """The list of templates."""
    return render(request, "template_list.html", {}, user)

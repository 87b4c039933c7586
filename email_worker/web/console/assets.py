"""The console's one stylesheet, served from the package (no build step, no CDN)."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import Response

from email_worker.web.console.pages import secure

router = APIRouter()

_STYLESHEET = files("email_worker.web.console").joinpath("static", "console.css")


@router.get("/static/console.css")
def stylesheet() -> Response:
    """The stylesheet every page links to."""
    response = Response(_STYLESHEET.read_bytes(), media_type="text/css")
    secure(response)
    response.headers["Cache-Control"] = "public, max-age=3600"
    return response

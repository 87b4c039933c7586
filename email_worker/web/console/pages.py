"""Rendering a console page: one Jinja2 environment, the layout's context, the headers.

Every page goes through :func:`render`, which adds the signed-in user, the CSRF token
the forms carry and the navigation, and sets the security headers: a Content Security
Policy that allows no inline script and no framing of the console, ``nosniff``, no
referrer and no caching (the pages show personal data).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jinja2
from fastapi import Request
from fastapi.responses import HTMLResponse, Response

if TYPE_CHECKING:
    from email_worker.web.console.identity import ConsoleUser

PREFIX = "/console"

# Each page of the navigation, and the lowest role that may open it.
NAV: tuple[tuple[str, str, str], ...] = (
    ("Emails", f"{PREFIX}/emails", "viewer"),
    ("Suppressions", f"{PREFIX}/suppressions", "viewer"),
    ("Templates", f"{PREFIX}/templates", "viewer"),
    ("Overview", f"{PREFIX}/overview", "viewer"),
    ("Audit", f"{PREFIX}/audit", "support"),
    ("Users", f"{PREFIX}/users", "admin"),
    ("API keys", f"{PREFIX}/api-keys", "admin"),
)

# Scripts and styles only from the console itself, never inline; the message frame is
# served by the console (sandboxed, with its own stricter policy).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; "
    "object-src 'none'"
)

SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
}

environment = jinja2.Environment(
    loader=jinja2.PackageLoader("email_worker.web.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def shown_time(moment: dt.datetime | None) -> str:
    """A stored time (naive UTC) as pages show it."""
    return "" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S} UTC"


environment.filters["when"] = shown_time


def secure(response: Response, headers: Mapping[str, str] = SECURITY_HEADERS) -> Response:
    """``response`` with the console's security headers."""
    for name, value in headers.items():
        response.headers[name] = value
    return response


def render(
    request: Request,
    template_name: str,
    context: Mapping[str, Any],
    user: ConsoleUser | None,
    *,
    status_code: int = 200,
) -> HTMLResponse:
    """``template_name`` rendered with ``context``, the user, the CSRF token and the nav."""
    page = environment.get_template(template_name).render(
        {
            **context,
            "user": user,
            "csrf_token": "" if user is None else user.csrf_token,
            "nav": NAV,
            "current_path": request.url.path,
        }
    )
    response = HTMLResponse(page, status_code=status_code)
    secure(response)
    return response


class ConsoleHeaders:
    """ASGI middleware: every answer under ``/console`` has the security headers.

    The pages set them themselves; this covers what the framework answers on its own (an
    unknown console path's 404, a method not allowed), and leaves the headers a response
    set (the message frame's own policy) as they are.
    """

    def __init__(self, app: Any) -> None:
        self.app = app
        self._headers = [
            (name.lower().encode("latin-1"), value.encode("latin-1"))
            for name, value in SECURITY_HEADERS.items()
        ]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Any) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                added = [(n, v) for n, v in self._headers if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        await self.app(scope, receive, send_secured)

"""Who is using the console, and what they may do: sign-in, sign-out and the role checks.

A page depends on :data:`viewer`, :data:`support` or :data:`admin` to get the signed-in
:class:`ConsoleUser`: without one, a GET is sent to the sign-in page and a POST is
refused 403; a role too low is refused 403. Every POST checks its form's CSRF token
with :func:`check_csrf`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from email_worker.web.console import sessions
from email_worker.web.console.pages import PREFIX, render, secure

ROLES = ("viewer", "support", "admin")
SIGN_IN = f"{PREFIX}/sign-in"

router = APIRouter()


@dataclass(frozen=True)
class ConsoleUser:
    """A signed-in user: their name, their role and the CSRF token of their forms."""

    name: str
    role: str
    csrf_token: str

    def may(self, role: str) -> bool:
        """Whether this user has ``role`` or a higher one."""
        return ROLES.index(self.role) >= ROLES.index(role)

    @property
    def masked(self) -> bool:
        """Whether addresses are masked for this user (viewers see them masked)."""
        return not self.may("support")

    @property
    def actor(self) -> str:
        """How the audit log names this user."""
        return f"console:{self.name}"


class ConsoleRefusal(Exception):
    """A console request that cannot be served: sign in first (GET), or 403."""

    def __init__(self, status: int, message: str, *, location: str | None = None) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.location = location


def refusal_response(request: Request, refusal: ConsoleRefusal) -> Response:
    """A refusal as the browser sees it: a redirect to sign in, or an error page."""
    if refusal.location is not None:
        return secure(RedirectResponse(refusal.location, status_code=303))
    return render(
        request,
        "error.html",
        {"status": refusal.status, "message": refusal.message},
        None,
        status_code=refusal.status,
    )


def current_user(request: Request) -> ConsoleUser | None:
    """The signed-in user of ``request``, or None."""
    session = sessions.decode(request.cookies.get(sessions.COOKIE))
    if session is None:
        return None
    role = _role_of(session.name)
    if role is None:
        return None
    return ConsoleUser(session.name, role, sessions.csrf_token(session.session_id))


def _role_of(name: str) -> str | None:
    """The role of an enabled console user, or None."""
    return None


def require(role: str) -> Callable[[Request], ConsoleUser]:
    """A dependency giving the signed-in user, who must have ``role`` or a higher one."""
    if role not in ROLES:
        raise ValueError(f"unknown console role {role!r}")

    def dependency(request: Request) -> ConsoleUser:
        user = current_user(request)
        if user is None:
            if request.method in ("GET", "HEAD"):
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                raise ConsoleRefusal(
                    303, "sign in first", location=f"{SIGN_IN}?next={quote(target, safe='')}"
                )
            raise ConsoleRefusal(403, "Sign in to do this.")
        if not user.may(role):
            raise ConsoleRefusal(403, f"This needs the {role} role; you have {user.role}.")
        return user

    dependency.__name__ = f"require_{role}"
    return dependency


viewer = require("viewer")
support = require("support")
admin = require("admin")

Viewer = Depends(viewer)
Support = Depends(support)
Admin = Depends(admin)


def check_csrf(request: Request, user: ConsoleUser, form: Mapping[str, Any]) -> None:
    """Refuse (403) a POST whose form does not carry the user's CSRF token."""
    import hmac

    given = form.get("csrf_token")
    if not isinstance(given, str) or not hmac.compare_digest(
        given.encode("utf-8"), user.csrf_token.encode("utf-8")
    ):
        raise ConsoleRefusal(403, "The form has expired or did not come from the console.")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    if target and target.startswith(f"{PREFIX}/") and not target.startswith("//"):
        return target
    return f"{PREFIX}/emails"


@router.get("/")
def home(request: Request) -> Response:
    """The console opens on the emails."""
    return secure(RedirectResponse(f"{PREFIX}/emails", status_code=303))


@router.get("/sign-in")
def sign_in_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form."""
    return render(request, "sign_in.html", {"next": safe_next(next), "problem": None}, None)

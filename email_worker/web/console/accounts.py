"""Who is using the console, and what they may do: sign-in, sign-out and the role checks.

A page depends on :data:`viewer`, :data:`support` or :data:`admin` (or
``Depends(require(role))``) to get the signed-in :class:`ConsoleUser`: without one, a
GET is sent to the sign-in page and a POST is refused 403; a role too low is refused
403. Every POST reads its form with :data:`~email_worker.web.console.forms.FormFields`
and checks its CSRF token with :func:`check_csrf`.

A user is signed in by a session cookie (:mod:`.sessions`) made by the sign-in form, or
by a trusted reverse proxy: when CONSOLE_PROXY_USER_HEADER names a header and the
request comes from an address in CONSOLE_TRUSTED_PROXIES, the header names the user.
Their role is their console account's, or CONSOLE_PROXY_DEFAULT_ROLE without one. The
role is read on every request, so a change or a disabled account applies at once.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import math
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from email_worker.config import get_settings
from email_worker.db import console_users
from email_worker.policy.rate_limit import RateLimiter, shared_redis_client
from email_worker.web.console import sessions
from email_worker.web.console.forms import FormError, FormFields
from email_worker.web.console.identity import ConsoleUser as ConsoleUser  # the pages' import
from email_worker.web.console.pages import PREFIX, render, secure

ROLES = console_users.ROLES
SIGN_IN = f"{PREFIX}/sign-in"
SIGN_IN_FAILED = "The name or password is not right, or the account is disabled."

# Sign-in attempts: per name, 5 then one a minute; per client address, 50 then ten a minute.
NAME_ATTEMPTS = (5, 5 / 300)
ADDRESS_ATTEMPTS = (50, 50 / 300)

router = APIRouter()


class ConsoleRefusal(Exception):
    """A console request that cannot be served: sign in first (GET), or an error page."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        location: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(status, message)
        self.status = status
        self.message = message
        self.location = location
        self.retry_after = retry_after


def refusal_response(request: Request, refusal: Exception) -> Response:
    """A refusal as the browser sees it: a redirect to sign in, or an error page."""
    if isinstance(refusal, FormError):
        refusal = ConsoleRefusal(refusal.status, refusal.message)
    elif isinstance(refusal, sessions.ConsoleOff):
        refusal = ConsoleRefusal(503, str(refusal))
    assert isinstance(refusal, ConsoleRefusal)
    if refusal.location is not None:
        return secure(RedirectResponse(refusal.location, status_code=303))
    known = request.scope.get("email_worker.console_user") or None  # no new lookup here
    response = render(
        request,
        "error.html",
        {"status": refusal.status, "message": refusal.message},
        known,
        status_code=refusal.status,
    )
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(refusal.retry_after)
    return response


REFUSALS: tuple[type[Exception], ...] = (ConsoleRefusal, FormError, sessions.ConsoleOff)


def client_address(request: Request) -> str:
    """The address of whoever sent the request: behind a trusted proxy, the one it names."""
    peer = request.client.host if request.client else ""
    if _trusted(peer):
        forwarded = request.headers.get("x-forwarded-for", "")
        last = forwarded.split(",")[-1].strip()
        if last:
            return last
    return peer


def _trusted(address: str) -> bool:
    """Whether ``address`` is one of CONSOLE_TRUSTED_PROXIES."""
    networks = get_settings().console_trusted_proxies
    if not networks or not address:
        return False
    try:
        peer = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(peer in ipaddress.ip_network(network, strict=False) for network in networks)


def proxy_name(request: Request) -> str | None:
    """The user a trusted proxy names, or None (no header set, untrusted peer, bad name)."""
    header = get_settings().console_proxy_user_header
    if not header:
        return None
    given = request.headers.get(header)
    if given is None or not _trusted(request.client.host if request.client else ""):
        return None
    try:
        return console_users.checked_name(given)
    except ValueError:
        return None


def current_user(request: Request) -> ConsoleUser | None:
    """The signed-in user of ``request``, or None (a disabled account too)."""
    cached = request.scope.get("email_worker.console_user", False)
    if cached is not False:
        return cached  # type: ignore[no-any-return]
    user = _find_current_user(request)
    request.scope["email_worker.console_user"] = user
    return user


def _find_current_user(request: Request) -> ConsoleUser | None:
    named = proxy_name(request)
    if named is not None:
        account = _account(named)
        if account is not None:
            role = account.role if account.enabled else None
        else:
            default = get_settings().console_proxy_default_role
            role = None if default == "none" else default
        if role is None:
            return None
        return ConsoleUser(named, role, sessions.csrf_token(f"proxy:{named}"), by_proxy=True)
    session = sessions.decode(request.cookies.get(sessions.COOKIE))
    if session is None:
        return None
    account = _account(session.name)
    if account is None or not account.enabled:
        return None
    return ConsoleUser(session.name, account.role, sessions.csrf_token(session.session_id))


def _account(name: str) -> console_users.ConsoleUserView | None:
    try:
        return console_users.find_user(name)
    except SQLAlchemyError:
        raise ConsoleRefusal(503, "The database cannot be reached; try again later.") from None


def require(role: str) -> Callable[[Request], ConsoleUser]:
    """A dependency giving the signed-in user, who must have ``role`` or a higher one."""
    if role not in ROLES:
        raise ValueError(f"unknown console role {role!r}")

    def dependency(request: Request) -> ConsoleUser:
        user = current_user(request)
        if user is None:
            named = proxy_name(request)
            if named is not None:
                raise ConsoleRefusal(
                    403, f"{named} has no console account, or it is disabled: ask an admin."
                )
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


UNCONFIRMED = "Tick the box to confirm, then send the form again."


def confirmed(form: Mapping[str, str]) -> bool:
    """Whether the form's confirmation box is ticked."""
    return form.get("confirm") == "yes"


def check_confirmed(form: Mapping[str, str]) -> None:
    """Refuse (400) a form whose confirmation box is not ticked."""
    if not confirmed(form):
        raise ConsoleRefusal(400, UNCONFIRMED)


def check_csrf(request: Request, user: ConsoleUser, form: Mapping[str, Any]) -> None:
    """Refuse (403) a POST whose form does not carry the user's CSRF token."""
    given = form.get("csrf_token")
    if not isinstance(given, str) or not hmac.compare_digest(
        given.encode("utf-8"), user.csrf_token.encode("utf-8")
    ):
        raise ConsoleRefusal(403, "The form has expired or did not come from the console.")


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    if (
        target
        and target.startswith(f"{PREFIX}/")
        and "//" not in target
        and "\\" not in target
        and not target.startswith(SIGN_IN)
    ):
        return target
    return f"{PREFIX}/emails"


def _limiter(kind: str, attempts: tuple[int, float]) -> RateLimiter:
    """A limiter for one name or address (made per attempt: a guesser's many names cost
    this process no memory)."""
    settings = get_settings()
    name = f"{settings.queue_name}:console-sign-in:{kind}"
    burst, rate = attempts
    return RateLimiter(shared_redis_client(settings), name, rate, burst=burst)


def _take_attempt(name: str, address: str) -> int:
    """Count a sign-in attempt for the name and the address; seconds to wait, or 0.

    Both are counted under a hash (no name or address is written to Redis). Redis
    unreachable: the limiter lets the attempt through, as it does for sends.
    """
    wait = 0.0
    for kind, value, attempts in (
        ("name", name.lower(), NAME_ATTEMPTS),
        ("address", address, ADDRESS_ATTEMPTS),
    ):
        digest = hashlib.sha256(f"{kind}:{value}".encode()).hexdigest()[:32]
        wait = max(wait, _limiter(f"{kind}:{digest}", attempts).acquire("high"))
    return 0 if wait <= 0 else max(1, math.ceil(wait))


@router.get("/")
def home(request: Request) -> Response:
    """The console opens on the emails."""
    return secure(RedirectResponse(f"{PREFIX}/emails", status_code=303))


@router.get("/sign-in")
def sign_in_page(request: Request, next: str | None = None) -> Response:
    """The sign-in form (a user signed in already goes on)."""
    if current_user(request) is not None:
        return secure(RedirectResponse(safe_next(next), status_code=303))
    return _sign_in_form(request, safe_next(next), None, "", 200)


def _sign_in_form(
    request: Request, target: str, problem: str | None, name: str, status_code: int
) -> Response:
    """The sign-in form, with the token that ties it to this browser.

    The form is the one POST made without a session, so its token is tied to a cookie of
    its own instead (``SameSite=Strict``): another site cannot post it, and so cannot sign
    a visitor in to an account of its choosing.
    """
    form_id = sessions.form_cookie(request) or sessions.new_form_id()
    response = render(
        request,
        "sign_in.html",
        {
            "next": target,
            "problem": problem,
            "name": name,
            "sign_in_token": sessions.csrf_token(f"sign-in:{form_id}"),
        },
        None,
        status_code=status_code,
    )
    sessions.set_form_cookie(request, response, form_id)
    return response


def _sign_in_form_sent(request: Request, form: Mapping[str, str]) -> bool:
    form_id = sessions.form_cookie(request)
    given = form.get("sign_in_token", "")
    return form_id is not None and hmac.compare_digest(
        given.encode("utf-8"), sessions.csrf_token(f"sign-in:{form_id}").encode("utf-8")
    )


@router.post("/sign-in")
async def sign_in(request: Request, form: Mapping[str, str] = FormFields) -> Response:
    """Check a name and password; on success, a session cookie and on to the page asked for.

    Every failure gets the same message; attempts are limited per name and per address.
    """
    name = form.get("name", "").strip()
    password = form.get("password", "")
    target = safe_next(form.get("next"))
    sessions.signing_key()  # the console is off in live mode without a key: say so first
    if not _sign_in_form_sent(request, form):
        problem = "The sign-in form had expired, or did not come from the console: sign in again."
        return _sign_in_form(request, target, problem, name, 403)
    wait = await run_in_threadpool(_take_attempt, name, client_address(request))
    if wait:
        raise ConsoleRefusal(
            429,
            f"Too many sign-in attempts; try again in {wait} seconds.",
            retry_after=wait,
        )
    try:
        account = await run_in_threadpool(console_users.authenticate, name, password)
    except SQLAlchemyError:
        raise ConsoleRefusal(503, "The database cannot be reached; try again later.") from None
    if account is None:
        return _sign_in_form(request, target, SIGN_IN_FAILED, name, 401)
    response = RedirectResponse(target, status_code=303)
    sessions.set_cookie(request, response, sessions.new_session(account.name))
    sessions.clear_form_cookie(request, response)
    return secure(response)


@router.post("/sign-out")
async def sign_out(request: Request, form: Mapping[str, str] = FormFields) -> Response:
    """End the session (a form with the CSRF token, so no other site can sign anyone out)."""
    user = await run_in_threadpool(current_user, request)
    if user is not None:
        check_csrf(request, user, form)
    response = RedirectResponse(SIGN_IN, status_code=303)
    sessions.clear_cookie(request, response)
    return secure(response)

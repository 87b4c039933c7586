"""Console sessions: a signed cookie naming the user, with an expiry.

The cookie holds the user's name, a random session id and when it expires, signed with
HMAC-SHA256 under CONSOLE_SESSION_KEY (a development key outside live mode, as sealing
has). It is ``HttpOnly``, ``SameSite=Strict``, limited to ``/console``, and ``Secure``
over https or when CONSOLE_SECURE_COOKIES says so. The CSRF token of every form is an
HMAC of the session id: it is tied to the session and needs no storage.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from email_worker.config import get_settings

COOKIE = "email_worker_console"
FORM_COOKIE = "email_worker_console_sign_in"  # ties the sign-in form to the browser
FORM_COOKIE_TTL = 3600
COOKIE_PATH = "/console"
DEVELOPMENT_KEY = hashlib.sha256(b"email-worker development console key: not secret").digest()


@dataclass(frozen=True)
class Session:
    """A signed-in session: whose, which, and until when (epoch seconds)."""

    name: str
    session_id: str
    expires: float


class ConsoleOff(Exception):
    """The console cannot sign anything: live mode without CONSOLE_SESSION_KEY."""


def signing_key() -> bytes:
    """The key sessions and CSRF tokens are signed with; ConsoleOff if none in live mode."""
    settings = get_settings()
    key = settings.console_session_key.reveal()
    if key:
        return key.encode("utf-8")
    if settings.delivery_mode == "live":
        raise ConsoleOff(
            "the console is off: CONSOLE_SESSION_KEY is required when DELIVERY_MODE is live"
        )
    return DEVELOPMENT_KEY


def session_ttl() -> float:
    """How long a session lasts after sign-in (CONSOLE_SESSION_TTL)."""
    return float(get_settings().console_session_ttl)


def secure_cookies(request: Request) -> bool:
    """Whether the cookie is sent only over https: over https, or CONSOLE_SECURE_COOKIES."""
    return request.url.scheme == "https" or bool(get_settings().console_secure_cookies)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(purpose: bytes, data: bytes) -> bytes:
    return hmac.new(signing_key(), purpose + b"\0" + data, hashlib.sha256).digest()


def encode(session: Session) -> str:
    """The cookie value for ``session``."""
    payload = json.dumps(
        {"n": session.name, "s": session.session_id, "e": int(session.expires)},
        separators=(",", ":"),
    ).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_mac(b'session', payload))}"


def decode(value: str | None, now: float | None = None) -> Session | None:
    """The session a cookie value holds, or None if it is missing, forged or expired."""
    if not value or value.count(".") != 1:
        return None
    payload_text, mac_text = value.split(".")
    try:
        payload = _unb64(payload_text)
        given = _unb64(mac_text)
    except ValueError:
        return None
    if not hmac.compare_digest(given, _mac(b"session", payload)):
        return None
    try:
        data = json.loads(payload)
        session = Session(str(data["n"]), str(data["s"]), float(data["e"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires <= (time.time() if now is None else now):
        return None
    return session


def new_session(name: str) -> Session:
    """A new session for ``name``, from now until the session lifetime has passed."""
    return Session(name, secrets.token_urlsafe(16), time.time() + session_ttl())


def csrf_token(session_id: str) -> str:
    """The CSRF token of the forms of one session (or one proxy-signed-in user)."""
    return _b64(_mac(b"csrf", session_id.encode("utf-8")))


def _attributes(request: Request) -> dict[str, Any]:
    """What every cookie of the console carries: its path, and no script or other site sees it."""
    return {
        "path": COOKIE_PATH,
        "httponly": True,
        "samesite": "strict",
        "secure": secure_cookies(request),
    }


def set_cookie(request: Request, response: Response, session: Session) -> None:
    """Give the browser the session's cookie."""
    response.set_cookie(
        COOKIE,
        encode(session),
        max_age=max(1, round(session.expires - time.time())),
        **_attributes(request),
    )


def clear_cookie(request: Request, response: Response) -> None:
    """Take the session's cookie back."""
    response.delete_cookie(
        COOKIE,
        **_attributes(request),
    )


def new_form_id() -> str:
    """A random id for the sign-in form's cookie."""
    return secrets.token_urlsafe(16)


def form_cookie(request: Request) -> str | None:
    """The sign-in form's cookie, or None (or a value of the wrong shape)."""
    value = request.cookies.get(FORM_COOKIE)
    if (
        value is None
        or not 16 <= len(value) <= 64
        or not value.replace("-", "").replace("_", "").isalnum()
    ):
        return None
    return value


def set_form_cookie(request: Request, response: Response, form_id: str) -> None:
    """Give the browser the sign-in form's cookie."""
    response.set_cookie(
        FORM_COOKIE,
        form_id,
        max_age=FORM_COOKIE_TTL,
        **_attributes(request),
    )


def clear_form_cookie(request: Request, response: Response) -> None:
    """Take the sign-in form's cookie back, once signed in."""
    response.delete_cookie(
        FORM_COOKIE,
        **_attributes(request),
    )

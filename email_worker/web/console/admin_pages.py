"""The admin's pages: the console's users and the HTTP API's keys.

Only an admin opens them. Every change is written to the audit log as done by the admin
(``console:<name>``), by the same functions ``email-worker console-users`` and
``email-worker api-keys`` use. An admin cannot change their own role, disable or delete
themselves: the console always keeps the admin who is using it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from email_worker.db import api_keys, console_users
from email_worker.web.console.accounts import (
    Admin,
    ConsoleRefusal,
    ConsoleUser,
    check_confirmed,
    check_csrf,
)
from email_worker.web.console.forms import FormFields
from email_worker.web.console.pages import render, secure

router = APIRouter()

_USER_NOTICES = {
    "created": "The user was created.",
    "role": "The role was changed.",
    "disabled": "The user was disabled: their sessions have ended.",
    "enabled": "The user was enabled.",
    "deleted": "The user was deleted.",
}


def _unavailable() -> ConsoleRefusal:
    return ConsoleRefusal(503, "The database cannot be reached; nothing was changed.")


def _done(location: str) -> Response:
    return secure(RedirectResponse(location, status_code=303))


# Users.


@router.get("/users")
def users_page(request: Request, user: ConsoleUser = Admin) -> HTMLResponse:
    """The console's users, and the form that adds one."""
    return _users(request, user, {}, None, 200)


def _users(
    request: Request,
    user: ConsoleUser,
    form: Mapping[str, str],
    problem: str | None,
    status_code: int,
) -> HTMLResponse:
    try:
        listed = console_users.list_users()
    except SQLAlchemyError:
        raise ConsoleRefusal(503, "The database cannot be reached; try again later.") from None
    return render(
        request,
        "users.html",
        {
            "users": listed,
            "roles": console_users.ROLES,
            "form": {"name": form.get("name", ""), "role": form.get("role", "viewer")},
            "problem": problem,
            "notice": _USER_NOTICES.get(request.query_params.get("done", "")),
        },
        user,
        status_code=status_code,
    )


@router.post("/users")
async def create_user(
    request: Request, form: Mapping[str, str] = FormFields, user: ConsoleUser = Admin
) -> Response:
    """Add a user, with a password or for proxy sign-in only."""
    check_csrf(request, user, form)
    proxy_only = form.get("proxy_only") == "yes"
    password = form.get("password", "")
    problem = None
    if not proxy_only and password != form.get("password_again", ""):
        problem = "The two passwords differ."
    if problem is None:
        try:
            await run_in_threadpool(
                console_users.create_user,
                form.get("name", ""),
                form.get("role", ""),
                None if proxy_only else password,
                actor=user.actor,
            )
        except ValueError as exc:
            problem = f"{str(exc)[0].upper()}{str(exc)[1:]}."
        except SQLAlchemyError:
            raise _unavailable() from None
    if problem is not None:
        return await run_in_threadpool(_users, request, user, form, problem, 400)
    return _done("/console/users?done=created")


def _other_user(user: ConsoleUser, form: Mapping[str, str]) -> str:
    name = form.get("name", "")
    if name == user.name:
        raise ConsoleRefusal(
            409, "You cannot change your own account here: ask another admin, or use the command."
        )
    return name


async def _change(user: ConsoleUser, done: str, change: Any, *args: Any) -> Response:
    try:
        await run_in_threadpool(change, *args, actor=user.actor)
    except LookupError as exc:
        raise ConsoleRefusal(404, f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
    except ValueError as exc:
        raise ConsoleRefusal(400, f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
    except SQLAlchemyError:
        raise _unavailable() from None
    return _done(f"/console/users?done={done}")


@router.post("/users/role")
async def set_role(
    request: Request, form: Mapping[str, str] = FormFields, user: ConsoleUser = Admin
) -> Response:
    """Give another user another role."""
    check_csrf(request, user, form)
    name = _other_user(user, form)
    return await _change(user, "role", console_users.set_role, name, form.get("role", ""))


@router.post("/users/disable")
async def disable_user(
    request: Request, form: Mapping[str, str] = FormFields, user: ConsoleUser = Admin
) -> Response:
    """Stop another user signing in, at once."""
    check_csrf(request, user, form)
    return await _change(user, "disabled", console_users.disable_user, _other_user(user, form))


@router.post("/users/enable")
async def enable_user(
    request: Request, form: Mapping[str, str] = FormFields, user: ConsoleUser = Admin
) -> Response:
    """Let a disabled user sign in again."""
    check_csrf(request, user, form)
    return await _change(user, "enabled", console_users.enable_user, _other_user(user, form))


@router.post("/users/delete")
async def delete_user(
    request: Request, form: Mapping[str, str] = FormFields, user: ConsoleUser = Admin
) -> Response:
    """Delete another user (the form's box must be ticked)."""
    check_csrf(request, user, form)
    check_confirmed(form)
    return await _change(user, "deleted", console_users.delete_user, _other_user(user, form))


# API keys.


@router.get("/api-keys")
def keys_page(request: Request, user: ConsoleUser = Admin) -> HTMLResponse:
    """The HTTP API's keys, and the form that makes one."""
    return _keys(request, user, {}, None, None, 200)


def _keys(
    request: Request,
    user: ConsoleUser,
    form: Mapping[str, str],
    problem: str | None,
    created: tuple[api_keys.ApiKeyView, str] | None,
    status_code: int,
) -> HTMLResponse:
    try:
        listed = api_keys.list_api_keys()
    except SQLAlchemyError:
        raise ConsoleRefusal(503, "The database cannot be reached; try again later.") from None
    return render(
        request,
        "api_keys.html",
        {
            "keys": listed,
            "scopes": api_keys.SCOPES,
            "form": {k: form.get(k, "") for k in ("name", "kinds", "senders", "expires", "rate")},
            "checked": {scope for scope in api_keys.SCOPES if form.get(f"scope_{scope}") == "yes"}
            or set(api_keys.DEFAULT_SCOPES),
            "problem": problem,
            "created": created,
            "notice": "The key was revoked." if request.query_params.get("done") else None,
        },
        user,
        status_code=status_code,
    )


def _listed(text: str) -> tuple[str, ...] | None:
    parts = tuple(part.strip() for part in text.split(",") if part.strip())
    return parts or None


def _create_key(form: Mapping[str, str], actor: str) -> tuple[api_keys.ApiKeyView, str]:
    if not form.get("name", "").isprintable():
        raise ValueError("an API key's name is 1 to 100 printable characters")
    scopes = tuple(scope for scope in api_keys.SCOPES if form.get(f"scope_{scope}") == "yes")
    expires = form.get("expires", "").strip()
    rate = form.get("rate", "").strip()
    return api_keys.create_api_key(
        form.get("name", ""),
        scopes,
        kinds=_listed(form.get("kinds", "")),
        senders=_listed(form.get("senders", "")),
        expires_at=api_keys.parse_expiry(expires) if expires else None,
        rate=api_keys.parse_rate(rate) if rate else None,
        test=form.get("test") == "yes",
        actor=actor,
    )


@router.post("/api-keys")
async def create_key(
    request: Request, form: Mapping[str, str] = FormFields, user: ConsoleUser = Admin
) -> Response:
    """Make a key; the page shows it once."""
    check_csrf(request, user, form)
    try:
        created = await run_in_threadpool(_create_key, form, user.actor)
    except ValueError as exc:
        problem = f"{str(exc)[0].upper()}{str(exc)[1:]}."
        return await run_in_threadpool(_keys, request, user, form, problem, None, 400)
    except SQLAlchemyError:
        raise _unavailable() from None
    return await run_in_threadpool(_keys, request, user, {}, None, created, 201)


@router.post("/api-keys/revoke")
async def revoke_key(
    request: Request, form: Mapping[str, str] = FormFields, user: ConsoleUser = Admin
) -> Response:
    """Revoke a key at once (the form's box must be ticked)."""
    check_csrf(request, user, form)
    check_confirmed(form)
    key = form.get("key", "")
    if not key or len(key) > 36 or not key.replace("-", "").isalnum():
        raise ConsoleRefusal(404, "No API key has this id or prefix.")
    try:
        await run_in_threadpool(lambda: api_keys.revoke_api_key(key, actor=user.actor))
    except LookupError as exc:
        raise ConsoleRefusal(404, f"{str(exc)[0].upper()}{str(exc)[1:]}.") from None
    except SQLAlchemyError:
        raise _unavailable() from None
    return _done("/console/api-keys?done=revoked")

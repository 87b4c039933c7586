"""The console's accounts: create, list, change and authenticate them.

Passwords are hashed with Argon2id (``argon2-cffi``, in the ``server`` extra, imported
only here when a password is hashed or checked). A user without a password signs in only
through the trusted proxy. Creating, changing, disabling and deleting a user are written
to the audit log with the user's name as the target.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from email_worker.db import audit
from email_worker.db.models import ConsoleUserRow, utcnow
from email_worker.db.session import primary_session

ROLES = ("viewer", "support", "admin")
MAX_NAME = 40  # the audit log's actor is "console:<name>", 50 characters at most
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]*$")


@dataclass(frozen=True)
class ConsoleUserView:
    """A console account as operators see it: never its password hash."""

    id: uuid.UUID
    name: str
    role: str
    has_password: bool
    created_at: dt.datetime | None
    last_sign_in_at: dt.datetime | None
    disabled_at: dt.datetime | None

    @classmethod
    def of(cls, row: ConsoleUserRow) -> ConsoleUserView:
        """Copy a loaded row."""
        return cls(
            row.id,
            row.name,
            row.role,
            row.password_hash is not None,
            row.created_at,
            row.last_sign_in_at,
            row.disabled_at,
        )

    @property
    def enabled(self) -> bool:
        """Whether the user may sign in."""
        return self.disabled_at is None


def checked_name(name: str) -> str:
    """A user's name: 1 to 40 letters, digits and ``. _ @ + -``; ValueError if not."""
    name = name.strip()
    if not name or len(name) > MAX_NAME or not _NAME.match(name):
        raise ValueError(
            f"a console user's name is 1 to {MAX_NAME} letters, digits and . _ @ + - "
            "(starting with a letter or digit)"
        )
    return name


def checked_role(role: str) -> str:
    """One of the roles; ValueError naming them if not."""
    if role not in ROLES:
        raise ValueError(f"a console role is one of {', '.join(ROLES)}, not {role!r}")
    return role


def checked_password(password: str) -> str:
    """A password long enough to keep; ValueError if not."""
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise ValueError(f"a console password is {MIN_PASSWORD} to {MAX_PASSWORD} characters long")
    return password


def _hasher() -> Any:
    from argon2 import PasswordHasher

    return PasswordHasher()


def hash_password(password: str) -> str:
    """The Argon2id hash of ``password``, as stored."""
    return str(_hasher().hash(checked_password(password)))


# Checked against when the name is unknown, so an unknown name takes as long as a wrong
# password (made on first use: hashing takes tens of milliseconds).
_dummy_hash: str | None = None


def _verify(stored: str | None, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError

    global _dummy_hash
    if stored is None:
        if _dummy_hash is None:
            _dummy_hash = str(_hasher().hash("not the password of anyone"))
        stored = _dummy_hash
        known = False
    else:
        known = True
    try:
        _hasher().verify(stored, password[:MAX_PASSWORD])
    except (VerificationError, InvalidHashError):
        return False
    return known


def create_user(
    name: str, role: str, password: str | None, *, actor: str = audit.CLI
) -> ConsoleUserView:
    """Store a new user; ValueError if the name is taken or a value is wrong.

    ``password`` None: the user signs in only through the trusted proxy.
    """
    name = checked_name(name)
    row = ConsoleUserRow(
        id=uuid.uuid4(),
        name=name,
        role=checked_role(role),
        password_hash=None if password is None else hash_password(password),
    )
    with primary_session() as session:
        if session.scalar(sa.select(ConsoleUserRow.id).where(ConsoleUserRow.name == name)):
            raise ValueError(f"a console user named {name!r} already exists")
        session.add(row)
        session.flush()
        audit.record(session, actor, "console_user.create", f"{name} ({role})")
        return ConsoleUserView.of(row)


def list_users() -> list[ConsoleUserView]:
    """Every user, by name, disabled ones included (from the primary)."""
    with primary_session() as session:
        rows = session.scalars(sa.select(ConsoleUserRow).order_by(ConsoleUserRow.name))
        return [ConsoleUserView.of(row) for row in rows]


def find_user(name: str) -> ConsoleUserView | None:
    """The user named ``name``, or None (from the primary: a change applies at once)."""
    try:
        name = checked_name(name)
    except ValueError:
        return None  # no such name can exist
    with primary_session() as session:
        row = session.scalars(sa.select(ConsoleUserRow).where(ConsoleUserRow.name == name)).first()
        return None if row is None else ConsoleUserView.of(row)


def _change(name: str, actor: str, action: str, target: str, change: Any) -> ConsoleUserView:
    name = checked_name(name)
    with primary_session() as session:
        row = session.scalars(
            sa.select(ConsoleUserRow).where(ConsoleUserRow.name == name).with_for_update()
        ).first()
        if row is None:
            raise LookupError(f"no console user named {name!r}")
        change(row)
        row.updated_at = utcnow()
        session.flush()
        audit.record(session, actor, action, target)
        return ConsoleUserView.of(row)


def set_role(name: str, role: str, *, actor: str = audit.CLI) -> ConsoleUserView:
    """Give ``name`` another role; LookupError if there is no such user."""
    checked_role(role)
    return _change(
        name, actor, "console_user.set_role", f"{name} ({role})", lambda r: setattr(r, "role", role)
    )


def set_password(name: str, password: str | None, *, actor: str = audit.CLI) -> ConsoleUserView:
    """Give ``name`` a new password (None: proxy sign-in only)."""
    hashed = None if password is None else hash_password(password)
    return _change(
        name,
        actor,
        "console_user.set_password",
        name,
        lambda r: setattr(r, "password_hash", hashed),
    )


def disable_user(name: str, *, actor: str = audit.CLI) -> ConsoleUserView:
    """Stop ``name`` signing in; their open sessions stop working at their next request."""

    def disable(row: ConsoleUserRow) -> None:
        row.disabled_at = row.disabled_at or utcnow()

    return _change(name, actor, "console_user.disable", name, disable)


def enable_user(name: str, *, actor: str = audit.CLI) -> ConsoleUserView:
    """Let a disabled user sign in again."""
    return _change(
        name, actor, "console_user.enable", name, lambda r: setattr(r, "disabled_at", None)
    )


def delete_user(name: str, *, actor: str = audit.CLI) -> None:
    """Delete ``name``; LookupError if there is no such user."""
    name = checked_name(name)
    with primary_session() as session:
        row = session.scalars(
            sa.select(ConsoleUserRow).where(ConsoleUserRow.name == name).with_for_update()
        ).first()
        if row is None:
            raise LookupError(f"no console user named {name!r}")
        session.delete(row)
        audit.record(session, actor, "console_user.delete", name)


def authenticate(name: str, password: str) -> ConsoleUserView | None:
    """The enabled user ``name`` if ``password`` is theirs, else None.

    Argon2's verification compares in constant time, and an unknown name is checked
    against a hash too, so the answer takes as long whichever part was wrong. A
    successful sign-in is noted in ``last_sign_in_at`` and the audit log.
    """
    try:
        name = checked_name(name)
    except ValueError:
        _verify(None, password)  # no such name can exist: as slow as a wrong password
        return None
    with primary_session() as session:
        row = session.scalars(sa.select(ConsoleUserRow).where(ConsoleUserRow.name == name)).first()
        stored = None if row is None else row.password_hash
        if not _verify(stored, password) or row is None or row.disabled_at is not None:
            return None
        row.last_sign_in_at = utcnow()
        audit.record(session, f"console:{row.name}", "console.sign_in", row.name)
        return ConsoleUserView.of(row)

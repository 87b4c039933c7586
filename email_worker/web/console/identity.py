"""Who is signed in to the console: a name, a role, and the token their forms carry.

Its own module so that rendering a page (``pages``) and signing in (``accounts``) both
know the user without knowing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

from email_worker.db.console_users import ROLES


@dataclass(frozen=True)
class ConsoleUser:
    """A signed-in user: their name, their role and the CSRF token of their forms."""

    name: str
    role: str
    csrf_token: str
    by_proxy: bool = False

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

"""The install extras: a role that lacks its extra says which one to install, in one line.

Producers install the plain package. Workers, beat, Flower and the web app install
``email-worker[server]``, which brings the provider SDKs, DKIM signing, Flower and the
web app's libraries; those are imported only where they are used, after
:func:`require_extra` has found them.
"""

from __future__ import annotations

import importlib.util

from email_worker.errors import PermanentError


class MissingExtra(PermanentError):
    """Something needs modules of an install extra that is not installed."""

    def __init__(self, needed_by: str, extra: str) -> None:
        super().__init__(needed_by, extra)
        self.needed_by = needed_by
        self.extra = extra

    def __str__(self) -> str:
        return (
            f"{self.needed_by} needs the {self.extra} extra: "
            f"pip install 'email-worker[{self.extra}]'"
        )


def require_extra(needed_by: str, *modules: str, extra: str = "server") -> None:
    """Raise :class:`MissingExtra` unless every top-level module in ``modules`` is installed."""
    if any(importlib.util.find_spec(module) is None for module in modules):
        raise MissingExtra(needed_by, extra)

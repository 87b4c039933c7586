"""The column type of sealed personal data (:mod:`email_worker.db.sealing`)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from email_worker.db.sealing import open_json, open_text, seal_json, seal_text


class Sealed(TypeDecorator[Any]):
    """A column that stores its value sealed: JSON (``json=True``) or text.

    Bound values are sealed and read values opened for ORM and Core statements alike.
    Compare such a column only through ``type_coerce(column, Text)``: a literal compared
    with it would be sealed (with a fresh nonce) first.
    """

    impl = Text
    cache_ok = True

    def __init__(self, purpose: str, *, json: bool = True) -> None:
        super().__init__()
        self.purpose = purpose
        self.json = json

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        if value is None:
            return None
        if self.json:
            return seal_json(self.purpose, value)
        return seal_text(self.purpose, str(value))

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        return open_json(self.purpose, value) if self.json else open_text(self.purpose, value)

    def __repr__(self) -> str:
        return f"Sealed({self.purpose!r}, json={self.json})"

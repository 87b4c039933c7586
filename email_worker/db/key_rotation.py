"""Key rotation: which key seals each stored value, and sealing old ones with the current key.

The sealed columns are found from the models (every column whose type is
:class:`~email_worker.db.sealed_columns.Sealed`), so a column sealed later is rotated without
being named here. A sealed value starts with the id of its key (``<key id>:``), so what
is left to do is one ``LIKE`` per column, read from the raw text: the values are never
compared as sealed literals (see :mod:`email_worker.db.sealing`).

:func:`rotate` re-seals in batches, each batch its own short transaction on the primary.
A batch locks its rows ``FOR UPDATE SKIP LOCKED``: a row a worker holds is left for a
later batch instead of waiting for it, so running workers are never held up. The rows
still skipped when no other is left are then taken one at a time, waiting for each (a
worker's transaction is short) while holding no other lock, so no deadlock can form.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Text, type_coerce
from sqlalchemy.orm import Session

from email_worker.db.models import Base
from email_worker.db.sealed_columns import Sealed
from email_worker.db.sealing import KEY_ID_CHARS, keys, reseal
from email_worker.db.session import primary_session

DEFAULT_BATCH = 500


def sealed_columns() -> list[sa.Column[Any]]:
    """Every column of the models whose values are stored sealed, table by table."""
    return [
        column
        for table in Base.metadata.sorted_tables
        for column in table.columns
        if isinstance(column.type, Sealed)
    ]


def column_name(column: sa.Column[Any]) -> str:
    """``table.column``: how a column is named in output (and the purpose it is sealed for)."""
    return f"{column.table.name}.{column.name}"


def _raw(column: sa.Column[Any]) -> sa.ColumnElement[str]:
    """The stored text of a sealed column, not opened."""
    return type_coerce(column, Text)


def count_by_key(session: Session) -> dict[str, dict[str, int]]:
    """How many values each key id sealed, per sealed column (columns with none left out)."""
    counts: dict[str, dict[str, int]] = {}
    for column in sealed_columns():
        kid = sa.func.substr(_raw(column), 1, KEY_ID_CHARS).label("kid")
        rows = session.execute(
            sa.select(kid, sa.func.count())
            .select_from(column.table)
            .where(column.is_not(None))
            .group_by(kid)
            .order_by(kid)
        ).all()
        if rows:
            counts[column_name(column)] = {str(row[0]): int(row[1]) for row in rows}
    return counts


def totals_by_key(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """How many values each key id sealed, over every column of :func:`count_by_key`."""
    totals: dict[str, int] = {}
    for per_key in counts.values():
        for kid, count in per_key.items():
            totals[kid] = totals.get(kid, 0) + count
    return totals


def unknown_keys(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """How many values each key id that is not in ``ENCRYPTION_KEYS`` sealed, over all columns."""
    configured = set(keys().ids)
    return {kid: n for kid, n in totals_by_key(counts).items() if kid not in configured}


def describe_unknown(unknown: dict[str, int]) -> str:
    """One line naming each key id that is not configured, with how many values it sealed."""
    listed = ", ".join(f"{count} value(s) under key {kid}" for kid, count in unknown.items())
    return f"{listed}: not in ENCRYPTION_KEYS, so they cannot be opened; add the key back"


@dataclass
class Rotation:
    """What a rotation did (or, in a dry run, would do), per ``table.column``."""

    current_id: str
    resealed: dict[str, int] = field(default_factory=dict)
    unknown: dict[str, int] = field(default_factory=dict)  # key id -> values it left

    @property
    def total(self) -> int:
        return sum(self.resealed.values())


def rotate(batch: int | None = None, *, dry_run: bool = False) -> Rotation:
    """Seal with the current key every value sealed with an older configured one.

    Values under a key that is not configured are left as they are (no key opens them)
    and reported in :attr:`Rotation.unknown`; ``dry_run`` counts and changes nothing.
    ``batch`` values are re-sealed per transaction (:data:`DEFAULT_BATCH` when None).
    """
    batch = DEFAULT_BATCH if batch is None else batch
    if batch < 1:
        raise ValueError(f"the batch size must be at least 1, got {batch}")
    current = keys().current_id
    older = [kid for kid in keys().ids if kid != current]
    with primary_session() as session:
        counts = count_by_key(session)
    rotation = Rotation(current)
    for column in sealed_columns():
        name = column_name(column)
        if dry_run:
            rotation.resealed[name] = sum(counts.get(name, {}).get(kid, 0) for kid in older)
            continue
        rotation.resealed[name] = sum(_rotate_column(column, current, older, batch))
    if not dry_run:
        with primary_session() as session:
            counts = count_by_key(session)
    rotation.unknown = unknown_keys(counts)
    return rotation


def _rotate_column(
    column: sa.Column[Any], current: str, older: list[str], batch: int
) -> Iterator[int]:
    """Re-seal one column's values under ``older`` keys; yield how many each batch did."""
    if not older:
        return
    wanted = sa.and_(
        _raw(column).not_like(f"{current}:%"),
        sa.or_(*(_raw(column).like(f"{kid}:%") for kid in older)),
    )
    for skip_locked, size in ((True, batch), (False, 1)):
        while done := _reseal_batch(column, wanted, size, skip_locked):
            yield done


def _reseal_batch(
    column: sa.Column[Any], wanted: sa.ColumnElement[bool], size: int, skip_locked: bool
) -> int:
    """Re-seal up to ``size`` values in one transaction on the primary; how many it did."""
    table = column.table
    keys_of_row = list(table.primary_key.columns)
    purpose = column_name(column)
    with primary_session() as session:
        rows = session.execute(
            sa.select(*keys_of_row, _raw(column))
            .where(wanted)
            .order_by(*keys_of_row)
            .limit(size)
            .with_for_update(skip_locked=skip_locked)
        ).all()
        if not rows:
            return 0
        update = (
            table.update()
            .where(*(key == sa.bindparam(f"k_{key.name}") for key in keys_of_row))
            .values({column.name: sa.bindparam("sealed", type_=Text)})
        )
        session.execute(
            update,
            [
                {
                    **{f"k_{key.name}": row[i] for i, key in enumerate(keys_of_row)},
                    "sealed": reseal(purpose, row[-1]),
                }
                for row in rows
            ],
        )
    return len(rows)

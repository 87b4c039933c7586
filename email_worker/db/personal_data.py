"""Where personal data lives in the database, and what a row holds once it is cleared.

Retention (once a row is finished and ``PERSONAL_DATA_RETENTION`` has passed) and an
erasure (``email-worker erase``) clear the same fields, listed here once per table: the
sealed values (:mod:`email_worker.db.sealing`) and the lookup hashes that would let
anyone holding the lookup key confirm a guessed address. ``docs/privacy.md``'s data
map lists the same columns; a test compares the two.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

# Each table's personal columns, set to None when cleared. A row keeps its ids, kind,
# statuses, times and provider ids: what operators count and what webhooks match.
CLEARED: MappingProxyType[str, tuple[str, ...]] = MappingProxyType(
    {
        "email_jobs": (
            "recipient_email",
            "recipient_hash",
            "recipient_hashes",
            "subject",
            "template_data",
            "payload",
            "recipient_results",
        ),
        "email_bulks": ("payload",),
        "email_bulk_recipients": ("address", "address_hash", "data"),
        "email_events": ("recipient", "recipient_hash", "payload"),
    }
)


def cleared(table: str) -> dict[str, Any]:
    """The values of an UPDATE that clears ``table``'s personal columns."""
    return dict.fromkeys(CLEARED[table])

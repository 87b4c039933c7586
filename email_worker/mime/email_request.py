"""A validated, normalised send request: the one shape every message is built from."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class EmailRequest:
    """A validated, normalised send request: what the worker renders and sends."""

    kind: str
    to: list[str]
    cc: list[str] = field(default_factory=list)
    bcc: list[str] = field(default_factory=list)
    template_id: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    from_email: str | None = None
    from_name: str | None = None
    reply_to: list[str] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    priority: str = "default"
    tracked: bool = False
    idempotency_key: str | None = None
    provider: str | None = None
    only_recipients: list[str] = field(default_factory=list)  # set by partial retries
    # Each {"filename", "content" (base64), "content_type"}: JSON, so a stored job keeps them.
    attachments: list[dict[str, str]] = field(default_factory=list)

    @property
    def recipients(self) -> list[str]:
        """The envelope: to, cc and bcc without repeats, or only those a retry is for."""
        if self.only_recipients:
            return list(self.only_recipients)
        seen: dict[str, str] = {}
        for address in (*self.to, *self.cc, *self.bcc):
            seen.setdefault(address.lower(), address)
        return list(seen.values())

    def to_payload(self) -> dict[str, Any]:
        """The keyword arguments that reproduce this request, without empty fields."""
        # Shallow: dataclasses.asdict deep-copies data, which cost as much as validating it.
        values = ((name, getattr(self, name)) for name in _REQUEST_FIELDS)
        return {k: v for k, v in values if v not in (None, [], {})}


_REQUEST_FIELDS = tuple(f.name for f in fields(EmailRequest))

"""The one interface every provider implements."""

from __future__ import annotations

from typing import Protocol

from email_worker.messages import OutgoingEmail


class Provider(Protocol):
    """Delivers built messages; raises Transient/Permanent/AccountProviderError on failure."""

    name: str

    def send(self, email: OutgoingEmail) -> str:
        """Hand the message over and return the provider's id for it."""
        ...

    def close(self) -> None:
        """Release connections; the provider reconnects if used again."""
        ...

    def check(self) -> bool:
        """Whether the provider looks able to send (for health checks); no email is sent."""
        ...

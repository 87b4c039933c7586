"""The one interface every provider implements, and what a send reports back."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from email_worker.mime.messages import OutgoingEmail


@dataclass(frozen=True)
class SendResult:
    """What the provider said of one message: its id, and who took it and who did not.

    ``refused`` maps each recipient refused for good to the provider's reason (masked
    of addresses); a recipient refused only for now raises PartialDeliveryError instead.
    """

    message_id: str | None
    accepted: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Counts for a log line or a job row, without addresses."""
        return {"accepted": len(self.accepted), "refused": len(self.refused)}


class Provider(Protocol):
    """Delivers built messages; raises Transient/Permanent/AccountProviderError on failure."""

    name: str

    def send(self, email: OutgoingEmail) -> SendResult:
        """Hand the message over and report what the provider did with it."""
        ...

    def close(self) -> None:
        """Release connections; the provider reconnects if used again."""
        ...

    def check(self) -> bool:
        """Whether the provider looks able to send (for health checks); no email is sent."""
        ...

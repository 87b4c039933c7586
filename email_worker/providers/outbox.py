"""The zero-configuration provider: each email becomes an ``.eml`` file in a folder."""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from email_worker.errors import TransientProviderError
from email_worker.mime.messages import OutgoingEmail
from email_worker.providers.base import SendResult


class OutboxProvider:
    """Writes each message to ``<dir>/<timestamp>-<kind>-<id>.eml``, atomically."""

    name = "outbox"

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def send(self, email: OutgoingEmail) -> SendResult:
        """Write the message file; its path serves as the message id."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        token = re.sub(r"[^A-Za-z0-9]", "", email.message_id.split("@")[0])[-12:]
        path = self.directory / f"{stamp}-{email.kind}-{token}.eml"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(".eml.part")
            partial.write_bytes(email.as_bytes())
            os.replace(partial, path)  # readers never see half a message
        except OSError as exc:
            raise TransientProviderError(
                f"cannot write to the outbox: {exc.strerror}", provider=self.name
            ) from None
        return SendResult(str(path), accepted=email.envelope.recipients)

    def close(self) -> None:
        """Nothing to release."""

    def check(self) -> bool:
        """The outbox folder exists or can be made, and is writable."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        return os.access(self.directory, os.W_OK)

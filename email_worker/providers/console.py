"""A development provider that prints each message to standard output."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from email_worker.messages import OutgoingEmail
from email_worker.providers.base import SendResult


class ConsoleProvider:
    """Prints whole messages, separated by a rule; nothing is delivered."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, email: OutgoingEmail) -> SendResult:
        """Print the message; its Message-ID is the id."""
        stream = self._stream or sys.stdout
        text = email.as_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
        with self._lock:
            stream.write(f"{'-' * 72}\n{text}\n")
            stream.flush()
        return SendResult(email.message_id, accepted=email.envelope.recipients)

    def close(self) -> None:
        """Nothing to release."""

    def check(self) -> bool:
        """Always ready."""
        return True

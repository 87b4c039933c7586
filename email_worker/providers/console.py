"""A development provider that prints each message to standard output."""

from __future__ import annotations

import sys
import threading
from typing import TextIO

from email_worker.messages import OutgoingEmail


class ConsoleProvider:
    """Prints whole messages, separated by a rule; nothing is delivered."""

    name = "console"

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, email: OutgoingEmail) -> str:
        """Print the message and return its Message-ID."""
        stream = self._stream or sys.stdout
        text = email.as_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
        with self._lock:
            stream.write(f"{'-' * 72}\n{text}\n")
            stream.flush()
        return email.message_id

    def close(self) -> None:
        """Nothing to release."""

    def check(self) -> bool:
        """Always ready."""
        return True

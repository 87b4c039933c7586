"""A development provider that shows each message on the console; nothing is delivered.

Logs are collected and kept, so no body, subject or address goes there. The whole
message is written only to a terminal (the worker's own standard output, not Celery's
redirection of it into the log), and only when DELIVERY_MODE is not live. Otherwise
each message is one log line: its Message-ID, kind, masked recipients and size.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TextIO

from email_worker.mime.messages import OutgoingEmail
from email_worker.privacy import masked_recipients
from email_worker.providers.base import SendResult

log = logging.getLogger("email_worker.providers")


class ConsoleProvider:
    """Prints whole messages to a terminal when allowed, else logs a summary of each."""

    name = "console"

    def __init__(self, stream: TextIO | None = None, *, whole_messages: bool = False) -> None:
        self._stream = stream
        self._whole_messages = whole_messages
        self._lock = threading.Lock()

    def send(self, email: OutgoingEmail) -> SendResult:
        """Show the message; its Message-ID is the id."""
        stream = self._stream or sys.__stdout__
        if self._whole_messages and stream is not None and _is_terminal(stream):
            text = email.as_bytes().decode("utf-8", errors="replace").replace("\r\n", "\n")
            with self._lock:
                stream.write(f"{'-' * 72}\n{text}\n")
                stream.flush()
        else:
            log.info(
                "console provider: email not delivered",
                extra={
                    "provider": self.name,
                    "message_id": email.message_id,
                    "kind": email.kind,
                    "to": masked_recipients(list(email.envelope.recipients)),
                    "bytes": len(email.as_bytes()),
                },
            )
        return SendResult(email.message_id, accepted=email.envelope.recipients)

    def close(self) -> None:
        """Nothing to release."""

    def check(self) -> bool:
        """Always ready."""
        return True


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False

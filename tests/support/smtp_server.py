"""A real SMTP server (aiosmtpd) whose replies a test can program.

It advertises PIPELINING (RFC 2920) like the servers mail is sent to in production,
unless started with ``pipelining=False``; aiosmtpd reads commands line by line from a
buffer, so it answers a pipelined batch in order.  It records every chunk of bytes as
it arrived from a client, so a test can count the client's round trips.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.support.ports import free_port


@dataclass
class Received:
    """One message the server accepted."""

    sender: str
    recipients: list[str]
    raw: bytes
    at: float = field(default_factory=time.monotonic)
    """When the server accepted it (``time.monotonic()`` in the test's process)."""

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.raw, policy=email.policy.default)  # type: ignore[return-value]


COMMANDS = {"EHLO", "HELO", "MAIL", "RCPT", "DATA", "RSET", "NOOP", "QUIT", "STARTTLS", "AUTH"}


class ProgrammableHandler:
    """Accepts mail, unless a test queued a reply for the next MAIL, RCPT or DATA."""

    def __init__(self, pipelining: bool = True) -> None:
        self.pipelining = pipelining
        self.arrivals: list[bytes] = []
        self.connections = 0  # client connections accepted
        self.received: list[Received] = []
        self.data_attempts = 0
        self.rcpt_attempts = 0
        self.data_delay = 0.0
        self.in_progress = 0
        self.replies: dict[str, deque[str]] = {"MAIL": deque(), "RCPT": deque(), "DATA": deque()}
        self.refusals: dict[str, deque[str]] = {}
        self.drops: set[str] = set()
        # Like some servers in the wild: answer DATA with 354 though every RCPT was refused.
        self.data_without_recipients = False
        self.lock = threading.Lock()

    def reply_next(self, stage: str, reply: str, times: int = 1) -> None:
        """Answer the next ``times`` MAIL, RCPT or DATA commands with ``reply``."""
        self.replies[stage].extend([reply] * times)

    def refuse(self, address: str, reply: str, times: int = 1) -> None:
        """Answer the next ``times`` RCPT TO for ``address`` with ``reply``."""
        self.refusals.setdefault(address, deque()).extend([reply] * times)

    def drop_next(self, stage: str) -> None:
        """Close the connection without a reply at the next RCPT, or after taking the next
        DATA content (the message is kept, as by a server that stored it and then failed)."""
        self.drops.add(stage)

    def _dropping(self, server: SMTP, stage: str) -> bool:
        if stage not in self.drops:
            return False
        self.drops.discard(stage)
        assert server.transport is not None
        server.transport.close()
        return True

    def commands(self) -> list[list[str]]:
        """The command verbs of each arrival (message content shows as ``<content>``)."""
        batches: list[list[str]] = []
        for arrival in self.arrivals:
            lines = arrival.decode("utf-8", "replace").split("\r\n")[:-1]
            verbs = [line.split(" ", 1)[0].split(":", 1)[0].upper() for line in lines]
            batches.append(verbs if verbs and set(verbs) <= COMMANDS else ["<content>"])
        return batches

    async def handle_EHLO(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        hostname: str,
        responses: list[str],
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.replies["MAIL"]:
            return self.replies["MAIL"].popleft()
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.rcpt_attempts += 1
        if self._dropping(server, "RCPT"):
            return "421 closing"  # never reaches the client: the connection is closed
        if self.replies["RCPT"]:
            return self.replies["RCPT"].popleft()
        if self.refusals.get(address):
            if self.data_without_recipients:
                envelope.rcpt_tos.append(address)
            return self.refusals[address].popleft()
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.data_attempts += 1
        if self.replies["DATA"]:
            return self.replies["DATA"].popleft()
        self.in_progress += 1
        try:
            if self.data_delay:
                await asyncio.sleep(self.data_delay)
            with self.lock:
                self.received.append(
                    Received(
                        str(envelope.mail_from),
                        list(envelope.rcpt_tos),
                        bytes(envelope.original_content or envelope.content),
                    )
                )
        finally:
            self.in_progress -= 1
        if self._dropping(server, "DATA"):
            return "421 closing"  # never reaches the client: the connection is closed
        return "250 2.0.0 Ok: queued"


class RecordingSMTP(SMTP):
    """aiosmtpd's SMTP session, recording each chunk of bytes as it arrived."""

    def connection_made(self, transport: Any) -> None:
        self.event_handler.connections += 1
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        self.event_handler.arrivals.append(bytes(data))
        super().data_received(data)


class RecordingController(Controller):
    def factory(self) -> SMTP:
        return RecordingSMTP(self.handler, **self.SMTP_kwargs)


class SmtpServer:
    """An aiosmtpd server on 127.0.0.1 that can be restarted to drop its connections."""

    def __init__(
        self, port: int | None = None, *, pipelining: bool = True, **controller_kwargs: Any
    ) -> None:
        self.port = port or free_port()
        self.handler = ProgrammableHandler(pipelining)
        self._kwargs = controller_kwargs
        self._controller: RecordingController | None = None

    def start(self) -> SmtpServer:
        self._controller = RecordingController(
            self.handler, hostname="127.0.0.1", port=self.port, **self._kwargs
        )
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def restart(self) -> None:
        """Stop and start again: every open client connection is dropped."""
        self.stop()
        self.start()

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def reset(self) -> None:
        self.handler.__init__(self.handler.pipelining)  # type: ignore[misc]

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Wait until at least ``count`` messages arrived; return them."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} messages, got {len(self.received)} in {timeout}s"
                )
            time.sleep(0.05)
        return list(self.received)

    def by_message_id(self, message_id: str) -> list[Received]:
        return [r for r in self.received if r.message["Message-ID"] == message_id]

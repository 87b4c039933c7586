"""SMTP delivery over one reused connection per worker process.

The connection is opened on first use, checked with NOOP when it has been idle,
reopened when the server has dropped it, and closed on worker shutdown.  Replies
are classified here: 4xx and lost connections are transient, 5xx permanent,
authentication and TLS failures account-level.  Where the server offers
PIPELINING (RFC 2920), MAIL FROM, every RCPT TO and DATA go out in one write and
their replies are read in order: two round trips per message instead of three plus
one per recipient.  The content always waits for the 354, so a connection lost after
the content went out (the server may have the message) is told apart from one lost
before (safe to send again at once).
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import threading
import time
from collections.abc import Callable

from email_worker.errors import (
    AccountProviderError,
    PartialDeliveryError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from email_worker.mime.messages import OutgoingEmail
from email_worker.privacy import redact_text
from email_worker.providers.base import SendResult

log = logging.getLogger(__name__)

NAME = "smtp"

Reply = tuple[int, bytes]

# An address smtplib.quoteaddr would give back unchanged inside angle brackets: a plain
# ASCII dot-atom local part and domain. quoteaddr parses every address with
# email.utils.parseaddr (about 13 us each, twice per email); an address of this shape
# needs no parsing, and any other still goes through quoteaddr.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9_+-]+(?:\.[A-Za-z0-9_+-]+)*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*"
)


def quote_address(address: str) -> str:
    """The address as an SMTP path (``<local@domain>``), as smtplib.quoteaddr writes it."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    return smtplib.quoteaddr(address)


def _reply_text(message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else str(message)
    return redact_text(" ".join(text.split()))


def classify_reply(code: int, message: bytes | str, stage: str) -> ProviderError:
    """Turn an SMTP reply into the error the worker acts on (RFC 5321 section 4.2.1)."""
    text = f"SMTP {stage} refused: {code} {_reply_text(message)}"
    if code in (530, 534, 535, 538):  # authentication required / failed (RFC 4954)
        return AccountProviderError(text, provider=NAME, code=code)
    if 400 <= code < 500:
        return TransientProviderError(text, provider=NAME, code=code)
    return PermanentProviderError(text, provider=NAME, code=code)


class SmtpProvider:
    """Sends through one SMTP server with STARTTLS, implicit TLS or no TLS."""

    name = NAME

    def __init__(
        self,
        host: str,
        port: int = 587,
        *,
        security: str = "starttls",
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        ca_file: str = "",
        idle_check_after: float = 15.0,
        pipelining: bool = True,
    ) -> None:
        if security not in ("starttls", "tls", "none"):
            raise ValueError(f"security must be starttls, tls or none, got {security!r}")
        self.host, self.port, self.security = host, port, security
        self._username, self._password = username, password
        self._timeout, self._ca_file = timeout, ca_file
        self._idle_check_after = idle_check_after
        self._pipelining = pipelining
        self._context: ssl.SSLContext | None = None
        self._conn: smtplib.SMTP | None = None
        self._last_used = 0.0
        # Celery's thread pools share this provider; one SMTP session serves one send at a time.
        self._lock = threading.Lock()
        self.connections_opened = 0

    def send(self, email: OutgoingEmail) -> SendResult:
        """Deliver the message; its Message-ID is the id, and refusals for good are reported.

        A connection lost before the message content went out is retried at once on a
        new connection when it was a reused one (the server closed it while idle).  One
        lost after the content went out, while waiting for the server's answer, is not:
        the server may have taken the message, so a TransientProviderError lets the task
        retry it later, within the at-least-once duplicate window (same Message-ID).
        """
        options = ["SMTPUTF8"] if email.needs_smtputf8 else []
        with self._lock:
            for attempt in range(2):
                reused = self._conn is not None
                conn = self._connection()
                try:
                    return self._transact(conn, email, options)
                except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
                    self._drop()
                    if not reused or attempt:
                        raise TransientProviderError(
                            f"SMTP connection lost: {exc}", provider=NAME
                        ) from None
                except ProviderError:
                    raise  # a refusal: the session was reset (or dropped after a 421)
                except BaseException:
                    # Interrupted mid-transaction (a time limit, a shutdown): the session's
                    # state is unknown, so the next send must not reuse it.
                    self._drop()
                    raise
                # The server dropped a connection we had kept open: open a new one, once.
                log.info("smtp connection was closed by the server; reconnecting")
        raise AssertionError("unreachable")

    def _transact(self, conn: smtplib.SMTP, email: OutgoingEmail, options: list[str]) -> SendResult:
        """One mail transaction: the envelope, then the content once the server asked for it.

        Disconnects before the content is sent propagate for send() to reconnect.
        """
        if "SMTPUTF8" in options and not conn.has_extn("smtputf8"):
            raise PermanentProviderError(
                "SMTP server lacks the SMTPUTF8 extension an address with non-ASCII "
                "characters before the @ needs",
                provider=NAME,
            )
        payload = email.as_bytes()
        try:
            conn.ehlo_or_helo_if_needed()
            if conn.does_esmtp and conn.has_extn("size"):
                options = [*options, f"SIZE={len(payload)}"]
            envelope = (email.envelope.sender, email.envelope.recipients, options)
            if self._pipelining and conn.has_extn("pipelining"):
                refused = self._pipelined_envelope(conn, *envelope)
            else:
                refused = self._envelope(conn, *envelope)
        except ProviderError:
            raise
        except smtplib.SMTPNotSupportedError as exc:
            self._reset(conn)
            raise PermanentProviderError(
                f"SMTP server lacks a needed extension: {exc}", provider=NAME
            ) from None
        except (smtplib.SMTPServerDisconnected, ConnectionError):
            raise  # nothing of the message was sent yet: send() may reconnect
        except smtplib.SMTPResponseException as exc:
            raise self._refused(exc.smtp_code, exc.smtp_error, "command") from None
        except OSError as exc:  # a timeout or a socket error: the session's state is unknown
            self._drop()
            raise TransientProviderError(f"SMTP send failed: {exc}", provider=NAME) from None
        code, reply = self._content(conn, payload)
        if code != 250:  # the final reply ends the transaction: no RSET needed
            raise self._refused(code, reply, "DATA", reset=False)
        self._last_used = time.monotonic()
        if refused:
            self._partly_refused(email, refused)
        return SendResult(
            email.message_id,
            accepted=tuple(a for a in email.envelope.recipients if a not in refused),
            refused={a: f"{code} {_reply_text(reply)}" for a, (code, reply) in refused.items()},
        )

    def _envelope(
        self, conn: smtplib.SMTP, sender: str, recipients: tuple[str, ...], options: list[str]
    ) -> dict[str, Reply]:
        """MAIL, RCPT and DATA one at a time; return the recipients refused while others
        were taken."""
        code, reply = conn.mail(sender, options)
        if code != 250:  # no transaction was started: no RSET needed
            raise self._refused(code, reply, "MAIL FROM", reset=False)
        refused = self._recipients(recipients, conn.rcpt)
        if len(refused) == len(recipients):
            raise self._all_refused(refused)
        code, reply = conn.docmd("DATA")
        if code != 354:
            raise self._refused(code, reply, "DATA")
        return refused

    def _pipelined_envelope(
        self, conn: smtplib.SMTP, sender: str, recipients: tuple[str, ...], options: list[str]
    ) -> dict[str, Reply]:
        """MAIL, every RCPT and DATA in one write (RFC 2920), then their replies in order;
        refusals are classified exactly as in _envelope."""
        commands = [
            f"MAIL FROM:{quote_address(sender)}{''.join(f' {o}' for o in options)}",
            *(f"RCPT TO:{quote_address(address)}" for address in recipients),
            "DATA",
        ]
        if any("\r" in command or "\n" in command for command in commands):
            raise ValueError("an SMTP command cannot contain CR or LF characters")
        encoding = "utf-8" if "SMTPUTF8" in options else "ascii"
        conn.send("".join(f"{command}\r\n" for command in commands).encode(encoding))
        code, reply = conn.getreply()
        if code != 250:
            if code != 421:  # after a 421 the server closes: no more replies come
                self._settle(conn, owed=len(recipients) + 1)
            raise self._refused(code, reply, "MAIL FROM", reset=False)
        refused = self._recipients(recipients, lambda _address: conn.getreply())
        if len(refused) == len(recipients):
            if all(refusal[0] != 421 for refusal in refused.values()):
                self._settle(conn, owed=1)
            raise self._all_refused(refused)
        code, reply = conn.getreply()
        if code != 354:
            raise self._refused(code, reply, "DATA")
        return refused

    def _settle(self, conn: smtplib.SMTP, owed: int) -> None:
        """Read the replies still owed to a pipelined batch whose outcome is already known.

        A server may answer DATA with 354 even though no recipient was taken; the client
        then ends the data at once (RFC 2920 section 3.1).  A connection that fails here
        is dropped: the outcome stands and the next send opens a new one.
        """
        code = 0
        try:
            for _ in range(owed):
                code, _reply = conn.getreply()
            if code == 354:
                conn.send(b".\r\n")
                conn.getreply()
        except (smtplib.SMTPException, OSError):
            self._drop()

    @staticmethod
    def _recipients(recipients: tuple[str, ...], rcpt: Callable[[str], Reply]) -> dict[str, Reply]:
        """Read the reply to RCPT for each recipient; return the refused ones with it."""
        refused: dict[str, Reply] = {}
        for address in recipients:
            code, reply = rcpt(address)
            if code == 421:  # the server is closing: the transaction is over for everyone
                return {a: refused.get(a, (code, reply)) for a in recipients}
            if code not in (250, 251):
                refused[address] = (code, reply)
        return refused

    def _content(self, conn: smtplib.SMTP, payload: bytes) -> tuple[int, bytes]:
        """Send the message content and read the server's final answer to it."""
        wire = re.sub(rb"(?m)^\.", b"..", payload)  # dot-stuffing (RFC 5321 section 4.5.2)
        if not wire.endswith(b"\r\n"):
            wire += b"\r\n"
        try:
            conn.send(wire + b".\r\n")
            return conn.getreply()
        except OSError as exc:
            self._drop()
            raise TransientProviderError(
                f"SMTP server gave no answer to the message content, so whether it took the "
                f"message is unknown: {exc}",
                provider=NAME,
            ) from None

    def _refused(
        self, code: int, reply: bytes | str, stage: str, *, reset: bool = True
    ) -> ProviderError:
        """End the transaction after a refusal (RSET when one is open) and classify it."""
        if code == 421:  # the server is closing the connection (RFC 5321 section 3.8)
            self._drop()
        elif reset and self._conn is not None:
            self._reset(self._conn)
        return classify_reply(code, reply, stage)

    def _all_refused(self, refused: dict[str, Reply]) -> ProviderError:
        """Every recipient was refused: retry the ones refused for now, drop the rest."""
        if any(code == 421 for code, _ in refused.values()):
            self._drop()  # the server is closing the connection
        worst = max(refused.values(), key=lambda item: item[0])
        error = self._refused(*worst, "RCPT")
        later = tuple(a for a, (code, _) in refused.items() if 400 <= code < 500)
        if not later or len(later) == len(refused) or isinstance(error, AccountProviderError):
            return error  # all for good, all for now, or the account itself refused
        log.warning(
            "smtp server refused all %d recipients (%d for now, %d for good)",
            len(refused),
            len(later),
            len(refused) - len(later),
        )
        code, reply = refused[later[0]]
        return PartialDeliveryError(
            f"SMTP refused all {len(refused)} recipients; {len(later)} for now: "
            f"{code} {_reply_text(reply)}",
            provider=NAME,
            code=code,
            retry_recipients=later,
        )

    def _partly_refused(self, email: OutgoingEmail, refused: dict[str, Reply]) -> None:
        """Some recipients took the message: retry only those refused for now (4xx)."""
        later = tuple(addr for addr, (code, _) in refused.items() if 400 <= code < 500)
        log.warning(
            "smtp server refused %d of %d recipients (%d for now)",
            len(refused),
            len(email.envelope.recipients),
            len(later),
        )
        if later:
            code, reply = refused[later[0]]
            raise PartialDeliveryError(
                f"SMTP accepted {len(email.envelope.recipients) - len(refused)} of "
                f"{len(email.envelope.recipients)} recipients; {len(later)} refused for now: "
                f"{code} {_reply_text(reply)}",
                provider=NAME,
                code=code,
                retry_recipients=later,
            )

    def _connection(self) -> smtplib.SMTP:
        if self._conn is not None and time.monotonic() - self._last_used > self._idle_check_after:
            try:
                if self._conn.noop()[0] != 250:
                    self._drop()
            except (smtplib.SMTPException, OSError):
                self._drop()
        if self._conn is None:
            self._conn = self._open()
            self._last_used = time.monotonic()
        return self._conn

    def _tls_context(self) -> ssl.SSLContext:
        # Loading the CA certificates takes milliseconds: once per process, not per connection.
        if self._context is None:
            self._context = ssl.create_default_context(cafile=self._ca_file or None)
        return self._context

    def _open(self) -> smtplib.SMTP:
        context = self._tls_context() if self.security != "none" else None
        conn: smtplib.SMTP | None = None
        try:
            if self.security == "tls":
                conn = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self._timeout, context=context
                )
            else:
                conn = smtplib.SMTP(self.host, self.port, timeout=self._timeout)
            conn.ehlo()
            if self.security == "starttls":
                conn.starttls(context=context)
                conn.ehlo()
            if self._username:
                conn.login(self._username, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            self._quietly_close(conn)
            raise classify_reply(exc.smtp_code, exc.smtp_error, "AUTH") from None
        except smtplib.SMTPNotSupportedError as exc:
            self._quietly_close(conn)
            raise AccountProviderError(
                f"SMTP server {self.host}:{self.port} does not offer what SMTP_SECURITY or "
                f"SMTP_USERNAME asks for: {exc}",
                provider=NAME,
            ) from None
        except ssl.SSLError as exc:
            self._quietly_close(conn)
            raise AccountProviderError(
                f"TLS with {self.host}:{self.port} failed: {exc}", provider=NAME
            ) from None
        except smtplib.SMTPResponseException as exc:
            self._quietly_close(conn)
            raise classify_reply(exc.smtp_code, exc.smtp_error, "greeting") from None
        except (TimeoutError, OSError) as exc:
            self._quietly_close(conn)
            raise TransientProviderError(
                f"cannot connect to SMTP server {self.host}:{self.port}: {exc}", provider=NAME
            ) from None
        self.connections_opened += 1
        return conn

    def _reset(self, conn: smtplib.SMTP) -> None:
        try:
            conn.rset()
        except (smtplib.SMTPException, OSError):
            self._drop()

    def _drop(self, *, polite: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        if polite:  # QUIT only on a healthy session, and never wait long for its answer
            try:
                if conn.sock is not None:
                    conn.sock.settimeout(min(self._timeout, 5.0))
                conn.quit()
                return
            except (smtplib.SMTPException, OSError):
                pass
        # A session in an unknown state (interrupted, timed out) is closed, not asked to
        # QUIT: a server that stopped answering would hold us for the whole timeout.
        conn.close()

    @staticmethod
    def _quietly_close(conn: smtplib.SMTP | None) -> None:
        if conn is not None:
            conn.close()

    def close(self) -> None:
        """Say QUIT and close the connection, if one is open."""
        with self._lock:
            self._drop(polite=True)

    def check(self) -> bool:
        """Whether the server answers (opens a connection if none is open)."""
        with self._lock:
            try:
                conn = self._connection()
                return conn.noop()[0] == 250
            except (ProviderError, smtplib.SMTPException, OSError):
                self._drop()
                return False

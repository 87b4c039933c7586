"""SMTP delivery over one reused connection per worker process.

The connection is opened on first use, checked with NOOP when it has been idle,
reopened when the server has dropped it, and closed on worker shutdown.  Replies
are classified here: 4xx and lost connections are transient, 5xx permanent,
authentication and TLS failures account-level.
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import threading
import time

from email_worker.errors import (
    AccountProviderError,
    PartialDeliveryError,
    PermanentProviderError,
    ProviderError,
    TransientProviderError,
)
from email_worker.messages import OutgoingEmail
from email_worker.privacy import redact_text

log = logging.getLogger(__name__)

NAME = "smtp"


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
    ) -> None:
        if security not in ("starttls", "tls", "none"):
            raise ValueError(f"security must be starttls, tls or none, got {security!r}")
        self.host, self.port, self.security = host, port, security
        self._username, self._password = username, password
        self._timeout, self._ca_file = timeout, ca_file
        self._idle_check_after = idle_check_after
        self._conn: smtplib.SMTP | None = None
        self._last_used = 0.0
        # Celery's thread pools share this provider; one SMTP session serves one send at a time.
        self._lock = threading.Lock()
        self.connections_opened = 0

    def send(self, email: OutgoingEmail) -> str:
        """Deliver the message and return its Message-ID."""
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
                    raise  # a refusal: the session was reset and stays usable
                except BaseException:
                    # Interrupted mid-transaction (a time limit, a shutdown): the session's
                    # state is unknown, so the next send must not reuse it.
                    self._drop()
                    raise
                # The server dropped a connection we had kept open: open a new one, once.
                log.info("smtp connection was closed by the server; reconnecting")
        raise AssertionError("unreachable")

    def _transact(self, conn: smtplib.SMTP, email: OutgoingEmail, options: list[str]) -> str:
        if "SMTPUTF8" in options and not conn.has_extn("smtputf8"):
            raise PermanentProviderError(
                "SMTP server lacks the SMTPUTF8 extension an address with non-ASCII "
                "characters before the @ needs",
                provider=NAME,
            )
        try:
            refused = conn.sendmail(
                email.envelope.sender,
                list(email.envelope.recipients),
                email.as_bytes(),
                mail_options=options,
            )
        except smtplib.SMTPRecipientsRefused as exc:
            self._reset(conn)
            codes = [code for code, _ in exc.recipients.values()]
            code, message = next(iter(exc.recipients.values()))
            # Transient only if every refusal is temporary: one 5xx means a bad address.
            worst = max(codes)
            raise classify_reply(worst if worst >= 500 else code, message, "RCPT") from None
        except smtplib.SMTPSenderRefused as exc:
            self._reset(conn)
            raise classify_reply(exc.smtp_code, exc.smtp_error, "MAIL FROM") from None
        except smtplib.SMTPDataError as exc:
            self._reset(conn)
            raise classify_reply(exc.smtp_code, exc.smtp_error, "DATA") from None
        except smtplib.SMTPNotSupportedError as exc:
            self._reset(conn)
            raise PermanentProviderError(
                f"SMTP server lacks a needed extension: {exc}", provider=NAME
            ) from None
        except (smtplib.SMTPServerDisconnected, ConnectionError):
            raise  # send() reconnects once when the connection was a reused one
        except smtplib.SMTPResponseException as exc:
            self._reset(conn)
            raise classify_reply(exc.smtp_code, exc.smtp_error, "command") from None
        except (TimeoutError, OSError) as exc:
            self._drop()
            raise TransientProviderError(f"SMTP send failed: {exc}", provider=NAME) from None
        self._last_used = time.monotonic()
        if refused:
            self._partly_refused(email, refused)
        return email.message_id

    def _partly_refused(self, email: OutgoingEmail, refused: dict[str, tuple[int, bytes]]) -> None:
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

    def _open(self) -> smtplib.SMTP:
        context = ssl.create_default_context(cafile=self._ca_file or None)
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

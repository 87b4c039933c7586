"""SMTP delivery against a real aiosmtpd server whose replies the tests program."""

from __future__ import annotations

import logging
import signal
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.smtp import AuthResult, LoginPassword

from email_worker.errors import (
    AccountProviderError,
    PartialDeliveryError,
    PermanentProviderError,
    TransientProviderError,
)
from email_worker.kinds import GENERIC
from email_worker.mime.messages import OutgoingEmail, Sender, build_message
from email_worker.producer.validation import validate_request
from email_worker.providers.smtp import SmtpProvider, quote_address
from email_worker.rendering.renderer import render_inline
from tests.support.smtp_server import SmtpServer


def outgoing(
    to: str | list[str] = "ann@example.com", subject: str = "Hello", body: str = "Body"
) -> OutgoingEmail:
    request = validate_request(
        GENERIC, {"to": to, "subject": subject, "text": body}, template_exists=lambda t: True
    )
    return build_message(
        request,
        render_inline(subject, None, body),
        sender=Sender("noreply@mail.example.com", "Example"),
    )


@pytest.fixture(params=[True, False], ids=["pipelined", "unpipelined"])
def pipelining(request: pytest.FixtureRequest) -> bool:
    """Whether the server offers PIPELINING (RFC 2920): every behaviour holds either way."""
    return bool(request.param)


@pytest.fixture
def server(pipelining: bool) -> Iterator[SmtpServer]:
    server = SmtpServer(pipelining=pipelining).start()
    yield server
    server.stop()


@pytest.fixture
def provider(server: SmtpServer) -> Iterator[SmtpProvider]:
    provider = SmtpProvider("127.0.0.1", server.port, security="none", timeout=5)
    yield provider
    provider.close()


def test_delivers_with_the_envelope_and_reuses_one_connection(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    first, second = outgoing(["ann@example.com", "bob@example.com"]), outgoing("cat@example.com")
    assert provider.send(first).message_id == first.message_id
    provider.send(second)
    received = server.wait_for(2)
    assert received[0].recipients == ["ann@example.com", "bob@example.com"]
    assert received[0].sender == "noreply@mail.example.com"
    assert received[0].message["Message-ID"] == first.message_id
    assert provider.connections_opened == 1


@pytest.mark.parametrize(
    ("offered", "used", "per_message"),
    [
        (True, True, [["MAIL", "RCPT", "RCPT", "RCPT", "DATA"], ["<content>"]]),
        (True, False, [["MAIL"], ["RCPT"], ["RCPT"], ["RCPT"], ["DATA"], ["<content>"]]),
        (False, True, [["MAIL"], ["RCPT"], ["RCPT"], ["RCPT"], ["DATA"], ["<content>"]]),
    ],
    ids=["pipelined", "pipelining-off", "not-offered"],
)
def test_round_trips_per_message(offered: bool, used: bool, per_message: list[list[str]]) -> None:
    server = SmtpServer(pipelining=offered).start()
    provider = SmtpProvider("127.0.0.1", server.port, security="none", timeout=5, pipelining=used)
    try:
        for _ in range(3):
            provider.send(outgoing(["ann@example.com", "bob@example.com", "cat@example.com"]))
        assert len(server.wait_for(3)) == 3
        assert [r.recipients for r in server.received] == [
            ["ann@example.com", "bob@example.com", "cat@example.com"]
        ] * 3
        # One EHLO for the connection, no RSET: only the transactions themselves.
        assert server.handler.commands() == [["EHLO"], *per_message * 3]
    finally:
        provider.close()
        server.stop()


def test_4xx_is_transient(server: SmtpServer, provider: SmtpProvider) -> None:
    server.handler.reply_next("DATA", "451 4.3.0 Try again later")
    with pytest.raises(TransientProviderError) as caught:
        provider.send(outgoing())
    assert caught.value.code == 451
    provider.send(outgoing())  # the same connection carries on after the refusal
    assert len(server.wait_for(1)) == 1 and provider.connections_opened == 1


def test_5xx_is_permanent_and_the_address_is_masked(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    server.handler.reply_next("RCPT", "550 5.1.1 <ann@example.com>: Recipient address rejected")
    with pytest.raises(PermanentProviderError) as caught:
        provider.send(outgoing())
    assert caught.value.code == 550
    assert "ann@example.com" not in str(caught.value) and "a***@example.com" in str(caught.value)


def test_every_recipient_refused_for_good_is_permanent(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    server.handler.refuse("ann@example.com", "550 5.1.1 No such user")
    server.handler.refuse("bob@example.com", "553 5.1.3 Bad address")
    with pytest.raises(PermanentProviderError) as caught:
        provider.send(outgoing(["ann@example.com", "bob@example.com"]))
    assert caught.value.code == 553 and server.received == []


def test_every_recipient_refused_for_now_is_transient_for_all(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    server.handler.refuse("ann@example.com", "450 4.2.1 Mailbox busy")
    server.handler.refuse("bob@example.com", "451 4.7.1 Greylisted")
    with pytest.raises(TransientProviderError) as caught:
        provider.send(outgoing(["ann@example.com", "bob@example.com"]))
    assert not isinstance(caught.value, PartialDeliveryError)  # the retry goes to everyone
    assert caught.value.code in (450, 451) and server.received == []


def test_every_recipient_refused_some_for_now_retries_only_those(
    server: SmtpServer, provider: SmtpProvider, caplog: pytest.LogCaptureFixture
) -> None:
    server.handler.refuse("ann@example.com", "450 4.2.1 Mailbox busy")
    server.handler.refuse("bob@example.com", "550 5.1.1 No such user")
    server.handler.refuse("cat@example.com", "451 4.7.1 Greylisted")
    email = outgoing(["ann@example.com", "bob@example.com", "cat@example.com"])
    with caplog.at_level(logging.INFO), pytest.raises(PartialDeliveryError) as caught:
        provider.send(email)
    assert caught.value.retry_recipients == ("ann@example.com", "cat@example.com")
    assert server.received == []
    logged = " ".join(r.getMessage() for r in caplog.records if r.name.startswith("email_worker"))
    assert "refused all 3 recipients (2 for now, 1 for good)" in logged
    assert "example.com" not in logged + str(caught.value) + repr(caught.value.args)
    provider.send(email)  # the session was reset and carries on
    assert len(server.wait_for(1)) == 1 and provider.connections_opened == 1


def test_a_421_at_rcpt_ends_the_transaction_for_every_recipient_not_refused_for_good(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    server.handler.refuse("ann@example.com", "550 5.1.1 No such user")
    server.handler.refuse("bob@example.com", "421 4.3.2 Shutting down")
    with pytest.raises(PartialDeliveryError) as caught:
        provider.send(outgoing(["ann@example.com", "bob@example.com", "cat@example.com"]))
    assert caught.value.retry_recipients == ("bob@example.com", "cat@example.com")
    provider.send(outgoing("cat@example.com"))  # the closing session is not reused
    assert len(server.wait_for(1)) == 1 and provider.connections_opened == 2


def test_a_dropped_connection_is_reopened(server: SmtpServer, provider: SmtpProvider) -> None:
    provider.send(outgoing(subject="before"))
    server.restart()  # the server drops every open connection
    provider.send(outgoing(subject="after"))
    subjects = [r.message["Subject"] for r in server.wait_for(2)]
    assert subjects == ["before", "after"]
    assert provider.connections_opened == 2


def test_a_connection_lost_before_the_content_is_retried_on_a_new_one(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    provider.send(outgoing(subject="before"))
    server.handler.drop_next("RCPT")
    provider.send(outgoing(subject="after"))
    assert [r.message["Subject"] for r in server.wait_for(2)] == ["before", "after"]
    assert provider.connections_opened == 2


def test_a_connection_lost_after_the_content_is_not_sent_again_at_once(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    provider.send(outgoing(subject="before"))
    server.handler.drop_next("DATA")  # the server keeps the message, then the line drops
    with pytest.raises(TransientProviderError, match="unknown"):
        provider.send(outgoing(subject="maybe"))
    assert [r.message["Subject"] for r in server.received] == ["before", "maybe"]
    assert server.handler.data_attempts == 2
    provider.send(outgoing(subject="after"))  # the next send opens a new connection
    assert [r.message["Subject"] for r in server.wait_for(3)] == ["before", "maybe", "after"]
    assert provider.connections_opened == 2


def test_a_message_with_leading_dots_arrives_intact(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    body = ".hidden\n..two\n.\nend"
    provider.send(outgoing(body=body))
    (received,) = server.wait_for(1)
    text = received.message.get_body(("plain",))
    assert text is not None and text.get_content().splitlines() == body.splitlines()


def test_an_unreachable_server_is_transient(server: SmtpServer) -> None:
    server.stop()
    provider = SmtpProvider("127.0.0.1", server.port, security="none", timeout=2)
    with pytest.raises(TransientProviderError, match="cannot connect"):
        provider.send(outgoing())
    assert provider.check() is False


def test_close_says_quit_and_a_later_send_reconnects(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    provider.send(outgoing())
    provider.close()
    provider.send(outgoing())
    assert provider.connections_opened == 2 and len(server.wait_for(2)) == 2


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


def _authenticator(server, session, envelope, mechanism, auth_data):  # type: ignore[no-untyped-def]
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
        b"mailer",
        b"correct horse",
    )
    return AuthResult(success=ok, handled=False)


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[SmtpServer]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*certificate)
    server = SmtpServer(
        tls_context=context, require_starttls=True, authenticator=_authenticator, auth_required=True
    ).start()
    yield server
    server.stop()


def test_starttls_and_login(tls_server: SmtpServer, certificate: tuple[Path, Path]) -> None:
    provider = SmtpProvider(
        "127.0.0.1",
        tls_server.port,
        security="starttls",
        username="mailer",
        password="correct horse",
        ca_file=str(certificate[0]),
    )
    provider.send(outgoing())
    assert len(tls_server.wait_for(1)) == 1
    provider.close()


def test_wrong_password_is_an_account_error(
    tls_server: SmtpServer, certificate: tuple[Path, Path]
) -> None:
    provider = SmtpProvider(
        "127.0.0.1",
        tls_server.port,
        security="starttls",
        username="mailer",
        password="wrong",
        ca_file=str(certificate[0]),
        timeout=5,
    )
    with pytest.raises(AccountProviderError) as caught:
        provider.send(outgoing())
    assert caught.value.code == 535 and "wrong" not in str(caught.value)


def test_an_untrusted_certificate_is_an_account_error(tls_server: SmtpServer) -> None:
    provider = SmtpProvider("127.0.0.1", tls_server.port, security="starttls", timeout=5)
    with pytest.raises(AccountProviderError, match="TLS"):
        provider.send(outgoing())


def test_an_interrupted_send_does_not_reuse_the_connection(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    class TimeLimit(Exception):
        pass

    def time_limit(signum: int, frame: object) -> None:
        raise TimeLimit  # what a soft time limit does in the middle of a transaction

    provider.send(outgoing(subject="first"))
    server.handler.data_delay = 1.0
    previous = signal.signal(signal.SIGALRM, time_limit)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    try:
        with pytest.raises(TimeLimit):
            provider.send(outgoing(subject="interrupted"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    server.handler.data_delay = 0.0
    provider.send(outgoing(subject="after"))
    assert provider.connections_opened == 2
    assert [r.message["Subject"] for r in server.wait_for(2)] == ["first", "after"]


def test_an_international_address_goes_out_with_smtputf8(pipelining: bool) -> None:
    server = SmtpServer(pipelining=pipelining, enable_SMTPUTF8=True).start()
    try:
        provider = SmtpProvider("127.0.0.1", server.port, security="none", timeout=5)
        provider.send(outgoing("ñoño@example.com"))
        (received,) = server.wait_for(1)
        assert received.recipients == ["ñoño@example.com"]
        provider.close()
    finally:
        server.stop()


def test_a_server_without_smtputf8_refuses_an_international_address_for_good(
    pipelining: bool,
) -> None:
    server = SmtpServer(pipelining=pipelining, enable_SMTPUTF8=False).start()
    try:
        provider = SmtpProvider("127.0.0.1", server.port, security="none", timeout=5)
        with pytest.raises(PermanentProviderError, match="SMTPUTF8"):
            provider.send(outgoing("ñoño@example.com"))
        assert server.received == []
        provider.close()
    finally:
        server.stop()


def test_a_refused_sender_is_permanent_and_the_connection_carries_on(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    server.handler.reply_next("MAIL", "553 5.7.1 Sender address rejected")
    with pytest.raises(PermanentProviderError) as caught:
        provider.send(outgoing())
    assert caught.value.code == 553 and "MAIL FROM" in str(caught.value)
    provider.send(outgoing(subject="after"))
    assert [r.message["Subject"] for r in server.wait_for(1)] == ["after"]
    assert provider.connections_opened == 1
    assert "RSET" not in sum(server.handler.commands(), [])  # no transaction was open


def test_a_421_to_the_sender_is_transient_and_the_closing_session_is_not_reused(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    server.handler.reply_next("MAIL", "421 4.3.2 Shutting down")
    with pytest.raises(TransientProviderError) as caught:
        provider.send(outgoing())
    assert caught.value.code == 421
    provider.send(outgoing())
    assert len(server.wait_for(1)) == 1 and provider.connections_opened == 2


def test_rset_only_while_a_transaction_is_open(server: SmtpServer, provider: SmtpProvider) -> None:
    server.handler.reply_next("DATA", "451 4.3.0 Try again later")  # the final reply
    with pytest.raises(TransientProviderError):
        provider.send(outgoing())
    server.handler.refuse("bob@example.com", "550 5.1.1 No such user")  # MAIL was taken
    with pytest.raises(PermanentProviderError):
        provider.send(outgoing("bob@example.com"))
    provider.send(outgoing())
    verbs = sum(server.handler.commands(), [])
    assert verbs.count("RSET") == 1 and verbs[-1] == "<content>"
    assert verbs.index("RSET") > verbs.index("RCPT", verbs.index("<content>"))
    assert len(server.wait_for(1)) == 1 and provider.connections_opened == 1


def test_data_taken_with_every_recipient_refused_sends_no_content(
    server: SmtpServer, provider: SmtpProvider
) -> None:
    server.handler.data_without_recipients = True  # 354 though no RCPT was taken
    server.handler.refuse("ann@example.com", "550 5.1.1 No such user")
    with pytest.raises(PermanentProviderError) as caught:
        provider.send(outgoing("ann@example.com", body="secret body"))
    assert caught.value.code == 550
    assert all(b"secret body" not in r.raw for r in server.received)
    server.handler.data_without_recipients = False
    provider.send(outgoing(subject="after"))
    assert server.wait_for(1)[-1].message["Subject"] == "after"
    assert provider.connections_opened == 1


@pytest.mark.parametrize(
    "address",
    [
        "ada@example.com",
        "ada.lovelace+news@mail.example.co.uk",
        "a_b-c@x-y.example",
        "A.B@EXAMPLE.COM",
        # Not of the plain shape: quoteaddr parses these, and so do we.
        "",
        "<>",
        "ada@[192.0.2.1]",
        '"ada lovelace"@example.com',
        "ada..lovelace@example.com",
        ".ada@example.com",
        "ada@example..com",
        "Ada <ada@example.com>",
        "ada@example.com\r\nRCPT TO:<eve@example.com>",
        "jöran@exämple.com",
        "ada@example.com ",
    ],
)
def test_addresses_are_quoted_as_smtplib_quotes_them(address: str) -> None:
    """The SMTP path written for MAIL FROM and RCPT TO is the one smtplib.quoteaddr writes."""
    assert quote_address(address) == smtplib.quoteaddr(address)

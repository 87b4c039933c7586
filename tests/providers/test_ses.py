"""Amazon SES delivery: moto for sends, botocore's Stubber for SES's answers, and a real
local HTTP server for retries, timeouts and the endpoint boto3 reads from the environment."""

from __future__ import annotations

import contextlib
import dataclasses
import email
import email.policy
import http.server
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import dkim
import pytest
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from email_worker.errors import (
    AccountProviderError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from email_worker.kinds import GENERIC
from email_worker.mime.messages import Envelope, OutgoingEmail, Sender, Unsubscribe, build_message
from email_worker.policy.signing import DkimSigner
from email_worker.producer.validation import validate_request
from email_worker.providers.ses import QUOTA_RETRY_AFTER, TOTAL_ATTEMPTS, SesProvider
from email_worker.rendering.renderer import render_inline
from tests.test_signing import DOMAIN, SELECTOR, dkim_dns, rsa_key_pem

REGION = "eu-west-1"
SENDER = "noreply@mail.example.com"
KEYS = {"access_key_id": "AKIDEXAMPLE", "secret_access_key": "wJalrXUtnFEMI/K7MDENG"}


def outgoing(key: str = "job-42", **fields: Any) -> OutgoingEmail:
    payload = {
        "to": "ann@example.com",
        "cc": "cat@example.com",
        "bcc": "dan@example.com",
        "subject": "Your booking",
        "text": "See you soon.",
        "headers": {"X-Campaign": "nov"},
        **fields,
    }
    request = validate_request(GENERIC, payload, template_exists=lambda t: True)
    content = render_inline(request.subject or "", request.html, request.text)
    return build_message(
        request,
        content,
        sender=Sender(SENDER, "Example"),
        message_key=key,
        unsubscribe=Unsubscribe("https://mail.example.com/u/1"),
    )


@pytest.fixture
def aws() -> Iterator[Any]:
    """A moto SES in which the sender's domain is a verified identity."""
    with mock_aws():
        boto3.client(
            "sesv2", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y"
        ).create_email_identity(EmailIdentity="mail.example.com")
        yield ses_backends[DEFAULT_ACCOUNT_ID][REGION]


@pytest.fixture
def provider() -> Iterator[SesProvider]:
    provider = SesProvider(REGION, configuration_set="transactional", **KEYS)
    yield provider
    provider.close()


def stub_error(provider: SesProvider, code: str, status: int, message: str) -> Stubber:
    stubber = Stubber(provider.client)
    stubber.add_client_error(
        "send_email", service_error_code=code, service_message=message, http_status_code=status
    )
    stubber.activate()
    return stubber


def test_send_hands_ses_our_raw_message_for_the_envelope(aws: Any, provider: SesProvider) -> None:
    built = outgoing()
    result = provider.send(built)
    [sent] = aws.sent_messages
    assert result.message_id == sent.id
    assert result.accepted == ("ann@example.com", "cat@example.com", "dan@example.com")
    assert sent.source == SENDER
    assert sent.raw_data.encode() == built.as_bytes()  # byte for byte, not rebuilt
    received = email.message_from_string(sent.raw_data, policy=email.policy.default)
    assert received["Message-ID"] == "<job-42@mail.example.com>"
    assert received["X-Campaign"] == "nov"
    assert received["List-Unsubscribe"] == "<https://mail.example.com/u/1>"
    # The Bcc recipient is delivered to, and appears in no header.
    assert "dan@example.com" in sent.destinations
    assert received["Bcc"] is None and "dan@example.com" not in sent.raw_data


def test_exact_request_with_tags_and_configuration_set(provider: SesProvider) -> None:
    built = outgoing(key="job.42:ré/x")
    stubber = Stubber(provider.client)
    stubber.add_response(
        "send_email",
        {"MessageId": "0100018c-ses-id"},
        expected_params={
            "FromEmailAddress": SENDER,
            "Destination": {
                "BccAddresses": ["ann@example.com", "cat@example.com", "dan@example.com"]
            },
            "Content": {"Raw": {"Data": built.as_bytes()}},
            "EmailTags": [
                {"Name": "email_worker_id", "Value": "job_42_r__x"},
                {"Name": "kind", "Value": built.kind},
            ],
            "ConfigurationSetName": "transactional",
        },
    )
    with stubber:
        result = provider.send(built)
    stubber.assert_no_pending_responses()
    assert result.message_id == "0100018c-ses-id"


def test_a_narrowed_retry_goes_only_to_the_recipients_left() -> None:
    provider = SesProvider(REGION, **KEYS)  # no configuration set: none is sent
    built = outgoing()
    retry = dataclasses.replace(built, envelope=Envelope(SENDER, ("cat@example.com",)))
    stubber = Stubber(provider.client)
    stubber.add_response(
        "send_email",
        {"MessageId": "id-2"},
        expected_params={
            "FromEmailAddress": SENDER,
            "Destination": {"BccAddresses": ["cat@example.com"]},
            "Content": {"Raw": {"Data": built.as_bytes()}},
            "EmailTags": [
                {"Name": "email_worker_id", "Value": "job-42"},
                {"Name": "kind", "Value": built.kind},
            ],
        },
    )
    with stubber:
        assert provider.send(retry).accepted == ("cat@example.com",)
    stubber.assert_no_pending_responses()


@pytest.mark.parametrize(
    ("code", "status", "message", "retry_after"),
    [
        ("TooManyRequestsException", 429, "Maximum sending rate exceeded.", 2.0),
        ("Throttling", 400, "Maximum sending rate exceeded.", 2.0),
        ("ThrottlingException", 400, "Rate exceeded", 2.0),
        ("TooManyRequestsException", 429, "Daily message quota exceeded.", QUOTA_RETRY_AFTER),
        ("LimitExceededException", 400, "Daily message quota exceeded.", QUOTA_RETRY_AFTER),
    ],
)
def test_throttling_is_rate_limited(
    provider: SesProvider, code: str, status: int, message: str, retry_after: float
) -> None:
    stubber = stub_error(provider, code, status, message)
    with pytest.raises(RateLimitedError) as caught:
        provider.send(outgoing())
    stubber.assert_no_pending_responses()
    assert caught.value.retry_after == retry_after
    assert caught.value.provider == "ses" and code in str(caught.value)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("MessageRejected", "Illegal address <ann@example.com> in To"),
        ("BadRequestException", "Missing final '@domain' for ann@example.com"),
    ],
)
def test_a_rejected_message_is_permanent_with_ses_text_masked(
    provider: SesProvider, code: str, message: str
) -> None:
    stubber = stub_error(provider, code, 400, message)
    with pytest.raises(PermanentProviderError) as caught:
        provider.send(outgoing())
    stubber.assert_no_pending_responses()
    assert not isinstance(caught.value, AccountProviderError)
    assert code in str(caught.value) and caught.value.code == 400
    assert "a***@example.com" in str(caught.value) and "ann@example.com" not in str(caught.value)


@pytest.mark.parametrize(
    ("code", "status", "message"),
    [
        ("SendingPausedException", 400, "Sending is paused for this account."),
        ("AccountSuspendedException", 400, "Your account is suspended."),
        ("MailFromDomainNotVerifiedException", 400, "MAIL FROM domain not verified"),
        ("NotFoundException", 404, "Configuration set <transactional> does not exist."),
        (
            "MessageRejected",
            400,
            "Email address is not verified. The following identities failed the check in "
            "region EU-WEST-1: noreply@mail.example.com",
        ),
        ("UnrecognizedClientException", 403, "The security token included is invalid."),
        ("InvalidClientTokenId", 403, "The security token included in the request is invalid."),
        ("SignatureDoesNotMatch", 403, "The request signature we calculated does not match."),
    ],
)
def test_an_account_that_cannot_send_is_reported_loudly(
    provider: SesProvider,
    caplog: pytest.LogCaptureFixture,
    code: str,
    status: int,
    message: str,
) -> None:
    stubber = stub_error(provider, code, status, message)
    with caplog.at_level(logging.INFO), pytest.raises(AccountProviderError) as caught:
        provider.send(outgoing())
    stubber.assert_no_pending_responses()
    assert code in str(caught.value) and "noreply@mail" not in str(caught.value)
    critical = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(critical) == 1 and critical[0].name == "email_worker.providers.ses"
    assert "noreply@mail" not in caplog.text and "ann@example.com" not in caplog.text


def test_a_server_error_is_transient(provider: SesProvider) -> None:
    stubber = stub_error(provider, "InternalFailure", 500, "Internal error")
    with pytest.raises(TransientProviderError) as caught:
        provider.send(outgoing())
    stubber.assert_no_pending_responses()
    assert not isinstance(caught.value, RateLimitedError)
    assert caught.value.code == 500 and "InternalFailure" in str(caught.value)


def test_a_signed_send_verifies_after_ses_rewrites_date_and_message_id(aws: Any) -> None:
    signer = DkimSigner(DOMAIN, SELECTOR, rsa_key_pem())
    provider = SesProvider(REGION, signer=signer, **KEYS)
    built = outgoing()
    provider.send(built)
    [sent] = aws.sent_messages
    raw = sent.raw_data.encode()
    assert raw.startswith(b"DKIM-Signature: ") and raw.endswith(built.as_bytes())
    dns = dkim_dns(rsa_key_pem())
    assert dkim.verify(raw, dnsfunc=dns)
    # Amazon SES replaces both fields of every message it sends.
    rewritten = raw.replace(built.message_id.encode(), b"<0102-ses@eu-west-1.amazonses.com>")
    rewritten = rewritten.replace(
        b"\r\nDate: ", b"\r\nDate: Sun, 1 Mar 2026 08:00:00 +0000\r\nX-D: "
    )
    assert rewritten != raw and dkim.verify(rewritten, dnsfunc=dns)
    assert not dkim.verify(raw.replace(b"See you soon.", b"See you never."), dnsfunc=dns)


def test_an_address_with_a_non_ascii_local_part_is_refused_before_calling(
    provider: SesProvider,
) -> None:
    stubber = Stubber(provider.client)  # nothing queued: a call would fail differently
    with stubber, pytest.raises(PermanentProviderError, match="non-ASCII characters before"):
        provider.send(outgoing(to="jürgen@example.com"))


def test_retries_are_few_and_timeouts_are_the_setting() -> None:
    provider = SesProvider(REGION, timeout=3.5, **KEYS)
    config = provider.client.meta.config
    assert config.retries == {"total_max_attempts": 2, "mode": "standard"}
    assert config.connect_timeout == 3.5 and config.read_timeout == 3.5
    assert provider.client.meta.region_name == REGION


def test_one_client_per_provider_until_closed(provider: SesProvider) -> None:
    first = provider.client
    assert provider.client is first
    provider.close()
    assert provider.client is not first


class _SesStandIn(http.server.ThreadingHTTPServer):
    """A local HTTP server answering SendEmail with programmed statuses."""

    def __init__(self, answers: list[tuple[int, str, str]], delay: float = 0.0) -> None:
        self.answers, self.delay, self.paths = answers, delay, []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _SesStandIn

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.paths.append(self.path)
        time.sleep(self.server.delay)
        answers = self.server.answers
        status, code, message = answers[min(len(self.server.paths), len(answers)) - 1]
        body = json.dumps({"MessageId": "local-1"} if status == 200 else {"message": message})
        self.send_response(status)
        if status != 200:
            self.send_header("x-amzn-ErrorType", code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        # The client may have given up waiting (the read-timeout test).
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[_SesStandIn]:
    answers, delay = request.param
    server = _SesStandIn(answers, delay)
    monkeypatch.setenv("AWS_ENDPOINT_URL_SESV2", server.url)
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("stand_in", [([(500, "InternalFailure", "boom")], 0.0)], indirect=True)
def test_the_endpoint_comes_from_the_environment_and_a_5xx_is_tried_twice(
    stand_in: _SesStandIn,
) -> None:
    provider = SesProvider(REGION, **KEYS)
    with pytest.raises(TransientProviderError) as caught:
        provider.send(outgoing())
    assert caught.value.code == 500
    assert stand_in.paths == ["/v2/email/outbound-emails"] * TOTAL_ATTEMPTS


@pytest.mark.parametrize(
    "stand_in", [([(503, "ServiceUnavailable", "busy"), (200, "", "")], 0.0)], indirect=True
)
def test_one_retry_inside_botocore_rescues_a_passing_failure(stand_in: _SesStandIn) -> None:
    result = SesProvider(REGION, **KEYS).send(outgoing())
    assert result.message_id == "local-1" and len(stand_in.paths) == 2


@pytest.mark.parametrize("stand_in", [([(200, "", "")], 2.0)], indirect=True)
def test_a_read_timeout_is_transient(stand_in: _SesStandIn) -> None:
    provider = SesProvider(REGION, timeout=0.3, **KEYS)
    started = time.monotonic()
    with pytest.raises(TransientProviderError, match="could not be reached"):
        provider.send(outgoing())
    assert time.monotonic() - started < 4 and len(stand_in.paths) == TOTAL_ATTEMPTS


def test_an_endpoint_that_refuses_connections_is_transient(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    with pytest.raises(TransientProviderError, match="could not be reached"):
        SesProvider(REGION, timeout=1, **KEYS).send(outgoing())


@pytest.fixture
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A machine where boto3's chain finds nothing (no keys, files or instance role)."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_check_and_health_need_credentials_and_call_nothing(
    no_ambient_credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")  # would fail if called
    assert SesProvider(REGION, **KEYS).check()
    bare = SesProvider(REGION)
    assert not bare.check()
    assert bare.health() == {"configured": False, "region": REGION}
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMENV")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "from-env")
    chained = SesProvider(REGION)  # boto3's own chain: here, the environment
    assert chained.health() == {"configured": True, "region": REGION}


def test_sending_without_credentials_is_an_account_error(
    no_ambient_credentials: None, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO), pytest.raises(AccountProviderError, match="credentials"):
        SesProvider(REGION).send(outgoing())
    assert [r.levelno for r in caplog.records if r.name.startswith("email_worker")] == [
        logging.CRITICAL
    ]


def test_bad_construction_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        SesProvider(REGION, access_key_id="AKIDONLY")
    with pytest.raises(ValueError, match="AWS_SES_REGION"):
        SesProvider("")


def test_secrets_stay_out_of_repr_and_errors(provider: SesProvider) -> None:
    assert KEYS["secret_access_key"] not in repr(provider)
    stubber = stub_error(provider, "MessageRejected", 400, "Rejected")
    with pytest.raises(ProviderError) as caught:
        provider.send(outgoing())
    stubber.deactivate()
    assert KEYS["secret_access_key"] not in repr(caught.value) + str(caught.value)

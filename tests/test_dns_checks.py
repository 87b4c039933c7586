"""``email-worker check`` reads what receivers check in DNS: the DKIM key, SPF and DMARC.

One DNS server, started here on a free port, serves a zone per case: records that are
right, wrong, missing or unreadable, and names whose lookups fail. Each case runs
``email-worker check`` as an operator does, with ``DNS_RESOLVER`` pointing at that
server; the cases run side by side, and each test reads the lines its run printed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from email_worker.config import SettingsError, load_settings
from email_worker.config.values import split_resolver
from email_worker.ops.dns_records import dkim_public_key
from tests.support.commands import email_worker
from tests.support.dns_server import dns_server
from tests.support.ports import free_port
from tests.support.smtp_server import SmtpServer
from tests.test_signing import SELECTOR, rsa_key_pem

Lines = dict[str, tuple[str, str]]
Runs = tuple[dict[str, "Future[tuple[int, Lines]]"], list[str]]


def spki(pem: bytes) -> bytes:
    """The public half of a PEM private key, as DER SubjectPublicKeyInfo."""
    private = serialization.load_pem_private_key(pem, password=None)
    return private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def key_record(pem: bytes, *extra: str) -> str:
    """The DKIM key record publishing ``pem``'s public half."""
    p = base64.b64encode(spki(pem)).decode()
    return "; ".join(["v=DKIM1", "k=rsa", *extra, f"p={p}"])


CONFIGURED_KEY = rsa_key_pem()
OTHER_KEY = rsa_key_pem(1024)
# A note makes the answer larger than 512 bytes: the resolver asks again over TCP.
RIGHT_DKIM = key_record(CONFIGURED_KEY, "n=" + "rotated in 2026, see the runbook " * 6)
RECORDS = {
    # right: the configured key, one SPF record among other TXT records, DMARC p=reject.
    f"{SELECTOR}._domainkey.mail.right.example": [RIGHT_DKIM],
    "mail.right.example": ["site-verification=abc", "v=spf1 ip4:192.0.2.1 -all"],
    "_dmarc.mail.right.example": ["v=DMARC1; p=reject; rua=mailto:dmarc@right.example"],
    # wrong: another key, two SPF records, DMARC only at the organisational domain.
    f"{SELECTOR}._domainkey.mail.wrong.example": [key_record(OTHER_KEY)],
    "mail.wrong.example": ["v=spf1 ip4:192.0.2.1 -all", "v=spf1 include:_spf.wrong.example ~all"],
    "_dmarc.wrong.example": ["v=DMARC1; p=none"],
    # missing: no key record, no SPF among the TXT records, no DMARC record anywhere.
    "mail.missing.example": ["site-verification=abc"],
    # unreadable: a key that is not base64; DMARC's subdomain policy applies to mail.
    f"{SELECTOR}._domainkey.mail.unreadable.example": ["v=DKIM1; k=rsa; p=not*base64"],
    "mail.unreadable.example": ["v=spf1 -all"],
    "_dmarc.unreadable.example": ["v=DMARC1; p=reject; sp=quarantine"],
}
SERVFAIL = {
    f"{SELECTOR}._domainkey.mail.failing.example",
    "mail.failing.example",
    "_dmarc.mail.failing.example",
}


def sender(domain: str, key: Path) -> dict[str, str]:
    """The settings of a service sending as ``domain`` and signing with ``key``."""
    return {
        "EMAIL_FROM": f"noreply@{domain}",
        "DKIM_DOMAIN": domain,
        "DKIM_SELECTOR": SELECTOR,
        "DKIM_PRIVATE_KEY_FILE": str(key),
    }


def check_lines(env: dict[str, str]) -> tuple[int, Lines]:
    """Run ``email-worker check``; its exit status and each line's status and detail, by name."""
    done = email_worker("check", check=False, env={"DNS_CHECKS": "true", **env})
    lines: Lines = {}
    for line in done.stdout.splitlines():
        status, name, rest = line.split(None, 2)
        lines[name] = (status, rest.rsplit(" (", 1)[0])
    return done.returncode, lines


@pytest.fixture(scope="module")
def runs(
    tmp_path_factory: pytest.TempPathFactory, smtp_server: SmtpServer, test_database: str
) -> Iterator[Runs]:
    """Every case's ``email-worker check``, run side by side against one DNS server."""
    key = tmp_path_factory.mktemp("dkim") / "dkim.pem"
    key.write_bytes(CONFIGURED_KEY)
    with dns_server(RECORDS, nxdomain={"mail.nowhere.example"}, servfail=SERVFAIL) as (
        resolver,
        asked,
    ):
        common = {"DNS_RESOLVER": resolver}
        cases = {
            name: {**common, **sender(f"mail.{name}.example", key)}
            for name in ("right", "wrong", "missing", "unreadable", "failing", "nowhere")
        }
        cases["wrong"]["MESSAGE_ID_DOMAIN"] = "mail.elsewhere.example"
        cases["silent"] = {
            **cases["right"],
            "DNS_RESOLVER": f"127.0.0.1:{free_port()}",  # nothing answers there
            "DNS_TIMEOUT": "0.5",
        }
        with ThreadPoolExecutor(len(cases)) as pool:
            futures = {name: pool.submit(check_lines, env) for name, env in cases.items()}
            yield futures, asked


def result(runs: Runs, case: str) -> tuple[int, Lines]:
    return runs[0][case].result(timeout=60)


def test_right_records_pass_and_every_check_is_listed(runs: Runs) -> None:
    status, lines = result(runs, "right")
    assert status == 0, lines
    assert lines["dkim"] == (
        "ok",
        f"{SELECTOR}._domainkey.mail.right.example holds the public key of the configured "
        "private key",
    )
    assert lines["spf"] == ("ok", "mail.right.example: v=spf1 ip4:192.0.2.1 -all")
    assert lines["dmarc"] == (
        "ok",
        "_dmarc.mail.right.example: policy reject for mail.right.example",
    )
    assert lines["alignment"] == (
        "ok",
        "Message-ID mail.right.example, return-path mail.right.example, DKIM d= "
        "mail.right.example align with From mail.right.example",
    )
    assert list(lines)[-4:] == ["dkim", "spf", "dmarc", "alignment"]
    # The key's answer was too large for UDP: asked again over TCP.
    assert runs[1].count(f"{SELECTOR}._domainkey.mail.right.example") == 2


def test_a_wrong_key_fails_and_two_spf_records_fail(runs: Runs) -> None:
    status, lines = result(runs, "wrong")
    assert status == 1
    assert lines["dkim"][0] == "FAIL"
    assert "holds another key than the configured private key's" in lines["dkim"][1]
    assert lines["spf"][0] == "FAIL" and "2 SPF records at mail.wrong.example" in lines["spf"][1]
    # No record at _dmarc.mail.wrong.example: the organisational domain's applies.
    assert lines["dmarc"] == ("ok", "_dmarc.wrong.example: policy none for mail.wrong.example")
    assert lines["alignment"] == (
        "warn",
        "not aligned with From mail.wrong.example: Message-ID mail.elsewhere.example",
    )


def test_missing_records_fail_dkim_and_warn_for_spf_and_dmarc(runs: Runs) -> None:
    status, lines = result(runs, "missing")
    assert status == 1
    assert lines["dkim"][0] == "FAIL"
    assert f"no TXT record at {SELECTOR}._domainkey.mail.missing.example" in lines["dkim"][1]
    assert lines["spf"][0] == "warn"
    assert lines["spf"][1].startswith("no SPF record at mail.missing.example")
    assert lines["dmarc"][0] == "warn"
    assert lines["dmarc"][1].startswith(
        "no DMARC record at _dmarc.mail.missing.example nor _dmarc.missing.example"
    )


def test_an_unreadable_key_fails_and_a_subdomain_policy_is_reported(runs: Runs) -> None:
    status, lines = result(runs, "unreadable")
    assert status == 1
    assert lines["dkim"][0] == "FAIL"
    assert "cannot be read: p= is not base64" in lines["dkim"][1]
    assert lines["spf"] == ("ok", "mail.unreadable.example: v=spf1 -all")
    assert lines["dmarc"] == (
        "ok",
        "_dmarc.unreadable.example: policy quarantine for mail.unreadable.example",
    )


def test_failed_lookups_warn_without_failing_the_check(runs: Runs) -> None:
    status, lines = result(runs, "failing")
    assert status == 0, lines
    for name in ("dkim", "spf", "dmarc"):
        assert lines[name][0] == "warn"
        assert lines[name][1].startswith("DNS: 127.0.0.1:") and "SERVFAIL" in lines[name][1]
    status, lines = result(runs, "silent")
    assert status == 0, lines
    for name in ("dkim", "spf", "dmarc"):
        assert lines[name][0] == "warn"
        assert "within 0.5 s for TXT" in lines[name][1]


def test_a_sending_domain_missing_from_dns_fails(runs: Runs) -> None:
    status, lines = result(runs, "nowhere")
    assert status == 1
    assert lines["spf"] == (
        "FAIL",
        "RuntimeError: mail.nowhere.example does not exist in DNS: receivers refuse mail from it",
    )


def test_a_resolver_that_is_not_an_address_is_refused_by_name() -> None:
    status, lines = check_lines({"DNS_RESOLVER": "dns.example:53"})
    assert status == 1
    assert lines["settings"] == (
        "FAIL",
        "DNS_RESOLVER: expected an IP address, optionally with :port, got 'dns.example:53'",
    )


@pytest.mark.parametrize(
    ("value", "address"),
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("192.0.2.53:5353", ("192.0.2.53", 5353)),
        ("::1", ("::1", 53)),
        ("[2001:db8::53]:5353", ("2001:db8::53", 5353)),
        ("dns.example", None),
        ("192.0.2.53:0", None),
        ("192.0.2.53:dns", None),
        ("[::1]5353", None),
    ],
)
def test_the_resolver_setting_takes_an_ip_address_and_a_port(
    value: str, address: tuple[str, int] | None
) -> None:
    settings = load_settings(environ={"DNS_RESOLVER": value})
    if address is None:
        with pytest.raises(SettingsError, match="^DNS_RESOLVER: "):
            settings.validate()
    else:
        assert split_resolver(settings.dns_resolver) == address


def test_a_key_published_as_pkcs1_is_read_as_the_same_key() -> None:
    private = serialization.load_pem_private_key(CONFIGURED_KEY, password=None)
    pkcs1 = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.PKCS1
    )
    record = f"v=DKIM1; p={base64.b64encode(pkcs1).decode()}"
    assert dkim_public_key(record) == spki(CONFIGURED_KEY)


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ("v=DKIM1; k=rsa; p=", "p= is empty: the key is revoked"),
        ("v=DKIM1; k=ed25519; p=MCowBQYDK2VwAyEA", "k=ed25519: the key is not RSA"),
        ("v=DKIM2; p=MIIB", "v=DKIM2 where DKIM1 is expected"),
        ("v=DKIM1; k=rsa", "no p= tag"),
        ("v=DKIM1; k=rsa; p=aGVsbG8=", "p= holds no RSA public key"),
        ("just some text", "'just some text' is not a tag=value pair"),
    ],
)
def test_an_unreadable_key_record_says_why(record: str, reason: str) -> None:
    with pytest.raises(ValueError) as raised:
        dkim_public_key(record)
    assert str(raised.value) == reason

"""DKIM signatures that a receiving server verifies against the published public key."""

from __future__ import annotations

import base64
import email
import email.policy
import functools
import subprocess
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from email_worker.config import SettingsError, load_settings
from email_worker.kinds import GENERIC
from email_worker.mime.messages import OutgoingEmail, Sender, Unsubscribe, build_message
from email_worker.policy.signing import DkimSigner, signer_from_settings
from email_worker.producer.validation import validate_request
from email_worker.rendering.renderer import render_inline

DOMAIN, SELECTOR = "mail.example.com", "s2026"


@functools.cache
def rsa_key_pem(bits: int = 2048, *, pkcs1: bool = False) -> bytes:
    """A fresh RSA private key in PEM (PKCS#8, or PKCS#1 as older tools write it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    fmt = (
        serialization.PrivateFormat.TraditionalOpenSSL
        if pkcs1
        else serialization.PrivateFormat.PKCS8
    )
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def dkim_dns(pem: bytes, domain: str = DOMAIN, selector: str = SELECTOR):  # type: ignore[no-untyped-def]
    """A resolver that serves the key's public half as the selector's TXT record."""
    private = serialization.load_pem_private_key(pem, password=None)
    der = private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def lookup(name: bytes, timeout: int = 5) -> bytes | None:
        return record if name == f"{selector}._domainkey.{domain}.".encode() else None

    return lookup


def outgoing(unsubscribe: bool = True, **fields: object) -> OutgoingEmail:
    payload = {
        "to": ["ann@example.com"],
        "cc": "cat@example.com",
        "bcc": "dan@example.com",
        "reply_to": "help@example.com",
        "subject": "Your receipt",
        "text": "Thank you.",
        "html": "<p>Thank you.</p>",
        **fields,
    }
    request = validate_request(GENERIC, payload, template_exists=lambda t: True)
    content = render_inline(request.subject or "", request.html, request.text)
    return build_message(
        request,
        content,
        sender=Sender("noreply@mail.example.com", "Example"),
        # A marketing email's one-click unsubscribe: both of its fields are signed.
        unsubscribe=Unsubscribe("https://mail.example.com/u/abc") if unsubscribe else None,
    )


@pytest.fixture(scope="module")
def signer() -> DkimSigner:
    return DkimSigner(DOMAIN, SELECTOR, rsa_key_pem())


def signed_fields(signed: bytes) -> list[str]:
    message = email.message_from_bytes(signed, policy=email.policy.SMTP)
    tags = dict(
        part.strip().split("=", 1)
        for part in str(message["DKIM-Signature"]).split(";")
        if part.strip()
    )
    return [name.strip() for name in "".join(tags["h"].split()).split(":")]


def test_signed_message_verifies_and_keeps_its_crlf_header_block(signer: DkimSigner) -> None:
    wire = outgoing().as_bytes()
    signed = signer.sign(wire)
    assert dkim.verify(signed, dnsfunc=dkim_dns(rsa_key_pem()))
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(wire)
    assert b"\n" not in signed.replace(b"\r\n", b"") and b"\r" not in signed.replace(b"\r\n", b"")
    header_block = signed.split(b"\r\n\r\n", 1)[0]
    assert header_block == signed[: len(signed) - len(wire)] + wire.split(b"\r\n\r\n", 1)[0]
    message = email.message_from_bytes(signed, policy=email.policy.SMTP)
    assert (
        message["Subject"] == "Your receipt"
        and message.get_content_type() == "multipart/alternative"
    )


def test_signs_the_fields_a_reader_relies_on_and_never_bcc(signer: DkimSigner) -> None:
    signed = signer.sign(outgoing().as_bytes())
    assert signed_fields(signed) == [
        "from",
        "to",
        "cc",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
        "reply-to",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ]
    assert b"dan@example.com" not in signed
    assert "c=relaxed/relaxed" in signed.decode() and "a=rsa-sha256" in signed.decode()


def test_absent_fields_are_not_listed(signer: DkimSigner) -> None:
    signed = signer.sign(outgoing(False, cc=None, reply_to=None, html=None).as_bytes())
    assert signed_fields(signed) == [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ]
    assert dkim.verify(signed, dnsfunc=dkim_dns(rsa_key_pem()))


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (b"Thank you.", b"Thank yo!."),
        (b"Subject: Your receipt", b"Subject: Your refund"),
        (b"<https://mail.example.com/u/abc>", b"<https://evil.example.net/u/abc>"),
    ],
    ids=["body", "subject", "list-unsubscribe"],
)
def test_tampering_breaks_the_signature(signer: DkimSigner, old: bytes, new: bytes) -> None:
    signed = signer.sign(outgoing().as_bytes())
    assert old in signed
    assert not dkim.verify(signed.replace(old, new), dnsfunc=dkim_dns(rsa_key_pem()))


def test_relaxed_canonicalization_survives_refolding(signer: DkimSigner) -> None:
    signed = signer.sign(outgoing().as_bytes())
    refolded = signed.replace(b"Subject: Your receipt", b"Subject:  Your\r\n  receipt")
    assert dkim.verify(refolded, dnsfunc=dkim_dns(rsa_key_pem()))


def test_non_ascii_subject_and_utf8_headers_verify(signer: DkimSigner) -> None:
    built = outgoing(to="jürgen@example.com", subject="Grüße aus Köln ✓", text="Schöne Grüße")
    assert built.needs_smtputf8  # the header block itself carries UTF-8 bytes
    signed = signer.sign(built.as_bytes())
    assert dkim.verify(signed, dnsfunc=dkim_dns(rsa_key_pem()))


def test_eight_bit_body_verifies(signer: DkimSigner) -> None:
    head = outgoing(html=None).as_bytes().split(b"\r\n\r\n", 1)[0]
    assert b"Content-Transfer-Encoding: 7bit" in head
    head = head.replace(b"Content-Transfer-Encoding: 7bit", b"Content-Transfer-Encoding: 8bit")
    wire = head + b"\r\n\r\n" + "Schöne Grüße, 東京\r\n".encode()
    signed = signer.sign(wire)
    assert dkim.verify(signed, dnsfunc=dkim_dns(rsa_key_pem()))
    assert not dkim.verify(
        signed.replace("東京".encode(), "大阪".encode()), dnsfunc=dkim_dns(rsa_key_pem())
    )


def test_fields_a_provider_rewrites_can_be_left_unsigned(signer: DkimSigner) -> None:
    built = outgoing()
    rewritten = {  # what Amazon SES does on the way
        built.message_id.encode(): b"<0100019abc@email.amazonses.com>",
        b"Date: ": b"Date: Sat, 28 Nov 2026 09:00:00 +0000\r\nX-Old-Date: ",
    }

    def rewrite(signed: bytes) -> bytes:
        for old, new in rewritten.items():
            signed = signed.replace(old, new)
        return signed

    dns = dkim_dns(rsa_key_pem())
    assert not dkim.verify(rewrite(signer.sign(built.as_bytes())), dnsfunc=dns)
    partial = signer.sign(built.as_bytes(), unsigned=("Date", "Message-ID"))
    assert "date" not in signed_fields(partial) and "message-id" not in signed_fields(partial)
    assert dkim.verify(rewrite(partial), dnsfunc=dns)


def test_pkcs1_key_and_crlf_pem_work() -> None:
    pem = rsa_key_pem(pkcs1=True)
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    signer = DkimSigner(DOMAIN, SELECTOR, pem.replace(b"\n", b"\r\n"))
    assert dkim.verify(signer.sign(outgoing().as_bytes()), dnsfunc=dkim_dns(pem))


def test_bad_keys_are_refused_at_construction_without_showing_them() -> None:
    garbage = b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbA==\n-----END PRIVATE KEY-----\n"
    with pytest.raises(ValueError, match="not a PEM RSA private key") as caught:
        DkimSigner(DOMAIN, SELECTOR, garbage)
    assert "bm90IGEga2V5" not in str(caught.value)
    with pytest.raises(ValueError, match="not a PEM RSA private key"):
        DkimSigner(DOMAIN, SELECTOR, b"secret-but-not-a-key")
    ec_key = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ValueError, match="not a PEM RSA private key"):
        DkimSigner(DOMAIN, SELECTOR, ec_key)
    # cryptography makes no key this short; openssl still does.
    short = subprocess.run(["openssl", "genrsa", "768"], capture_output=True, check=True).stdout
    with pytest.raises(ValueError, match="768 bits; at least 1024"):
        DkimSigner(DOMAIN, SELECTOR, short)


@pytest.mark.parametrize(("domain", "selector"), [("", "s1"), (DOMAIN, ""), (DOMAIN, "a b")])
def test_bad_domain_or_selector_is_refused(domain: str, selector: str) -> None:
    with pytest.raises(ValueError, match="DKIM (domain|selector)"):
        DkimSigner(domain, selector, rsa_key_pem())


def test_the_key_never_shows_in_repr(signer: DkimSigner) -> None:
    assert repr(signer) == f"DkimSigner(domain={DOMAIN!r}, selector={SELECTOR!r})"
    assert not hasattr(signer, "__dict__")


def test_no_signer_without_dkim_domain() -> None:
    assert signer_from_settings(load_settings(environ={})) is None


def test_signer_from_an_environment_key_with_escaped_newlines() -> None:
    one_line = rsa_key_pem().decode().strip().replace("\n", "\\n")
    settings = load_settings(
        environ={"DKIM_DOMAIN": DOMAIN, "DKIM_SELECTOR": SELECTOR, "DKIM_PRIVATE_KEY": one_line}
    )
    signer = signer_from_settings(settings)
    assert signer is not None
    assert dkim.verify(signer.sign(outgoing().as_bytes()), dnsfunc=dkim_dns(rsa_key_pem()))


def test_signer_from_a_key_file(tmp_path: Path) -> None:
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(rsa_key_pem())
    settings = load_settings(
        environ={
            "DKIM_DOMAIN": DOMAIN,
            "DKIM_SELECTOR": SELECTOR,
            "DKIM_PRIVATE_KEY_FILE": str(key_file),
        }
    )
    signer = signer_from_settings(settings)
    assert signer is not None
    assert dkim.verify(signer.sign(outgoing().as_bytes()), dnsfunc=dkim_dns(rsa_key_pem()))


def test_settings_errors_name_the_setting_and_hide_the_key(tmp_path: Path) -> None:
    missing = load_settings(
        environ={
            "DKIM_DOMAIN": DOMAIN,
            "DKIM_SELECTOR": SELECTOR,
            "DKIM_PRIVATE_KEY_FILE": str(tmp_path / "absent.pem"),
        }
    )
    with pytest.raises(SettingsError, match="DKIM_PRIVATE_KEY_FILE: cannot read .*absent.pem"):
        signer_from_settings(missing)
    wrong = load_settings(
        environ={
            "DKIM_DOMAIN": DOMAIN,
            "DKIM_SELECTOR": SELECTOR,
            "DKIM_PRIVATE_KEY": "hunter2-key",
        }
    )
    with pytest.raises(SettingsError, match="DKIM_PRIVATE_KEY: DKIM private key is not") as caught:
        signer_from_settings(wrong)
    assert "hunter2" not in str(caught.value)

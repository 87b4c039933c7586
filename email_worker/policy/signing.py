"""DKIM signatures (RFC 6376) for the messages we send as our own MIME bytes.

Signing uses dkimpy: rsa-sha256, relaxed/relaxed canonicalization, and only the
header fields a reader relies on, each signed when the message has it.  The
private key is checked once, when the signer is made, by signing a small message;
it never appears in a repr, a log line or an error.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

import dkim
from dkim.crypto import UnparsableKeyError, parse_pem_private_key

from email_worker.config import Settings, SettingsError
from email_worker.mime.header_fields import UnsafeMessageError

SIGNED_HEADERS = (
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
)
# Fields a provider replaces on the way, which a signature must leave out to survive:
# Amazon SES overwrites Date and Message-ID, and its guide to manual DKIM signing says
# to leave both unsigned.
REWRITTEN_HEADERS: Mapping[str, tuple[str, ...]] = {"ses": ("date", "message-id")}
MIN_KEY_BITS = 1024  # receivers (and dkimpy's own verifier) refuse shorter keys
_PROBE = b"From: probe@example.com\r\nSubject: probe\r\n\r\nprobe\r\n"


class DkimSigner:
    """Prepends a DKIM-Signature for ``domain`` and ``selector`` to a message's bytes."""

    __slots__ = ("domain", "selector", "_key")

    def __init__(self, domain: str, selector: str, private_key: bytes) -> None:
        for name, value in (("domain", domain), ("selector", selector)):
            if not value or not value.isascii() or any(c in value for c in " \t\r\n;=:"):
                raise ValueError(f"DKIM {name} must be a non-empty ASCII DNS name, got {value!r}")
        self.domain = domain
        self.selector = selector
        self._key = _normalised_pem(private_key)
        try:
            bits = parse_pem_private_key(self._key)["modulus"].bit_length()
        except (UnparsableKeyError, ValueError, IndexError, KeyError, TypeError):
            raise ValueError(
                "DKIM private key is not a PEM RSA private key (PKCS#1 or PKCS#8)"
            ) from None
        if bits < MIN_KEY_BITS:
            raise ValueError(f"DKIM private key has {bits} bits; at least {MIN_KEY_BITS} needed")
        try:
            self.sign(_PROBE)
        except UnsafeMessageError:
            raise ValueError("DKIM private key cannot sign a message") from None

    def __repr__(self) -> str:
        return f"DkimSigner(domain={self.domain!r}, selector={self.selector!r})"

    def public_key_der(self) -> bytes:
        """The key's public half as DER SubjectPublicKeyInfo: what a DKIM record's ``p=`` holds."""
        from cryptography.hazmat.primitives import serialization

        private = serialization.load_pem_private_key(self._key, password=None)
        return private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, wire: bytes, *, unsigned: Collection[str] = ()) -> bytes:
        """The message with a DKIM-Signature header field prepended.

        ``unsigned`` names header fields to leave out of the signature, such as those a
        provider rewrites on the way (Amazon SES replaces Date and Message-ID).
        """
        present = {name.lower() for name, _ in _header_fields(wire)}
        skipped = {name.lower() for name in unsigned}
        include = [h.encode("ascii") for h in SIGNED_HEADERS if h in present - skipped]
        try:
            signature = dkim.sign(
                wire,
                self.selector.encode("ascii"),
                self.domain.encode("ascii"),
                self._key,
                canonicalize=(b"relaxed", b"relaxed"),
                signature_algorithm=b"rsa-sha256",
                include_headers=include,
                linesep=b"\r\n",
            )
        except dkim.DKIMException as exc:
            # dkimpy's message may quote header lines: only the kind of failure is kept.
            raise UnsafeMessageError(
                f"the message cannot be DKIM-signed ({type(exc).__name__})"
            ) from None
        return bytes(signature) + wire


def signer_from_settings(settings: Settings) -> DkimSigner | None:
    """The signer DKIM_* settings describe, or None when DKIM_DOMAIN is empty."""
    if not settings.dkim_domain:
        return None
    if settings.dkim_private_key:
        source = "DKIM_PRIVATE_KEY"
        # An environment variable often carries the PEM on one line, with \n escapes.
        pem = settings.dkim_private_key.reveal().replace("\\n", "\n").encode("utf-8")
    elif settings.dkim_private_key_file:
        source = "DKIM_PRIVATE_KEY_FILE"
        try:
            pem = Path(settings.dkim_private_key_file).read_bytes()
        except OSError as exc:
            raise SettingsError(
                f"DKIM_PRIVATE_KEY_FILE: cannot read {settings.dkim_private_key_file}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
    else:
        raise SettingsError(
            "DKIM_DOMAIN is set but neither DKIM_PRIVATE_KEY nor DKIM_PRIVATE_KEY_FILE is"
        )
    try:
        return DkimSigner(settings.dkim_domain, settings.dkim_selector, pem)
    except ValueError as exc:
        raise SettingsError(f"{source}: {exc}") from None


def _normalised_pem(key: bytes) -> bytes:
    """PEM with LF line breaks only: dkimpy finds the base64 between LF-ended lines."""
    return key.strip().replace(b"\r\n", b"\n").replace(b"\r", b"\n") + b"\n"


def _header_fields(wire: bytes) -> list[tuple[str, bytes]]:
    """The header fields of a message, as dkimpy reads them (refuses a broken header)."""
    try:
        headers, _body = dkim.rfc822_parse(wire)
    except dkim.DKIMException as exc:
        raise UnsafeMessageError(
            f"the message cannot be DKIM-signed ({type(exc).__name__})"
        ) from None
    return [(name.decode("ascii", "replace"), value) for name, value in headers]

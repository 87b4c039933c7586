"""Signed tokens for open, click and unsubscribe links; pure, no I/O.

A token is ``payload.signature``, both base64url without padding. The payload is the
compact JSON list ``[purpose, key, target, issued_at]``: the purpose (``o`` open,
``c`` click, ``u`` unsubscribe), the job or task id of the email, the click's target
URL or the unsubscribed recipient (empty for an open), and the time of signing. The
signature is HMAC-SHA256 of the payload with the first key of TRACKING_SECRET; every
key verifies, so a new key is put first and the old one removed once its links expired.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass

OPEN, CLICK, UNSUBSCRIBE = "o", "c", "u"
PURPOSES = frozenset({OPEN, CLICK, UNSUBSCRIBE})
MAX_TOKEN_LENGTH = 8192  # longer is refused before any decoding
_SIGNATURE_LENGTH = 43  # 32 bytes in base64url without padding


class InvalidToken(ValueError):
    """A token that is malformed, unsigned, tampered with, expired or for another purpose."""


@dataclass(frozen=True)
class TokenClaims:
    """What a verified token says."""

    purpose: str
    key: str
    target: str
    issued_at: int


def signing_keys(secret: str) -> tuple[str, ...]:
    """The keys of a comma-separated TRACKING_SECRET, in order; empty when tracking is off."""
    return tuple(key.strip() for key in secret.split(",") if key.strip())


def sign_token(
    keys: Sequence[str], purpose: str, key: str, target: str = "", *, now: float | None = None
) -> str:
    """A token for ``purpose`` signed with the first key."""
    if not keys:
        raise ValueError("no TRACKING_SECRET key to sign with")
    if purpose not in PURPOSES:
        raise ValueError(f"unknown token purpose {purpose!r}")
    issued = int(time.time() if now is None else now)
    body = json.dumps([purpose, key, target, issued], separators=(",", ":"), ensure_ascii=False)
    payload = _encode(body.encode("utf-8"))
    return f"{payload}.{_signature(keys[0], payload)}"


def verify_token(
    token: str, keys: Sequence[str], purpose: str, *, ttl: float, now: float | None = None
) -> TokenClaims:
    """The claims of a token signed by one of ``keys`` for ``purpose`` and younger than ``ttl``."""
    if not keys or not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        raise InvalidToken("no token, or no key to check it")
    payload, dot, signature = token.partition(".")
    if not dot or len(signature) != _SIGNATURE_LENGTH or not token.isascii():
        raise InvalidToken("not a signed token")
    # Every key is tried, whichever matches, so the time taken says nothing about which.
    matches = [hmac.compare_digest(_signature(k, payload), signature) for k in keys]
    if not any(matches):
        raise InvalidToken("bad signature")
    try:
        found, key, target, issued = json.loads(_decode(payload))
    except (ValueError, TypeError, binascii.Error):
        raise InvalidToken("unreadable payload") from None
    if not (isinstance(key, str) and isinstance(target, str) and type(issued) is int):
        raise InvalidToken("unreadable payload")
    if found != purpose:
        raise InvalidToken("token is for another purpose")
    age = (time.time() if now is None else now) - issued
    if age > ttl or age < -300:  # a little clock skew between hosts is allowed
        raise InvalidToken("token expired")
    return TokenClaims(purpose=found, key=key, target=target, issued_at=issued)


def _signature(key: str, payload: str) -> str:
    digest = hmac.new(key.encode("utf-8"), payload.encode("ascii"), hashlib.sha256).digest()
    return _encode(digest)


def _encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

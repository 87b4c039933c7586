"""Signed tracking tokens: what verifies, and everything that is refused."""

from __future__ import annotations

import pytest

from email_worker.tracking.tokens import (
    CLICK,
    OPEN,
    UNSUBSCRIBE,
    InvalidToken,
    sign_token,
    signing_keys,
    verify_token,
)

KEYS = ("new-key", "old-key")
DAY = 86400.0
NOW = 1_800_000_000.0


def test_a_signed_click_token_verifies_with_its_target() -> None:
    token = sign_token(KEYS, CLICK, "job-1", "https://example.com/a?b=1", now=NOW)
    claims = verify_token(token, KEYS, CLICK, ttl=DAY, now=NOW + 10)
    assert (claims.key, claims.target, claims.issued_at) == (
        "job-1",
        "https://example.com/a?b=1",
        NOW,
    )
    assert token.isascii() and "/" not in token and "+" not in token


def test_rotation_every_key_verifies_only_the_first_signs() -> None:
    old = sign_token(("old-key",), OPEN, "job-1", now=NOW)
    assert verify_token(old, KEYS, OPEN, ttl=DAY, now=NOW).key == "job-1"
    new = sign_token(KEYS, OPEN, "job-1", now=NOW)
    assert verify_token(new, ("new-key",), OPEN, ttl=DAY, now=NOW).key == "job-1"
    with pytest.raises(InvalidToken):
        verify_token(new, ("old-key",), OPEN, ttl=DAY, now=NOW)


def test_an_expired_token_is_refused() -> None:
    token = sign_token(KEYS, UNSUBSCRIBE, "job-1", "ann@example.com", now=NOW)
    assert verify_token(token, KEYS, UNSUBSCRIBE, ttl=DAY, now=NOW + DAY - 1)
    with pytest.raises(InvalidToken, match="expired"):
        verify_token(token, KEYS, UNSUBSCRIBE, ttl=DAY, now=NOW + DAY + 1)


def test_a_token_for_another_purpose_is_refused() -> None:
    token = sign_token(KEYS, OPEN, "job-1", now=NOW)
    with pytest.raises(InvalidToken, match="purpose"):
        verify_token(token, KEYS, CLICK, ttl=DAY, now=NOW)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # signature changed
        lambda t: ("e" if t[0] != "e" else "f") + t[1:],  # payload changed
        lambda t: t.partition(".")[0],  # unsigned
        lambda t: t.partition(".")[0] + ".",  # empty signature
        lambda t: "",
        lambda t: "é" + t,
        lambda t: t + "x" * 9000,
    ],
)
def test_a_tampered_or_unsigned_token_is_refused(tamper) -> None:  # type: ignore[no-untyped-def]
    token = sign_token(KEYS, CLICK, "job-1", "https://example.com/", now=NOW)
    with pytest.raises(InvalidToken):
        verify_token(tamper(token), KEYS, CLICK, ttl=DAY, now=NOW)


def test_a_forged_payload_signed_with_another_key_is_refused() -> None:
    forged = sign_token(("attacker",), CLICK, "job-1", "https://evil.example/", now=NOW)
    with pytest.raises(InvalidToken, match="signature"):
        verify_token(forged, KEYS, CLICK, ttl=DAY, now=NOW)


def test_no_secret_means_no_tokens() -> None:
    assert signing_keys("") == () and signing_keys(" a , ,b") == ("a", "b")
    with pytest.raises(ValueError):
        sign_token((), OPEN, "job-1")
    token = sign_token(KEYS, OPEN, "job-1", now=NOW)
    with pytest.raises(InvalidToken):
        verify_token(token, (), OPEN, ttl=DAY, now=NOW)

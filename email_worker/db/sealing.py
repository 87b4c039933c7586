"""Personal data at rest: sealed with AES-256-GCM, and looked up by a keyed hash.

Every column that holds what a person could be recognised by (an address, a name in a
subject or template data, a link, a provider's raw event) stores a *sealed* value:

    <key id>:<base64url(nonce || ciphertext || tag)>

made with the first key of ``ENCRYPTION_KEYS``; every key of the list opens one, so
keys rotate without downtime (add the new key to every process, move it first, run
``email-worker rotate-keys``, then drop the old one). The key id (8 hex digits of the
key's SHA-256) says which key sealed a value, so a rotation finds what it has left to
do with one ``LIKE`` per column. The column's name is the associated data: a value
copied into another column does not open.

An address that must be found again (``jobs list --to``, the suppression list, an
erasure) is also stored as :func:`lookup_hash`: an HMAC-SHA256 of its one comparable
form under ``ENCRYPTION_LOOKUP_KEY``. That key does not rotate: a hash kept without
its address (an erased person's suppression) could not be computed again.

Outside live mode, a process with no keys uses the development keys below: they are
published in this file, so a warning says that such data is as good as clear text.
In live mode the keys are required (``Settings.validate`` and :func:`keys`).

The column type that seals and opens, :class:`~email_worker.db.sealed_columns.Sealed`,
is SQLAlchemy's; this module is not, so a producer's tracked call, which stores its
row through psycopg alone, seals with it without loading SQLAlchemy.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass
from typing import Any

from email_worker.addresses import comparable_address
from email_worker.config import get_settings
from email_worker.config.keys import KEY_BYTES, parse_keys
from email_worker.config.values import SettingsError

NONCE_BYTES = 12
KEY_ID_CHARS = 8
# Published here, so anyone can open what they seal: for the quick start and tests only.
DEVELOPMENT_KEY = hashlib.sha256(b"email-worker development key: not secret").digest()
DEVELOPMENT_LOOKUP_KEY = hashlib.sha256(b"email-worker development lookup key").digest()


class SealError(ValueError):
    """A sealed value that no configured key opens, or that is not a sealed value."""


def key_id(key: bytes) -> str:
    """The id a sealed value names its key by: 8 hex digits of the key's SHA-256."""
    return hashlib.sha256(key).hexdigest()[:KEY_ID_CHARS]


def new_key() -> str:
    """A fresh key in the form ``ENCRYPTION_KEYS`` takes."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


@dataclass(frozen=True)
class Keys:
    """The keys of this process: the first seals, all open, one hashes addresses."""

    sealing: tuple[bytes, ...]
    lookup: bytes
    development: bool  # the published keys: no protection at all

    @property
    def current_id(self) -> str:
        """The id of the key new values are sealed with."""
        return key_id(self.sealing[0])

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(key_id(key) for key in self.sealing)


_cached: tuple[tuple[str, str, str], Keys] | None = None
_ciphers: tuple[Keys, Any, dict[str, Any]] | None = None


def keys() -> Keys:
    """This process's keys, from the settings; a SettingsError when live mode has none."""
    return _state()[1]


def _state() -> tuple[tuple[str, str, str], Keys]:
    """The keys, made again when the settings change."""
    global _cached
    settings = get_settings()
    given = (
        settings.encryption_keys.reveal(),
        settings.encryption_lookup_key.reveal(),
        settings.delivery_mode,
    )
    if _cached is None or _cached[0] != given:
        _cached = (given, _make_keys(*given))
    return _cached


def _cipher_state() -> tuple[Keys, Any, dict[str, Any]]:
    """The keys, the current key's cipher, and a cipher per key id.

    Made apart from the keys: a lookup hash needs only the lookup key, so a process that
    never seals nor opens (a worker's fast path checking the suppression list) does not
    load the cryptography library, several MB in every pool process.
    """
    global _ciphers
    made = keys()
    if _ciphers is None or _ciphers[0] is not made:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        ciphers = {key_id(key): AESGCM(key) for key in made.sealing}
        _ciphers = (made, ciphers[made.current_id], ciphers)
    return _ciphers


def _make_keys(sealing: str, lookup: str, delivery_mode: str) -> Keys:
    named = (("ENCRYPTION_KEYS", sealing), ("ENCRYPTION_LOOKUP_KEY", lookup))
    missing = [name for name, given in named if not given]
    if missing and delivery_mode == "live":
        raise SettingsError(
            f"{' and '.join(missing)} required when DELIVERY_MODE is live: personal data "
            "is stored encrypted (make a key with `email-worker generate-key`)"
        )
    parsed = parse_keys(sealing) if sealing else (DEVELOPMENT_KEY,)
    return Keys(
        sealing=parsed,
        lookup=lookup.encode("utf-8") if lookup else DEVELOPMENT_LOOKUP_KEY,
        development=not sealing or not lookup,
    )


def seal_text(purpose: str, text: str) -> str:
    """``text`` sealed with the current key for the column ``purpose``."""
    made, cipher, _ = _cipher_state()
    nonce = os.urandom(NONCE_BYTES)
    sealed = cipher.encrypt(nonce, text.encode("utf-8", "surrogatepass"), purpose.encode())
    body = base64.urlsafe_b64encode(nonce + sealed).decode("ascii").rstrip("=")
    return f"{made.current_id}:{body}"


def open_text(purpose: str, value: str) -> str:
    """The text ``value`` was sealed from; a SealError when no configured key opens it."""
    _, _, ciphers = _cipher_state()
    kid, sep, body = value.partition(":")
    cipher = ciphers.get(kid)
    if not sep or cipher is None:
        known = ", ".join(ciphers)
        raise SealError(
            f"a value of {purpose} is sealed with key {kid[:KEY_ID_CHARS]!r}, which is not "
            f"in ENCRYPTION_KEYS (ids {known})"
        )
    from cryptography.exceptions import InvalidTag

    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        plain = cipher.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], purpose.encode())
    except (InvalidTag, binascii.Error, ValueError):
        raise SealError(f"a value of {purpose} does not open with its key {kid!r}") from None
    return plain.decode("utf-8", "surrogatepass")


def seal_json(purpose: str, value: Any) -> str:
    """``value`` as JSON, sealed."""
    return seal_text(purpose, json.dumps(value, separators=(",", ":"), ensure_ascii=False))


def open_json(purpose: str, value: str) -> Any:
    return json.loads(open_text(purpose, value))


def lookup_hash(address: str) -> str:
    """The keyed hash an address is found by: any form of one address gives one hash."""
    lookup = _state()[1].lookup
    return hmac.new(lookup, comparable_address(address).encode("utf-8"), "sha256").hexdigest()


def lookup_hashes(addresses: list[str] | tuple[str, ...]) -> str:
    """The hashes of every recipient of a send, space-separated, as ``recipient_hashes`` holds."""
    return " ".join(dict.fromkeys(lookup_hash(address) for address in addresses))


def reseal(purpose: str, value: str) -> str:
    """``value`` opened with its key and sealed with the current one."""
    return seal_text(purpose, open_text(purpose, value))

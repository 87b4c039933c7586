"""The DNS records receiving servers check: a DKIM key, SPF and DMARC; read with dnspython.

Used by ``email-worker check``. Lookups go to ``DNS_RESOLVER`` (the system's resolver
when empty), each within ``DNS_TIMEOUT``; a lookup that gets no answer raises
:class:`DnsProblem`, which the check reports as a warning: what DNS holds is unknown,
not wrong.

DMARC alignment is relaxed alignment by the organisational domain, taken here as the
domain's last two labels (``mail.example.com`` and ``example.com`` align). That rule
does not know the public suffix list: under a two-label suffix such as ``co.uk`` it
calls ``a.co.uk`` and ``b.co.uk`` aligned, and for a From domain such as
``mail.example.co.uk`` the DMARC record is looked up at ``_dmarc.co.uk`` after
``_dmarc.mail.example.co.uk``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses

from email_worker.config.values import split_resolver


class DnsProblem(Exception):
    """A lookup got no usable answer: a timeout, SERVFAIL, or no resolver to ask."""


@dataclasses.dataclass(frozen=True)
class TxtLookup:
    """The TXT records at a name (each record's strings joined), and whether the name exists."""

    name: str
    records: tuple[str, ...]
    exists: bool


class TxtResolver:
    """Asks one resolver (or the system's) for TXT records, with a short timeout."""

    def __init__(self, resolver: str, timeout: float) -> None:
        import dns.resolver

        if resolver.strip():
            address, port = split_resolver(resolver)
            self._resolver = dns.resolver.Resolver(configure=False)
            self._resolver.nameservers = [address]
            self._resolver.port = port
            self.shown = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        else:
            try:
                self._resolver = dns.resolver.Resolver()
            except dns.resolver.NoResolverConfiguration:
                raise DnsProblem("no DNS resolver configured (set DNS_RESOLVER)") from None
            self.shown = "the system resolver"
        self._resolver.timeout = timeout
        self._resolver.lifetime = timeout
        self.timeout = timeout

    def txt(self, name: str) -> TxtLookup:
        """The TXT records at ``name``; :class:`DnsProblem` when no answer comes."""
        import dns.exception
        import dns.resolver

        try:
            answer = self._resolver.resolve(name, "TXT", search=False, raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN:
            return TxtLookup(name, (), exists=False)
        except dns.exception.Timeout:
            raise DnsProblem(
                f"no answer from {self.shown} within {self.timeout:g} s for TXT {name}"
            ) from None
        except dns.resolver.NoNameservers as exc:
            # SERVFAIL or REFUSED from every server, or none reachable.
            reason = str(exc).split(";")[-1].strip() or "no server answered"
            raise DnsProblem(f"{self.shown} could not answer TXT {name}: {reason}") from None
        except dns.exception.DNSException as exc:
            raise DnsProblem(f"{self.shown}, TXT {name}: {type(exc).__name__}: {exc}") from None
        records = tuple(
            b"".join(rdata.strings).decode("utf-8", "replace") for rdata in (answer.rrset or ())
        )
        return TxtLookup(name, records, exists=True)


def tags(record: str) -> dict[str, str]:
    """A DKIM or DMARC tag list (``v=DKIM1; k=rsa; p=...``) as a mapping; names lowercased."""
    found: dict[str, str] = {}
    for part in record.split(";"):
        if not part.strip():
            continue
        name, equals, value = part.partition("=")
        if not equals or not name.strip():
            raise ValueError(f"{part.strip()[:40]!r} is not a tag=value pair")
        found[name.strip().lower()] = value.strip()
    return found


def dkim_public_key(record: str) -> bytes:
    """The RSA key of a DKIM key record, as DER SubjectPublicKeyInfo.

    ``ValueError`` names what is wrong: not a tag list, not DKIM1, not RSA, no ``p=``,
    an empty ``p=`` (a revoked key), base64 that does not decode or is no RSA key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    found = tags(record)
    if found.get("v", "DKIM1") != "DKIM1":
        raise ValueError(f"v={found['v']} where DKIM1 is expected")
    if found.get("k", "rsa").lower() != "rsa":
        raise ValueError(f"k={found['k']}: the key is not RSA")
    if "p" not in found:
        raise ValueError("no p= tag")
    text = "".join(found["p"].split())
    if not text:
        raise ValueError("p= is empty: the key is revoked")
    try:
        der = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("p= is not base64") from None
    try:
        key = serialization.load_der_public_key(der)
    except ValueError:
        try:  # an RSAPublicKey (PKCS#1), as some tools publish
            pem = b"-----BEGIN RSA PUBLIC KEY-----\n" + base64.encodebytes(der)
            key = serialization.load_pem_public_key(pem + b"-----END RSA PUBLIC KEY-----\n")
        except ValueError:
            raise ValueError("p= holds no RSA public key") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("p= holds no RSA public key")
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def spf_records(records: tuple[str, ...]) -> list[str]:
    """The SPF records among TXT records: those that start with ``v=spf1`` (RFC 7208 4.5)."""
    return [r for r in records if r.lower() == "v=spf1" or r.lower().startswith("v=spf1 ")]


def dmarc_records(records: tuple[str, ...]) -> list[str]:
    """The DMARC records among TXT records: those that start with ``v=DMARC1``."""
    return [r for r in records if tags_start(r, "v", "DMARC1")]


def tags_start(record: str, name: str, value: str) -> bool:
    """The record's first tag is ``name=value``."""
    first, _, _ = record.partition(";")
    key, _, found = first.partition("=")
    return key.strip().lower() == name and found.strip() == value


def organisational_domain(domain: str) -> str:
    """The domain's last two labels: the rule documented at the top of this module."""
    labels = domain.rstrip(".").lower().split(".")
    return ".".join(labels[-2:])


def aligned(domain: str, from_domain: str) -> bool:
    """Relaxed DMARC alignment: both domains share the organisational domain."""
    return organisational_domain(domain) == organisational_domain(from_domain)

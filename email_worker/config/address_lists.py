"""The address lists settings hold: ALLOWED_RECIPIENTS and ALLOWED_FROM_DOMAINS, parsed.

Entries of ALLOWED_RECIPIENTS are addresses (``qa@example.com``) or domains
(``@example.com``, that exact domain). Entries of ALLOWED_FROM_DOMAINS are addresses,
domains (``example.com``) or parent domains (``.example.com``: any subdomain). Case does
not matter, and an international domain matches in either its Unicode or its ASCII form.
"""

from __future__ import annotations

import dataclasses
import functools

from email_worker.addresses import InvalidAddress, comparable_address, normalize
from email_worker.config.values import SettingsError


@dataclasses.dataclass(frozen=True)
class AllowedRecipients:
    """ALLOWED_RECIPIENTS normalised: whole addresses and exact domains, lower case."""

    addresses: frozenset[str]
    domains: frozenset[str]

    def allows(self, address: str) -> bool:
        """Whether ``address`` is one of the addresses or at one of the domains."""
        address = comparable_address(address)
        return address in self.addresses or address.rpartition("@")[2] in self.domains


@functools.lru_cache(maxsize=16)
def allowed_recipients(entries: tuple[str, ...]) -> AllowedRecipients:
    """Parse ALLOWED_RECIPIENTS; ValueError names the position of an entry that is neither form."""
    addresses: set[str] = set()
    domains: set[str] = set()
    for position, entry in enumerate(entries, 1):
        text = entry.strip()
        try:
            if text.startswith("@"):
                domains.add(normalize(f"a{text}").rpartition("@")[2].lower())
            elif "@" in text:
                normalize(text)  # an invalid entry is refused, not kept lower-cased
                addresses.add(comparable_address(text))
            else:
                raise InvalidAddress("no @")
        except InvalidAddress:
            raise ValueError(
                f"ALLOWED_RECIPIENTS: entry {position} is neither an address "
                "nor a domain written as @example.com"
            ) from None
    return AllowedRecipients(frozenset(addresses), frozenset(domains))


@dataclasses.dataclass(frozen=True)
class AllowedSenders:
    """The From addresses a request may give: whole addresses, domains and parent domains."""

    addresses: frozenset[str] = frozenset()
    domains: frozenset[str] = frozenset()
    parents: tuple[str, ...] = ()  # ".example.com": any subdomain of example.com

    def allows(self, address: str) -> bool:
        """Whether ``address`` (normalised: an IDN domain in ASCII) may be a request's From."""
        address = address.lower()
        domain = address.rpartition("@")[2]
        return address in self.addresses or domain in self.domains or domain.endswith(self.parents)


@functools.lru_cache(maxsize=8)
def parse_allowed_senders(entries: tuple[str, ...], email_from: str) -> AllowedSenders:
    """Parse ALLOWED_FROM_DOMAINS, or take EMAIL_FROM's address and domain when it is empty."""
    if not entries:
        address = normalize(email_from).lower()
        domain = address.rpartition("@")[2]
        return AllowedSenders(addresses=frozenset({address}), domains=frozenset({domain}))
    addresses, domains, parents = set(), set(), []
    for position, entry in enumerate(entries, 1):
        try:
            if entry.startswith("."):
                parents.append("." + _ascii_domain(entry[1:]))
            elif "@" in entry.lstrip("@"):
                addresses.add(normalize(entry).lower())
            else:
                domains.add(_ascii_domain(entry.lstrip("@")))
        except InvalidAddress:
            raise SettingsError(
                f"ALLOWED_FROM_DOMAINS: entry {position} is not an address, a domain "
                "or a .parent.domain"
            ) from None
    return AllowedSenders(frozenset(addresses), frozenset(domains), tuple(parents))


def _ascii_domain(domain: str) -> str:
    """A domain as addresses carry it: lower case, an IDN in its ASCII (punycode) form."""
    return normalize(f"a@{domain}").rpartition("@")[2].lower()


def check_recipient_entries(entries: tuple[str, ...]) -> None:
    """Refuse an ALLOWED_RECIPIENTS entry that is neither an address nor ``@domain``."""
    allowed_recipients(entries)


def check_sender_entries(entries: tuple[str, ...]) -> None:
    """Refuse an ALLOWED_FROM_DOMAINS entry that is no address, domain or parent domain."""
    if entries:
        parse_allowed_senders(entries, "")

"""Email addresses, validated and normalised by email_validator, quickly for plain ones.

email_validator is thorough and slow (Unicode tables, IDNA): some 20 us an address,
ten times a regular expression, on every send, in the producer and in the worker.  Most
addresses are plain: an ASCII local part in dot-atom form and a lower-case host name.
For those, email_validator's answer is the address itself; :func:`plain_address`
recognises them with one regular expression and the few rules of the library that
such an address can still break.  Every other address goes to email_validator, whose
answers are kept per process in a bounded LRU cache.

email_validator is imported with the first address that is not plain, not with this
module: its import compiles large Unicode tables (some 20 ms), which a producer's first
send of a plain address need not pay for. Until something imports the library, nothing
can have changed its lists, so a plain address is checked against the lists of the
version they were copied from (:data:`LIBRARY_VERSION`), when that is the version installed;
a test holds them to the library's.
"""

from __future__ import annotations

import functools
import re
import sys

_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]"  # RFC 5322 atext, as email_validator has it
_LABEL = r"[a-z0-9](?:[a-z0-9\-]*[a-z0-9])?"
# A dot-atom local part, then at least two host labels; the last ends with a letter.
_PLAIN = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*@(?:{_LABEL}\.)+(?:[a-z0-9][a-z0-9\-]*)?[a-z]")
_MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3, as octets
_MAX_LOCAL = 64
_MAX_DOMAIN = 253
_MAX_LABEL = 63
CACHED_ADDRESSES = 4096
# email_validator's SPECIAL_USE_DOMAIN_NAMES and rfc_constants.CASE_INSENSITIVE_MAILBOX_NAMES
# as its version LIBRARY_VERSION has them by default.
LIBRARY_VERSION = "2.4.0"
SPECIAL_USE_DOMAIN_NAMES = ("arpa", "invalid", "local", "localhost", "onion", "test")
CASE_INSENSITIVE_MAILBOX_NAMES = (
    *("info", "marketing", "sales", "support", "abuse", "noc", "security", "postmaster"),
    *("hostmaster", "usenet", "news", "webmaster", "www", "uucp", "ftp"),
)


class InvalidAddress(ValueError):
    """An address email_validator refuses; the message is its reason."""


def normalize(address: str) -> str:
    """The address as it is sent (IDN domains in ASCII), or raise InvalidAddress."""
    if plain_address(address):
        return address
    normalized, problem = _validated(address)
    if normalized is None:
        raise InvalidAddress(problem)
    return normalized


def comparable_address(address: str) -> str:
    """The one form addresses are compared in: lower case, the domain in IDNA ASCII.

    Lists of addresses (suppressions, ALLOWED_RECIPIENTS) keep and look up this form, so a
    Unicode domain, its ``xn--`` form and any case match one entry. Text that is not an
    address is only lower-cased: no envelope can hold it anyway.
    """
    text = address.strip()
    try:
        text = normalize(text)
    except InvalidAddress:
        return text.lower()
    local, _, domain = text.rpartition("@")
    if not domain.isascii():  # a non-ASCII local part: email_validator keeps the Unicode domain
        domain = normalize(f"a@{domain}").rpartition("@")[2]
    return f"{local}@{domain}".lower()


def plain_address(address: str) -> bool:
    """Whether email_validator would accept ``address`` and return it unchanged.

    A false answer says nothing: the address may still be valid (a role name such as
    ``Info@``, an upper-case or international domain), and email_validator decides.
    """
    if len(address) > _MAX_ADDRESS or not _PLAIN.fullmatch(address):
        return False
    local, _, domain = address.rpartition("@")
    if len(local) > _MAX_LOCAL or len(domain) > _MAX_DOMAIN or "--" in domain:
        return False  # "--": Punycode and reserved labels, which the library checks
    if local.lower() in _role_names():
        return False
    if any(len(label) > _MAX_LABEL for label in domain.split(".")):
        return False
    return not any(
        domain == name or domain.endswith("." + name) for name in _special_use_domain_names()
    )


def _special_use_domain_names() -> list[str] | tuple[str, ...]:
    # Read at each call once the library is loaded: a service may change its list, as
    # its docs allow (and only a service that imported it can have).
    if "email_validator" not in sys.modules and _copied_lists_apply():
        return SPECIAL_USE_DOMAIN_NAMES
    import email_validator

    return email_validator.SPECIAL_USE_DOMAIN_NAMES


@functools.cache
def _role_names() -> frozenset[str]:
    """The mailbox names email_validator lower-cases (``Postmaster@``, ``Abuse@``, ...)."""
    if _copied_lists_apply():
        return frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)
    from email_validator import rfc_constants

    return frozenset(rfc_constants.CASE_INSENSITIVE_MAILBOX_NAMES)


@functools.cache
def _copied_lists_apply() -> bool:
    """Whether the installed email_validator is the version the lists here come from."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("email-validator") == LIBRARY_VERSION
    except PackageNotFoundError:
        return False


@functools.lru_cache(maxsize=CACHED_ADDRESSES)
def _validated(address: str) -> tuple[str | None, str]:
    from email_validator import EmailNotValidError, validate_email

    try:
        result = validate_email(address, check_deliverability=False)
    except EmailNotValidError as exc:
        return None, str(exc)
    return result.ascii_email or result.normalized, ""

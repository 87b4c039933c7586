"""Amazon SNS messages: topic allow-list, signing certificate, signature, subscription.

SES publishes its events to an SNS topic, and SNS POSTs them here. A message is
trusted only when its ``TopicArn`` is in ``SES_SNS_TOPIC_ARNS``, its ``SigningCertURL``
is an https URL on ``sns.<region>.amazonaws.com`` (``.com.cn`` in China) ending in
``.pem``, and its ``Signature`` verifies against that certificate: SHA1withRSA for
SignatureVersion 1, SHA256withRSA for 2, over the canonical string of the fields of its
type. Certificates are cached in the process by URL. Fetching is the one HTTP boundary
(``fetch``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"
_SIGNED_FIELDS = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_SIGNED_FIELDS[UNSUBSCRIBE_CONFIRMATION] = _SIGNED_FIELDS[SUBSCRIPTION_CONFIRMATION]
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}
# An AWS region (us-east-1, ap-southeast-2, us-gov-west-1), so that another service's
# host on amazonaws.com, such as the S3 bucket host sns.s3.amazonaws.com, is not taken.
_REGION = r"[a-z]{2}(?:-gov)?-[a-z]+-[0-9]{1,2}"
# The whole host as written in the URL: no user, no port. China's regions are on .com.cn.
_SNS_HOST = re.compile(
    rf"sns\.{_REGION}\.amazonaws\.com|sns\.cn-[a-z]+-[0-9]{{1,2}}\.amazonaws\.com\.cn"
)
MAX_BODY = 1024 * 1024  # SNS messages are at most 256 KiB
_MAX_CERTIFICATE = 64 * 1024
_CACHE_SIZE = 32

Fetch = Callable[[str], bytes]


class SnsRefused(ValueError):
    """A message that is not proven to come from an allowed SNS topic."""


class SnsUnavailable(Exception):
    """SNS could not be reached to fetch a certificate or confirm a subscription."""


def http_get(url: str) -> bytes:
    """GET an SNS URL (a certificate, a subscription confirmation); its body."""
    try:
        return _get(url)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
        raise SnsUnavailable(f"SNS could not be reached: {type(exc).__name__}") from None


def _get(url: str) -> bytes:
    with httpx.stream("GET", url, timeout=5.0, follow_redirects=False) as response:
        if response.status_code != 200:
            raise SnsUnavailable(f"SNS answered {response.status_code}")
        body = b""
        for chunk in response.iter_bytes():
            body += chunk
            if len(body) > _MAX_CERTIFICATE:
                raise SnsUnavailable("SNS answer too large")
        return body


def parse(body: bytes) -> dict[str, Any]:
    """The JSON object of an SNS POST; SnsRefused when it is not one."""
    if len(body) > MAX_BODY:
        raise SnsRefused("message too large")
    try:
        message = json.loads(body)
    except (ValueError, RecursionError):
        raise SnsRefused("not JSON") from None
    if not isinstance(message, dict):
        raise SnsRefused("not an SNS message")
    return message


def is_sns_url(url: Any, *, suffix: str = "") -> bool:
    """Whether ``url`` is https on SNS's host of a region (path ending in ``suffix``)."""
    if not isinstance(url, str) or len(url) > 2048:
        return False
    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return (
        parts.scheme == "https"
        and _SNS_HOST.fullmatch(parts.netloc) is not None
        and parts.path.endswith(suffix)
    )


class SnsVerifier:
    """Checks SNS messages against the allowed topics, caching signing certificates."""

    def __init__(self, topic_arns: Collection[str], fetch: Fetch = http_get) -> None:
        self.topic_arns = frozenset(topic_arns)
        self.fetch = fetch
        self._certificates: dict[str, rsa.RSAPublicKey] = {}
        self._lock = threading.Lock()

    def verify(self, message: Mapping[str, Any]) -> str:
        """The message's type once topic, certificate URL and signature check; else SnsRefused."""
        kind = message.get("Type")
        if not isinstance(kind, str) or kind not in _SIGNED_FIELDS:
            raise SnsRefused("unknown message type")
        if message.get("TopicArn") not in self.topic_arns:
            raise SnsRefused("topic not allowed")
        algorithm = _HASHES.get(str(message.get("SignatureVersion")))
        if algorithm is None:
            raise SnsRefused("unknown signature version")
        cert_url = message.get("SigningCertURL")
        if not is_sns_url(cert_url, suffix=".pem"):
            raise SnsRefused("signing certificate not on SNS")
        assert isinstance(cert_url, str)
        signature = _signature(message.get("Signature"))
        canonical = _canonical(message, _SIGNED_FIELDS[kind])
        try:
            self._key(cert_url).verify(signature, canonical, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsRefused("bad signature") from None
        return kind

    def confirm_subscription(self, message: Mapping[str, Any]) -> None:
        """Confirm a verified SubscriptionConfirmation by visiting its SubscribeURL."""
        url = message.get("SubscribeURL")
        if not is_sns_url(url):
            raise SnsRefused("SubscribeURL not on SNS")
        assert isinstance(url, str)
        self.fetch(url)

    def _key(self, url: str) -> rsa.RSAPublicKey:
        key = self._certificates.get(url)
        if key is not None:
            return key
        try:
            certificate = x509.load_pem_x509_certificate(self.fetch(url))
        except ValueError:
            raise SnsRefused("signing certificate unreadable") from None
        now = dt.datetime.now(dt.UTC)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise SnsRefused("signing certificate expired")
        public_key = certificate.public_key()
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SnsRefused("signing certificate is not RSA")
        key = public_key
        with self._lock:
            if len(self._certificates) >= _CACHE_SIZE:
                self._certificates.pop(next(iter(self._certificates)))
            self._certificates[url] = key
        return key


def _signature(value: Any) -> bytes:
    if not isinstance(value, str) or len(value) > 4096:
        raise SnsRefused("unsigned")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise SnsRefused("malformed signature") from None


def _canonical(message: Mapping[str, Any], fields: tuple[str, ...]) -> bytes:
    """The string SNS signs: each present field's name and value, one per line."""
    lines = []
    for name in fields:
        value = message.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise SnsRefused(f"{name} missing")
        lines.append(f"{name}\n{value}\n")
    try:
        return "".join(lines).encode("utf-8")
    except UnicodeEncodeError:
        raise SnsRefused("not UTF-8") from None

"""Amazon SES delivery through the SES API v2, sending our own MIME message raw.

One boto3 ``sesv2`` client per instance (so per worker process), made on first use.
Credentials are the keys given, else boto3's own chain (role, profile, environment);
the endpoint is boto3's too, so ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_SESV2``
point it elsewhere.  botocore tries twice at most: Celery's retries come on top.

SES keeps our headers (List-Unsubscribe included) but replaces Date and Message-ID
with its own, so the id SES returns is the one its events carry; every send is also
tagged with our key and kind.  A DKIM signature of ours leaves those two fields out.
Errors are classified here: throttling is rate-limited, a full daily quota waits
long, 5xx and lost connections are transient, a rejected message is permanent, and
an account that cannot send (unverified, paused, suspended, bad keys) is logged loudly.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    NoCredentialsError,
    ParamValidationError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from email_worker.errors import (
    AccountProviderError,
    PermanentProviderError,
    ProviderError,
    RateLimitedError,
    TransientProviderError,
)
from email_worker.mime.messages import OutgoingEmail
from email_worker.policy.signing import REWRITTEN_HEADERS, DkimSigner
from email_worker.privacy import redact_text
from email_worker.providers.base import SendResult

log = logging.getLogger(__name__)

NAME = "ses"
THROTTLED_RETRY_AFTER = 2.0  # SES limits sends per second: the next second or two has room
QUOTA_RETRY_AFTER = 900.0  # the 24-hour quota frees up only as sends of a day ago age out
# botocore's tries per call, the first included (its "max_attempts" counts retries only):
# two tries of SES_TIMEOUT fit in the send's time limit, and Celery retries after that.
TOTAL_ATTEMPTS = 2

_THROTTLING = frozenset({"TooManyRequestsException", "Throttling", "ThrottlingException"})
_ACCOUNT = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",  # an identity or configuration set that does not exist
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
        "AccessDeniedException",
        "AccessDenied",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
_TAG_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]")
_MAX_TAG = 256


def classify_client_error(code: str, status: int, message: str) -> ProviderError:
    """Turn an SES API error into the error the worker acts on."""
    text = f"SES {code or 'error'} ({status}): {redact_text(' '.join(message.split()))}"
    quota = "quota" in message.lower()
    if code == "LimitExceededException" or (quota and (code in _THROTTLING or status == 429)):
        return RateLimitedError(text, provider=NAME, code=status, retry_after=QUOTA_RETRY_AFTER)
    if code in _THROTTLING or status == 429:
        return RateLimitedError(text, provider=NAME, code=status, retry_after=THROTTLED_RETRY_AFTER)
    if code in _ACCOUNT or status in (401, 403) or "not verified" in message.lower():
        return AccountProviderError(text, provider=NAME, code=status)
    if status >= 500:
        return TransientProviderError(text, provider=NAME, code=status)
    return PermanentProviderError(text, provider=NAME, code=status)


def message_tags(email: OutgoingEmail) -> list[dict[str, str]]:
    """Our key and the email's kind as SES message tags (letters, digits, _ and - only)."""
    tags = []
    for name, value in (("email_worker_id", email.key), ("kind", email.kind)):
        safe = _TAG_UNSAFE.sub("_", value)[:_MAX_TAG]
        if safe:
            tags.append({"Name": name, "Value": safe})
    return tags


class SesProvider:
    """Sends raw MIME messages through Amazon SES (API v2) in one region."""

    name = NAME

    def __init__(
        self,
        region: str,
        *,
        access_key_id: str = "",
        secret_access_key: str = "",
        configuration_set: str = "",
        timeout: float = 10.0,
        signer: DkimSigner | None = None,
    ) -> None:
        if not region:
            raise ValueError("AWS_SES_REGION is required to send through ses")
        if bool(access_key_id) != bool(secret_access_key):
            raise ValueError("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")
        if timeout <= 0:
            raise ValueError(f"SES timeout must be positive, got {timeout!r}")
        self.region = region
        self._keys = (access_key_id, secret_access_key)
        self._configuration_set = configuration_set
        self._timeout = timeout
        self._signer = signer
        self._session: boto3.session.Session | None = None
        self._client: Any = None
        # Celery's thread pools share this provider; boto3 sessions are not thread-safe.
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"SesProvider(region={self.region!r})"

    @property
    def client(self) -> Any:
        """The sesv2 client, made on first use and kept until close()."""
        with self._lock:
            if self._client is None:
                self._client = self._boto_session().client(
                    "sesv2",
                    config=Config(
                        retries={"total_max_attempts": TOTAL_ATTEMPTS, "mode": "standard"},
                        connect_timeout=self._timeout,
                        read_timeout=self._timeout,
                    ),
                )
            return self._client

    def send(self, email: OutgoingEmail) -> SendResult:
        """Hand the message to SES for the envelope's recipients; return SES's message id."""
        if email.needs_smtputf8:
            raise PermanentProviderError(
                "SES does not accept addresses with non-ASCII characters before the @",
                provider=NAME,
            )
        try:
            response = self.client.send_email(**self.send_email_params(email))
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            failure = classify_client_error(
                str(error.get("Code", "")), int(status or 0), str(error.get("Message", ""))
            )
        except (NoCredentialsError, PartialCredentialsError, CredentialRetrievalError) as exc:
            failure = AccountProviderError(
                f"SES credentials could not be found: {redact_text(str(exc))}", provider=NAME
            )
        except (BotoConnectionError, HTTPClientError) as exc:
            # After a read timeout SES may have taken the message: a retry may duplicate it.
            failure = TransientProviderError(
                f"SES could not be reached: {redact_text(str(exc))}", provider=NAME
            )
        except ParamValidationError as exc:
            failure = PermanentProviderError(
                f"SES request is invalid: {redact_text(str(exc))}", provider=NAME
            )
        except BotoCoreError as exc:  # e.g. an answer that cannot be parsed (a proxy's page)
            failure = TransientProviderError(
                f"SES request failed: {redact_text(str(exc))}", provider=NAME
            )
        else:
            return SendResult(str(response["MessageId"]), accepted=email.envelope.recipients)
        self._report(failure)
        raise failure

    def send_email_params(self, email: OutgoingEmail) -> dict[str, Any]:
        """The SendEmail parameters for this message (signed first when DKIM is set)."""
        wire = email.as_bytes()
        if self._signer is not None:
            wire = self._signer.sign(wire, unsigned=REWRITTEN_HEADERS[NAME])
        params: dict[str, Any] = {
            "FromEmailAddress": email.envelope.sender,
            # With raw content the Destination is the envelope only (Bcc recipients and a
            # narrowed retry need it); as Bcc, none of it could ever become a header.
            "Destination": {"BccAddresses": list(email.envelope.recipients)},
            "Content": {"Raw": {"Data": wire}},
            "EmailTags": message_tags(email),
        }
        if self._configuration_set:
            params["ConfigurationSetName"] = self._configuration_set
        return params

    def close(self) -> None:
        """Drop the client; the next send makes a new one."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    def check(self) -> bool:
        """Whether credentials resolve (keys given, or boto3's chain finds some); no API call."""
        try:
            with self._lock:
                return self._boto_session().get_credentials() is not None
        except BotoCoreError:
            return False

    def health(self) -> dict[str, Any]:
        """What a health check shows of this provider, without calling SES."""
        return {"configured": self.check(), "region": self.region}

    def _boto_session(self) -> boto3.session.Session:
        if self._session is None:
            key_id, secret = self._keys
            if key_id and secret:
                self._session = boto3.session.Session(
                    aws_access_key_id=key_id, aws_secret_access_key=secret, region_name=self.region
                )
            else:
                self._session = boto3.session.Session(region_name=self.region)
        return self._session

    @staticmethod
    def _report(failure: ProviderError) -> None:
        if isinstance(failure, AccountProviderError):
            log.critical(
                "SES refuses to send for this account: every email will fail until it is fixed",
                extra={"provider": NAME, "reason": failure.message},
            )
        elif isinstance(failure, RateLimitedError) and failure.retry_after >= QUOTA_RETRY_AFTER:
            log.error(
                "SES sending quota reached; retrying later",
                extra={"provider": NAME, "reason": failure.message},
            )

"""The exceptions of email-worker, grouped by what the worker does with them.

:class:`TransientError` is retried with backoff; :class:`PermanentError` fails the
send at once; :class:`AccountError` is permanent and logged loudly because every
email will fail until a person fixes the account.  :class:`InvalidEmailRequest`
is raised in the producer's process before anything is enqueued.
"""

from __future__ import annotations


class EmailWorkerError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidEmailRequest(EmailWorkerError, ValueError):
    """A send request that cannot be accepted; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(field, problem)  # args rebuild the error after pickling or a result
        self.field = field
        self.problem = problem

    def __str__(self) -> str:
        return f"{self.field}: {self.problem}"


class TransientError(EmailWorkerError):
    """A failure that may pass: the send is retried with exponential backoff."""


class PermanentError(EmailWorkerError):
    """A failure that will not pass by retrying: the send fails at once."""


class AccountError(PermanentError):
    """The provider account or sender cannot send at all (unverified, suspended, bad key)."""


class TemplateNotFound(PermanentError):
    """No template with the requested id exists."""

    def __init__(self, template_id: str) -> None:
        super().__init__(template_id)
        self.template_id = template_id

    def __str__(self) -> str:
        return f"template {self.template_id!r} not found"


class TemplateRenderError(PermanentError):
    """A template failed to render, e.g. a variable it uses was not given."""


class ProviderError(EmailWorkerError):
    """A provider refused or failed a send; ``code`` is its status code when it gave one."""

    def __init__(self, message: str, provider: str = "", code: int | None = None) -> None:
        super().__init__(message, provider, code)
        self.message = message
        self.provider = provider
        self.code = code

    def __str__(self) -> str:
        return self.message


class TransientProviderError(ProviderError, TransientError):
    """The provider asked to try later: 4xx SMTP, HTTP 429/5xx, throttling, lost connection."""


class RateLimitedError(TransientProviderError):
    """The provider (or our own rate limit) said to wait: retry after ``retry_after`` seconds."""

    def __init__(
        self, message: str, provider: str = "", code: int | None = None, retry_after: float = 1.0
    ) -> None:
        super().__init__(message, provider, code)
        self.retry_after = retry_after


class Throttled(RateLimitedError):
    """Our own rate limit for a provider has no token now: the send waits, uncounted."""


class ProvidersUnavailable(TransientProviderError):
    """Every provider of the failover chain failed for now or has its circuit open."""


class PermanentProviderError(ProviderError, PermanentError):
    """The provider rejected the message for good: 5xx SMTP, HTTP 400/413, bad recipient."""


class AccountProviderError(ProviderError, AccountError):
    """The provider rejects the account itself: bad credentials, unverified sender, suspended."""


class PartialDeliveryError(TransientProviderError):
    """The provider took the message for some recipients and refused others only for now.

    ``retry_recipients`` are the ones to try again; the rest already have the message.
    """

    def __init__(
        self,
        message: str,
        provider: str = "",
        code: int | None = None,
        retry_recipients: tuple[str, ...] = (),
    ) -> None:
        # The addresses stay out of ``args``: Celery logs and stores the error's repr.
        super().__init__(message, provider, code)
        self.retry_recipients = retry_recipients

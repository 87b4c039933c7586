"""Sending through a chain of providers: the chosen one first, then the fallbacks.

A transient failure, or a circuit opened by repeated transient failures (in any
worker process), moves the send to the next provider; a permanent or account error
does not, because another provider would refuse the same message or the account
needs a person. A provider's own 429 moves on too, without
counting against its circuit. A provider whose global rate limit (ours) has no
token now is not skipped: the send waits for it (:class:`Throttled`), so our limit
never pushes mail onto a fallback that may cost more. Providers that send our own
MIME bytes sign them with DKIM when configured.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from email_worker.config import Settings
from email_worker.config.values import NON_DELIVERING_PROVIDERS
from email_worker.errors import (
    PartialDeliveryError,
    ProvidersUnavailable,
    RateLimitedError,
    Throttled,
    TransientError,
)
from email_worker.mime.messages import OutgoingEmail
from email_worker.observability import metrics
from email_worker.policy.rate_limit import limiter_for
from email_worker.privacy import redact_text
from email_worker.providers import get_provider, is_configured
from email_worker.providers.base import Provider, SendResult
from email_worker.providers.circuit import circuit_for

if TYPE_CHECKING:
    from email_worker.policy.signing import DkimSigner

log = logging.getLogger("email_worker.providers")

# Providers that send our own MIME bytes, so a DKIM signature of ours survives.
RAW_MIME_PROVIDERS = frozenset({"smtp", "ses", "outbox"})


def send_through(
    email: OutgoingEmail,
    chain: tuple[str, ...],
    settings: Settings,
    *,
    priority: str = "default",
    provider_for: Callable[[str], Provider] = get_provider,
) -> tuple[str, SendResult]:
    """Send through the first provider of ``chain`` that takes it; return its name and result.

    ``provider_for`` gives the instance of a provider by name (this process's own by default).
    """
    failures: list[str] = []
    last: TransientError | None = None
    for name in chain:
        # With no provider to fall back on a circuit would only delay mail: none is kept.
        circuit = circuit_for(name, settings) if len(chain) > 1 else _NO_CIRCUIT
        if not circuit.allows():
            failures.append(f"{name}: circuit open")
            continue
        limiter = limiter_for(name, settings)
        if limiter is not None:
            wait = limiter.acquire(priority, booking=email.key or None)
            if wait > 0:
                raise Throttled(f"{name} rate limit reached", provider=name, retry_after=wait)
        try:
            result = provider_for(name).send(_signed(email, name, settings))
        except PartialDeliveryError as exc:
            metrics.count_provider_request(name, exc)
            circuit.record_success()  # the provider works; some recipients wait
            raise
        except RateLimitedError as exc:
            metrics.count_provider_request(name, exc)
            # The provider asked to wait: no fault of its own, so its circuit is left alone.
            failures.append(f"{name}: rate limited")
            last = exc
            continue
        except TransientError as exc:
            metrics.count_provider_request(name, exc)
            text = redact_text(str(exc)) or type(exc).__name__
            circuit.record_failure(text)
            failures.append(f"{name}: {text}")
            last = exc
            if name != chain[-1]:
                log.warning(
                    "provider failed for now; trying the next one",
                    extra={"provider": name, "reason": text, "kind": email.kind},
                )
            continue
        except Exception as exc:
            metrics.count_provider_request(name, exc)
            raise
        metrics.count_provider_request(name)
        circuit.record_success()
        if failures:
            log.info(
                "sent through a fallback provider",
                extra={"provider": name, "skipped": "; ".join(failures), "kind": email.kind},
            )
        return name, result
    if last is not None and len(failures) == 1:
        raise last
    raise ProvidersUnavailable(
        "no provider could send now: " + "; ".join(failures), provider=chain[-1]
    ) from last


class _NoCircuit:
    """The circuit of a provider that has no fallback: always closed, nothing stored."""

    def allows(self) -> bool:
        return True

    def record_success(self) -> None:
        pass

    def record_failure(self, error_text: str) -> None:
        pass


_NO_CIRCUIT = _NoCircuit()


def _signed(email: OutgoingEmail, provider: str, settings: Settings) -> OutgoingEmail:
    if (
        not settings.dkim_domain
        or provider not in RAW_MIME_PROVIDERS
        or provider not in settings.dkim_providers
    ):
        return email
    signer = _signer(settings)
    if signer is None:
        return email
    from email_worker.policy.signing import REWRITTEN_HEADERS

    # Fields the provider rewrites (SES: Date, Message-ID) are left out of the signature.
    unsigned = REWRITTEN_HEADERS.get(provider, ())
    return dataclasses.replace(email, wire=signer.sign(email.wire, unsigned=unsigned))


@functools.cache
def _signer(settings: Settings) -> DkimSigner | None:
    # Imported here: dkimpy comes with the server extra, which a producer does not install.
    from email_worker.policy.signing import signer_from_settings

    return signer_from_settings(settings)


def providers_health(settings: Settings) -> dict[str, dict[str, Any]]:
    """Each provider in use: configured or not, its circuit and last error; none is called."""
    names = {*settings.provider_chain(None), *(name for _, name in settings.kind_providers)}
    warning = settings.non_delivering_warning()
    return {
        name: {
            "configured": is_configured(name, settings),
            **circuit_for(name, settings).state(),
            **({"delivers": False, "warning": warning} if name in NON_DELIVERING_PROVIDERS else {}),
        }
        for name in sorted(names)
    }

"""Email providers behind one interface, one instance of each per process.

Also the rule of which provider a request may name: what reaches logs or files on
the worker host is never chosen by a caller (:func:`provider_choice_problem`).
"""

from __future__ import annotations

import os
import threading

from email_worker.config import PROVIDER_NAMES, Settings, get_settings
from email_worker.errors import InvalidEmailRequest
from email_worker.extras import require_extra
from email_worker.providers.base import Provider, SendResult
from email_worker.providers.console import ConsoleProvider
from email_worker.providers.outbox import OutboxProvider
from email_worker.providers.smtp import SmtpProvider

__all__ = [
    "HOST_PROVIDERS",
    "Provider",
    "SendResult",
    "check_provider_choice",
    "close_providers",
    "create_provider",
    "get_provider",
    "is_configured",
    "provider_choice_problem",
    "require_sdk",
]

# What each provider imports beyond the plain package; the server extra brings it.
SDK_MODULES: dict[str, tuple[str, ...]] = {
    "sendgrid": ("sendgrid",),
    "ses": ("boto3", "dkim"),  # the SES provider signs with DKIM itself
}

# They keep the message on the worker host (its terminal or log, its disk): for development.
HOST_PROVIDERS = ("console", "outbox")

_instances: dict[str, Provider] = {}
_lock = threading.Lock()


def create_provider(name: str, settings: Settings) -> Provider:
    """Build a provider from the settings."""
    require_sdk(name)
    if name == "outbox":
        return OutboxProvider(settings.outbox_dir)
    if name == "console":
        return ConsoleProvider(whole_messages=settings.delivery_mode != "live")
    if name == "smtp":
        if not settings.smtp_host:
            raise ValueError("SMTP_HOST is required to send through smtp")
        return SmtpProvider(
            settings.smtp_host,
            settings.smtp_port,
            security=settings.smtp_security if settings.smtp_use_tls else "none",
            username=settings.smtp_username,
            password=settings.smtp_password.reveal(),
            timeout=settings.smtp_timeout,
            ca_file=settings.smtp_ca_file,
        )
    if name == "sendgrid":
        from email_worker.providers.sendgrid import SendGridProvider

        if not settings.sendgrid_api_key:
            raise ValueError("SENDGRID_API_KEY is required to send through sendgrid")
        return SendGridProvider(
            settings.sendgrid_api_key.reveal(),
            api_url=settings.sendgrid_api_url,
            timeout=settings.sendgrid_timeout,
        )
    if name == "ses":
        from email_worker.providers.ses import SesProvider

        return SesProvider(
            settings.aws_ses_region,
            access_key_id=settings.aws_access_key_id.reveal(),
            secret_access_key=settings.aws_secret_access_key.reveal(),
            configuration_set=settings.ses_configuration_set,
            timeout=settings.ses_timeout,
        )
    raise ValueError(f"unknown provider {name!r}")


def require_sdk(name: str) -> None:
    """Raise :class:`~email_worker.extras.MissingExtra` if provider ``name`` lacks its SDK."""
    require_extra(f"the {name} provider", *SDK_MODULES.get(name, ()))


def is_configured(name: str, settings: Settings) -> bool:
    """Whether the settings name what ``name`` needs to send (no connection is made)."""
    if name == "smtp":
        return bool(settings.smtp_host)
    if name == "sendgrid":
        return bool(settings.sendgrid_api_key)
    if name == "ses":
        # Keys in the settings; or the operator sends through SES, and boto3's own chain
        # (a role, a profile) finds credentials at send time. The region has a default.
        keys = settings.aws_access_key_id and settings.aws_secret_access_key
        return bool(settings.aws_ses_region) and bool(
            keys or name in _operators_providers(settings)
        )
    return name in HOST_PROVIDERS


def provider_choice_problem(
    name: object, settings: Settings, *, configured_here: bool = True
) -> str | None:
    """Why a request may not name provider ``name``, or None when it may.

    ``console`` and ``outbox`` keep the message on the worker host, so a request may
    name them only when DELIVERY_MODE is not live. Any other provider must be
    configured, which only a process with the service's settings can tell (a worker,
    the web app): a producer passes ``configured_here=False`` and its worker checks.
    """
    if name not in PROVIDER_NAMES:
        return f"must be one of {', '.join(PROVIDER_NAMES)}"
    if _kept_back_in_live(str(name), settings):
        return (
            f"{name!r} keeps the message on the worker host; a request may choose it "
            "only when DELIVERY_MODE is not live"
        )
    if configured_here and not is_configured(str(name), settings):
        usable = [
            n
            for n in PROVIDER_NAMES
            if is_configured(n, settings) and not _kept_back_in_live(n, settings)
        ]
        return f"{name!r} is not configured here; choose one of: {', '.join(usable) or 'none'}"
    return None


def check_provider_choice(name: str | None, settings: Settings) -> None:
    """Raise InvalidEmailRequest naming ``provider`` if a request may not choose ``name`` here.

    In a worker this fails that one email for good, logged at ERROR: it is not the
    account-level alarm a provider's own refusal of our credentials raises.
    """
    problem = None if name is None else provider_choice_problem(name, settings)
    if problem is not None:
        raise InvalidEmailRequest("provider", problem)


def _kept_back_in_live(name: str, settings: Settings) -> bool:
    return name in HOST_PROVIDERS and settings.delivery_mode == "live"


def _operators_providers(settings: Settings) -> set[str]:
    """Every provider the settings send through: the default, fallbacks, per kind."""
    return {*settings.provider_chain(None), *(name for _, name in settings.kind_providers)}


def get_provider(name: str | None = None) -> Provider:
    """The process-wide instance of a provider (the EMAIL_PROVIDER one by default)."""
    settings = get_settings()
    name = name or settings.email_provider
    with _lock:
        if name not in _instances:
            _instances[name] = create_provider(name, settings)
        return _instances[name]


def close_providers() -> None:
    """Close every provider's connections (on worker shutdown)."""
    with _lock:
        instances = list(_instances.values())
        _instances.clear()
    for provider in instances:
        provider.close()


def _forget_after_fork() -> None:
    # A forked child must not share the parent's sockets: it opens its own.
    global _lock
    _instances.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)

"""Email providers behind one interface, one instance of each per process."""

from __future__ import annotations

import os
import threading

from email_worker.config import Settings, get_settings
from email_worker.providers.base import Provider
from email_worker.providers.console import ConsoleProvider
from email_worker.providers.outbox import OutboxProvider
from email_worker.providers.smtp import SmtpProvider

__all__ = ["Provider", "close_providers", "create_provider", "get_provider"]

_instances: dict[str, Provider] = {}
_lock = threading.Lock()


def create_provider(name: str, settings: Settings) -> Provider:
    """Build a provider from the settings."""
    if name == "outbox":
        return OutboxProvider(settings.outbox_dir)
    if name == "console":
        return ConsoleProvider()
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
    raise ValueError(f"unknown provider {name!r}")


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

"""The settings model: every setting, its checks together, and its refused values held back.

Each value's own checks (its type, bounds and form) apply in every process that reads
it.  A :class:`Settings` read by :func:`~email_worker.config.sources.load_settings`
holds no value for a setting it refused: reading that setting raises its
:class:`SettingsError`, so a producer never fails on a value only workers use.  The
checks that combine settings (:meth:`Settings.validate`, :meth:`Settings.check_worker`)
run only in this service's own processes, at start.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from email_worker.config.connections import ConnectionSettings
from email_worker.config.fields import check_value
from email_worker.config.sending import SendingSettings
from email_worker.config.service import ServiceSettings
from email_worker.config.values import SettingsError

HARD_LIMIT_MARGIN = 15.0
"""Seconds between a send's soft time limit (PROCESS_TIMEOUT) and its hard one."""

_NONE_REFUSED: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, repr=False)
class Settings(ServiceSettings, SendingSettings, ConnectionSettings):
    """Everything the service can be configured with, read once per process.

    One built in code checks each value at once.  One read by :func:`load_settings`
    holds no value for a setting it refused: reading that setting raises its
    :class:`SettingsError`, and :meth:`validate` raises the first one.
    """

    def __post_init__(self) -> None:
        # Only for settings built in code: load_settings checks what it reads and keeps the
        # refused values back instead of raising.
        for spec in dataclasses.fields(self):
            check_value(getattr(self, spec.name), spec.metadata["env"], spec.metadata)

    @classmethod
    def _holding(cls, values: Mapping[str, Any], refused: Mapping[str, str]) -> Settings:
        """Settings with ``values`` (defaults for the rest); each refused one raises when read."""
        settings = object.__new__(_refusing(refused) if refused else cls)
        for spec in dataclasses.fields(cls):
            if spec.name not in refused:
                settings.__dict__[spec.name] = values.get(spec.name, spec.default)
        return settings

    @property
    def refused(self) -> Mapping[str, str]:
        """Each setting whose value was refused, with the reason (naming its variable)."""
        return _NONE_REFUSED

    def with_defaults_for_refused(self) -> Settings:
        """These settings with the default in place of each refused value.

        For Celery's configuration, which every process builds but only the service's own
        processes use in full: they refuse the wrong values themselves (:meth:`validate`).
        """
        return Settings._holding(self.__dict__, {})

    def validate(self) -> None:
        """Refuse any wrong value or combination: this service's own processes call it at start."""
        for reason in self.refused.values():
            raise SettingsError(reason)
        # Redis hands a message to another worker once it has been unacknowledged for the
        # visibility timeout: a countdown held by the broker plus a send up to its hard
        # time limit, plus room for queueing and clocks, must fit in it, or it goes out twice.
        held = self.schedule_threshold + self.process_timeout + HARD_LIMIT_MARGIN + 10
        if held > self.visibility_timeout:
            raise SettingsError(
                "SCHEDULE_THRESHOLD + PROCESS_TIMEOUT + 25s must be at most "
                f"BROKER_VISIBILITY_TIMEOUT ({self.schedule_threshold:g}s + "
                f"{self.process_timeout:g}s + 25s = {held:g}s > {self.visibility_timeout:g}s): "
                "a message held longer is redelivered and the email sent twice"
            )
        if self.delivery_mode == "live" and not (
            self.encryption_keys and self.encryption_lookup_key
        ):
            raise SettingsError(
                "ENCRYPTION_KEYS and ENCRYPTION_LOOKUP_KEY are required when DELIVERY_MODE is "
                "live: personal data is stored encrypted (make a key with "
                "`email-worker generate-key`)"
            )
        if self.delivery_mode == "allowlist" and not self.allowed_recipients:
            raise SettingsError("ALLOWED_RECIPIENTS is required when DELIVERY_MODE is allowlist")
        if bool(self.dkim_domain) != bool(self.dkim_selector) or (
            self.dkim_domain and not (self.dkim_private_key or self.dkim_private_key_file)
        ):
            raise SettingsError(
                "DKIM needs DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY "
                "(or DKIM_PRIVATE_KEY_FILE) together"
            )

    def marketing_problem(self) -> str | None:
        """Why marketing and bulk emails cannot go out in live mode, or None when they can.

        Each must carry a one-click unsubscribe link (a token signed with TRACKING_SECRET,
        on the web app at PUBLIC_URL) and the sender's postal address.
        """
        if self.delivery_mode != "live":
            return None
        needed = (
            (self.tracking_secret, "TRACKING_SECRET is not set (no unsubscribe token is signed)"),
            (self.public_url, "PUBLIC_URL is not set (unsubscribe links need the web app)"),
            (self.sender_postal_address, "SENDER_POSTAL_ADDRESS is not set (CAN-SPAM asks for it)"),
        )
        missing = [reason for given, reason in needed if not given]
        if not missing:
            return None
        return (
            "marketing and bulk emails are refused when DELIVERY_MODE is live without "
            f"List-Unsubscribe and a postal address: {'; '.join(missing)}"
        )

    def console_warning(self) -> str | None:
        """What to say when the console has no CONSOLE_SESSION_KEY, or None when it has one."""
        if self.console_session_key:
            return None
        if self.delivery_mode == "live":
            return (
                "the console is off: CONSOLE_SESSION_KEY is required when DELIVERY_MODE is live "
                "(32 or more random characters, such as `openssl rand -base64 48` prints)"
            )
        return (
            "CONSOLE_SESSION_KEY not set: console sessions are signed with the development key "
            "published in the source; set it before anyone signs in on a shared host"
        )

    def development_keys_warning(self) -> str | None:
        """What to say when personal data would be sealed with the published development keys.

        Only outside live mode (:meth:`validate` refuses live mode without keys).
        """
        missing = [
            name
            for name, given in (
                ("ENCRYPTION_KEYS", self.encryption_keys),
                ("ENCRYPTION_LOOKUP_KEY", self.encryption_lookup_key),
            )
            if not given
        ]
        if not missing:
            return None
        return (
            f"{' and '.join(missing)} not set: personal data is stored sealed with the "
            "development keys published in the source, as readable as clear text; set them "
            "(`email-worker generate-key`) before any real address is stored"
        )

    def check_worker(self) -> None:
        """Refuse what a worker cannot run or send with (all :meth:`validate` refuses, too)."""
        self.validate()
        if not self.email_provider:
            raise SettingsError(
                "EMAIL_PROVIDER is required for a worker: smtp, sendgrid or ses (outbox writes "
                ".eml files and console logs the message on the worker host, delivering nothing)"
            )
        if "smtp" in self.provider_chain(None) and not self.smtp_host:
            raise SettingsError("SMTP_HOST is required when EMAIL_PROVIDER is smtp")
        if "sendgrid" in self.provider_chain(None) and not self.sendgrid_api_key:
            raise SettingsError("SENDGRID_API_KEY is required when sending through sendgrid")

    def __repr__(self) -> str:
        shown = (
            f"{spec.name}=<refused>"
            if spec.name in self.refused
            else f"{spec.name}={self.__dict__[spec.name]!r}"
            for spec in dataclasses.fields(self)
        )
        return f"Settings({', '.join(shown)})"


class _RefusedSetting:
    """Stands for a setting whose value was refused: reading it raises the reason."""

    __slots__ = ("default", "reason")

    def __init__(self, reason: str, default: Any) -> None:
        self.reason = reason
        self.default = default

    def __get__(self, instance: Settings | None, owner: type | None = None) -> Any:
        if instance is None:
            return self.default
        raise SettingsError(self.reason)


def _refusing(refused: Mapping[str, str]) -> type[Settings]:
    """A subclass of :class:`Settings` on which each refused setting raises when read.

    Only the refused names get a descriptor, on a class of their own: reading any other
    setting stays a plain attribute read (a descriptor on every name, even one found
    only when an instance lacks the value, would slow every read).
    """
    defaults = {spec.name: spec.default for spec in dataclasses.fields(Settings)}
    attributes: dict[str, Any] = {
        name: _RefusedSetting(reason, defaults[name]) for name, reason in refused.items()
    }
    attributes.update(
        __module__=__name__, __qualname__="Settings", refused=MappingProxyType(dict(refused))
    )
    return type("Settings", (Settings,), attributes)

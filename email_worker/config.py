"""Typed settings: environment variables, then ``config.yaml``, then defaults.

Every setting is declared once in :class:`Settings` with the environment variable
and the ``config.yaml`` path it is read from.  Any variable may carry the prefix
``EMAIL_WORKER_`` (``EMAIL_WORKER_LOG_LEVEL``): when the prefixed one is present, even
empty, the plain one is not read, so a host service keeps its own ``LOG_LEVEL``.  A
port also takes a service link such as ``tcp://10.1.2.3:6379`` (what Kubernetes puts
in ``REDIS_PORT``).  Secret values never appear in a repr, a log line or an error.

A producer imports the package inside another service, whose environment may hold
values of the same names that are not ours.  So a wrong value is refused not when the
settings are loaded but when it is read: reading it raises a :class:`SettingsError`
naming the variable actually read, and a producer never reads what only workers use.
Each value's own checks (its type, bounds and form: a port, a known provider, a valid
address, a database URL) apply in every process that reads it.  The checks that
combine settings apply only in this service's own processes (worker, beat, the web
app, ``email-worker check``), which call :meth:`Settings.validate` (or
:meth:`Settings.check_worker`) at start and so still refuse every wrong value: the
visibility timeout against the longest hold of a message, the DKIM trio, and
``DELIVERY_MODE=allowlist`` needing ``ALLOWED_RECIPIENTS`` concern what a worker or
beat does with a message, never what a producer publishes.

``./config.yaml`` is read only by this service's own processes (they call
:func:`use_local_config_file`): a producer that imports the package runs in another
service's folder, whose ``config.yaml`` is not ours.  ``CONFIG_FILE`` works everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

PROVIDER_NAMES = ("outbox", "console", "smtp", "sendgrid", "ses")
"""The providers EMAIL_PROVIDER and a request's ``provider`` may name."""

HARD_LIMIT_MARGIN = 15.0
"""Seconds between a send's soft time limit (PROCESS_TIMEOUT) and its hard one."""

ENV_PREFIX = "EMAIL_WORKER_"
"""The prefix any setting's variable may carry; the prefixed variable wins over the plain one."""

LOCAL_CONFIG_FILE = Path("config.yaml")
_read_local_config_file = False
_NONE_REFUSED: Mapping[str, str] = MappingProxyType({})


class SettingsError(ValueError):
    """A setting has a value the service cannot run with."""


class Secret:
    """A string that never shows itself in a repr, str or error message."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value, for handing to a client library."""
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Parse ``30``, ``"30"``, ``"1.5s"``, ``"5m"`` or ``"1h30m"`` into seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 5m or 1h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip().lower()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError("expected a duration such as 30s, 5m or 1h") from None
            seconds = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


def _parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _parse_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError("expected a whole number")
    try:
        return int(str(value).strip())
    except ValueError:
        raise ValueError("expected a whole number") from None


# Docker links and Kubernetes set NAME_PORT to the service's address in this form.
_SERVICE_LINK = re.compile(r"(?:tcp|udp|sctp)://(?:\[[0-9a-f:.]+\]|[^\s/:@\[\]]+):(\d+)/?", re.I)


def _parse_port(value: Any) -> int:
    """A port number, or the port of a service link such as ``tcp://10.1.2.3:6379``."""
    link = _SERVICE_LINK.fullmatch(value.strip()) if isinstance(value, str) else None
    return int(link.group(1)) if link else _parse_int(value)


def _parse_float(value: Any) -> float:
    try:
        return float(str(value).strip())
    except ValueError:
        raise ValueError("expected a number") from None


def _parse_str(value: Any) -> str:
    return "" if value is None else str(value)


def _parse_secret(value: Any) -> Secret:
    return Secret(_parse_str(value))


def _parse_list(value: Any) -> tuple[str, ...]:
    """A comma-separated string (environment) or a YAML list, as a tuple of stripped items."""
    items = value if isinstance(value, list | tuple) else str(value).split(",")
    return tuple(text for item in items if (text := str(item).strip()))


def _parse_mapping(value: Any) -> tuple[tuple[str, str], ...]:
    """``name=value,name=value`` (environment) or a YAML mapping, as sorted pairs."""
    if isinstance(value, Mapping):
        pairs = [(str(k).strip(), str(v).strip()) for k, v in value.items()]
    else:
        pairs = []
        for item in _parse_list(value):
            name, equals, text = item.partition("=")
            if not equals or not name.strip() or not text.strip():
                raise ValueError(f"expected name=value pairs separated by commas, got {item!r}")
            pairs.append((name.strip(), text.strip()))
    return tuple(sorted(pairs))


def _check_not_blank(value: str) -> None:
    if not value.strip():
        raise ValueError("cannot be empty")


def _check_address(value: str) -> None:
    try:
        validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(f"not a valid email address ({exc})") from None


def _check_database_url(value: Secret) -> None:
    if value:
        try:
            make_url(value.reveal())
        except ArgumentError:
            raise ValueError("not a database URL") from None


def _check_providers(names: Iterable[str]) -> None:
    unknown = [name for name in names if name not in PROVIDER_NAMES]
    if unknown:
        raise ValueError(
            f"unknown provider {unknown[0]!r}; known providers: {', '.join(PROVIDER_NAMES)}"
        )


def _check_kind_providers(pairs: tuple[tuple[str, str], ...]) -> None:
    _check_providers(provider for _, provider in pairs)


def _check_recipient_entries(entries: tuple[str, ...]) -> None:
    # Imported here: both modules read these settings, so they import this one.
    from email_worker.policy.delivery_mode import allowed_recipients

    allowed_recipients(entries)


def _check_sender_entries(entries: tuple[str, ...]) -> None:
    from email_worker.producer.validation import _allowed_senders  # the parser, without EMAIL_FROM

    if entries:
        _allowed_senders(entries, "")


def _setting(
    default: Any,
    env: str | None,
    yaml_path: str | None,
    parse: Callable[[Any], Any] = _parse_str,
    *,
    choices: tuple[str, ...] = (),
    minimum: float | None = None,
    check: Callable[[Any], None] | None = None,
    secret: bool = False,
) -> Any:
    if secret:
        parse = _parse_secret
        default = Secret(default)
    return field(
        default=default,
        metadata={
            "env": env,
            "yaml": yaml_path,
            "parse": parse,
            "choices": choices,
            "minimum": minimum,
            "check": check,
            "secret": secret,
        },
    )


@dataclass(frozen=True, repr=False)
class Settings:
    """Everything the service can be configured with, read once per process.

    One built in code checks each value at once.  One read by :func:`load_settings`
    holds no value for a setting it refused: reading that setting raises its
    :class:`SettingsError`, and :meth:`validate` raises the first one.
    """

    # Broker (Redis) and queues.
    redis_host: str = _setting("localhost", "REDIS_HOST", "queue.redis.host")
    redis_port: int = _setting(6379, "REDIS_PORT", "queue.redis.port", _parse_port, minimum=1)
    redis_password: Secret = _setting("", "REDIS_PASSWORD", "queue.redis.password", secret=True)
    redis_db: int = _setting(0, "REDIS_DB", "queue.redis.db", _parse_int, minimum=0)
    queue_name: str = _setting(
        "email-jobs", "QUEUE_NAME", "queue.queue_name", check=_check_not_blank
    )
    broker_url: Secret = _setting("", "BROKER_URL", "queue.broker_url", secret=True)
    result_backend: Secret = _setting("", "RESULT_BACKEND", "queue.result_backend", secret=True)
    visibility_timeout: float = _setting(
        90.0, "BROKER_VISIBILITY_TIMEOUT", "queue.visibility_timeout", parse_duration, minimum=60
    )
    broker_timeout: float = _setting(
        5.0, "BROKER_TIMEOUT", "queue.timeout", parse_duration, minimum=0.1
    )

    # Database: primary ("master") and replica ("slave"), or the legacy single database.
    db_master_host: str = _setting("localhost", "DB_MASTER_HOST", "database.master_host")
    db_master_port: int = _setting(
        5432, "DB_MASTER_PORT", "database.master_port", _parse_port, minimum=1
    )
    db_master_name: str = _setting("booking_system", "DB_MASTER_NAME", "database.master_name")
    db_master_user: str = _setting("postgres", "DB_MASTER_USER", "database.master_user")
    db_master_password: Secret = _setting(
        "", "DB_MASTER_PASSWORD", "database.master_password", secret=True
    )
    db_slave_host: str = _setting("localhost", "DB_SLAVE_HOST", "database.slave_host")
    db_slave_port: int = _setting(
        5433, "DB_SLAVE_PORT", "database.slave_port", _parse_port, minimum=1
    )
    db_slave_name: str = _setting("booking_system", "DB_SLAVE_NAME", "database.slave_name")
    db_slave_user: str = _setting("postgres", "DB_SLAVE_USER", "database.slave_user")
    db_slave_password: Secret = _setting(
        "", "DB_SLAVE_PASSWORD", "database.slave_password", secret=True
    )
    db_host: str = _setting("", "DB_HOST", "database.host")
    db_port: int = _setting(5432, "DB_PORT", "database.port", _parse_port, minimum=1)
    db_name: str = _setting("email_worker", "DB_NAME", "database.name")
    db_user: str = _setting("postgres", "DB_USER", "database.user")
    db_password: Secret = _setting("", "DB_PASSWORD", "database.password", secret=True)
    db_ssl_mode: str = _setting(
        "disable",
        "DB_SSL_MODE",
        "database.ssl_mode",
        choices=("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    )
    db_max_open_conns: int = _setting(
        25, "DB_MAX_OPEN_CONNS", "database.max_open_conns", _parse_int, minimum=1
    )
    db_max_idle_conns: int = _setting(
        5, "DB_MAX_IDLE_CONNS", "database.max_idle_conns", _parse_int, minimum=0
    )
    db_conn_max_lifetime: float = _setting(
        300.0, "DB_CONN_MAX_LIFETIME", "database.conn_max_lifetime", parse_duration
    )
    db_replica_retry_interval: float = _setting(
        30.0, "DB_REPLICA_RETRY_INTERVAL", "database.replica_retry_interval", parse_duration
    )
    database_url: Secret = _setting(
        "", "DATABASE_URL", "database.url", check=_check_database_url, secret=True
    )
    database_replica_url: Secret = _setting(
        "", "DATABASE_REPLICA_URL", "database.replica_url", check=_check_database_url, secret=True
    )

    # Email and providers.
    email_provider: str = _setting(
        "outbox",
        "EMAIL_PROVIDER",
        "email.default_provider",
        choices=PROVIDER_NAMES,
    )
    email_from: str = _setting(
        "noreply@example.com", "EMAIL_FROM", "email.from_email", check=_check_address
    )
    email_from_name: str = _setting("email-worker", "EMAIL_FROM_NAME", "email.from_name")
    message_id_domain: str = _setting("", "MESSAGE_ID_DOMAIN", "email.message_id_domain")
    outbox_dir: str = _setting("outbox", "OUTBOX_DIR", "email.providers.outbox.dir")
    templates_dir: str = _setting("", "TEMPLATES_DIR", "email.templates_dir")
    max_message_bytes: int = _setting(
        10 * 1024 * 1024, "MAX_MESSAGE_BYTES", "email.max_message_bytes", _parse_int, minimum=1024
    )
    email_provider_fallbacks: tuple[str, ...] = _setting(
        (),
        "EMAIL_PROVIDER_FALLBACKS",
        "email.provider_fallbacks",
        _parse_list,
        check=_check_providers,
    )
    kind_providers: tuple[tuple[str, str], ...] = _setting(
        (),
        "EMAIL_KIND_PROVIDERS",
        "email.kind_providers",
        _parse_mapping,
        check=_check_kind_providers,
    )
    allowed_from_domains: tuple[str, ...] = _setting(
        (),
        "ALLOWED_FROM_DOMAINS",
        "email.allowed_from_domains",
        _parse_list,
        check=_check_sender_entries,
    )
    delivery_mode: str = _setting(
        "live", "DELIVERY_MODE", "email.delivery_mode", choices=("live", "allowlist", "outbox")
    )
    allowed_recipients: tuple[str, ...] = _setting(
        (),
        "ALLOWED_RECIPIENTS",
        "email.allowed_recipients",
        _parse_list,
        check=_check_recipient_entries,
    )
    circuit_failures: int = _setting(
        5, "PROVIDER_CIRCUIT_FAILURES", "email.circuit.failures", _parse_int, minimum=1
    )
    circuit_reset: float = _setting(
        30.0, "PROVIDER_CIRCUIT_RESET", "email.circuit.reset", parse_duration, minimum=1
    )
    bulk_batch_size: int = _setting(
        500, "BULK_BATCH_SIZE", "email.bulk.batch_size", _parse_int, minimum=1
    )
    max_bulk_recipients: int = _setting(
        100_000, "MAX_BULK_RECIPIENTS", "email.bulk.max_recipients", _parse_int, minimum=1
    )
    dkim_domain: str = _setting("", "DKIM_DOMAIN", "email.dkim.domain")
    dkim_selector: str = _setting("", "DKIM_SELECTOR", "email.dkim.selector")
    dkim_private_key: Secret = _setting(
        "", "DKIM_PRIVATE_KEY", "email.dkim.private_key", secret=True
    )
    dkim_private_key_file: str = _setting(
        "", "DKIM_PRIVATE_KEY_FILE", "email.dkim.private_key_file"
    )
    dkim_providers: tuple[str, ...] = _setting(
        ("smtp",), "DKIM_PROVIDERS", "email.dkim.providers", _parse_list, check=_check_providers
    )
    sendgrid_api_key: Secret = _setting(
        "", "SENDGRID_API_KEY", "email.providers.sendgrid.api_key", secret=True
    )
    sendgrid_api_url: str = _setting(
        "https://api.sendgrid.com", "SENDGRID_API_URL", "email.providers.sendgrid.api_url"
    )
    sendgrid_timeout: float = _setting(
        10.0, "SENDGRID_TIMEOUT", "email.providers.sendgrid.timeout", parse_duration, minimum=0.1
    )
    sendgrid_rate_limit: float = _setting(
        0.0, "SENDGRID_RATE_LIMIT", "email.providers.sendgrid.rate_limit", _parse_float, minimum=0
    )
    ses_configuration_set: str = _setting(
        "", "SES_CONFIGURATION_SET", "email.providers.ses.configuration_set"
    )
    ses_timeout: float = _setting(
        10.0, "SES_TIMEOUT", "email.providers.ses.timeout", parse_duration, minimum=0.1
    )
    ses_rate_limit: float = _setting(
        0.0, "SES_RATE_LIMIT", "email.providers.ses.rate_limit", _parse_float, minimum=0
    )
    smtp_rate_limit: float = _setting(
        0.0, "SMTP_RATE_LIMIT", "email.providers.smtp.rate_limit", _parse_float, minimum=0
    )
    aws_ses_region: str = _setting("us-east-1", "AWS_SES_REGION", "email.providers.ses.region")
    aws_access_key_id: Secret = _setting(
        "", "AWS_ACCESS_KEY_ID", "email.providers.ses.access_key", secret=True
    )
    aws_secret_access_key: Secret = _setting(
        "", "AWS_SECRET_ACCESS_KEY", "email.providers.ses.secret_key", secret=True
    )
    smtp_host: str = _setting("", "SMTP_HOST", "email.providers.smtp.host")
    smtp_port: int = _setting(587, "SMTP_PORT", "email.providers.smtp.port", _parse_port, minimum=1)
    smtp_username: str = _setting("", "SMTP_USERNAME", "email.providers.smtp.username")
    smtp_password: Secret = _setting(
        "", "SMTP_PASSWORD", "email.providers.smtp.password", secret=True
    )
    smtp_security: str = _setting(
        "starttls",
        "SMTP_SECURITY",
        "email.providers.smtp.security",
        choices=("starttls", "tls", "none"),
    )
    smtp_use_tls: bool = _setting(True, "SMTP_USE_TLS", "email.providers.smtp.use_tls", _parse_bool)
    smtp_ca_file: str = _setting("", "SMTP_CA_FILE", "email.providers.smtp.ca_file")
    smtp_timeout: float = _setting(
        30.0, "SMTP_TIMEOUT", "email.providers.smtp.timeout", parse_duration, minimum=0.1
    )

    # Worker behaviour.
    worker_count: int = _setting(5, "WORKER_COUNT", "worker.worker_count", _parse_int, minimum=1)
    max_retries: int = _setting(3, "MAX_RETRIES", "worker.max_retries", _parse_int, minimum=0)
    retry_delay: float = _setting(
        5.0, "RETRY_DELAY", "worker.retry_delay", parse_duration, minimum=0
    )
    retry_backoff_max: float = _setting(
        600.0, "RETRY_BACKOFF_MAX", "worker.retry_backoff_max", parse_duration, minimum=0
    )
    process_timeout: float = _setting(
        30.0, "PROCESS_TIMEOUT", "worker.process_timeout", parse_duration, minimum=1
    )
    shutdown_timeout: float = _setting(
        30.0, "SHUTDOWN_TIMEOUT", "worker.shutdown_timeout", parse_duration
    )
    cleanup_interval: float = _setting(
        3600.0, "CLEANUP_INTERVAL", "worker.cleanup_interval", parse_duration, minimum=1
    )
    schedule_threshold: float = _setting(
        30.0, "SCHEDULE_THRESHOLD", "worker.schedule_threshold", parse_duration
    )
    dispatch_interval: float = _setting(
        1.0, "DISPATCH_INTERVAL", "worker.dispatch_interval", parse_duration, minimum=0.1
    )
    stranded_after: float = _setting(
        300.0, "STRANDED_AFTER", "worker.stranded_after", parse_duration, minimum=1
    )
    job_retention: float = _setting(
        30 * 86400.0, "JOB_RETENTION", "worker.job_retention", parse_duration, minimum=60
    )
    template_cache_ttl: float = _setting(
        60.0, "TEMPLATE_CACHE_TTL", "email.template_cache_ttl", parse_duration
    )

    # Tracking, unsubscribe and the web app.
    web_port: int = _setting(8000, "WEB_PORT", "web.port", _parse_port, minimum=1)
    web_host: str = _setting("0.0.0.0", "WEB_HOST", "web.host")
    public_url: str = _setting("http://localhost:8000", "PUBLIC_URL", "web.public_url")
    tracking_secret: Secret = _setting(
        "", "TRACKING_SECRET", "tracking.secret", secret=True
    )  # comma-separated: the first signs, every one verifies (rotation)
    tracking_token_ttl: float = _setting(
        180 * 86400.0, "TRACKING_TOKEN_TTL", "tracking.token_ttl", parse_duration, minimum=60
    )
    track_opens_clicks: bool = _setting(
        True, "TRACK_OPENS_CLICKS", "tracking.opens_clicks", _parse_bool
    )
    unsubscribe_mailto: str = _setting("", "UNSUBSCRIBE_MAILTO", "tracking.unsubscribe_mailto")
    suppression_refresh: float = _setting(
        5.0, "SUPPRESSION_REFRESH", "tracking.suppression_refresh", parse_duration
    )
    sendgrid_webhook_public_key: str = _setting(
        "", "SENDGRID_WEBHOOK_PUBLIC_KEY", "email.providers.sendgrid.webhook_public_key"
    )
    webhook_max_age: float = _setting(
        300.0, "WEBHOOK_MAX_AGE", "tracking.webhook_max_age", parse_duration, minimum=1
    )
    ses_sns_topic_arns: tuple[str, ...] = _setting(
        (), "SES_SNS_TOPIC_ARNS", "email.providers.ses.sns_topic_arns", _parse_list
    )

    # HTTP server, Flower and logging.
    server_port: int = _setting(8080, "SERVER_PORT", "server.port", _parse_port, minimum=0)
    server_host: str = _setting("0.0.0.0", "SERVER_HOST", "server.host")
    health_timeout: float = _setting(
        1.0, "HEALTH_TIMEOUT", "server.health_timeout", parse_duration, minimum=0.05
    )
    flower_basic_auth: Secret = _setting("", "FLOWER_BASIC_AUTH", "flower.basic_auth", secret=True)
    flower_max_tasks: int = _setting(
        10_000, "FLOWER_MAX_TASKS", "flower.max_tasks", _parse_int, minimum=1
    )
    log_level: str = _setting(
        "info",
        "LOG_LEVEL",
        "logging.level",
        choices=("debug", "info", "warning", "error", "critical"),
    )
    log_format: str = _setting("json", "LOG_FORMAT", "logging.format", choices=("json", "text"))

    def __post_init__(self) -> None:
        # Only for settings built in code: load_settings checks what it reads and keeps the
        # refused values back instead of raising.
        for spec in dataclasses.fields(self):
            _check(getattr(self, spec.name), spec.metadata["env"], spec.metadata)

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
        if self.delivery_mode == "allowlist" and not self.allowed_recipients:
            raise SettingsError("ALLOWED_RECIPIENTS is required when DELIVERY_MODE is allowlist")
        if bool(self.dkim_domain) != bool(self.dkim_selector) or (
            self.dkim_domain and not (self.dkim_private_key or self.dkim_private_key_file)
        ):
            raise SettingsError(
                "DKIM needs DKIM_DOMAIN, DKIM_SELECTOR and DKIM_PRIVATE_KEY "
                "(or DKIM_PRIVATE_KEY_FILE) together"
            )

    def check_worker(self) -> None:
        """Refuse what a worker cannot run or send with (all :meth:`validate` refuses, too)."""
        self.validate()
        if "smtp" in self.provider_chain(None) and not self.smtp_host:
            raise SettingsError("SMTP_HOST is required when EMAIL_PROVIDER is smtp")
        if "sendgrid" in self.provider_chain(None) and not self.sendgrid_api_key:
            raise SettingsError("SENDGRID_API_KEY is required when sending through sendgrid")

    def provider_chain(self, first: str | None) -> tuple[str, ...]:
        """The providers to try in order: ``first`` (else the default), then the fallbacks."""
        chain = (first or self.email_provider, *self.email_provider_fallbacks)
        return tuple(dict.fromkeys(chain))

    def kind_provider(self, kind: str) -> str | None:
        """The provider EMAIL_KIND_PROVIDERS names for a kind, if any."""
        return dict(self.kind_providers).get(kind)

    def rate_limit(self, provider: str) -> float:
        """Emails per second allowed through ``provider`` across all workers (0: no limit)."""
        return {
            "sendgrid": self.sendgrid_rate_limit,
            "ses": self.ses_rate_limit,
            "smtp": self.smtp_rate_limit,
        }.get(provider, 0.0)

    @property
    def queues(self) -> dict[str, str]:
        """The priority name of each queue mapped to the queue's name."""
        return {p: f"{self.queue_name}.{p}" for p in ("high", "default", "low")}

    @property
    def periodic_queue(self) -> str:
        """The queue of beat's tasks, apart from the emails so a backlog cannot stall them."""
        return f"{self.queue_name}.periodic"

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


def _yaml_value(document: Mapping[str, Any], path: str) -> Any:
    node: Any = document
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _environment_value(environ: Mapping[str, str], name: str) -> tuple[str, str]:
    """The value of ``EMAIL_WORKER_<name>`` if present (even empty), else of ``<name>``."""
    prefixed = ENV_PREFIX + name
    if prefixed in environ:
        return environ[prefixed], prefixed
    return environ.get(name, ""), name


def _config_file(environ: Mapping[str, str]) -> Path | None:
    explicit, variable = _environment_value(environ, "CONFIG_FILE")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SettingsError(f"{variable}: no such file: {explicit}")
        return path
    if _read_local_config_file and LOCAL_CONFIG_FILE.is_file():
        return LOCAL_CONFIG_FILE
    return None


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        # The parser's message quotes the offending line, which may hold a password.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SettingsError(f"{path}: not valid YAML{where}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise SettingsError(f"{path}: expected a mapping at the top level")
    return document


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Build the settings from the environment, then ``config.yaml``, then defaults.

    Nothing is refused here: a wrong value is kept back, and reading it raises.
    """
    environ = os.environ if environ is None else environ
    unreadable = None  # a config file that cannot be read refuses what it would have given
    try:
        path = config_file or _config_file(environ)
        document = _read_yaml(path) if path else {}
    except SettingsError as exc:
        path, document, unreadable = None, {}, str(exc)
    values: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for spec in dataclasses.fields(Settings):
        meta = spec.metadata
        raw, source = _environment_value(environ, meta["env"])
        if raw == "":
            if unreadable and meta["yaml"]:
                refused[spec.name] = unreadable
                continue
            if not (path and meta["yaml"]):
                continue
            raw = _yaml_value(document, meta["yaml"])
            source = f"{path.name} {meta['yaml']}"
            if raw is None:
                continue
        try:
            values[spec.name] = _convert(raw, source, meta)
        except SettingsError as exc:
            refused[spec.name] = str(exc)
    return Settings._holding(values, refused)


def _convert(raw: Any, source: str, meta: Mapping[str, Any]) -> Any:
    try:
        value = meta["parse"](raw)
    except ValueError as exc:
        shown = "" if meta["secret"] else f", got {raw!r}"
        raise SettingsError(f"{source}: {exc}{shown}") from None
    if meta["choices"] and value.lower() not in meta["choices"]:
        raise SettingsError(f"{source}: must be one of {', '.join(meta['choices'])}, got {raw!r}")
    if meta["choices"]:
        value = value.lower()
    if meta["minimum"] is not None and value < meta["minimum"]:
        raise SettingsError(f"{source}: must be at least {meta['minimum']:g}, got {raw!r}")
    _check(value, source, meta)
    return value


def _check(value: Any, source: str, meta: Mapping[str, Any]) -> None:
    """Run a setting's own check; its error names ``source``, the variable or place read."""
    if meta["check"] is None:
        return
    try:
        meta["check"](value)
    except ValueError as exc:
        # The address-list parsers name the plain variable themselves.
        reason = str(exc).removeprefix(f"{meta['env']}: ")
        raise SettingsError(f"{source}: {reason}") from None


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings so the next :func:`get_settings` reads them again."""
    get_settings.cache_clear()


def use_local_config_file() -> None:
    """Read ``./config.yaml`` from now on: for this service's own commands only."""
    global _read_local_config_file
    _read_local_config_file = True
    reset_settings()

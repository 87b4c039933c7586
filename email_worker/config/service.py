"""Settings of the service's own processes: workers, beat, the web app, health, logs."""

from __future__ import annotations

from dataclasses import dataclass

from email_worker.config.fields import setting
from email_worker.config.keys import check_console_key, check_keys, check_lookup_key, check_networks
from email_worker.config.values import (
    Secret,
    parse_bool,
    parse_duration,
    parse_int,
    parse_list,
    parse_port,
)


@dataclass(frozen=True, repr=False, eq=False)
class ServiceSettings:
    """Worker behaviour, tracking and the web app, the HTTP server, Flower and logging."""

    # Worker behaviour.
    worker_count: int = setting(
        5, "WORKER_COUNT", "worker.worker_count", parse_int, minimum=1, doc="worker concurrency"
    )
    max_retries: int = setting(
        3,
        "MAX_RETRIES",
        "worker.max_retries",
        parse_int,
        minimum=0,
        doc="retries of a transient failure, unless the kind says otherwise",
    )
    retry_delay: float = setting(
        5.0,
        "RETRY_DELAY",
        "worker.retry_delay",
        parse_duration,
        minimum=0,
        doc="first backoff step",
    )
    retry_backoff_max: float = setting(
        600.0,
        "RETRY_BACKOFF_MAX",
        "worker.retry_backoff_max",
        parse_duration,
        minimum=0,
        doc="backoff cap",
    )
    process_timeout: float = setting(
        30.0,
        "PROCESS_TIMEOUT",
        "worker.process_timeout",
        parse_duration,
        minimum=1,
        doc=(
            "soft time limit of one send (the hard limit is 15 s later); the worker's own setting"
            " governs"
        ),
    )
    shutdown_timeout: float = setting(
        30.0,
        "SHUTDOWN_TIMEOUT",
        "worker.shutdown_timeout",
        parse_duration,
        doc="soft-shutdown time for sends in progress on a cold shutdown",
    )
    cleanup_interval: float = setting(
        3600.0,
        "CLEANUP_INTERVAL",
        "worker.cleanup_interval",
        parse_duration,
        minimum=1,
        doc="how often old jobs are cleaned up and expired personal data is cleared",
    )
    schedule_threshold: float = setting(
        30.0,
        "SCHEDULE_THRESHOLD",
        "worker.schedule_threshold",
        parse_duration,
        doc=(
            "longest `countdown`/`eta` held by the broker; longer ones (and longer retry "
            "backoffs) are stored in the database"
        ),
    )
    dispatch_interval: float = setting(
        1.0,
        "DISPATCH_INTERVAL",
        "worker.dispatch_interval",
        parse_duration,
        minimum=0.1,
        doc="how often beat dispatches due scheduled jobs",
    )
    stranded_after: float = setting(
        300.0,
        "STRANDED_AFTER",
        "worker.stranded_after",
        parse_duration,
        minimum=1,
        doc="a pending or retrying job overdue this long is published again",
    )
    job_retention: float = setting(
        30 * 86400.0,
        "JOB_RETENTION",
        "worker.job_retention",
        parse_duration,
        minimum=60,
        doc="finished jobs older than this are deleted",
    )
    template_cache_ttl: float = setting(
        60.0,
        "TEMPLATE_CACHE_TTL",
        "email.template_cache_ttl",
        parse_duration,
        doc="how long stored-template lookups are cached",
    )

    # Personal data at rest.
    encryption_keys: Secret = setting(
        "",
        "ENCRYPTION_KEYS",
        "privacy.encryption_keys",
        check=check_keys,
        secret=True,
        doc=(
            "comma-separated AES-256 keys (base64, from `email-worker generate-key`) that seal "
            "the personal data stored: the first seals, all open; required in live mode"
        ),
    )
    encryption_lookup_key: Secret = setting(
        "",
        "ENCRYPTION_LOOKUP_KEY",
        "privacy.lookup_key",
        check=check_lookup_key,
        secret=True,
        doc=(
            "HMAC key (32+ characters) addresses are found by without being stored; never "
            "rotated (an erased person's suppression keeps only the hash); required in live mode"
        ),
    )
    personal_data_retention: float = setting(
        7 * 86400.0,
        "PERSONAL_DATA_RETENTION",
        "privacy.personal_data_retention",
        parse_duration,
        minimum=60,
        doc=(
            "personal fields of finished jobs, bulk recipients and provider events are cleared "
            "this long after they finish (the rows stay until JOB_RETENTION)"
        ),
    )

    # Tracking, unsubscribe and the web app.
    web_port: int = setting(
        8000,
        "WEB_PORT",
        "web.port",
        parse_port,
        minimum=1,
        doc="port `email-worker web` listens on",
    )
    web_host: str = setting(
        "0.0.0.0", "WEB_HOST", "web.host", doc="address `email-worker web` listens on"
    )
    public_url: str = setting(
        "",
        "PUBLIC_URL",
        "web.public_url",
        doc=(
            "the web app's public base URL, used in tracking and unsubscribe links; empty: "
            "no such links"
        ),
    )
    tracking_secret: Secret = setting(
        "",
        "TRACKING_SECRET",
        "tracking.secret",
        secret=True,
        doc=(
            "comma-separated HMAC keys: the first signs, all verify; empty: no open/click "
            "tracking and no List-Unsubscribe links"
        ),
    )
    tracking_token_ttl: float = setting(
        180 * 86400.0,
        "TRACKING_TOKEN_TTL",
        "tracking.token_ttl",
        parse_duration,
        minimum=60,
        doc="how long open, click and unsubscribe links stay valid",
    )
    track_opens_clicks: bool = setting(
        True,
        "TRACK_OPENS_CLICKS",
        "tracking.opens_clicks",
        parse_bool,
        doc="rewrite links and add an open pixel in HTML emails",
    )
    unsubscribe_mailto: str = setting(
        "",
        "UNSUBSCRIBE_MAILTO",
        "tracking.unsubscribe_mailto",
        doc="address added as a `mailto:` in List-Unsubscribe",
    )
    suppression_refresh: float = setting(
        5.0,
        "SUPPRESSION_REFRESH",
        "tracking.suppression_refresh",
        parse_duration,
        doc=(
            "how old a worker process's copy of the suppression list may get before it is read "
            "again; 0: every send asks the database"
        ),
    )
    sendgrid_webhook_public_key: str = setting(
        "",
        "SENDGRID_WEBHOOK_PUBLIC_KEY",
        "email.providers.sendgrid.webhook_public_key",
        doc=(
            "base64 public key of SendGrid's signed Event Webhook (empty: every SendGrid webhook "
            "is refused)"
        ),
    )
    webhook_max_age: float = setting(
        300.0,
        "WEBHOOK_MAX_AGE",
        "tracking.webhook_max_age",
        parse_duration,
        minimum=1,
        doc="how long a signed SendGrid request stays valid (replay window)",
    )
    ses_sns_topic_arns: tuple[str, ...] = setting(
        (),
        "SES_SNS_TOPIC_ARNS",
        "email.providers.ses.sns_topic_arns",
        parse_list,
        doc="SNS topic ARNs whose SES events are accepted (empty: every SNS message is refused)",
    )

    # The console (/console on the web app).
    console_session_key: Secret = setting(
        "",
        "CONSOLE_SESSION_KEY",
        "web.console.session_key",
        check=check_console_key,
        secret=True,
        doc=(
            "HMAC key (32+ characters) console sessions and form tokens are signed with; "
            "required for the console in live mode (elsewhere a published development key)"
        ),
    )
    console_session_ttl: float = setting(
        8 * 3600.0,
        "CONSOLE_SESSION_TTL",
        "web.console.session_ttl",
        parse_duration,
        minimum=60,
        doc="how long a console sign-in lasts",
    )
    console_secure_cookies: bool = setting(
        False,
        "CONSOLE_SECURE_COOKIES",
        "web.console.secure_cookies",
        parse_bool,
        doc=(
            "mark the console's cookie `Secure` on every request (it always is over https; set "
            "this behind a proxy that ends TLS)"
        ),
    )
    console_proxy_user_header: str = setting(
        "",
        "CONSOLE_PROXY_USER_HEADER",
        "web.console.proxy_user_header",
        doc=(
            "header a trusted reverse proxy names the signed-in user in, such as "
            "`X-Forwarded-User` (oauth2-proxy); empty: console accounts only"
        ),
    )
    console_trusted_proxies: tuple[str, ...] = setting(
        (),
        "CONSOLE_TRUSTED_PROXIES",
        "web.console.trusted_proxies",
        parse_list,
        check=check_networks,
        doc=(
            "addresses or networks (`10.0.0.5`, `10.0.0.0/24`) of the proxies whose user header "
            "is believed; the header from any other client is ignored"
        ),
    )
    console_proxy_default_role: str = setting(
        "none",
        "CONSOLE_PROXY_DEFAULT_ROLE",
        "web.console.proxy_default_role",
        choices=("none", "viewer", "support", "admin"),
        doc=(
            "role of a proxy-signed-in user who has no console account; `none`: only users "
            "with an account get in"
        ),
    )

    # HTTP server, Flower and logging.
    server_port: int = setting(
        8080,
        "SERVER_PORT",
        "server.port",
        parse_port,
        minimum=0,
        doc=(
            "port of a worker's `/health` and `/metrics`; beat serves on `SERVER_PORT + 1`; 0: no"
            " server"
        ),
    )
    server_host: str = setting(
        "0.0.0.0",
        "SERVER_HOST",
        "server.host",
        doc="address the health and metrics server listens on",
    )
    health_timeout: float = setting(
        1.0,
        "HEALTH_TIMEOUT",
        "server.health_timeout",
        parse_duration,
        minimum=0.05,
        doc="longest wait for each dependency checked by `/health`",
    )
    flower_basic_auth: Secret = setting(
        "",
        "FLOWER_BASIC_AUTH",
        "flower.basic_auth",
        secret=True,
        doc=(
            "`user:password`, several separated by commas; required for Flower on any address but"
            " 127.0.0.1/::1/localhost"
        ),
    )
    flower_max_tasks: int = setting(
        10_000,
        "FLOWER_MAX_TASKS",
        "flower.max_tasks",
        parse_int,
        minimum=1,
        doc="tasks Flower keeps in memory (its `--max_tasks` wins)",
    )
    log_level: str = setting(
        "info",
        "LOG_LEVEL",
        "logging.level",
        choices=("debug", "info", "warning", "error", "critical"),
        doc="lowest level logged",
    )
    log_format: str = setting(
        "json",
        "LOG_FORMAT",
        "logging.format",
        choices=("json", "text"),
        doc="`json` (one object per line) or `text`",
    )

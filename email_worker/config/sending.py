"""Settings of how emails are sent: the sender, the providers, signing and delivery mode."""

from __future__ import annotations

from dataclasses import dataclass

from email_worker.config.address_lists import check_recipient_entries, check_sender_entries
from email_worker.config.fields import setting
from email_worker.config.values import (
    NON_DELIVERING_PROVIDERS,
    PROVIDER_NAMES,
    Secret,
    check_address,
    check_kind_providers,
    check_providers,
    check_resolver,
    parse_bool,
    parse_duration,
    parse_float,
    parse_int,
    parse_list,
    parse_mapping,
    parse_port,
)


@dataclass(frozen=True, repr=False, eq=False)
class SendingSettings:
    """The sender, the providers and their limits, DKIM and who may receive."""

    # Email and providers.
    email_provider: str = setting(
        "",
        "EMAIL_PROVIDER",
        "email.default_provider",
        choices=PROVIDER_NAMES,
        doc=(
            "the provider emails go through unless a request or its kind names another; "
            "required by workers (`outbox` and `console` keep emails on the worker host)"
        ),
    )
    email_from: str = setting(
        "noreply@example.com",
        "EMAIL_FROM",
        "email.from_email",
        check=check_address,
        doc="default sender address",
    )
    email_from_name: str = setting(
        "email-worker", "EMAIL_FROM_NAME", "email.from_name", doc="default sender display name"
    )
    sender_postal_address: str = setting(
        "",
        "SENDER_POSTAL_ADDRESS",
        "email.sender_postal_address",
        doc=(
            "the sender's postal address, in the footer of marketing and bulk emails (the "
            "CAN-SPAM Act asks for one); required for them when DELIVERY_MODE is live"
        ),
    )
    message_id_domain: str = setting(
        "",
        "MESSAGE_ID_DOMAIN",
        "email.message_id_domain",
        doc="right-hand side of Message-IDs; empty: the sender's domain",
    )
    outbox_dir: str = setting(
        "outbox", "OUTBOX_DIR", "email.providers.outbox.dir", doc="folder of the outbox provider"
    )
    templates_dir: str = setting(
        "",
        "TEMPLATES_DIR",
        "email.templates_dir",
        doc="folder of templates that override the built-in ones",
    )
    max_message_bytes: int = setting(
        10 * 1024 * 1024,
        "MAX_MESSAGE_BYTES",
        "email.max_message_bytes",
        parse_int,
        minimum=1024,
        doc="largest message sent; attachments count at their base64 size (about 4/3 of the file)",
    )
    email_provider_fallbacks: tuple[str, ...] = setting(
        (),
        "EMAIL_PROVIDER_FALLBACKS",
        "email.provider_fallbacks",
        parse_list,
        check=check_providers,
        doc="providers tried in order after the chosen one fails for now, e.g. `ses,smtp`",
    )
    kind_providers: tuple[tuple[str, str], ...] = setting(
        (),
        "EMAIL_KIND_PROVIDERS",
        "email.kind_providers",
        parse_mapping,
        check=check_kind_providers,
        doc="a provider per kind, e.g. `password_reset=ses,welcome_email=sendgrid`",
    )
    allowed_from_domains: tuple[str, ...] = setting(
        (),
        "ALLOWED_FROM_DOMAINS",
        "email.allowed_from_domains",
        parse_list,
        check=check_sender_entries,
        doc=(
            "senders a request's `from_email` may use: `noreply@example.com`, `example.com` (that"
            " domain), `.example.com` (any subdomain); empty: EMAIL_FROM's address and domain"
        ),
    )
    delivery_mode: str = setting(
        "live",
        "DELIVERY_MODE",
        "email.delivery_mode",
        choices=("live", "allowlist", "outbox"),
        doc=(
            "`live` sends to everyone; `allowlist` sends only to `ALLOWED_RECIPIENTS` and holds "
            "the rest in the outbox; `outbox` holds every email"
        ),
    )
    allowed_recipients: tuple[str, ...] = setting(
        (),
        "ALLOWED_RECIPIENTS",
        "email.allowed_recipients",
        parse_list,
        check=check_recipient_entries,
        doc=(
            "for `allowlist`, and the console's test sends in any mode: addresses "
            "(`qa@example.com`) or domains (`@example.com`, that exact domain)"
        ),
    )
    circuit_failures: int = setting(
        5,
        "PROVIDER_CIRCUIT_FAILURES",
        "email.circuit.failures",
        parse_int,
        minimum=1,
        doc=(
            "transient failures of a provider in a row (all workers together) that open its "
            "circuit, when it has a fallback"
        ),
    )
    circuit_reset: float = setting(
        30.0,
        "PROVIDER_CIRCUIT_RESET",
        "email.circuit.reset",
        parse_duration,
        minimum=1,
        doc="how long an open circuit skips the provider before one trial send",
    )
    bulk_batch_size: int = setting(
        500,
        "BULK_BATCH_SIZE",
        "email.bulk.batch_size",
        parse_int,
        minimum=1,
        doc="recipients per batch task of a bulk send (at most 1,000 through SendGrid)",
    )
    max_bulk_recipients: int = setting(
        100_000,
        "MAX_BULK_RECIPIENTS",
        "email.bulk.max_recipients",
        parse_int,
        minimum=1,
        doc="most recipients one `send_bulk` may carry",
    )
    dkim_domain: str = setting(
        "",
        "DKIM_DOMAIN",
        "email.dkim.domain",
        doc="sign outgoing MIME with DKIM as this `d=` (with `DKIM_SELECTOR` and a key)",
    )
    dkim_selector: str = setting(
        "", "DKIM_SELECTOR", "email.dkim.selector", doc="the DKIM `s=` selector"
    )
    dkim_private_key: Secret = setting(
        "",
        "DKIM_PRIVATE_KEY",
        "email.dkim.private_key",
        secret=True,
        doc=(
            "PEM RSA key, at least 1024 bits; `\\n` escapes allowed for one-line environment values"
        ),
    )
    dkim_private_key_file: str = setting(
        "",
        "DKIM_PRIVATE_KEY_FILE",
        "email.dkim.private_key_file",
        doc="file holding the PEM key instead",
    )
    dkim_providers: tuple[str, ...] = setting(
        ("smtp",),
        "DKIM_PROVIDERS",
        "email.dkim.providers",
        parse_list,
        check=check_providers,
        doc="providers whose messages are signed (`smtp`, `ses`, `outbox`)",
    )
    dns_checks: bool = setting(
        True,
        "DNS_CHECKS",
        "email.dns.checks",
        parse_bool,
        doc=(
            "`email-worker check` looks up the DKIM key, SPF and DMARC records in DNS and checks"
            " the sender's domains align"
        ),
    )
    dns_resolver: str = setting(
        "",
        "DNS_RESOLVER",
        "email.dns.resolver",
        check=check_resolver,
        doc=(
            "the resolver those checks ask: an IP address, optionally with `:port`"
            " (`[v6]:port`); empty: the system's"
        ),
    )
    dns_timeout: float = setting(
        3.0,
        "DNS_TIMEOUT",
        "email.dns.timeout",
        parse_duration,
        minimum=0.1,
        doc="how long one DNS lookup of those checks may take",
    )
    sendgrid_api_key: Secret = setting(
        "",
        "SENDGRID_API_KEY",
        "email.providers.sendgrid.api_key",
        secret=True,
        doc="SendGrid API key (required when sending through `sendgrid`)",
    )
    sendgrid_api_url: str = setting(
        "https://api.sendgrid.com",
        "SENDGRID_API_URL",
        "email.providers.sendgrid.api_url",
        doc="base URL of the v3 API (`https://api.eu.sendgrid.com` for EU data residency)",
    )
    sendgrid_timeout: float = setting(
        10.0,
        "SENDGRID_TIMEOUT",
        "email.providers.sendgrid.timeout",
        parse_duration,
        minimum=0.1,
        doc="how long a mail send request may take before it counts as a transient failure",
    )
    sendgrid_rate_limit: float = setting(
        0.0,
        "SENDGRID_RATE_LIMIT",
        "email.providers.sendgrid.rate_limit",
        parse_float,
        minimum=0,
        doc="emails per second through SendGrid, all workers and hosts together (0: no limit)",
    )
    ses_configuration_set: str = setting(
        "",
        "SES_CONFIGURATION_SET",
        "email.providers.ses.configuration_set",
        doc="SES configuration set for event publishing (sent with every message when set)",
    )
    ses_timeout: float = setting(
        10.0,
        "SES_TIMEOUT",
        "email.providers.ses.timeout",
        parse_duration,
        minimum=0.1,
        doc="connect and read timeout of each SES call",
    )
    ses_rate_limit: float = setting(
        0.0,
        "SES_RATE_LIMIT",
        "email.providers.ses.rate_limit",
        parse_float,
        minimum=0,
        doc="emails per second through SES, all workers and hosts together (0: no limit)",
    )
    smtp_rate_limit: float = setting(
        0.0,
        "SMTP_RATE_LIMIT",
        "email.providers.smtp.rate_limit",
        parse_float,
        minimum=0,
        doc="emails per second through SMTP, all workers and hosts together (0: no limit)",
    )
    aws_ses_region: str = setting(
        "us-east-1", "AWS_SES_REGION", "email.providers.ses.region", doc="SES region"
    )
    aws_access_key_id: Secret = setting(
        "",
        "AWS_ACCESS_KEY_ID",
        "email.providers.ses.access_key",
        secret=True,
        doc="SES access key; without it boto3's own chain (role, profile, environment)",
    )
    aws_secret_access_key: Secret = setting(
        "",
        "AWS_SECRET_ACCESS_KEY",
        "email.providers.ses.secret_key",
        secret=True,
        doc="SES secret key",
    )
    smtp_host: str = setting(
        "",
        "SMTP_HOST",
        "email.providers.smtp.host",
        doc="SMTP server (required when sending through `smtp`)",
    )
    smtp_port: int = setting(
        587, "SMTP_PORT", "email.providers.smtp.port", parse_port, minimum=1, doc="SMTP port"
    )
    smtp_username: str = setting(
        "",
        "SMTP_USERNAME",
        "email.providers.smtp.username",
        doc="SMTP login (AUTH only when a username is set)",
    )
    smtp_password: Secret = setting(
        "", "SMTP_PASSWORD", "email.providers.smtp.password", secret=True, doc="SMTP password"
    )
    smtp_security: str = setting(
        "starttls",
        "SMTP_SECURITY",
        "email.providers.smtp.security",
        choices=("starttls", "tls", "none"),
        doc="`starttls`, `tls` (implicit, port 465) or `none`",
    )
    smtp_use_tls: bool = setting(
        True,
        "SMTP_USE_TLS",
        "email.providers.smtp.use_tls",
        parse_bool,
        doc="`false` turns TLS off whatever `SMTP_SECURITY` says",
    )
    smtp_ca_file: str = setting(
        "",
        "SMTP_CA_FILE",
        "email.providers.smtp.ca_file",
        doc="CA bundle to verify the server with; empty: the system's CAs",
    )
    smtp_timeout: float = setting(
        30.0,
        "SMTP_TIMEOUT",
        "email.providers.smtp.timeout",
        parse_duration,
        minimum=0.1,
        doc="SMTP socket timeout",
    )

    def provider_chain(self, first: str | None) -> tuple[str, ...]:
        """The providers to try in order: ``first`` (else the default), then the fallbacks."""
        chain = (first or self.email_provider, *self.email_provider_fallbacks)
        return tuple(name for name in dict.fromkeys(chain) if name)

    def non_delivering_warning(self) -> str | None:
        """What a worker should say when a provider it uses keeps emails instead of delivering.

        ``outbox`` writes ``.eml`` files and ``console`` logs the message: neither reaches
        anyone, yet tracked jobs are recorded ``sent``.
        """
        named = {
            "EMAIL_PROVIDER": (self.email_provider,),
            "EMAIL_PROVIDER_FALLBACKS": self.email_provider_fallbacks,
            "EMAIL_KIND_PROVIDERS": tuple(name for _, name in self.kind_providers),
        }
        found = [
            f"{variable} names {name}"
            for variable, names in named.items()
            for name in names
            if name in NON_DELIVERING_PROVIDERS
        ]
        if not found:
            return None
        return (
            f"{', '.join(dict.fromkeys(found))}: emails are written to OUTBOX_DIR "
            f"({self.outbox_dir}) or to the log on the worker host, not delivered; set "
            "EMAIL_PROVIDER to smtp, sendgrid or ses to deliver"
        )

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

"""``email-worker check``: is every dependency of a worker reachable and usable, without sending.

Each check returns one :class:`CheckResult`. Nothing is sent: SMTP is greeted (and
logged in to when a username is set) and left; SendGrid is asked for the key's scopes
(``GET /v3/scopes``, the one API call made); SES is asked for the account
(``GetAccount``), which says whether sending is enabled. With ``DNS_CHECKS`` on, the
DKIM key, SPF and DMARC records receivers look up are read from DNS (see
:mod:`email_worker.ops.dns_records`).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from email_worker.config import Settings, SettingsError, get_settings
from email_worker.extras import require_extra
from email_worker.privacy import redact_text

if TYPE_CHECKING:
    from email_worker.ops.dns_records import TxtLookup

# A replica further behind than this, with WAL still to replay, is reported.
REPLICA_LAG_WARNING_SECONDS = 30.0


@dataclasses.dataclass(frozen=True)
class CheckResult:
    """The outcome of one check: ``ok``, ``warn`` or ``FAIL``, and what it saw."""

    status: str
    name: str
    detail: str
    ms: float

    def line(self) -> str:
        """The result as one line for a terminal."""
        return f"{self.status:<4} {self.name:<10} {self.detail} ({self.ms:.0f} ms)"


class Warning_(Exception):  # noqa: N801  a check that passed with a caveat
    """A check passed, with something worth knowing."""


def run_checks(settings: Settings | None = None) -> list[CheckResult]:
    """Run every check that applies to the settings; settings first."""
    started = time.monotonic()
    try:
        settings = settings or get_settings()
        settings.check_worker()
    except SettingsError as exc:
        return [CheckResult("FAIL", "settings", str(exc), _ms(started))]
    results = [CheckResult("ok", "settings", "valid", _ms(started))]
    checks: list[tuple[str, Callable[[Settings], str]]] = [
        ("broker", check_broker),
        ("primary", check_primary),
        ("replica", check_replica),
        ("migrations", check_migrations),
        ("sealing", check_sealing),
    ]
    for provider in _providers(settings):
        checks.append((provider, _PROVIDER_CHECKS[provider]))
    checks.append(("templates", check_templates))
    checks.append(("delivery", check_delivery))
    checks.extend(_dns_checks(settings))  # what receiving servers will check, last
    for name, check in checks:
        results.append(_run(name, check, settings))
    return results


def _run(name: str, check: Callable[[Settings], str], settings: Settings) -> CheckResult:
    started = time.monotonic()
    try:
        return CheckResult("ok", name, check(settings), _ms(started))
    except Warning_ as exc:
        return CheckResult("warn", name, str(exc), _ms(started))
    except Exception as exc:
        text = (str(exc).strip().splitlines() or [""])[0][:300]
        return CheckResult("FAIL", name, redact_text(f"{type(exc).__name__}: {text}"), _ms(started))


def _ms(started: float) -> float:
    return (time.monotonic() - started) * 1000


def _providers(settings: Settings) -> list[str]:
    named = [*settings.provider_chain(None), *(p for _, p in settings.kind_providers)]
    return [p for p in dict.fromkeys(named) if p in _PROVIDER_CHECKS]


def check_broker(settings: Settings) -> str:
    """Connect to the broker and look (passively) for every email queue."""
    from kombu import Connection

    from email_worker.celeryapp.app import app

    conf = app.conf
    with Connection(
        conf.broker_url,
        connect_timeout=settings.broker_timeout,
        transport_options=conf.broker_transport_options,
    ) as connection:
        sentinel = str(conf.broker_url).startswith("sentinel://")
        try:
            connection.ensure_connection(max_retries=1, timeout=settings.broker_timeout)
        except Exception as exc:
            if sentinel and "No master found" in str(exc):
                raise RuntimeError(
                    f"the Sentinels know no master named {settings.redis_sentinel_master!r} "
                    f"(REDIS_SENTINEL_MASTER): {exc}"
                ) from exc
            raise
        shown = connection.as_uri()  # the password masked
        if sentinel:
            master = _sentinel_master(connection, settings)
            shown = f"{_shown_sentinels(conf.broker_url)}, master {master}"
        missing = []
        for queue in conf.task_queues:
            try:
                with connection.channel() as channel:
                    channel.queue_declare(queue.name, passive=True)
            except connection.channel_errors:
                missing.append(queue.name)
    if missing:
        raise Warning_(f"{shown}: not declared yet (no worker started?): {', '.join(missing)}")
    return f"{shown}, {len(conf.task_queues)} queues"


def _shown_sentinels(url: str) -> str:
    from email_worker.config.sentinel import parse_sentinel_url

    return parse_sentinel_url(url).shown()


def _sentinel_master(connection: Any, settings: Settings) -> str:
    """``host:port`` of the master the broker's Sentinels name."""
    from email_worker.observability.health import sentinel_master_of

    client = connection.default_channel.client
    client.ping()
    return f"{sentinel_master_of(client)} ({settings.redis_sentinel_master})"


def check_primary(settings: Settings) -> str:
    """Connect to the primary database."""
    from email_worker.db.engines import get_engines
    from email_worker.db.probes import ping

    engine = get_engines().primary
    answered = ping(engine)
    return _where(engine, answered)


def check_replica(settings: Settings) -> str:
    """Connect to the replica and measure how far behind the primary it is."""
    from email_worker.db.engines import get_engines
    from email_worker.db.probes import ping, replay_state

    engines = get_engines()
    if not engines.has_replica:
        return "none configured: reads use the primary"
    if engines.replica.dialect.name != "postgresql":
        ping(engines.replica)
        return engines.replica.url.render_as_string(hide_password=True)
    shown = _where(engines.replica, ping(engines.replica))
    state = replay_state(engines.replica)
    if not state.in_recovery:
        raise Warning_(f"{shown}: not in recovery (is it the primary?)")
    lag = state.lag_seconds
    if lag is not None and state.behind and lag > REPLICA_LAG_WARNING_SECONDS:
        raise Warning_(f"{shown}: replay {lag:.0f} s behind")
    return f"{shown}, replay lag {lag or 0:.1f} s" if state.behind else f"{shown}, up to date"


def _where(engine: Any, answered: str | None) -> str:
    """The engine's URL without its password; with several hosts, the one that answered."""
    from email_worker.db.engines import hosts_of

    hosts = hosts_of(engine)
    if len(hosts) < 2 or answered is None:
        return str(engine.url.render_as_string(hide_password=True))
    return f"{answered} (of {', '.join(hosts)}), database {engine.url.database}"


def check_migrations(settings: Settings) -> str:
    """The primary's schema is at the newest migration."""
    from email_worker.db import migrate

    current, head = migrate.current(), migrate.head()
    if current != head:
        raise RuntimeError(
            f"database at {current or 'no revision'}, code at {head}: run email-worker migrate"
        )
    return f"at head {head}"


def check_sealing(settings: Settings) -> str:
    """Personal data is sealed with the first key, every stored value opens, no published key.

    A value under a key that is not configured cannot be read (FAIL); values under an
    older key want ``rotate-keys`` before that key is dropped (warn).
    """
    from email_worker.db import key_rotation
    from email_worker.db.sealing import keys
    from email_worker.db.session import primary_session

    current = keys()
    with primary_session() as session:
        counts = key_rotation.count_by_key(session)
    unknown = key_rotation.unknown_keys(counts)
    if unknown:
        raise RuntimeError(key_rotation.describe_unknown(unknown))
    totals = key_rotation.totals_by_key(counts)
    older = {kid: n for kid, n in totals.items() if kid != current.current_id}
    warnings = [settings.development_keys_warning()]
    if older:
        warnings.append(
            f"{sum(older.values())} value(s) sealed with an older key ({', '.join(older)}): "
            "run email-worker rotate-keys"
        )
    if any(warnings):
        raise Warning_("; ".join(w for w in warnings if w))
    return (
        f"personal data sealed with key {current.current_id} ({len(current.ids)} keys configured)"
    )


def check_smtp(settings: Settings) -> str:
    """Connect, EHLO (STARTTLS as configured), AUTH when a username is set, then QUIT."""
    from email_worker.providers import get_provider

    provider: Any = get_provider("smtp")
    connection = provider._open()  # the very connection (TLS, AUTH) a send makes
    connection.quit()
    login = f", logged in as {settings.smtp_username}" if settings.smtp_username else ""
    return f"{settings.smtp_host}:{settings.smtp_port} ({settings.smtp_security}){login}"


def check_sendgrid(settings: Settings) -> str:
    """Ask SendGrid for the API key's scopes: no email is sent."""
    require_extra("checking sendgrid", "httpx")
    import httpx

    response = httpx.get(
        settings.sendgrid_api_url.rstrip("/") + "/v3/scopes",
        headers={"Authorization": f"Bearer {settings.sendgrid_api_key.reveal()}"},
        timeout=settings.sendgrid_timeout,
    )
    if response.status_code != 200:
        raise RuntimeError(f"GET /v3/scopes answered {response.status_code}")
    scopes = response.json().get("scopes", [])
    if "mail.send" not in scopes:
        raise RuntimeError("the API key lacks the mail.send scope")
    return f"{settings.sendgrid_api_url}: key has mail.send"


def check_ses(settings: Settings) -> str:
    """Ask SES for the account: reachable, credentials accepted, sending enabled."""
    from email_worker.providers import get_provider

    provider: Any = get_provider("ses")
    account = provider.client.get_account()
    if not account.get("SendingEnabled", False):
        raise RuntimeError("sending is disabled for this account")
    quota = account.get("SendQuota", {})
    sandbox = ", sandbox" if not account.get("ProductionAccessEnabled", True) else ""
    daily = quota.get("Max24HourSend", "?")
    return f"{settings.aws_ses_region}: sending enabled, {daily}/24h{sandbox}"


def check_outbox(settings: Settings) -> str:
    """The outbox directory exists (or can be made) and is writable."""
    folder = Path(settings.outbox_dir)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".check-"):
        pass
    return f"{folder} writable"


def check_templates(settings: Settings) -> str:
    """Every kind's template renders its sample data; every stored template parses."""
    from email_worker.db.session import session_scope
    from email_worker.db.templates import list_templates
    from email_worker.kinds import all_kinds
    from email_worker.rendering.renderer import check_syntax, get_renderer

    renderer = get_renderer()
    kinds = [kind for kind in all_kinds() if kind.template]
    for kind in kinds:
        try:
            renderer.render(kind.template, dict(kind.sample_data))
        except Exception as exc:
            raise RuntimeError(f"{kind.template}: {exc}") from None
    with session_scope() as session:
        stored = list_templates(session)
        for template in stored:
            for part in ("subject", "html_template", "text_template"):
                source = getattr(template, part, None)
                if source:
                    check_syntax(source, name=f"stored {template.id} {part}")
    return f"{len(kinds)} kinds render, {len(stored)} stored templates parse"


def _dns_checks(settings: Settings) -> list[tuple[str, Callable[[Settings], str]]]:
    """What receiving servers check of the sender, when ``DNS_CHECKS`` is on.

    A wrong, missing or unreadable DKIM key fails (every signed email would fail DKIM),
    and so do several SPF records (a permanent error for every receiver); a missing SPF
    or DMARC record, or domains that do not align, warn; so does a lookup that gets no
    answer: what DNS holds is then unknown.
    """
    if not settings.dns_checks:
        return []
    return [
        ("dkim", check_dkim_record),
        ("spf", check_spf_record),
        ("dmarc", check_dmarc_record),
        ("alignment", check_alignment),
    ]


def _txt(settings: Settings, name: str) -> TxtLookup:
    """The TXT records at ``name``; a lookup without an answer is a warning."""
    require_extra("checking DNS records", "dns")
    from email_worker.ops.dns_records import DnsProblem, TxtResolver

    try:
        return TxtResolver(settings.dns_resolver, settings.dns_timeout).txt(name)
    except DnsProblem as exc:
        raise Warning_(f"DNS: {exc}") from None


def _from_domain(settings: Settings) -> str:
    return settings.email_from.rpartition("@")[2].lower()


def check_dkim_record(settings: Settings) -> str:
    """The selector's TXT record holds the public half of the configured DKIM key."""
    from email_worker.ops.dns_records import dkim_public_key
    from email_worker.policy.signing import signer_from_settings

    signer = signer_from_settings(settings)
    if signer is None:
        unsigned = [p for p in _providers(settings) if p == "smtp"]
        if unsigned:
            raise Warning_("DKIM_DOMAIN is empty: email sent through smtp goes out unsigned")
        return "DKIM_DOMAIN is empty: not signed here"
    name = f"{signer.selector}._domainkey.{signer.domain}"
    lookup = _txt(settings, name)
    if not lookup.records:
        raise RuntimeError(
            f"no TXT record at {name}: receivers cannot verify the signatures; publish "
            '"v=DKIM1; k=rsa; p=<the public key, base64>"'
        )
    if len(lookup.records) > 1:
        raise RuntimeError(f"{len(lookup.records)} TXT records at {name}: publish one")
    try:
        published = dkim_public_key(lookup.records[0])
    except ValueError as exc:
        raise RuntimeError(f"the record at {name} cannot be read: {exc}") from None
    if published != signer.public_key_der():
        raise RuntimeError(
            f"the record at {name} holds another key than the configured private key's: "
            "every signed email fails DKIM; publish its public half (openssl rsa -pubout)"
        )
    return f"{name} holds the public key of the configured private key"


def check_spf_record(settings: Settings) -> str:
    """The From domain has exactly one SPF record."""
    from email_worker.ops.dns_records import spf_records

    domain = _from_domain(settings)
    lookup = _txt(settings, domain)
    if not lookup.exists:
        raise RuntimeError(f"{domain} does not exist in DNS: receivers refuse mail from it")
    found = spf_records(lookup.records)
    if not found:
        raise Warning_(
            f"no SPF record at {domain}: publish one TXT record "
            '"v=spf1 <the servers that send as it> -all"'
        )
    if len(found) > 1:
        raise RuntimeError(
            f"{len(found)} SPF records at {domain}: SPF fails for every receiver; merge them"
        )
    return f"{domain}: {_shorter(found[0])}"


def check_dmarc_record(settings: Settings) -> str:
    """The From domain (or its organisational domain) has one DMARC record; its policy."""
    from email_worker.ops.dns_records import dmarc_records, organisational_domain, tags

    domain = _from_domain(settings)
    names = list(dict.fromkeys([f"_dmarc.{domain}", f"_dmarc.{organisational_domain(domain)}"]))
    for name in names:
        found = dmarc_records(_txt(settings, name).records)
        if found:
            break
    else:
        raise Warning_(
            f"no DMARC record at {' nor '.join(names)}: Gmail and Yahoo require one of bulk "
            'senders; publish TXT "v=DMARC1; p=none; rua=mailto:<reports address>"'
        )
    if len(found) > 1:
        raise Warning_(f"{len(found)} DMARC records at {name}: receivers apply none of them")
    try:
        policy = tags(found[0])
    except ValueError as exc:
        raise Warning_(f"the DMARC record at {name} cannot be read: {exc}") from None
    if "p" not in policy:
        raise Warning_(f"the DMARC record at {name} has no p= policy")
    applied = policy["p"]
    if name != f"_dmarc.{domain}" and "sp" in policy:
        applied = policy["sp"]  # the subdomain policy of the organisational domain
    return f"{name}: policy {applied} for {domain}"


def check_alignment(settings: Settings) -> str:
    """The Message-ID, return-path and DKIM domains align with From (relaxed, for DMARC).

    The envelope sender (return path) of every email is its From address; a provider
    that replaces it with its own bounce domain is named.
    """
    from email_worker.ops.dns_records import aligned

    domain = _from_domain(settings)
    message_id = (settings.message_id_domain or domain).lower()
    seen = {"Message-ID": message_id, "return-path": domain}
    if settings.dkim_domain:
        seen["DKIM d="] = settings.dkim_domain.lower()
    apart = [f"{what} {name}" for what, name in seen.items() if not aligned(name, domain)]
    if apart:
        raise Warning_(f"not aligned with From {domain}: {', '.join(apart)}")
    own = [p for p in _providers(settings) if p in ("sendgrid", "ses")]
    note = f"; {' and '.join(own)} may set their own return path" if own else ""
    shown = ", ".join(f"{what} {name}" for what, name in seen.items())
    return f"{shown} align with From {domain}{note}"


def _shorter(text: str, most: int = 120) -> str:
    return text if len(text) <= most else text[: most - 3] + "..."


def check_delivery(settings: Settings) -> str:
    """Warn when a provider in use keeps emails on the worker host instead of delivering them,
    and when live mode refuses marketing email for want of unsubscribe links or an address."""
    warnings = [settings.non_delivering_warning(), settings.marketing_problem()]
    if any(warnings):
        raise Warning_("; ".join(w for w in warnings if w))
    return f"emails delivered through {', '.join(settings.provider_chain(None))}"


_PROVIDER_CHECKS: dict[str, Callable[[Settings], str]] = {
    "smtp": check_smtp,
    "sendgrid": check_sendgrid,
    "ses": check_ses,
    "outbox": check_outbox,
}

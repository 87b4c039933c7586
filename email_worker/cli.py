"""The ``email-worker`` command: the quick start and operator tools."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from email import message_from_bytes, policy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import SQLAlchemyError

from email_worker.config import ENV_PREFIX, SettingsError, use_local_config_file
from email_worker.errors import EmailWorkerError

if TYPE_CHECKING:
    from email_worker.db.api_keys import ApiKeyView


def _quickstart_keys(home: Path) -> dict[str, str]:
    """The keys the quick start's database is sealed with: made on its first run, then kept.

    A file of the quick start's folder, readable by its owner only, so a second run opens
    what the first one stored.
    """
    kept = home / "encryption-keys.json"
    if not kept.exists():
        from email_worker.db.sealing import new_key

        kept.touch(mode=0o600)
        kept.write_text(
            json.dumps(
                {"ENCRYPTION_KEYS": new_key(), "ENCRYPTION_LOOKUP_KEY": secrets.token_urlsafe(32)}
            )
        )
    keys: dict[str, str] = json.loads(kept.read_text())
    return keys


def _quickstart(args: argparse.Namespace) -> int:
    """Run a worker on embedded defaults and send one sample email of every kind."""
    home = Path(args.dir).resolve()
    broker = home / "broker"
    (broker / "control").mkdir(parents=True, exist_ok=True)
    outbox = Path(args.outbox).resolve()
    embedded = {
        "DATABASE_URL": f"sqlite:///{home / 'email-worker.db'}",
        "BROKER_URL": f"filesystem://{broker}",
        "RESULT_BACKEND": "",
        "EMAIL_PROVIDER": "outbox",
        "OUTBOX_DIR": str(outbox),
        # The newsletter's one-click unsubscribe link and postal address, for the look of it.
        "TRACKING_SECRET": secrets.token_urlsafe(24),
        "PUBLIC_URL": "http://localhost:8000",
        "TRACK_OPENS_CLICKS": "false",
        "SENDER_POSTAL_ADDRESS": "Example Bookings, 1 Example Street, Example City",
        "QUEUE_NAME": "email-jobs",
        **_quickstart_keys(home),
        "LOG_FORMAT": "text",
        "LOG_LEVEL": os.environ.get(f"{ENV_PREFIX}LOG_LEVEL")
        or os.environ.get("LOG_LEVEL", "warning"),
    }
    os.environ.update(embedded)
    for name in embedded:  # a prefixed variable would win over the embedded value
        os.environ.pop(ENV_PREFIX + name, None)
    from email_worker.config import reset_settings

    reset_settings()
    from email_worker.db.migrate import upgrade

    upgrade()
    from email_worker.kinds import KINDS
    from email_worker.tasks import send_email, task_for

    print(f"Starting a worker (broker: folder {broker}, database: SQLite, provider: outbox)...")
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "email_worker",
            "--quiet",
            "worker",
            "--pool=solo",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--loglevel={os.environ['LOG_LEVEL'].upper()}",
        ],
        env=os.environ.copy(),
    )
    try:
        sent: dict[str, str] = {}
        for kind in KINDS:
            result = task_for(kind.name).apply_async(
                kwargs={"to": "ann.lee@example.com", "data": dict(kind.sample_data)}
            )
            sent[result.id] = kind.name
        result = send_email.apply_async(
            kwargs={
                "to": "ann.lee@example.com",
                "template_id": "generic_notice",
                "data": {
                    "title": "Quick start",
                    "message": "Sent with send_email and a template id.",
                },
            }
        )
        sent[result.id] = "email (generic_notice)"
        landed = _wait_for_outbox(outbox, sent, args.timeout, worker)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
    from email_worker.ops import operations

    width = max(len(label) for label in sent.values())
    for task_id, label in sent.items():
        where = landed.get(task_id)
        print(f"  {label:<{width}}  {where if where else 'NOT DELIVERED'}")
    tracked = operations.list_jobs(limit=len(sent))
    if tracked:
        print(
            f"\n{len(tracked)} tracked jobs, by status: "
            + ", ".join(sorted(f"{job.job_type}={job.status}" for job in tracked))
        )
        print(f"See them with: DATABASE_URL={os.environ['DATABASE_URL']} email-worker jobs list")
    if len(landed) < len(sent):
        print(
            f"{len(sent) - len(landed)} of {len(sent)} emails did not arrive within "
            f"{args.timeout:g}s",
            file=sys.stderr,
        )
        return 1
    print(f"\nDelivered {len(landed)} emails to {outbox}. Open any .eml file with a mail client.")
    return 0


def _wait_for_outbox(
    outbox: Path, sent: dict[str, str], timeout: float, worker: subprocess.Popen[bytes]
) -> dict[str, Path]:
    wanted = {f"<{task_id}@": task_id for task_id in sent}
    landed: dict[str, Path] = {}
    deadline = time.monotonic() + timeout
    while len(landed) < len(sent) and time.monotonic() < deadline and worker.poll() is None:
        for path in outbox.glob("*.eml") if outbox.is_dir() else ():
            message = message_from_bytes(path.read_bytes(), policy=policy.default)
            key = str(message["Message-ID"] or "").split("@")[0] + "@"
            if key in wanted:
                landed[wanted[key]] = path
        time.sleep(0.2)
    return landed


def _send(args: argparse.Namespace) -> int:
    """Queue one email from the command line."""
    from email_worker.tasks import task_for

    kwargs: dict[str, Any] = {"to": args.to, "data": json.loads(args.data) if args.data else {}}
    if args.kind == "email":
        kwargs["template_id"] = args.template
    result = task_for(args.kind).apply_async(kwargs=kwargs)
    print(result.id)
    return 0


def _config(args: argparse.Namespace) -> int:
    """Print the settings in force, secrets masked."""
    from email_worker.config import get_settings

    settings = get_settings()
    settings.validate()
    for name, value in vars(settings).items():
        print(f"{name} = {value}")
    return 0


def _check(args: argparse.Namespace) -> int:
    """Check the settings, broker, databases, providers and templates; send nothing."""
    from email_worker.ops.checks import run_checks

    results = run_checks()
    if args.json:
        print(json.dumps([vars(result) for result in results], indent=2))
    else:
        for result in results:
            print(result.line())
    return 1 if any(result.status == "FAIL" for result in results) else 0


def _migrate(args: argparse.Namespace) -> int:
    """Bring the database schema up to date (or to a revision)."""
    from email_worker.db import migrate

    if args.current:
        print(migrate.current() or "(empty database)")
    elif args.downgrade:
        migrate.downgrade(None, args.downgrade)
        print(f"downgraded to {migrate.current() or 'base'}")
    else:
        migrate.upgrade(None, args.revision)
        print(f"database at revision {migrate.current()}")
    return 0


def _jobs(args: argparse.Namespace) -> int:
    """Look at and manage tracked and scheduled jobs."""
    from email_worker.ops import operations

    if args.action == "show":
        job = operations.get_job(args.job_id)
        for name, value in vars(job).items():
            if name != "tracking":
                print(f"{name:<20} {'(cleared)' if job.cleared(name) else _shown(value)}")
        for row in job.tracking:
            print(
                "tracking            ",
                "  ".join(f"{k}={_shown(v)}" for k, v in vars(row).items() if v is not None),
            )
        return 0
    if args.action == "list":
        found = operations.list_jobs(
            status=args.status,
            kind=args.kind,
            recipient=args.to,
            since=args.since,
            until=args.until,
            limit=args.limit,
        )
        for job in found:
            print(
                f"{job.id}  {job.status:<10} {job.job_type:<22} {_shown(job.created_at):<26} "
                f"{job.recipient_email or '(cleared)'}"
            )
        print(f"{len(found)} job(s)", file=sys.stderr)
        return 0
    if args.action == "cancel":
        if operations.cancel_job(args.job_id):
            print(f"cancelled {args.job_id}")
            return 0
        print(f"job {args.job_id} is not pending or scheduled; not cancelled", file=sys.stderr)
        return 1
    if operations.delete_job(args.job_id):
        print(f"deleted {args.job_id}")
        return 0
    print(f"no job {args.job_id}", file=sys.stderr)
    return 1


def _templates(args: argparse.Namespace) -> int:
    """Store templates in the database and look at them."""
    from email_worker.ops import operations

    if args.action == "sync":
        for template_id in operations.sync_templates(Path(args.folder)):
            print(f"stored {template_id}")
    elif args.action == "list":
        for row in operations.list_templates():
            state = "active" if row["is_active"] else "inactive"
            print(f"{row['id']:<30} {state:<8} {', '.join(row['variables'] or [])}")
    else:
        for name, value in operations.show_template(args.template_id).items():
            print(
                f"--- {name}\n{_shown(value)}"
                if "template" in name or name == "subject"
                else f"{name}: {_shown(value)}"
            )
    return 0


def _bulk(args: argparse.Namespace) -> int:
    """Look at and cancel bulk sends."""
    from email_worker.ops import bulk_sends

    if args.action == "cancel":
        cancelled = bulk_sends.cancel_bulk(args.bulk_id)
        print(f"cancelled bulk {args.bulk_id}: {cancelled} recipients will not be sent")
        return 0
    summary = bulk_sends.show_bulk(args.bulk_id)
    if args.json:
        print(json.dumps(summary.as_json(), indent=2))
        return 0
    for name in ("id", "template_id", "kind", "status", "provider", "total", "created_at"):
        print(f"{name:<20} {_shown(getattr(summary, name))}")
    if summary.cancelled_at is not None:
        print(f"{'cancelled_at':<20} {_shown(summary.cancelled_at)}")
    for status, count in summary.counts.items():
        print(f"{status:<20} {count}")
    return 0


def _web(args: argparse.Namespace) -> int:
    """Serve the web app: producer API, tracking links, webhooks, /health and /metrics."""
    from email_worker.config import get_settings
    from email_worker.extras import require_extra

    require_extra("the web app", "fastapi", "uvicorn", "httpx", "sendgrid")
    from email_worker.web.server import serve

    get_settings().validate()  # a wrong value stops the web app before it serves
    serve(args.host, args.port)
    return 0


def _api_keys(args: argparse.Namespace) -> int:
    """Create, list and revoke the keys of the producer HTTP API."""
    from email_worker.db import api_keys

    if args.action == "create":
        created, key = api_keys.create_api_key(
            args.name,
            tuple(args.scope or api_keys.DEFAULT_SCOPES),
            kinds=_listed(args.kinds),
            senders=_listed(args.senders),
            expires_at=None if args.expires is None else api_keys.parse_expiry(args.expires),
            rate=None if args.rate is None else api_keys.parse_rate(args.rate),
            test=args.test,
        )
        print(key)
        print(
            f"{'Test API key' if created.test else 'API key'} {created.prefix} ({created.id}) "
            f"for {created.name!r}, {_key_rules(created)}: shown once; store it now.",
            file=sys.stderr,
        )
    elif args.action == "list":
        for row in api_keys.list_api_keys():
            state = f"revoked {_shown(row.revoked_at)}" if row.revoked_at else "active"
            if not row.revoked_at and row.expired():
                state = f"expired {_shown(row.expires_at)}"
            print(
                f"{row.id}  {row.prefix:<8}  {state:<27} last used {_shown(row.last_used_at):<26} "
                f"{row.name}  {_key_rules(row)}"
            )
    else:
        revoked = api_keys.revoke_api_key(args.key)
        print(f"revoked {revoked.prefix} ({revoked.id})")
    return 0


def _console_users(args: argparse.Namespace) -> int:
    """Create, list and change the console's users (viewer, support, admin)."""
    from email_worker.extras import require_extra

    require_extra("console users", "argon2")
    from email_worker.db import console_users

    if args.action == "create":
        password = None if args.proxy_only else _new_password(args.password_stdin)
        created = console_users.create_user(args.name, args.role, password)
        how = "proxy sign-in only" if password is None else "password set"
        print(f"created console user {created.name} ({created.role}, {how})")
    elif args.action == "list":
        for user in console_users.list_users():
            state = "active" if user.enabled else f"disabled {_shown(user.disabled_at)}"
            sign_in = "password" if user.has_password else "proxy only"
            print(
                f"{user.name:<24} {user.role:<8} {state:<30} {sign_in:<10} "
                f"last sign-in {_shown(user.last_sign_in_at)}"
            )
    elif args.action == "set-role":
        changed = console_users.set_role(args.name, args.role)
        print(f"{changed.name} is now {changed.role}")
    elif args.action == "set-password":
        console_users.set_password(args.name, _new_password(args.password_stdin))
        print(f"new password set for {args.name}")
    elif args.action == "disable":
        console_users.disable_user(args.name)
        print(f"disabled {args.name}: they cannot sign in, their sessions have ended")
    elif args.action == "enable":
        console_users.enable_user(args.name)
        print(f"enabled {args.name}")
    else:
        console_users.delete_user(args.name)
        print(f"deleted {args.name}")
    return 0


def _new_password(from_stdin: bool) -> str:
    """A new password: the first line of standard input, or typed twice at a prompt."""
    from email_worker.db.console_users import checked_password

    if from_stdin:
        return checked_password(sys.stdin.readline().rstrip("\r\n"))
    import getpass

    password = checked_password(getpass.getpass("Password: "))
    if getpass.getpass("Password again: ") != password:
        raise ValueError("the two passwords differ")
    return password


def _listed(text: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple, or None when not given."""
    return None if text is None else tuple(part.strip() for part in text.split(","))


def _key_rules(key: ApiKeyView) -> str:
    """What an API key may do, in one line: scopes, kinds, senders, expiry, rate, test."""
    rules = [f"scopes {' '.join(key.scopes)}"]
    rules.append(f"kinds {','.join(key.kinds)}" if key.kinds else "any kind")
    rules.append(f"senders {','.join(key.senders)}" if key.senders else "any sender")
    if key.expires_at is not None:
        rules.append(f"expires {_shown(key.expires_at)}")
    if key.rate is not None:
        rules.append(f"rate {key.rate}")
    if key.test:
        rules.append("test: outbox only")
    return ", ".join(rules)


def _audit(args: argparse.Namespace) -> int:
    """Show the audit log: API keys, erasures, console users and console actions."""
    from email_worker.db import audit

    for entry in audit.recent(args.limit):
        print(
            f"{_shown(entry.occurred_at):<26}  {entry.actor:<12}  {entry.action:<16}  "
            f"{entry.target or '-'}"
        )
    return 0


def _suppressions(args: argparse.Namespace) -> int:
    """List, add and remove suppressed addresses."""
    from email_worker.addresses import comparable_address
    from email_worker.db import suppressions
    from email_worker.db.session import primary_session, session_scope

    if args.action == "list":
        with session_scope() as session:
            found = suppressions.list_suppressions(session)
        if args.json:
            rows = [{**vars(row), "job_id": row.job_id and str(row.job_id)} for row in found]
            print(json.dumps(rows, indent=2, default=_shown))
            return 0
        for row in found:
            shown = row.address or "(erased: kept as a hash)"
            print(f"{shown:<40} {row.scope:<10} {row.reason:<12} {_shown(row.created_at)}")
        print(f"{len(found)} suppressed address(es)", file=sys.stderr)
        return 0
    with primary_session() as session:
        if args.action == "add":
            scope = args.scope or (
                "all" if args.reason in ("hard_bounce", "manual") else "marketing"
            )
            suppressions.add_suppression(session, args.address, args.reason, scope, "cli")
            print(f"suppressed {comparable_address(args.address)} ({scope})")  # as stored
            return 0
        removed = suppressions.remove_suppression(session, args.address)
    if removed:
        print(f"removed {args.address}")
        return 0
    print(f"{args.address} is not suppressed", file=sys.stderr)
    return 1


def _erase(args: argparse.Namespace) -> int:
    """Erase one person's data from every table (--suppress: keep a hash, never mail them)."""
    from email_worker.db import audit
    from email_worker.db.erasure import audit_target, erase_person
    from email_worker.db.session import primary_session
    from email_worker.privacy import mask_address

    with primary_session() as session:
        counts = erase_person(session, args.email, suppress=args.suppress).counts()
        audit.record(session, "cli", "erasure", audit_target(args.email))
    if args.json:
        print(json.dumps(counts, indent=2))
    else:
        print(f"erased {mask_address(args.email.strip())}")
        for name, count in counts.items():
            print(f"  {name:<26} {count}")
    if counts["jobs_in_flight"]:
        print("jobs were being sent: erase again once they finish", file=sys.stderr)
    return 0


def _generate_key(args: argparse.Namespace) -> int:
    """Print a new key for ENCRYPTION_KEYS (and, with --lookup, an ENCRYPTION_LOOKUP_KEY)."""
    from email_worker.db.sealing import new_key

    print(new_key())
    how = "set ENCRYPTION_KEYS to it; to rotate, add it last everywhere, then move it first"
    if args.lookup:
        print(secrets.token_urlsafe(48))
        how = f"first line: {how}; second: ENCRYPTION_LOOKUP_KEY, set once and never changed"
    print(how, file=sys.stderr)
    return 0


def _rotate_keys(args: argparse.Namespace) -> int:
    """Seal every value sealed with an older key of ENCRYPTION_KEYS with the first one."""
    from email_worker.db.key_rotation import describe_unknown, rotate

    rotation = rotate(args.batch, dry_run=args.dry_run)
    verb = "to reseal" if args.dry_run else "resealed"
    for name, count in rotation.resealed.items():
        print(f"{name:<36} {count} {verb}")
    print(f"{'total':<36} {rotation.total} {verb} with key {rotation.current_id}")
    if rotation.unknown:
        print(f"email-worker: {describe_unknown(rotation.unknown)}", file=sys.stderr)
        return 1
    return 0


def _shown(value: Any) -> str:
    return (
        "-" if value is None else value.isoformat() if hasattr(value, "isoformat") else str(value)
    )


def _when(text: str) -> dt.datetime:
    """An ISO 8601 time; one with an offset is converted to UTC, one without is UTC."""
    from email_worker.db.models import naive_utc

    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 date or time: {text!r}") from None
    try:
        return naive_utc(when)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _limit(text: str) -> int:
    from email_worker.ops.operations import MAX_LIST_LIMIT, check_limit

    try:
        return check_limit(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be a whole number from 1 to {MAX_LIST_LIMIT}, got {text!r}"
        ) from None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``email-worker`` command."""
    parser = argparse.ArgumentParser(prog="email-worker", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    quick = commands.add_parser("quickstart", help=_quickstart.__doc__)
    quick.add_argument("--dir", default=".email-worker", help="folder for the embedded broker")
    quick.add_argument("--outbox", default="outbox", help="folder the emails are written to")
    quick.add_argument("--timeout", type=float, default=120.0, help="seconds to wait")
    quick.set_defaults(handler=_quickstart)

    send = commands.add_parser("send", help=_send.__doc__)
    send.add_argument("kind", help="a kind such as welcome_email, or 'email' with --template")
    send.add_argument("--to", required=True, action="append", help="recipient (repeatable)")
    send.add_argument("--data", help="template variables as a JSON object")
    send.add_argument("--template", help="template id, for kind 'email'")
    send.set_defaults(handler=_send)

    config = commands.add_parser("config", help=_config.__doc__)
    config.set_defaults(handler=_config)

    check = commands.add_parser("check", help=_check.__doc__)
    check.add_argument("--json", action="store_true", help="print JSON")
    check.set_defaults(handler=_check)

    migrate = commands.add_parser("migrate", help=_migrate.__doc__)
    migrate.add_argument("revision", nargs="?", default="head", help="target (default head)")
    migrate.add_argument("--downgrade", metavar="REVISION", help="go back to REVISION")
    migrate.add_argument("--current", action="store_true", help="print the current revision")
    migrate.set_defaults(handler=_migrate)

    jobs = commands.add_parser("jobs", help=_jobs.__doc__)
    job_actions = jobs.add_subparsers(dest="action", required=True)
    for action, text in (
        ("show", "a job with its tracking rows"),
        ("cancel", "cancel a pending or scheduled job"),
        ("delete", "delete a job"),
    ):
        one = job_actions.add_parser(action, help=text)
        one.add_argument("job_id", type=uuid.UUID)
    listing = job_actions.add_parser("list", help="jobs by status, kind, recipient and time")
    listing.add_argument("--status")
    listing.add_argument("--kind")
    listing.add_argument("--to", help="recipient address")
    listing.add_argument(
        "--since", type=_when, help="created at or after (ISO 8601; UTC unless it has an offset)"
    )
    listing.add_argument(
        "--until", type=_when, help="created before (ISO 8601; UTC unless it has an offset)"
    )
    listing.add_argument("--limit", type=_limit, default=50, help="at most this many (1-10000)")
    jobs.set_defaults(handler=_jobs)

    bulk = commands.add_parser("bulk", help=_bulk.__doc__)
    bulk_actions = bulk.add_subparsers(dest="action", required=True)
    bulk_show = bulk_actions.add_parser("show", help="a bulk send and its counts per status")
    bulk_show.add_argument("bulk_id", type=uuid.UUID)
    bulk_show.add_argument("--json", action="store_true", help="print JSON")
    bulk_cancel = bulk_actions.add_parser("cancel", help="send none of its remaining recipients")
    bulk_cancel.add_argument("bulk_id", type=uuid.UUID)
    bulk.set_defaults(handler=_bulk)

    suppressed = commands.add_parser("suppressions", help=_suppressions.__doc__)
    suppression_actions = suppressed.add_subparsers(dest="action", required=True)
    suppression_list = suppression_actions.add_parser("list", help="suppressed addresses")
    suppression_list.add_argument("--json", action="store_true", help="print JSON")
    suppression_add = suppression_actions.add_parser("add", help="suppress an address")
    suppression_add.add_argument("address")
    suppression_add.add_argument(
        "--reason", required=True, choices=("hard_bounce", "complaint", "unsubscribe", "manual")
    )
    suppression_add.add_argument(
        "--scope",
        choices=("all", "marketing"),
        help="all kinds, or marketing and bulk only (default: all for hard_bounce and manual)",
    )
    suppression_remove = suppression_actions.add_parser("remove", help="send to it again")
    suppression_remove.add_argument("address")
    suppressed.set_defaults(handler=_suppressions)

    stored = commands.add_parser("templates", help=_templates.__doc__)
    template_actions = stored.add_subparsers(dest="action", required=True)
    sync = template_actions.add_parser("sync", help="check, then store, a folder of templates")
    sync.add_argument("folder")
    template_actions.add_parser("list", help="stored templates")
    show = template_actions.add_parser("show", help="one stored template")
    show.add_argument("template_id")
    stored.set_defaults(handler=_templates)

    web = commands.add_parser("web", help=_web.__doc__)
    web.add_argument("--host", help="address to listen on (default WEB_HOST)")
    web.add_argument("--port", type=int, help="port to listen on (default WEB_PORT)")
    web.set_defaults(handler=_web)

    erase = commands.add_parser("erase", help=_erase.__doc__)
    erase.add_argument("--email", required=True, help="the person's address")
    erase.add_argument("--suppress", action="store_true", help="never mail them again")
    erase.add_argument("--json", action="store_true", help="print JSON")
    erase.set_defaults(handler=_erase)

    keys = commands.add_parser("api-keys", help=_api_keys.__doc__)
    key_actions = keys.add_subparsers(dest="action", required=True)
    key_create = key_actions.add_parser("create", help="a new key; printed once")
    key_create.add_argument("name", help="who uses it, e.g. billing-service")
    key_create.add_argument(
        "--scope",
        action="append",
        choices=("send", "read", "read_all", "admin"),
        help="what it may do, repeated (default: send and read; read_all: every key's jobs; "
        "admin: erase personal data)",
    )
    key_create.add_argument("--kinds", help="the only kinds it may send, e.g. invoice,receipt")
    key_create.add_argument(
        "--senders", help="the only from_email addresses it may use (EMAIL_FROM counts as one)"
    )
    key_create.add_argument("--expires", help="when it stops working: 30d, 12h or a date")
    key_create.add_argument("--rate", help="requests it may make, e.g. 10/s or 600/min")
    key_create.add_argument(
        "--test", action="store_true", help="a test key: its emails go only to the outbox"
    )
    key_actions.add_parser("list", help="every key, revoked ones included")
    key_revoke = key_actions.add_parser("revoke", help="stop a key working at once")
    key_revoke.add_argument("key", metavar="ID-or-prefix")
    keys.set_defaults(handler=_api_keys)

    users = commands.add_parser("console-users", help=_console_users.__doc__)
    user_actions = users.add_subparsers(dest="action", required=True)
    roles = ("viewer", "support", "admin")
    user_create = user_actions.add_parser("create", help="a new user; the password is prompted")
    user_create.add_argument("name", help="the name they sign in with (or the proxy names)")
    user_create.add_argument("--role", required=True, choices=roles, help="what they may do")
    user_create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    user_create.add_argument(
        "--proxy-only", action="store_true", help="no password: signs in through the proxy only"
    )
    user_actions.add_parser("list", help="every user, disabled ones included")
    user_role = user_actions.add_parser("set-role", help="give a user another role")
    user_role.add_argument("name")
    user_role.add_argument("role", choices=roles)
    user_password = user_actions.add_parser("set-password", help="a new password, prompted")
    user_password.add_argument("name")
    user_password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    for action, text in (
        ("disable", "stop a user signing in, at once"),
        ("enable", "let a disabled user sign in again"),
        ("delete", "delete a user"),
    ):
        user_action = user_actions.add_parser(action, help=text)
        user_action.add_argument("name")
    users.set_defaults(handler=_console_users)

    audit = commands.add_parser("audit", help=_audit.__doc__)
    audit_actions = audit.add_subparsers(dest="action", required=True)
    audit_list = audit_actions.add_parser("list", help="the latest lines, newest first")
    audit_list.add_argument("--limit", type=_limit, default=50, help="at most this many (1-10000)")
    audit.set_defaults(handler=_audit)

    generate = commands.add_parser("generate-key", help=_generate_key.__doc__)
    generate.add_argument("--lookup", action="store_true", help="an ENCRYPTION_LOOKUP_KEY too")
    generate.set_defaults(handler=_generate_key)
    rotate = commands.add_parser("rotate-keys", help=_rotate_keys.__doc__)
    rotate.add_argument("--batch", type=int, help="values per transaction (default 500)")
    rotate.add_argument("--dry-run", action="store_true", help="count, change nothing")
    rotate.set_defaults(handler=_rotate_keys)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``email-worker`` command."""
    use_local_config_file()  # this project's own command: ./config.yaml is ours here
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SettingsError as exc:
        print(f"email-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, LookupError, EmailWorkerError) as exc:  # bad input, unknown ids
        print(f"email-worker: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", None) or exc).splitlines()[0]  # no SQL, no parameters
        print(f"email-worker: database error: {cause}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())

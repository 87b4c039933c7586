"""The ``email-worker`` command: the quick start and operator tools."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from email_worker.config import SettingsError


def _quickstart(args: argparse.Namespace) -> int:
    """Run a worker on embedded defaults and send one sample email of every kind."""
    home = Path(args.dir).resolve()
    broker = home / "broker"
    (broker / "control").mkdir(parents=True, exist_ok=True)
    outbox = Path(args.outbox).resolve()
    os.environ.update(
        BROKER_URL=f"filesystem://{broker}",
        RESULT_BACKEND="",
        EMAIL_PROVIDER="outbox",
        OUTBOX_DIR=str(outbox),
        QUEUE_NAME="email-jobs",
        LOG_FORMAT="text",
        LOG_LEVEL=os.environ.get("LOG_LEVEL", "warning"),
    )
    from email_worker.config import reset_settings

    reset_settings()
    from email_worker.kinds import KINDS
    from email_worker.tasks import send_email, task_for

    print(f"Starting a worker (broker: folder {broker}, provider: outbox)...")
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
    width = max(len(label) for label in sent.values())
    for task_id, label in sent.items():
        where = landed.get(task_id)
        print(f"  {label:<{width}}  {where if where else 'NOT DELIVERED'}")
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

    for name, value in vars(get_settings()).items():
        print(f"{name} = {value}")
    return 0


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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``email-worker`` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except SettingsError as exc:
        print(f"email-worker: configuration error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # InvalidEmailRequest and other bad input
        print(f"email-worker: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

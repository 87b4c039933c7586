"""A dump of the database after every kind was sent holds no recipient's address, name or link.

Every built-in kind goes the tracked path through a real worker process to the test SMTP
server, as does a bulk send; a provider event and a suppression are stored too. Each
recipient has an address, a name and a link of its own, so a ``pg_dump`` of the test
database can be searched for each in clear text, and the SMTP server shows the emails
did carry them (the test cannot pass by sending nothing).
"""

from __future__ import annotations

import datetime as dt
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from email_worker.db.sealing import keys
from email_worker.kinds import all_kinds
from tests.conftest import DATABASE, purge_queues
from tests.support.pg import admin_url
from tests.support.processes import running, start_worker_process
from tests.support.smtp_server import Received, SmtpServer
from tests.support.waiting import wait_for, wait_for_log

pytestmark = pytest.mark.usefixtures("clean_tables")


@dataclass(frozen=True)
class Person:
    """A recipient whose address, name and link appear nowhere else."""

    address: str
    name: str
    link: str

    @classmethod
    def new(cls) -> Person:
        uid = uuid.uuid4().hex
        return cls(f"dump-{uid}@example.com", f"Zebulon{uid[:8]}", f"https://example.com/r/{uid}")

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.address, self.name, self.link)


def kind_data(sample: dict[str, Any], person: Person) -> dict[str, Any]:
    """A kind's sample data with the person's name and, for every link in it, their link."""
    data: dict[str, Any] = {**sample, "user_name": person.name}
    for key in sample:
        if key.endswith("_url"):
            data[key] = person.link
    if "events" in sample:  # the newsletter's list of links
        data["events"] = [{"name": "Concert", "url": person.link}]
    return data


def send_every_kind() -> dict[str, Person]:
    """One tracked send of each built-in kind, each to a person of its own; by kind."""
    from email_worker.tasks import task_for

    people = {}
    for kind in all_kinds():
        person = people[kind.name] = Person.new()
        if kind.name == "email":
            kwargs: dict[str, Any] = {
                "subject": f"Hello {person.name}",
                "text": f"Dear {person.name}, see {person.link}",
            }
        else:
            kwargs = {"data": kind_data(dict(kind.sample_data), person)}
        task_for(kind.name).apply_async(kwargs={"to": person.address, "tracked": True, **kwargs})
    return people


def send_bulk(people: list[Person]) -> None:
    from email_worker.tasks import send_bulk

    recipients = [
        {"to": p.address, "data": {"title": f"For {p.name}", "message": f"Visit {p.link}"}}
        for p in people
    ]
    send_bulk.apply_async(kwargs={"template_id": "generic_notice", "recipients": recipients})


def store_event_and_suppression(event_for: Person, suppressed: Person) -> None:
    """A provider's raw event naming a recipient, and a suppressed address, as stored."""
    from email_worker.db.events import store_events
    from email_worker.db.session import primary_session
    from email_worker.db.suppressions import add_suppression
    from email_worker.tracking import events as ev

    event = ev.DeliveryEvent(
        provider=ev.SENDGRID,
        provider_event_id=f"evt-{uuid.uuid4()}",
        event_type=ev.CLICKED,
        occurred_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        recipient=event_for.address,
        payload={"event": "click", "email": event_for.address, "url": event_for.link},
    )
    with primary_session() as session:
        store_events(session, [event])
        add_suppression(session, suppressed.address, "manual", "all", "cli")


def text_of(received: Received) -> str:
    """Every text part of an email, decoded, with its subject."""
    message = received.message
    parts = [
        str(part.get_content()) for part in message.walk() if part.get_content_maintype() == "text"
    ]
    return "\n".join([str(message["Subject"]), *parts])


def unfinished_rows() -> int:
    """Jobs and bulk recipients the worker has not recorded as sent yet."""
    engine = sa.create_engine(admin_url(database=DATABASE))
    try:
        with engine.connect() as connection:
            return int(
                connection.exec_driver_sql(
                    "SELECT (SELECT count(*) FROM email_jobs WHERE status <> 'sent')"
                    " + (SELECT count(*) FROM email_bulk_recipients WHERE status <> 'sent')"
                ).scalar_one()
            )
    finally:
        engine.dispose()


def pg_dump() -> str:
    done = subprocess.run(
        [
            "/usr/bin/pg_dump",
            "--data-only",
            "-h",
            "127.0.0.1",
            "-p",
            "5432",
            "-U",
            "postgres",
            DATABASE,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


@pytest.fixture
def worker(smtp_server: SmtpServer, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Path]:
    purge_queues(redis_client)
    log = tmp_path / "worker.log"
    with running(start_worker_process(log)):
        wait_for_log(log, "ready")
        yield log


@pytest.mark.slow
def test_a_dump_after_every_kind_was_sent_holds_no_address_name_or_link(
    smtp: SmtpServer, worker: Path
) -> None:
    by_kind = send_every_kind()
    bulk = [Person.new(), Person.new()]
    send_bulk(bulk)
    suppressed = Person.new()
    store_event_and_suppression(by_kind["booking_confirmation"], suppressed)
    sent = [*by_kind.values(), *bulk]

    smtp.wait_for(len(sent), timeout=60)
    wait_for(lambda: unfinished_rows() == 0, "every job and bulk recipient sent", log=worker)
    dump = pg_dump()

    by_address = {r.recipients[0]: r for r in smtp.received}
    assert sorted(by_address) == sorted(p.address for p in sent)
    for person in sent:
        text = text_of(by_address[person.address])
        assert person.name in text, person
    for kind, person in by_kind.items():
        if kind not in ("booking_cancellation", "payment_receipt"):  # no link in these
            assert person.link in text_of(by_address[person.address]), kind
    assert bulk[0].link in text_of(by_address[bulk[0].address])

    assert "COPY public.email_jobs" in dump and "COPY public.email_events" in dump
    assert dump.count(f"\t{keys().current_id}:") >= 3 * len(sent)  # the sealed values are there
    lowered = dump.lower()
    for person in [*sent, suppressed]:
        for secret in person.secrets:
            assert secret.lower() not in lowered, f"{secret} is in the dump"

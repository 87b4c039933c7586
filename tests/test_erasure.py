"""Erasing one person on request, end to end: a real worker, SMTP server, PostgreSQL and dump.

A person leaves every kind of trace the service keeps (tracked emails to them and with
them in cc, a scheduled email, a bulk send, a provider event, an API request with an
Idempotency-Key, a suppression); so does another person. After ``email-worker erase``
(or the admin endpoint) no table and no ``pg_dump`` holds the first person's address,
name or hash, their scheduled email never reaches the SMTP server, and the other
person's data is all still there.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
import redis
from fastapi.testclient import TestClient

from email_worker.db.models import Base
from email_worker.db.sealed_columns import Sealed
from email_worker.db.sealing import lookup_hash, open_text
from email_worker.kinds import get_kind
from tests.conftest import DATABASE, purge_queues
from tests.support.commands import email_worker
from tests.support.jobs import wait_for_status
from tests.support.processes import running, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for_log

PG_DUMP = "/usr/bin/pg_dump"
SCHEDULED_IN = 6.0  # seconds: later than SCHEDULE_THRESHOLD, so the job waits in the table


@dataclass
class Person:
    """Someone the service mails, and the ids of what it keeps about them."""

    address: str
    name: str
    friend: str  # in `to` of an email that has this person in `cc`
    jobs: dict[str, str] = field(default_factory=dict)  # what -> job id


ANN = Person("Ann.Erased@Example.COM", "Annabel Erasmusdottir", "ann.friend@example.net")
BOB = Person("bob.kept@example.org", "Bartholomew Keptson", "bob.friend@example.net")


@pytest.fixture(scope="module")
def worker(
    smtp_server: SmtpServer, redis_client: redis.Redis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[subprocess.Popen[bytes]]:
    """``celery -A email_worker worker``, sending through the test SMTP server."""
    purge_queues(redis_client)
    log = tmp_path_factory.mktemp("erasure-worker") / "worker.log"
    process = start_worker_process(log, concurrency=2)
    with running(process):
        wait_for_log(log, "ready")
        yield process


def sql(statement: str, *parameters: Any) -> list[tuple[Any, ...]]:
    """Rows of a statement on the test database, read raw: sealed values stay sealed."""
    with psycopg.connect(f"host=127.0.0.1 user=postgres dbname={DATABASE}") as connection:
        return connection.execute(statement, parameters).fetchall()  # type: ignore[arg-type]


def wait_for_bulk(bulk_id: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sql("SELECT status FROM email_bulks WHERE id = %s", bulk_id) == [("completed",)]:
            return
        time.sleep(0.1)
    raise AssertionError(f"bulk {bulk_id} did not complete")


def leave_traces(person: Person, client: TestClient, send_key: str) -> None:
    """Send and store everything the service keeps about a person."""
    from email_worker.tasks import send_email

    data = {"title": f"For {person.name}", "message": f"Write to {person.address}."}
    person.jobs["to"] = send_email.delay(
        to=person.address,
        template_id="generic_notice",
        data=data,
        tracked=True,
        kind="invoice",
    ).id
    person.jobs["cc"] = send_email.delay(
        to=person.friend,
        cc=person.address,
        subject=f"About {person.name}",
        text=f"{person.name} <{person.address}> is in copy.",
        tracked=True,
        kind="invoice",
    ).id
    person.jobs["scheduled"] = send_email.apply_async(
        kwargs={
            "to": person.address,
            "subject": f"Later, {person.name}",
            "text": "A reminder.",
            "tracked": True,
            "kind": "reminder",
        },
        countdown=SCHEDULED_IN,
    ).id
    answer = client.post(
        "/v1/emails",
        json={"to": person.address, "subject": f"Receipt for {person.name}", "text": "Thanks."},
        headers={"Authorization": f"Bearer {send_key}", "Idempotency-Key": f"r-{uuid.uuid4()}"},
    )
    assert answer.status_code == 202, answer.text
    person.jobs["api"] = answer.json()["id"]


def send_bulk_to(people: list[Person]) -> str:
    from email_worker.tasks import send_bulk

    recipients = [
        {"to": p.address, "data": {"title": f"Dear {p.name}", "message": "News."}} for p in people
    ]
    return str(
        send_bulk.apply_async(kwargs={"template_id": "generic_notice", "recipients": recipients}).id
    )


def store_event_and_suppression(person: Person) -> None:
    """A provider's event about the person, and an unsubscribe, as webhooks store them."""
    from email_worker.db.events import store_events
    from email_worker.db.session import primary_session
    from email_worker.db.suppressions import add_suppression
    from email_worker.tracking.events import DELIVERED, DeliveryEvent

    event = DeliveryEvent(
        provider="sendgrid",
        provider_event_id=f"ev-{uuid.uuid4()}",
        event_type=DELIVERED,
        occurred_at=dt.datetime.now(dt.UTC).replace(tzinfo=None),
        recipient=person.address,
        provider_message_id=f"<{person.jobs['to']}@mail.example.com>",
        payload={"email": person.address, "event": "delivered", "name": person.name},
    )
    with primary_session() as session:
        store_events(session, [event])
        add_suppression(session, person.address, "unsubscribe", "marketing", "sendgrid")


def opened_values() -> list[str]:
    """Every sealed value of every table, opened: what the keys' holder could read."""
    opened = []
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, Sealed):
                query = f"SELECT {column.name} FROM {table.name} WHERE {column.name} IS NOT NULL"
                opened += [open_text(column.type.purpose, v) for (v,) in sql(query)]
    assert opened  # the other person's data is still sealed here
    return opened


def dump() -> str:
    return subprocess.run(
        [PG_DUMP, "-h", "127.0.0.1", "-U", "postgres", "--data-only", DATABASE],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def addressed_to(smtp: SmtpServer, person: Person) -> int:
    wanted = person.address.lower()
    return sum(wanted in [r.lower() for r in m.recipients] for m in smtp.received)


def erase_via_cli(person: Person, suppress: bool) -> dict[str, int]:
    flags = ["--suppress"] if suppress else []
    done = email_worker("erase", "--email", f" {person.address.upper()} ", *flags, "--json")
    assert person.address.lower() not in (done.stdout + done.stderr).lower()
    counts: dict[str, int] = json.loads(done.stdout)
    return counts


def erase_via_http(person: Person, suppress: bool, client: TestClient) -> dict[str, int]:
    from email_worker.db.api_keys import create_api_key

    admin = create_api_key("privacy-officer", ("admin",))[1]
    body = {"email": person.address.upper(), "suppress": suppress}
    answer = client.post(
        "/v1/admin/erasures", json=body, headers={"Authorization": f"Bearer {admin}"}
    )
    assert answer.status_code == 200, answer.text
    assert person.address.lower() not in answer.text.lower()
    counts: dict[str, int] = answer.json()
    return counts


@pytest.mark.parametrize(
    ("via", "suppress"), [("cli", True), ("http", False)], ids=["cli-suppress", "http"]
)
def test_an_erased_person_is_in_no_table_and_no_dump_and_the_other_is_untouched(
    via: str,
    suppress: bool,
    worker: subprocess.Popen[bytes],
    client: TestClient,
    smtp: SmtpServer,
) -> None:
    from email_worker.db.api_keys import create_api_key
    from email_worker.worker.periodic import dispatch_due_jobs

    send_key = create_api_key("producer")[1]
    for person in (ANN, BOB):
        leave_traces(person, client, send_key)
    wait_for_bulk(send_bulk_to([ANN, BOB]))
    for person in (ANN, BOB):
        for what in ("to", "cc", "api"):
            wait_for_status(person.jobs[what], "sent")
        wait_for_status(person.jobs["scheduled"], "scheduled")
        store_event_and_suppression(person)
    assert len(smtp.wait_for(8)) == 8
    assert addressed_to(smtp, ANN) == addressed_to(smtp, BOB) == 4  # to, cc, api, bulk
    assert ANN.name in "\n".join(opened_values())  # what the erasure has to remove

    counts = erase_via_cli(ANN, suppress) if via == "cli" else erase_via_http(ANN, suppress, client)

    assert counts == {
        "jobs": 4,
        "jobs_cancelled": 1,
        "jobs_in_flight": 0,
        "api_requests": 1,
        "events": 1,
        "bulk_recipients": 1,
        "bulk_recipients_cancelled": 0,
        "suppressions_kept": 1 if suppress else 0,
        "suppressions_deleted": 0 if suppress else 1,
    }
    assert sql(
        "SELECT status, last_error FROM email_jobs WHERE id = %s", ANN.jobs["scheduled"]
    ) == [("cancelled", "erased on request")]
    # Both scheduled emails fall due; only the other person's is sent.
    time.sleep(SCHEDULED_IN)
    assert dispatch_due_jobs() == 1
    wait_for_status(BOB.jobs["scheduled"], "sent")
    smtp.wait_for(9)
    time.sleep(1.0)  # the erased person's would arrive now
    assert addressed_to(smtp, ANN) == 4 and addressed_to(smtp, BOB) == 5

    ann, ann_hash = ANN.address.lower(), lookup_hash(ANN.address)
    opened = "\n".join(opened_values()).lower()
    assert ann not in opened and ANN.name.lower() not in opened
    assert ann_hash not in opened
    dumped = dump().lower()
    assert ann not in dumped and ANN.name.lower() not in dumped
    assert dumped.count(ann_hash) == (1 if suppress else 0)
    suppressed = sql(
        "SELECT address, reason, scope FROM email_suppressions WHERE address_hash = %s", ann_hash
    )
    assert suppressed == ([(None, "erasure", "all")] if suppress else [])
    for what, job_id in ANN.jobs.items():
        (row,) = sql(
            "SELECT recipient_email, recipient_hash, recipient_hashes, subject, template_data,"
            " payload, recipient_results, personal_data_cleared_at FROM email_jobs WHERE id = %s",
            job_id,
        )
        assert row[:-1] == (None,) * 7 and row[-1] is not None, what

    assert_untouched(BOB)
    if suppress:
        assert_never_mailed_again(ANN, smtp)
    else:
        assert_mailed_again(ANN, smtp)


def assert_untouched(person: Person) -> None:
    """Every trace the person left is still there, readable."""
    hashed = lookup_hash(person.address)
    for what, job_id in person.jobs.items():
        ((sealed, hashes, cleared_at),) = sql(
            "SELECT recipient_email, recipient_hashes, personal_data_cleared_at"
            " FROM email_jobs WHERE id = %s",
            job_id,
        )
        expected = person.friend if what == "cc" else person.address
        assert open_text("email_jobs.recipient_email", sealed) == expected, what
        assert hashed in hashes and cleared_at is None, what
    assert sql("SELECT count(*) FROM api_requests WHERE job_id = %s", person.jobs["api"]) == [(1,)]
    ((event,),) = sql("SELECT recipient FROM email_events WHERE recipient_hash = %s", hashed)
    assert open_text("email_events.recipient", event) == person.address
    ((address,),) = sql("SELECT address FROM email_bulk_recipients WHERE address_hash = %s", hashed)
    assert open_text("email_bulk_recipients.address", address) == person.address
    ((suppressed,),) = sql("SELECT address FROM email_suppressions WHERE address_hash = %s", hashed)
    assert open_text("email_suppressions.address", suppressed) == person.address.lower()


def assert_never_mailed_again(person: Person, smtp: SmtpServer) -> None:
    """A newsletter and a transactional email to the erased person are both suppressed."""
    from email_worker.tasks import send_email, send_newsletter

    before = len(smtp.received)
    newsletter = send_newsletter.delay(
        to=person.address, data=dict(get_kind("newsletter").sample_data), tracked=True
    )
    invoice = send_email.delay(
        to=person.address.upper(), subject="Invoice", text="x", tracked=True, kind="invoice"
    )
    wait_for_status(newsletter.id, "suppressed")
    wait_for_status(invoice.id, "suppressed")
    time.sleep(0.5)
    assert len(smtp.received) == before


def assert_mailed_again(person: Person, smtp: SmtpServer) -> None:
    """Without --suppress their old unsubscribe is gone too: a newsletter reaches them."""
    from email_worker.tasks import send_newsletter

    newsletter = send_newsletter.delay(
        to=person.address, data=dict(get_kind("newsletter").sample_data), tracked=True
    )
    wait_for_status(newsletter.id, "sent")
    assert addressed_to(smtp, person) == 5


def test_an_email_being_sent_is_erased_and_counted_apart(
    worker: subprocess.Popen[bytes], clean_tables: None, smtp: SmtpServer
) -> None:
    from email_worker.tasks import send_email

    carol = "carol.inflight@example.com"
    smtp.handler.data_delay = 3.0  # the job stays `sending` while the erasure runs
    job_id = send_email.delay(
        to=carol, subject="For Carol Inflight", text="x", tracked=True, kind="invoice"
    ).id
    wait_for_status(job_id, "sending")

    done = email_worker("erase", "--email", carol)

    assert "  jobs_in_flight             1" in done.stdout
    assert "  jobs_cancelled             0" in done.stdout
    assert done.stderr.strip() == "jobs were being sent: erase again once they finish"
    wait_for_status(job_id, "sent")  # its worker records what it did
    assert len(smtp.wait_for(1)) == 1
    opened = "\n".join(opened_values()).lower()
    assert carol not in opened and "carol inflight" not in opened
    assert lookup_hash(carol) not in dump()


def test_the_endpoint_needs_an_admin_key_and_a_valid_address(client: TestClient) -> None:
    from email_worker.db.api_keys import create_api_key

    body = {"email": ANN.address}
    missing = client.post("/v1/admin/erasures", json=body)
    assert missing.status_code == 401 and missing.headers["WWW-Authenticate"].startswith("Bearer")
    producer = create_api_key("producer")[1]
    refused = client.post(
        "/v1/admin/erasures", json=body, headers={"Authorization": f"Bearer {producer}"}
    )
    assert refused.status_code == 403
    assert refused.json()["error"]["problem"] == "this API key lacks the admin scope"
    admin = {"Authorization": f"Bearer {create_api_key('privacy-officer', ('admin',))[1]}"}
    invalid = client.post("/v1/admin/erasures", json={"email": "ann at example"}, headers=admin)
    assert invalid.status_code == 422
    assert invalid.json()["error"]["field"] == "email"
    assert "not a valid email address" in invalid.json()["error"]["problem"]
    flag = client.post("/v1/admin/erasures", json={**body, "suppress": "yes"}, headers=admin)
    assert (flag.status_code, flag.json()["error"]["field"]) == (422, "suppress")


def test_the_command_says_what_it_erased_without_the_address(clean_tables: None) -> None:
    done = email_worker("erase", "--email", "nobody.here@example.com")
    assert done.stdout.splitlines()[0] == "erased n***@example.com"
    assert "nobody.here" not in done.stdout + done.stderr
    assert "  jobs                       0" in done.stdout

    bad = email_worker("erase", "--email", "nobody.here.example.com", check=False)
    assert bad.returncode == 2
    assert bad.stderr.startswith("email-worker: not a valid email address: ")
    assert len(bad.stderr.strip().splitlines()) == 1

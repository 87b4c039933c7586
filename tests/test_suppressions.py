"""The suppression list: who it blocks, for which kinds, and the operator's commands."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from email_worker.db import suppressions
from email_worker.db.session import primary_session
from email_worker.kinds import get_kind
from tests.conftest import TEST_ENV
from tests.support.commands import email_worker
from tests.support.processes import running, start_worker_process
from tests.support.smtp_server import SmtpServer
from tests.support.tcp_proxy import TcpProxy
from tests.support.waiting import wait_for, wait_for_log

pytestmark = pytest.mark.usefixtures("clean_tables")


def suppress(address: str, reason: str, scope: str) -> None:
    with primary_session() as session:
        suppressions.add_suppression(session, address, reason, scope, "test")


def blocked(addresses: list[str], category: str) -> set[str]:
    with primary_session() as session:
        return suppressions.is_suppressed(session, addresses, category)


def test_unsubscribes_block_marketing_and_bulk_only_hard_bounces_block_all() -> None:
    suppress("Ann@Example.com", "unsubscribe", "marketing")
    suppress("bob@example.com", "hard_bounce", "all")
    everyone = ["ANN@example.com", "bob@example.com", "cy@example.com"]
    assert (
        blocked(everyone, "marketing")
        == blocked(everyone, "bulk")
        == {
            "ann@example.com",
            "bob@example.com",
        }
    )
    assert (
        blocked(everyone, "security") == blocked(everyone, "transactional") == {"bob@example.com"}
    )


def test_a_later_hard_bounce_widens_an_unsubscribe_and_nothing_narrows_it() -> None:
    suppress("ann@example.com", "unsubscribe", "marketing")
    suppress("ann@example.com", "hard_bounce", "all")
    suppress("ann@example.com", "complaint", "marketing")
    with primary_session() as session:
        (row,) = suppressions.list_suppressions(session)
    assert (row.address, row.reason, row.scope) == ("ann@example.com", "hard_bounce", "all")


def test_the_cli_adds_lists_and_removes() -> None:
    email_worker("suppressions", "add", "Ann@Example.com", "--reason", "complaint")
    email_worker("suppressions", "add", "bob@example.com", "--reason", "manual")
    listed = json.loads(email_worker("suppressions", "list", "--json").stdout)
    assert {(r["address"], r["scope"]) for r in listed} == {
        ("ann@example.com", "marketing"),
        ("bob@example.com", "all"),
    }
    assert email_worker("suppressions", "remove", "ANN@example.com").stdout == (
        "removed ANN@example.com\n"
    )
    again = email_worker("suppressions", "remove", "ann@example.com", check=False)
    assert again.returncode == 1
    bad = email_worker("suppressions", "add", "x@example.com", "--reason", "nope", check=False)
    assert bad.returncode == 2


@pytest.mark.usefixtures("worker")
def test_suppressed_recipients_are_left_out_of_the_envelope(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email, send_password_reset, task_for

    suppress("ann@example.com", "unsubscribe", "marketing")
    suppress("dan@example.com", "hard_bounce", "all")
    newsletter = dict(get_kind("newsletter").sample_data)
    task_for("newsletter").delay(to=["ann@example.com", "bob@example.com"], data=newsletter)
    (received,) = smtp.wait_for(1)
    assert received.recipients == ["bob@example.com"]

    # A hard bounce blocks every kind; an unsubscribe does not block a password reset.
    smtp.reset()
    reset = dict(get_kind("password_reset").sample_data)
    send_password_reset.delay(to="dan@example.com", data=reset)  # tracked: suppressed
    send_email.delay(to="dan@example.com", subject="Hi", text="x")  # fast path: skipped
    send_password_reset.delay(to="ann@example.com", data=reset)
    smtp.wait_for(1)
    time.sleep(1.0)  # the two to dan were queued first: they had their chance
    assert [r.recipients for r in smtp.received] == [["ann@example.com"]]


def test_a_worker_process_keeps_a_copy_of_the_list_and_reloads_it(clean_tables: None) -> None:
    from email_worker.policy.suppression_list import SuppressionList

    copy = SuppressionList(refresh=0.5)
    with primary_session() as session:
        suppressions.add_suppression(session, "gone@example.com", "hard_bounce", "all", "test")
        suppressions.add_suppression(session, "left@example.com", "unsubscribe", "marketing", "t")
    both = ["Gone@example.com", "left@example.com", "here@example.com"]
    assert copy.blocked(both, "transactional") == {"gone@example.com"}
    assert copy.blocked(both, "marketing") == {"gone@example.com", "left@example.com"}
    with primary_session() as session:
        suppressions.add_suppression(session, "here@example.com", "complaint", "marketing", "t")
    # Honoured once the copy is SUPPRESSION_REFRESH old, without a query per send before.
    assert "here@example.com" not in copy.blocked(both, "marketing")
    time.sleep(0.6)
    assert "here@example.com" in copy.blocked(both, "marketing")


IDN_FORMS = ["bob@müller.com", "BOB@MÜLLER.COM", "bob@xn--mller-kva.com", "Bob@XN--MLLER-KVA.COM"]


@pytest.mark.parametrize("entry", IDN_FORMS)
def test_one_entry_matches_an_international_address_in_every_form(entry: str) -> None:
    from email_worker.policy.suppression_list import SuppressionList

    suppress(entry, "hard_bounce", "all")
    with primary_session() as session:
        (row,) = suppressions.list_suppressions(session)
    assert row.address == "bob@xn--mller-kva.com"
    given = [*IDN_FORMS, "bob@mueller.com"]
    expected = {form.lower() for form in IDN_FORMS}
    assert blocked(given, "transactional") == expected
    assert SuppressionList(refresh=60).blocked(given, "transactional") == expected
    suppress(IDN_FORMS[(IDN_FORMS.index(entry) + 1) % 4], "complaint", "marketing")
    with primary_session() as session:
        assert len(suppressions.list_suppressions(session)) == 1
        assert suppressions.remove_suppression(session, "bob@MÜLLER.com")
    assert blocked(given, "marketing") == set()


def test_the_cli_keeps_one_form_of_an_international_address() -> None:
    added = email_worker("suppressions", "add", "Zoë@Bücher.example", "--reason", "manual")
    assert added.stdout == "suppressed zoë@xn--bcher-kva.example (all)\n"  # the form stored
    email_worker("suppressions", "add", "zoë@xn--bcher-kva.example", "--reason", "complaint")
    listed = json.loads(email_worker("suppressions", "list", "--json").stdout)
    assert [(r["address"], r["scope"]) for r in listed] == [("zoë@xn--bcher-kva.example", "all")]
    email_worker("suppressions", "remove", "ZOË@BÜCHER.EXAMPLE")
    assert json.loads(email_worker("suppressions", "list", "--json").stdout) == []


@pytest.mark.usefixtures("worker")
def test_a_suppressed_international_address_gets_no_email_in_any_form(smtp: SmtpServer) -> None:
    from email_worker.tasks import send_email

    email_worker("suppressions", "add", "bob@müller.com", "--reason", "manual")
    for to in (*IDN_FORMS, "cy@müller.com"):
        send_email.delay(to=to, subject="Hi", text="x")
    smtp.wait_for(1)
    time.sleep(1.0)  # the four to bob were queued first: they had their chance
    assert [r.recipients for r in smtp.received] == [["cy@xn--mller-kva.com"]]


@pytest.mark.slow
@pytest.mark.usefixtures("redis_client")
def test_without_the_primary_a_transactional_email_goes_unchecked_and_a_marketing_one_waits(
    smtp: SmtpServer, tmp_path: Path
) -> None:
    from email_worker.tasks import send_email, task_for

    proxy = TcpProxy().open()
    queue = f"{TEST_ENV['QUEUE_NAME']}-no-primary-{uuid.uuid4().hex[:6]}"
    log = tmp_path / "worker.log"
    worker = start_worker_process(
        log,
        env={
            "QUEUE_NAME": queue,
            "DATABASE_URL": TEST_ENV["DATABASE_URL"].replace(":5432/", f":{proxy.port}/"),
            "MAX_RETRIES": "100",
        },
    )
    try:
        with running(worker):
            wait_for_log(log, "ready", timeout=60)
            proxy.close()
            send_email.apply_async(
                kwargs={"to": "ann@example.com", "subject": "Hi", "text": "x"},
                queue=f"{queue}.default",
            )
            newsletter = dict(get_kind("newsletter").sample_data)
            task_for("newsletter").apply_async(
                kwargs={"to": "bob@example.com", "data": newsletter}, queue=f"{queue}.low"
            )
            (sent,) = smtp.wait_for(1)
            assert sent.recipients == ["ann@example.com"]
            wait_for_log(log, "suppression list not checked", timeout=30)
            wait_for_log(log, "cannot check the suppression list", timeout=30)
            assert [r.recipients for r in smtp.received] == [["ann@example.com"]]

            proxy.open()
            wait_for(
                lambda: [r for r in smtp.received if r.recipients == ["bob@example.com"]],
                "the newsletter once the primary is back",
                timeout=60,
                log=log,
            )
    finally:
        proxy.close()

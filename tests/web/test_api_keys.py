"""API keys for many teams: scopes, kinds and senders, expiry, rates, test keys, the audit log.

Real app, PostgreSQL and Redis; the test key's email goes through a real worker process.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.commands import email_worker
from tests.support.processes import start_worker_process, stop
from tests.support.smtp_server import SmtpServer
from tests.web.test_api import INLINE, auth

SENDER = "noreply@mail.example.com"  # EMAIL_FROM of the tests


def new_key(name: str = "team", scopes: tuple[str, ...] = ("send", "read"), **rules: Any) -> str:
    from email_worker.db.api_keys import create_api_key

    return create_api_key(name, scopes, **rules)[1]


def prefix_of(key: str) -> str:
    return key.split("_")[1]


def refusal(answer: Any) -> str:
    return str(answer.json()["error"]["problem"])


def wait_for_job(client: TestClient, key: str, job_id: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        shown = client.get(f"/v1/emails/{job_id}", headers=auth(key)).json()
        if shown.get("status") == status:
            return dict(shown)
        assert time.monotonic() < deadline, shown
        time.sleep(0.1)


def test_each_operation_refuses_a_key_without_its_scope_naming_it(client: TestClient) -> None:
    read_only, send_only = new_key(scopes=("read",)), new_key(scopes=("send",))
    answer = client.post("/v1/emails", json=INLINE, headers=auth(read_only))
    assert answer.status_code == 403 and refusal(answer) == "this API key lacks the send scope"
    answer = client.get(f"/v1/emails/{uuid.uuid4()}", headers=auth(send_only))
    assert answer.status_code == 403 and refusal(answer) == "this API key lacks the read scope"
    erasure = {"email": "ann.lee@example.com"}
    answer = client.post("/v1/admin/erasures", json=erasure, headers=auth(send_only))
    assert answer.status_code == 403 and refusal(answer) == "this API key lacks the admin scope"


def test_a_key_narrowed_to_kinds_and_senders_is_refused_any_other_naming_it(
    client: TestClient,
) -> None:
    from email_worker.kinds import get_kind

    key = new_key(kinds=("invoice", "password_reset"), senders=("billing@mail.example.com",))
    invoice = {**INLINE, "kind": "invoice", "from_email": "billing@mail.example.com"}
    assert client.post("/v1/emails", json=invoice, headers=auth(key)).status_code == 202

    newsletter = {**invoice, "kind": "newsletter"}
    answer = client.post("/v1/emails", json=newsletter, headers=auth(key))
    assert answer.status_code == 403
    assert refusal(answer) == "this API key may not send kind newsletter"
    generic = {**INLINE, "from_email": invoice["from_email"]}
    answer = client.post("/v1/emails", json=generic, headers=auth(key))
    assert refusal(answer) == "this API key may not send kind email"  # no kind: the generic one

    answer = client.post("/v1/emails", json={**invoice, "from_email": SENDER}, headers=auth(key))
    assert answer.status_code == 403
    assert refusal(answer) == f"this API key may not send from {SENDER}"
    data = dict(get_kind("password_reset").sample_data)
    reset = {"kind": "password_reset", "to": "ann.lee@example.com", "data": data}
    answer = client.post("/v1/emails", json=reset, headers=auth(key))
    assert answer.status_code == 403  # without from_email it would come from EMAIL_FROM
    assert refusal(answer) == f"this API key may not send from {SENDER}"
    # The same sender in another case is the same sender.
    shouted = {**invoice, "from_email": "Billing@MAIL.example.com"}
    assert client.post("/v1/emails", json=shouted, headers=auth(key)).status_code == 202


def test_one_key_cannot_read_another_keys_jobs_and_a_read_all_key_reads_every_one(
    client: TestClient,
) -> None:
    mine, theirs = new_key("billing"), new_key("bookings")
    auditor = new_key("support", scopes=("read_all",))
    sent = client.post("/v1/emails", json={**INLINE, "tracked": True}, headers=auth(mine))
    job_url = f"/v1/emails/{sent.json()['id']}"
    assert client.get(job_url, headers=auth(mine)).status_code == 200
    assert client.get(job_url, headers=auth(theirs)).status_code == 404
    shown = client.get(job_url, headers=auth(auditor))
    assert shown.status_code == 200 and shown.json()["id"] == sent.json()["id"]
    answer = client.post("/v1/emails", json=INLINE, headers=auth(auditor))
    assert answer.status_code == 403 and refusal(answer) == "this API key lacks the send scope"


def test_an_expired_key_is_refused_saying_so(client: TestClient) -> None:
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    key = new_key(expires_at=past)
    for answer in (
        client.post("/v1/emails", json=INLINE, headers=auth(key)),
        client.get(f"/v1/emails/{uuid.uuid4()}", headers=auth(key)),
    ):
        assert answer.status_code == 401 and refusal(answer) == "the API key has expired"
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
    later = new_key(expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=1))
    assert client.post("/v1/emails", json=INLINE, headers=auth(later)).status_code == 202


def test_a_key_past_its_rate_is_answered_429_with_retry_after(client: TestClient) -> None:
    from email_worker.db.api_keys import Rate

    key, other = new_key(rate=Rate(3, 60)), new_key(rate=Rate(3, 60))
    for _ in range(3):
        assert client.get(f"/v1/emails/{uuid.uuid4()}", headers=auth(key)).status_code == 404
    answer = client.post("/v1/emails", json=INLINE, headers=auth(key))
    assert answer.status_code == 429
    assert 1 <= int(answer.headers["Retry-After"]) <= 20  # a token every 20 s
    assert "limit of 3/min" in refusal(answer)
    # The limit is the key's own: another key with the same rate is untouched.
    assert client.post("/v1/emails", json=INLINE, headers=auth(other)).status_code == 202


def test_a_test_keys_email_reaches_the_outbox_and_never_the_smtp_server(
    client: TestClient, smtp: SmtpServer, tmp_path: Path
) -> None:
    test_key = new_key("integration-tests", test=True)
    live_key = new_key("billing")
    subject = f"Test send {uuid.uuid4()}"
    # Naming smtp changes nothing: the key decides, on the server.
    test_send = {**INLINE, "subject": subject, "provider": "smtp"}
    accepted = client.post("/v1/emails", json=test_send, headers=auth(test_key))
    assert accepted.status_code == 202 and accepted.json()["status"] == "pending"  # stored
    live = client.post("/v1/emails", json={**INLINE, "tracked": True}, headers=auth(live_key))
    worker = start_worker_process(tmp_path / "worker.log")
    try:
        job = wait_for_job(client, test_key, accepted.json()["id"], "sent")
        wait_for_job(client, live_key, live.json()["id"], "sent")
        (received,) = smtp.wait_for(1, timeout=30)
        time.sleep(0.5)  # a second email would have arrived by now
    finally:
        stop(worker)
    assert received.message["Subject"] == INLINE["subject"]  # the live key's only
    assert len(smtp.received) == 1
    assert job["provider"] == "outbox" and job["test"] is True
    written = message_from_bytes(Path(job["provider_message_id"]).read_bytes())
    assert written["Subject"] == subject and written["To"] == INLINE["to"]
    shown = client.get(f"/v1/emails/{live.json()['id']}", headers=auth(live_key)).json()
    assert shown["provider"] == "smtp" and shown["test"] is False


def test_a_request_cannot_mark_itself_a_test_send(client: TestClient) -> None:
    from email_worker.db.api_keys import TEST_SEND_FIELD

    key = new_key()
    body = {**INLINE, "tracked": True, TEST_SEND_FIELD: True}
    answer = client.post("/v1/emails", json=body, headers=auth(key))
    assert answer.status_code == 422 and answer.json()["error"]["field"] == TEST_SEND_FIELD


def test_the_audit_log_records_key_use_key_changes_and_an_erasure(client: TestClient) -> None:
    created = email_worker("api-keys", "create", "privacy-team", "--scope", "admin")
    admin_key = created.stdout.strip()
    prefix = prefix_of(admin_key)
    erasure = {"email": "ann.lee@example.com", "suppress": True}
    answer = client.post("/v1/admin/erasures", json=erasure, headers=auth(admin_key))
    assert answer.status_code == 200, answer.text
    email_worker("api-keys", "revoke", prefix)

    lines = email_worker("audit", "list", "--limit", "20").stdout.splitlines()
    mine = [line.split() for line in lines if prefix in line]
    # Newest first: the revocation, the erasure, the key's use, its creation.
    assert [(words[1], words[2]) for words in mine] == [
        ("cli", "api_key.revoke"),
        (f"key:{prefix}", "erasure"),
        (f"key:{prefix}", "api_key.use"),
        ("cli", "api_key.create"),
    ]
    assert "ann.lee" not in "\n".join(lines)  # an address never reaches the log
    refused = email_worker("audit", "list", "--limit", "0", check=False)
    assert refused.returncode == 2 and "--limit" in refused.stderr


def test_key_use_is_recorded_once_a_minute_not_per_request(client: TestClient) -> None:
    from email_worker.db import audit

    key = new_key()
    for _ in range(3):
        client.get(f"/v1/emails/{uuid.uuid4()}", headers=auth(key))
    uses = [e for e in audit.recent(1000) if e.target == prefix_of(key)]
    assert [e.action for e in uses] == ["api_key.use"]


def test_keys_with_every_rule_are_created_and_listed_from_the_command_line(
    client: TestClient,
) -> None:
    rules = ["--scope", "send", "--scope", "read_all", "--kinds", "invoice,payment_receipt"]
    rules += ["--senders", "Billing@Mail.Example.com", "--expires", "30d", "--rate", "10/s"]
    created = email_worker("api-keys", "create", "integration", *rules, "--test")
    key = created.stdout.strip()
    assert "Test API key" in created.stderr and "shown once" in created.stderr
    listing = email_worker("api-keys", "list").stdout.splitlines()
    (line,) = [line for line in listing if prefix_of(key) in line]
    assert "scopes send read_all, kinds invoice,payment_receipt" in line
    assert "senders billing@mail.example.com" in line  # in the one form addresses compare in
    assert "rate 10/s" in line and "test: outbox only" in line
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).date().isoformat()
    assert f"expires {expires}" in line
    invoice = {**INLINE, "kind": "invoice", "from_email": "billing@mail.example.com"}
    assert client.post("/v1/emails", json=invoice, headers=auth(key)).status_code == 202


@pytest.mark.parametrize(
    ("option", "value", "problem"),
    [
        ("--rate", "10/hour", "a rate is a count of 1 to 100000 per second or minute"),
        ("--rate", "0/s", "a rate is a count of 1 to 100000 per second or minute"),
        ("--expires", "soon", "an expiry is a number of days or hours (30d, 12h) or a date"),
        ("--expires", "2020-01-01", "the expiry 2020-01-01 00:00:00 UTC has already passed"),
        ("--kinds", "News Letter", "a kind is a lower-case name such as password_reset"),
        ("--senders", "billing", "a sender is an email address, not 'billing'"),
    ],
)
def test_a_bad_rule_is_refused_in_one_line_naming_it(
    clean_tables: None, option: str, value: str, problem: str
) -> None:
    refused = email_worker("api-keys", "create", "team", option, value, check=False)
    assert refused.returncode == 2 and problem in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert "team" not in email_worker("api-keys", "list").stdout


def test_a_test_key_is_validated_as_a_live_one(client: TestClient) -> None:
    test_key = new_key("integration-tests", test=True, kinds=("invoice",))
    # The outbox is where its emails go, not a provider it may name in live mode.
    body = {**INLINE, "kind": "invoice", "provider": "outbox"}
    answer = client.post("/v1/emails", json=body, headers=auth(test_key))
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "provider"
    body = {**INLINE, "kind": "invoice", "to": "nope"}
    answer = client.post("/v1/emails", json=body, headers=auth(test_key))
    assert answer.status_code == 422 and answer.json()["error"]["field"] == "to"
    body = {**INLINE, "kind": "newsletter"}
    answer = client.post("/v1/emails", json=body, headers=auth(test_key))
    assert refusal(answer) == "this API key may not send kind newsletter"

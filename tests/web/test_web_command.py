"""``email-worker web`` as operators run it: it serves, and its log keeps no tokens."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.support.ports import free_port
from tests.support.web import web_process

TOKENS = ("tok3nOpenAAAA", "tok3nClickBBBB", "tok3nUnsubCCCC", "s3cretQueryDDDD")


def test_the_web_command_serves_health_and_logs_no_tokens(
    clean_tables: None, tmp_path: Path
) -> None:
    log = tmp_path / "web.log"
    with web_process(log) as url:
        health = httpx.get(f"{url}/health", timeout=10)
        assert health.status_code == 200 and health.json()["database"]["primary"]["status"] == "up"
        open_token, click_token, unsubscribe_token, query = TOKENS
        for path in (f"/t/o/{open_token}.gif", f"/t/c/{click_token}", f"/u/{unsubscribe_token}"):
            httpx.get(f"{url}{path}?k={query}", timeout=10)
        httpx.get(f"{url}/v1/emails/x?token={query}", timeout=10)
    process_log = log.read_text()
    assert "GET /health" in process_log and "GET /t/o/***" in process_log
    assert "GET /u/***" in process_log and "GET /t/c/***" in process_log
    for token in TOKENS:
        assert token not in process_log
    assert "Finished server process" in process_log  # SIGTERM: a graceful stop


def test_with_the_broker_down_health_and_sends_answer_503(
    clean_tables: None, tmp_path: Path
) -> None:
    from email_worker.db.api_keys import create_api_key

    key = create_api_key("billing-service")[1]
    with web_process(tmp_path / "web.log", BROKER_URL=f"redis://127.0.0.1:{free_port()}/0") as url:
        health = httpx.get(f"{url}/health", timeout=10)
        assert health.status_code == 503 and health.json()["queue"]["status"] == "down"
        answer = httpx.post(
            f"{url}/v1/emails",
            json={"to": "ann.lee@example.com", "subject": "Hi", "text": "Hello."},
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        )
    assert answer.status_code == 503 and "broker" in answer.json()["error"]["problem"]


def test_with_the_database_down_a_tracked_send_answers_503(tmp_path: Path) -> None:
    down = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nowhere"
    with web_process(tmp_path / "web.log", DATABASE_URL=down, DATABASE_REPLICA_URL="") as url:
        answer = httpx.post(
            f"{url}/v1/emails",
            json={"to": "ann.lee@example.com", "subject": "Hi", "text": "Hi.", "tracked": True},
            headers={"Authorization": "Bearer ew_0000_any"},
            timeout=30,
        )
        assert answer.status_code == 503
        assert httpx.get(f"{url}/health", timeout=10).status_code == 503

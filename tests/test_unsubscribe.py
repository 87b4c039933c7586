"""Own tracking links and one-click unsubscribe, through HTTP and a real worker."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from email_worker.config import reset_settings
from email_worker.db.sealing import lookup_hash, open_text
from email_worker.kinds import get_kind
from email_worker.tracking.tokens import CLICK, OPEN, UNSUBSCRIBE, sign_token
from email_worker.web import links
from tests.conftest import DATABASE, purge_queues
from tests.support.jobs import stored_verification_job, wait_for_status
from tests.support.pg import admin_url
from tests.support.ports import free_port
from tests.support.processes import running_worker
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for_log

SECRET = "test-tracking-key"
pytestmark = pytest.mark.usefixtures("clean_tables", "tracking_secret")


@pytest.fixture(scope="module")
def tracking_secret() -> Iterator[None]:
    """TRACKING_SECRET set for this process (the links check it) and the workers it starts."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRACKING_SECRET", SECRET)
        reset_settings()
        yield
    reset_settings()


@pytest.fixture(scope="module")
def client(tracking_secret: None) -> TestClient:
    app = FastAPI()
    app.include_router(links.router)
    return TestClient(app, follow_redirects=False)


def rows(sql: str) -> list[tuple]:  # type: ignore[type-arg]
    engine = sa.create_engine(admin_url(database=DATABASE))
    with engine.connect() as connection:
        found = [tuple(r) for r in connection.exec_driver_sql(sql)]
    engine.dispose()
    return found


def suppressed() -> list[tuple[str, str, str]]:
    """The suppression list's rows: each address opened, and found by its lookup hash."""
    found = rows("SELECT address_hash, address, reason, scope FROM email_suppressions")
    for address_hash, sealed, _, _ in found:
        assert "@" not in sealed  # stored sealed
        assert lookup_hash(open_text("email_suppressions.address", sealed)) == address_hash
    return [
        (open_text("email_suppressions.address", sealed), reason, scope)
        for _, sealed, reason, scope in found
    ]


def test_a_click_redirects_to_its_target_and_records_the_event(client: TestClient) -> None:
    job_id = stored_verification_job()
    token = sign_token((SECRET,), CLICK, str(job_id), "https://example.com/offer?a=1")
    first = client.get(f"/t/c/{token}")
    again = client.get(f"/t/c/{token}")  # a double click within the minute: one event
    assert first.status_code == again.status_code == 302
    assert first.headers["location"] == "https://example.com/offer?a=1"
    assert "no-store" in first.headers["cache-control"]
    events = rows("SELECT job_id, provider, event_type FROM email_events")
    assert events == [(job_id, "tracking", "clicked")]
    assert rows("SELECT status FROM email_jobs") == [("clicked",)]


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        sign_token(("another-key",), CLICK, "k", "https://evil.example/"),
        sign_token((SECRET,), OPEN, "k"),  # right key, wrong purpose
        sign_token((SECRET,), CLICK, "k", "https://example.com/", now=time.time() - 400 * 86400),
        sign_token((SECRET,), CLICK, "k", "javascript:alert(1)"),  # ours, but not a web URL
        sign_token((SECRET,), CLICK, "k", "https://example.com/")[:-2] + "xx",
    ],
    # Named, not shown: a signed token holds the time, and every test process must collect
    # the same test names.
    ids=["garbage", "another key", "an open token", "expired", "not a web URL", "tampered"],
)
def test_a_click_with_a_token_not_ours_is_404_and_stores_nothing(
    client: TestClient, token: str
) -> None:
    answer = client.get(f"/t/c/{token}")
    assert answer.status_code == 404 and "location" not in answer.headers
    assert rows("SELECT count(*) FROM email_events") == [(0,)]


def test_the_pixel_is_a_gif_for_any_token_and_records_only_valid_opens(
    client: TestClient,
) -> None:
    for token in ("garbage", "%00", "a" * 9000, "x.y"):
        answer = client.get(f"/t/o/{token}")
        assert answer.status_code == 200 and answer.headers["content-type"] == "image/gif"
        assert (
            answer.content.startswith(b"GIF89a") and "no-store" in answer.headers["cache-control"]
        )
    assert rows("SELECT count(*) FROM email_events") == [(0,)]
    job_id = stored_verification_job()
    token = sign_token((SECRET,), OPEN, str(job_id))
    gmail = (
        "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
    )
    assert client.get(f"/t/o/{token}", headers={"User-Agent": gmail}).status_code == 200
    assert rows("SELECT event_type, machine_open FROM email_events") == [("opened", True)]
    assert rows("SELECT status FROM email_jobs") == [("pending",)]  # a proxy is not a reader
    assert client.get(f"/t/o/{token}", headers={"User-Agent": "Thunderbird/128"}).status_code == 200
    assert rows("SELECT status FROM email_jobs") == [("opened",)]


def test_get_only_shows_a_page_and_post_unsubscribes(client: TestClient) -> None:
    token = sign_token((SECRET,), UNSUBSCRIBE, str(uuid.uuid4()), "ann@example.com")
    page = client.get(f"/u/{token}")
    assert page.status_code == 200 and '<form method="post">' in page.text
    assert rows("SELECT count(*) FROM email_suppressions") == [(0,)]
    done = client.post(f"/u/{token}", content=b"List-Unsubscribe=One-Click")
    assert done.status_code == 200
    assert suppressed() == [("ann@example.com", "unsubscribe", "marketing")]
    forged = sign_token(("another-key",), UNSUBSCRIBE, "k", "bob@example.com")
    assert client.post(f"/u/{forged}").status_code == 404
    assert client.get(f"/u/{forged}").status_code == 404
    assert rows("SELECT count(*) FROM email_suppressions") == [(1,)]


def test_an_unsubscribe_is_kept_in_the_form_every_send_is_checked_in(client: TestClient) -> None:
    for target in ("Zoë@Bücher.example", "zoë@xn--bcher-kva.example"):
        token = sign_token((SECRET,), UNSUBSCRIBE, str(uuid.uuid4()), target)
        assert client.post(f"/u/{token}").status_code == 200
    assert suppressed() == [("zoë@xn--bcher-kva.example", "unsubscribe", "marketing")]


@pytest.fixture
def web_server(tracking_secret: None) -> Iterator[str]:
    """The links router under a real uvicorn server in a thread; yields its base URL."""
    app = FastAPI()
    app.include_router(links.router)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


def test_one_click_unsubscribe_stops_newsletters_but_not_password_resets(
    tmp_path: Path,
    smtp: SmtpServer,
    redis_client,
    web_server: str,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_password_reset, task_for

    send_newsletter = task_for("newsletter")

    purge_queues(redis_client)
    newsletter = dict(get_kind("newsletter").sample_data)
    log = tmp_path / "worker.log"
    with running_worker(
        log,
        PUBLIC_URL=web_server,
        UNSUBSCRIBE_MAILTO="unsub@mail.example.com",
        TRACK_OPENS_CLICKS="true",
    ):
        wait_for_log(log, "ready")
        send_newsletter.delay(to="ann@example.com", data=newsletter)
        (received,) = smtp.wait_for(1, timeout=30)
        message = received.message
        assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url, mailto = (part.strip(" <>") for part in message["List-Unsubscribe"].split(","))
        assert url.startswith(f"{web_server}/u/")
        assert mailto == "mailto:unsub@mail.example.com?subject=unsubscribe"
        html = message.get_body(("html",)).get_content()
        assert f'href="{url}"' in html and f"{web_server}/t/o/" in html
        assert f'href="{web_server}/t/c/' in html and 'href="https://app.example.com' not in html

        # The one-click POST a mail client makes (RFC 8058): no page, at once.
        answer = httpx.post(url, data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
        smtp.reset()

        skipped = send_newsletter.apply_async(
            kwargs={"to": "Ann@Example.com", "data": newsletter, "tracked": True}
        )
        reset = send_password_reset.delay(
            to="ann@example.com", data=dict(get_kind("password_reset").sample_data)
        )
        wait_for_status(skipped.id, "suppressed")
        wait_for_status(reset.id, "sent")
        (only,) = smtp.received
        assert only.message["Subject"] != newsletter["headline"]
        assert only.message["List-Unsubscribe"] is None

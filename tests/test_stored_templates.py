"""Templates in the database win over the built-in ones; `templates sync` checks before writing."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from email_worker.db import templates
from email_worker.db.session import primary_session
from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import get_kind
from email_worker.rendering.renderer import Renderer
from email_worker.rendering.stored_templates import DatabaseTemplateLoader
from tests.conftest import DATABASE, purge_queues, queue_length
from tests.support.commands import email_worker
from tests.support.paths import ROOT
from tests.support.pg import wait_for_replay
from tests.support.smtp_server import SmtpServer

WELCOME = dict(get_kind("welcome_email").sample_data)
TTL = 0.5
pytestmark = pytest.mark.usefixtures("clean_tables")


def store(template_id: str, subject: str, *, active: bool = True, html: str | None = None) -> None:
    with primary_session() as session:
        templates.upsert_template(
            session,
            id=template_id,
            name=template_id,
            subject=subject,
            html_template=html,
            text_template="Stored body {{ user_name }}",
            is_active=active,
        )
    wait_for_replay(DATABASE)  # template lookups read the replica


def renderer() -> Renderer:
    return Renderer(sources=[DatabaseTemplateLoader(TTL)], recheck_after=TTL)


def test_a_stored_template_wins_and_an_inactive_one_is_ignored() -> None:
    store("welcome_email", "Stored welcome, {{ user_name }}")
    current = renderer()
    content = current.render("welcome_email", WELCOME)
    assert content.subject == "Stored welcome, Ann Lee"
    assert content.text == "Stored body Ann Lee" and content.html is None  # not the shipped HTML
    store("welcome_email", "Stored welcome, {{ user_name }}", active=False)
    time.sleep(TTL + 0.1)
    assert current.render("welcome_email", WELCOME).subject == "Welcome to Example Bookings"


def test_lookups_are_cached_for_the_configured_time() -> None:
    store("promo", "First {{ user_name }}")
    current = renderer()
    assert current.render("promo", WELCOME).subject == "First Ann Lee"
    store("promo", "Second {{ user_name }}")
    assert current.render("promo", WELCOME).subject == "First Ann Lee"  # still cached
    time.sleep(TTL + 0.1)
    assert current.render("promo", WELCOME).subject == "Second Ann Lee"


def test_a_template_stored_later_takes_over_from_the_built_in_one() -> None:
    current = renderer()
    assert current.render("welcome_email", WELCOME).subject.startswith("Welcome to")
    store("welcome_email", "Now from the database")
    time.sleep(TTL + 0.1)
    assert current.render("welcome_email", WELCOME).subject == "Now from the database"


def test_the_producer_asks_for_the_variables_of_the_stored_template_in_use(redis_client) -> None:  # type: ignore[no-untyped-def]
    from email_worker.tasks import send_email, send_welcome_email

    purge_queues(redis_client)
    store("promo", "Hello {{ user_name }}", html="<p>{{ discount }} off until {{ ends_on }}</p>")
    time.sleep(TTL + 0.1)  # the producer's template cache
    with pytest.raises(InvalidEmailRequest, match="template 'promo': discount, ends_on$"):
        send_email.delay(to="ann@example.com", template_id="promo", data={"user_name": "Ann"})
    assert queue_length(redis_client, "default") == 0

    store("promo", "Hello {{ user_name }}", html="<p>{{ discount }} off</p>")  # a new version
    store("welcome_email", "Welcome, {{ user_name }}")  # wins over the shipped one
    time.sleep(TTL + 0.1)
    data = {"user_name": "Ann", "discount": "20%"}
    send_email.delay(to="ann@example.com", template_id="promo", data=data)
    send_welcome_email.delay(to="ann@example.com", data={"user_name": "Ann"})
    assert queue_length(redis_client, "default") == 2
    purge_queues(redis_client)


def test_sync_stores_a_folder_and_the_worker_sends_with_it(
    smtp: SmtpServer,
    worker,
    tmp_path: Path,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email

    folder = tmp_path / "templates" / "spring_sale"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Spring sale for {{ user_name }}\n")
    (folder / "body.html").write_text("<p>Hello {{ user_name }}, {{ discount }} off.</p>")
    synced = email_worker("templates", "sync", str(tmp_path / "templates"))
    assert "stored spring_sale" in synced.stdout
    wait_for_replay(DATABASE)
    listed = email_worker("templates", "list")
    assert "spring_sale" in listed.stdout and "discount, user_name" in listed.stdout
    assert "Hello {{ user_name }}" in email_worker("templates", "show", "spring_sale").stdout

    send_email.delay(
        to="ann@example.com",
        template_id="spring_sale",
        data={"user_name": "<Ann>", "discount": "20%"},
    )
    (received,) = smtp.wait_for(1)
    message = received.message
    assert message["Subject"] == "Spring sale for <Ann>"
    assert "Hello &lt;Ann&gt;, 20% off." in message.get_body(("html",)).get_content()
    assert "Hello <Ann>, 20% off." in message.get_body(("plain",)).get_content()


def test_sync_refuses_a_broken_template_with_its_line_and_writes_nothing(tmp_path: Path) -> None:
    good = tmp_path / "good"
    good.mkdir()
    (good / "subject.txt").write_text("Fine")
    (good / "body.txt").write_text("Fine")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "subject.txt").write_text("Subject")
    (broken / "body.html").write_text("<p>one</p>\n<p>{% if user_name %}two</p>\n")
    done = email_worker("templates", "sync", str(tmp_path), check=False)
    assert done.returncode == 2
    assert "broken/body.html line 3" in done.stderr or "broken/body.html line 2" in done.stderr
    assert email_worker("templates", "list").stdout.strip() == ""


def test_with_the_database_down_built_in_templates_still_render() -> None:
    code = (
        "from email_worker.rendering.renderer import get_renderer;"
        f"print(get_renderer().render('welcome_email', {WELCOME!r}).subject)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "DATABASE_URL": "postgresql+psycopg://postgres@127.0.0.1:1/x",
            "DATABASE_REPLICA_URL": "",
        },
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "Welcome to Example Bookings"

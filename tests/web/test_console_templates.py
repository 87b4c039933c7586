"""The console's templates: the list, previews from sample or typed data, and test sends."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from email_worker.config import reset_settings
from email_worker.db import templates
from email_worker.db.models import AuditEntry
from email_worker.db.sealing import lookup_hash
from email_worker.db.session import primary_session
from email_worker.kinds import KINDS, get_kind
from email_worker.web.console import template_catalog as catalog
from tests.conftest import DATABASE
from tests.support.jobs import wait_for_status
from tests.support.pg import wait_for_replay
from tests.support.smtp_server import SmtpServer
from tests.support.waiting import wait_for

pytestmark = pytest.mark.usefixtures("clean_tables", "forget_stored_templates")


@pytest.fixture
def forget_stored_templates() -> Iterator[None]:
    """After each test, no stored template, and none in this process's renderer either: the
    renderer keeps a stored template for TEMPLATE_CACHE_TTL, and the next test file run by
    this process sends the built-in kinds (a stored welcome_email would ask for `code`)."""
    from email_worker.rendering.renderer import get_renderer

    yield
    with primary_session() as session:
        session.execute(sa.text("DELETE FROM email_templates"))
    get_renderer.cache_clear()


def store(template_id: str, subject: str, *, active: bool = True) -> None:
    with primary_session() as session:
        templates.upsert_template(
            session,
            id=template_id,
            name=template_id,
            subject=subject,
            html_template="<p>Hello {{ user_name }}, your code is {{ code }}.</p>",
            text_template=None,
            is_active=active,
        )
    wait_for_replay(DATABASE)  # the list reads the replica


@pytest.fixture
def allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Test sends may go to @example.org and to qa@example.com."""
    monkeypatch.setenv("ALLOWED_RECIPIENTS", "@example.org, qa@example.com")
    reset_settings()
    yield
    monkeypatch.undo()
    reset_settings()


def test_the_list_has_every_kind_the_built_in_templates_and_the_stored_ones() -> None:
    store("promo", "A promo for {{ user_name }}")
    store("welcome_email", "Stored welcome", active=False)
    entries = {entry.id: entry for entry in catalog.list_templates()}
    for kind in KINDS:
        entry = entries[kind.template]
        assert kind in entry.kinds
    reset = entries["password_reset"]
    assert reset.source == catalog.BUILT_IN and reset.category == "security"
    assert reset.sample_data == get_kind("password_reset").sample_data
    assert set(reset.variables) == {"user_name", "reset_url", "expires_in_minutes"}
    assert entries["generic_notice"].kinds == () and "_layout" not in entries
    promo = entries["promo"]
    assert promo.source == catalog.STORED and promo.overrides is None and promo.active
    assert promo.variables == ("code", "user_name") and promo.sample_data is None
    welcome = entries["welcome_email"]
    assert welcome.source == catalog.STORED and welcome.overrides == catalog.BUILT_IN
    assert not welcome.active


def test_a_kind_renders_its_sample_data_html_and_text() -> None:
    preview = catalog.render_preview(catalog.find_template("booking_confirmation"))
    assert preview.rendered, preview.problem
    assert preview.subject is not None and "BK-20261127-0042" in preview.subject
    assert preview.html is not None and "Row F, seat 12" in preview.html
    assert preview.text is not None and "Riverside Hall" in preview.text
    assert json.loads(preview.data_text) == dict(get_kind("booking_confirmation").sample_data)


def test_typed_data_renders_escaped_in_html() -> None:
    entry = catalog.find_template("welcome_email")
    data = catalog.parse_data(
        '{"user_name": "<b>Bo</b>", "product_name": "Acme", "login_url": "https://a.example"}'
    )
    preview = catalog.render_preview(entry, data)
    assert preview.rendered, preview.problem
    assert preview.html is not None and "&lt;b&gt;Bo&lt;/b&gt;" in preview.html
    assert "<b>Bo</b>" not in preview.html
    assert preview.text is not None and "<b>Bo</b>" in preview.text  # text is not HTML


def test_a_template_without_a_sample_previews_with_placeholders() -> None:
    store("promo", "A promo for {{ user_name }}")
    preview = catalog.render_preview(catalog.find_template("promo"))
    assert preview.rendered, preview.problem
    assert preview.subject == "A promo for [user_name]"


@pytest.mark.parametrize(
    ("typed", "says"),
    [
        ('{"user_name": "Ann",', "not valid JSON (line 1, column 21"),
        ('["Ann"]', "must be a JSON object"),
        ('{"n": NaN}', "NaN and Infinity are not JSON"),
        ("   ", "The data is empty"),
        ('{"a": "' + "x" * catalog.MAX_DATA_BYTES + '"}', "at most 65536 are taken"),
        ("[" * 30 + "]" * 30, "must be a JSON object"),
        ('{"a":' * 30 + "1" + "}" * 30, "nested more than 20 levels"),
    ],
)
def test_data_that_cannot_be_used_is_named(typed: str, says: str) -> None:
    with pytest.raises(catalog.DataProblem, match=None) as raised:
        catalog.parse_data(typed)
    assert says in str(raised.value)


def test_missing_variables_and_data_of_the_wrong_shape_are_problems_not_errors() -> None:
    entry = catalog.find_template("payment_receipt")
    missing = catalog.render_preview(entry, {"user_name": "Ann"})
    assert not missing.rendered and "receipt_number" in missing.missing
    assert missing.problem is not None and "lacks variables" in missing.problem
    shaped = {**get_kind("payment_receipt").sample_data, "items": 5}
    wrong = catalog.render_preview(entry, shaped)
    assert not wrong.rendered and wrong.problem is not None
    assert "does not render" in wrong.problem and "TypeError" in wrong.problem


def test_a_kept_preview_is_for_its_owner_only() -> None:
    token = catalog.keep_preview_html("<p>Hi</p>", "ann")
    assert token is not None
    assert catalog.kept_preview_html(token, "ann") == "<p>Hi</p>"
    assert catalog.kept_preview_html(token, "bob") is None
    assert catalog.kept_preview_html("no-such-token", "ann") is None


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("ann@example.com", "not allowed"),
        ("qa@sub.example.org", "not allowed"),  # the domain exactly, not its subdomains
        ("not an address", "not an email address"),
        ("", "Type the address"),
    ],
)
def test_a_test_send_to_an_address_the_rules_do_not_allow_is_refused(
    allowed: None, address: str, says: str
) -> None:
    entry = catalog.find_template("welcome_email")
    with pytest.raises(catalog.TestSendRefused) as refused:
        catalog.send_test(entry, address, dict(entry.data_for_preview()), "console:ann")
    assert says in str(refused.value)
    assert audit_rows("console:ann") == []


def test_without_allowed_recipients_test_sends_are_off() -> None:
    with pytest.raises(catalog.TestSendRefused, match="Test sends are off"):
        catalog.check_test_recipient("qa@example.com")


def audit_rows(actor: str) -> list[tuple[str, str | None]]:
    with primary_session() as session:
        rows = session.execute(
            sa.select(AuditEntry.action, AuditEntry.target).where(AuditEntry.actor == actor)
        )
        return [(action, target) for action, target in rows]


def test_a_test_send_reaches_the_smtp_server_as_a_tracked_job_and_is_audited(
    allowed: None, worker: object, smtp: SmtpServer
) -> None:
    entry = catalog.find_template("password_reset")
    data = {**entry.data_for_preview(), "user_name": "Tess Tester"}
    sent = catalog.send_test(entry, "QA@example.com", data, "console:support-sam")
    (received,) = smtp.wait_for(1)
    assert received.recipients == ["QA@example.com"]
    assert "Tess Tester" in received.message.get_body(("plain",)).get_content()
    job = wait_for_status(sent.id, "sent")
    assert job.job_type == "password_reset"
    rows = audit_rows("console:support-sam")
    target = f"password_reset to address hash {lookup_hash('qa@example.com')[:16]}"
    assert rows == [(catalog.TEST_SEND_ACTION, target)]


def test_a_stored_template_is_test_sent_by_its_id(
    allowed: None, worker: object, smtp: SmtpServer
) -> None:
    store("promo", "A promo for {{ user_name }}")
    entry = catalog.find_template("promo")
    catalog.send_test(entry, "lee@example.org", {"user_name": "Lee", "code": "X1"}, "console:a")
    (received,) = smtp.wait_for(1)
    assert received.message["Subject"] == "A promo for Lee"
    assert "your code is X1" in received.message.get_body(("html",)).get_content()


def test_a_stored_override_is_test_sent_by_its_kind_and_a_switched_off_one_is_refused(
    allowed: None, worker: object, smtp: SmtpServer
) -> None:
    store("welcome_email", "Stored welcome for {{ user_name }}")
    # The renderer sees a newly stored template within TEMPLATE_CACHE_TTL, as workers do.
    entry = wait_for(
        lambda: (
            (found := catalog.find_template("welcome_email")).variables == ("code", "user_name")
            and found
        ),
        "the stored welcome_email in use",
        timeout=5,
    )
    data = {"user_name": "Lee", "code": "X1"}
    sent = catalog.send_test(entry, "lee@example.org", data, "console:a")
    (received,) = smtp.wait_for(1)
    assert received.message["Subject"] == "Stored welcome for Lee"
    assert wait_for_status(sent.id, "sent").job_type == "welcome_email"
    store("promo", "A promo", active=False)
    with pytest.raises(catalog.TestSendRefused, match="switched off"):
        catalog.send_test(catalog.find_template("promo"), "lee@example.org", data, "console:a")

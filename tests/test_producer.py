"""The producer validates before publishing and routes each kind to its priority queue.

No worker runs in this module: what a test publishes stays in Redis to be inspected.
"""

from __future__ import annotations

import json

import pytest

from email_worker.errors import InvalidEmailRequest
from email_worker.kinds import KINDS, get_kind
from tests.conftest import DATABASE, purge_queues, queue_key, queue_length
from tests.support.pg import wait_for_replay


@pytest.fixture(autouse=True)
def empty_queues(redis_client, celery_app):  # type: ignore[no-untyped-def]
    purge_queues(redis_client)
    yield
    purge_queues(redis_client)


def all_queued(redis_client) -> int:  # type: ignore[no-untyped-def]
    return sum(queue_length(redis_client, p) for p in ("high", "default", "low"))


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (
            {"to": "ann@example.com", "subject": "Hi\r\nBcc: eve@evil.example", "text": "x"},
            "subject",
        ),
        (
            {
                "to": "ann@example.com",
                "subject": "Hi",
                "text": "x",
                "from_name": "Support\nBcc: eve@evil.example",
            },
            "from_name",
        ),
        (
            {
                "to": "ann@example.com",
                "subject": "Hi",
                "text": "x",
                "headers": {"X-Ref": "1\r\nBcc: eve@evil.example"},
            },
            "headers.X-Ref",
        ),
        ({"to": "ann@example.com", "template_id": "no_such_template"}, "template_id"),
        ({"to": "not an address", "subject": "Hi", "text": "x"}, "to"),
    ],
)
def test_a_bad_payload_raises_in_the_producer_and_nothing_is_queued(
    redis_client,
    kwargs: dict,
    field: str,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email

    with pytest.raises(InvalidEmailRequest) as caught:
        send_email.apply_async(kwargs=kwargs)
    assert caught.value.field == field
    with pytest.raises(InvalidEmailRequest):
        send_email.delay(**kwargs)
    with pytest.raises(InvalidEmailRequest):
        send_email.s(**kwargs).apply_async()
    assert all_queued(redis_client) == 0


def test_send_task_by_name_is_validated_too(redis_client, celery_app) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidEmailRequest, match="subject"):
        celery_app.send_task(
            "email_worker.send_email",
            kwargs={"to": "a@example.com", "subject": "a\nb", "text": "x"},
        )
    with pytest.raises(InvalidEmailRequest, match="args"):
        celery_app.send_task("email_worker.send_welcome_email", args=["a@example.com"])
    assert all_queued(redis_client) == 0


def stored_jobs() -> int:
    import sqlalchemy as sa

    from email_worker.db.models import EmailJob
    from email_worker.db.session import primary_session

    with primary_session() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(EmailJob)) or 0)


def test_a_kind_sent_without_the_variables_its_template_needs_is_refused_naming_them(
    redis_client,
    clean_tables,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_newsletter, send_password_reset

    with pytest.raises(InvalidEmailRequest) as caught:
        send_password_reset.apply_async(
            kwargs={"to": "ann@example.com", "data": {"user_name": "A"}}
        )
    assert str(caught.value) == (
        "data: missing variables of template 'password_reset': expires_in_minutes, reset_url"
    )
    with pytest.raises(InvalidEmailRequest, match="newsletter'.*events, headline, intro, product"):
        send_newsletter.delay(to="ann@example.com", data={})
    assert all_queued(redis_client) == 0 and stored_jobs() == 0  # password_reset is tracked


def test_variables_a_template_reads_only_if_given_may_be_left_out(
    redis_client,
    clean_tables,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.tasks import send_email, send_password_reset

    # The IP address and the product name are optional in the template; the worker adds
    # the unsubscribe link itself.
    data = {"user_name": "Ann", "reset_url": "https://x.example/r", "expires_in_minutes": 30}
    send_password_reset.apply_async(kwargs={"to": "ann@example.com", "data": data})
    notice = {"title": "Shipped", "message": "Your order is on its way."}  # no action_url
    send_email.delay(to="ann@example.com", template_id="generic_notice", data=notice)
    assert all_queued(redis_client) == 2 and stored_jobs() == 1


def test_kinds_land_on_their_priority_queue(redis_client) -> None:  # type: ignore[no-untyped-def]
    from email_worker.tasks import task_for

    for kind in KINDS:
        task_for(kind.name).apply_async(
            kwargs={"to": "ann@example.com", "data": dict(kind.sample_data)}
        )
    high = {k.task_name for k in KINDS if k.priority == "high"}
    assert high == {
        "email_worker.send_email_verification",
        "email_worker.send_password_reset",
        "email_worker.send_payment_failed",
    }
    low = {k.task_name for k in KINDS if k.priority == "low"}
    assert low == {"email_worker.send_newsletter"}
    assert queue_length(redis_client, "high") == len(high)
    assert queue_length(redis_client, "low") == len(low)
    assert queue_length(redis_client, "default") == len(KINDS) - len(high) - len(low)
    queued = [
        json.loads(m)["headers"]["task"] for m in redis_client.lrange(queue_key("high"), 0, -1)
    ]
    assert set(queued) == high


@pytest.mark.parametrize(
    ("priority", "queue"),
    [("high", "high"), ("low", "low"), (8, "low"), (1, "high"), ("normal", "default")],
)
def test_a_request_priority_picks_the_queue(redis_client, priority, queue) -> None:  # type: ignore[no-untyped-def]
    from email_worker.tasks import send_email

    send_email.delay(to="ann@example.com", subject="Hi", text="x", priority=priority)
    assert queue_length(redis_client, queue) == 1


def test_published_kwargs_hide_personal_data_from_monitors(redis_client) -> None:  # type: ignore[no-untyped-def]
    from email_worker.tasks import send_welcome_email

    data = {**dict(get_kind("welcome_email").sample_data), "user_name": "Ann Lee"}
    send_welcome_email.delay(to="ann.lee@example.com", data=data)
    raw = redis_client.lrange(queue_key("default"), 0, -1)[0]
    headers = json.loads(raw)["headers"]
    assert "ann.lee@example.com" not in headers["kwargsrepr"]
    assert "Ann Lee" not in headers["kwargsrepr"]


def test_a_delay_beyond_the_threshold_is_kept_in_the_database_not_the_broker(
    redis_client,
    clean_tables,  # type: ignore[no-untyped-def]
) -> None:
    from email_worker.ops import operations
    from email_worker.tasks import send_email

    result = send_email.apply_async(
        kwargs={"to": "a@example.com", "subject": "s", "text": "t"}, countdown=7200
    )
    assert all_queued(redis_client) == 0
    wait_for_replay(DATABASE)
    job = operations.get_job(result.id)
    assert job.status == "scheduled" and job.scheduled_at is not None


def test_beat_tasks_have_a_queue_of_their_own(celery_app) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import TEST_ENV

    for name in (
        "dispatch_due_jobs",
        "relay_stranded_jobs",
        "reap_expired_leases",
        "cleanup_old_jobs",
        "clear_personal_data",
    ):
        route = celery_app.amqp.router.route({}, f"email_worker.{name}")
        assert route["queue"].name == f"{TEST_ENV['QUEUE_NAME']}.periodic"
    consumed = [queue.name for queue in celery_app.conf.task_queues]
    assert consumed[0].endswith(".periodic")  # consumed first, ahead of any email backlog


def test_message_headers_survive_and_time_limits_do_not_travel(redis_client) -> None:  # type: ignore[no-untyped-def]
    from email_worker.tasks import send_email

    purge_queues(redis_client)
    send_email.apply_async(
        kwargs={"to": "ann@example.com", "subject": "Hi", "text": "x"},
        headers={"x-request-id": "req-7"},
        soft_time_limit=1,
        time_limit=2,
    )
    (raw,) = redis_client.lrange(queue_key("default"), 0, -1)
    headers = json.loads(raw)["headers"]
    assert headers["x-request-id"] == "req-7"
    assert headers["timelimit"] == [None, None]  # the worker's PROCESS_TIMEOUT governs
    purge_queues(redis_client)

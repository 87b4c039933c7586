"""``email-worker check``: every dependency is checked without sending, and a broken one named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TEST_ENV
from tests.fakes.sendgrid_api import FakeSendGrid
from tests.support.commands import email_worker
from tests.support.ports import free_port
from tests.support.smtp_server import SmtpServer


def checked(**env: str) -> tuple[int, dict[str, dict[str, str]]]:
    """Run ``email-worker check --json``; return its exit status and results by name."""
    done = email_worker("check", "--json", check=False, env=env)
    return done.returncode, {result["name"]: result for result in json.loads(done.stdout)}


def test_all_ok_against_the_test_services(smtp: SmtpServer, test_database: str) -> None:
    done = email_worker("check")
    names = [line.split()[1] for line in done.stdout.splitlines()]
    assert names == [
        *("settings", "broker", "primary", "replica", "migrations", "sealing", "smtp", "templates"),
        "delivery",
    ]
    assert all(line.split()[0] in ("ok", "warn") for line in done.stdout.splitlines())
    assert smtp.received == []  # nothing was sent


def test_an_outbox_provider_is_a_warning_naming_the_setting(
    tmp_path: Path, test_database: str
) -> None:
    status, results = checked(EMAIL_PROVIDER="outbox", OUTBOX_DIR=str(tmp_path))
    assert status == 0 and results["outbox"]["status"] == "ok"
    assert results["delivery"]["status"] == "warn"
    assert results["delivery"]["detail"].startswith("EMAIL_PROVIDER names outbox: ")
    assert "not delivered" in results["delivery"]["detail"]


def test_without_email_provider_the_settings_check_fails_naming_it(test_database: str) -> None:
    status, results = checked(EMAIL_PROVIDER="")
    assert status == 1 and results["settings"]["status"] == "FAIL"
    assert "EMAIL_PROVIDER is required" in results["settings"]["detail"]


def test_a_sendgrid_key_is_checked_by_its_scopes_and_a_wrong_one_fails(test_database: str) -> None:
    with FakeSendGrid(api_key="SG.right-key") as api:
        api.reply(401, body={"errors": [{"message": "bad key"}]})  # as SendGrid answers
        status, results = checked(
            EMAIL_PROVIDER="sendgrid", SENDGRID_API_KEY="SG.wrong-key", SENDGRID_API_URL=api.url
        )
        assert [(r.method, r.path) for r in api.requests] == [("GET", "/v3/scopes")]
    assert status == 1 and results["sendgrid"]["status"] == "FAIL"
    assert "401" in results["sendgrid"]["detail"] and "SG.wrong-key" not in json.dumps(results)


@pytest.mark.parametrize(
    ("failing", "env"),
    [
        ("broker", {"BROKER_URL": f"redis://:broker-secret@127.0.0.1:{free_port()}/0"}),
        (
            "primary",
            {"DATABASE_URL": f"postgresql+psycopg://postgres:db-secret@127.0.0.1:{free_port()}/x"},
        ),
        ("smtp", {"SMTP_PORT": str(free_port())}),
        (
            "ses",
            {
                "EMAIL_PROVIDER": "ses",
                "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
                "AWS_SECRET_ACCESS_KEY": "ses-secret",
                "AWS_ENDPOINT_URL_SESV2": f"http://127.0.0.1:{free_port()}",
                "SES_TIMEOUT": "1",
            },
        ),
    ],
)
def test_an_unreachable_dependency_fails_the_check_by_name(
    failing: str, env: dict[str, str], smtp: SmtpServer, test_database: str
) -> None:
    status, results = checked(**env)
    assert status == 1
    assert [name for name, r in results.items() if r["status"] == "FAIL"][:1] == [failing]
    assert "secret" not in json.dumps(results)


def test_a_template_with_a_syntax_error_fails_the_templates_check(
    tmp_path: Path, smtp: SmtpServer, test_database: str
) -> None:
    (tmp_path / "welcome_email").mkdir()
    (tmp_path / "welcome_email" / "subject.txt").write_text("Welcome {{ user_name ")
    status, results = checked(TEMPLATES_DIR=str(tmp_path))
    assert status == 1 and results["templates"]["status"] == "FAIL"
    assert "welcome_email" in results["templates"]["detail"]


def test_a_database_not_migrated_fails_the_migrations_check(smtp: SmtpServer) -> None:
    import sqlalchemy as sa

    from tests.support.pg import admin_url, drop_database

    name = f"{TEST_ENV['DATABASE_URL'].rsplit('/', 1)[1]}_empty"
    admin = sa.create_engine(admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    try:
        url = TEST_ENV["DATABASE_URL"].rsplit("/", 1)[0] + f"/{name}"
        status, results = checked(DATABASE_URL=url, DATABASE_REPLICA_URL="")
    finally:
        drop_database(name)
    assert status == 1 and results["migrations"]["status"] == "FAIL"
    assert "email-worker migrate" in results["migrations"]["detail"]


def test_with_several_hosts_each_role_names_the_host_it_reached(
    smtp: SmtpServer, test_database: str
) -> None:
    # The standby is listed first for the primary and last for the replica: libpq skips
    # it for writes and prefers it for reads.
    primary, replica = "127.0.0.1:5432", "127.0.0.1:5433"
    status, results = checked(
        DATABASE_URL=f"postgresql://postgres:db-secret@{replica},{primary}/{test_database}",
        DATABASE_REPLICA_URL=f"postgresql://postgres:db-secret@{primary},{replica}/{test_database}",
    )
    assert status == 0, results
    assert results["primary"]["detail"].startswith(f"{primary} (of {replica}, {primary})")
    assert results["replica"]["detail"].startswith(f"{replica} (of {primary}, {replica})")
    assert results["replica"]["status"] == "ok"  # a standby, in recovery
    assert "db-secret" not in json.dumps(results)

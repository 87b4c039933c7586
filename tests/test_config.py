"""Settings come from the environment, then config.yaml, then defaults; bad values say which."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from email_worker.config import Secret, SettingsError, load_settings, parse_duration

ROOT = Path(__file__).resolve().parents[1]

ORIGINAL_YAML = """
queue:
  redis: {host: redis.internal, port: 6380, password: "s3cr3t-yaml", db: 2}
  queue_name: mail
database:
  master_host: db-primary
  conn_max_lifetime: 5m
email:
  default_provider: smtp
  providers:
    smtp: {host: smtp.example.net, port: 2525, username: u, password: "smtp-pass", use_tls: true}
worker: {worker_count: 8, max_retries: 4, retry_delay: 5s, cleanup_interval: 1h}
server: {port: 9090}
logging: {level: debug, format: json}
"""


def test_defaults_match_the_documented_table() -> None:
    settings = load_settings(environ={})
    assert (settings.redis_host, settings.redis_port, settings.redis_db) == ("localhost", 6379, 0)
    assert settings.queue_name == "email-jobs"
    assert settings.queues == {
        "high": "email-jobs.high",
        "default": "email-jobs.default",
        "low": "email-jobs.low",
    }
    assert (settings.worker_count, settings.max_retries, settings.log_level) == (5, 3, "info")
    assert settings.db_master_name == "booking_system" and settings.db_slave_port == 5433
    assert settings.db_conn_max_lifetime == 300.0
    assert settings.email_provider == "outbox"
    assert (settings.visibility_timeout, settings.schedule_threshold) == (90.0, 30.0)
    assert settings.broker_timeout == 5.0


def test_environment_wins_over_yaml_which_wins_over_defaults(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(ORIGINAL_YAML)
    settings = load_settings(environ={"REDIS_PORT": "7000", "CONFIG_FILE": str(config)})
    assert settings.redis_port == 7000  # environment
    assert settings.redis_host == "redis.internal"  # yaml
    assert settings.queue_name == "mail"
    assert settings.smtp_port == 2525 and settings.email_provider == "smtp"
    assert settings.worker_count == 8 and settings.retry_delay == 5.0
    assert settings.cleanup_interval == 3600.0 and settings.server_port == 9090
    assert settings.redis_db == 2 and settings.db_master_host == "db-primary"


def test_a_wrong_value_names_the_setting() -> None:
    with pytest.raises(SettingsError, match="REDIS_PORT: expected a whole number, got 'abc'"):
        load_settings(environ={"REDIS_PORT": "abc"})
    with pytest.raises(SettingsError, match="WORKER_COUNT: must be at least 1"):
        load_settings(environ={"WORKER_COUNT": "0"})
    with pytest.raises(SettingsError, match="LOG_LEVEL: must be one of"):
        load_settings(environ={"LOG_LEVEL": "loud"})
    with pytest.raises(SettingsError, match="DB_CONN_MAX_LIFETIME: expected a duration"):
        load_settings(environ={"DB_CONN_MAX_LIFETIME": "five minutes"})


def test_a_wrong_yaml_value_names_the_file_and_path(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("worker:\n  worker_count: many\n")
    with pytest.raises(SettingsError, match=r"config.yaml worker.worker_count: expected a whole"):
        load_settings(environ={"CONFIG_FILE": str(config)})


def test_missing_config_file_is_an_error() -> None:
    with pytest.raises(SettingsError, match="CONFIG_FILE: no such file"):
        load_settings(environ={"CONFIG_FILE": "/nonexistent/config.yaml"})


def test_smtp_provider_needs_a_host_in_a_worker_only() -> None:
    settings = load_settings(environ={"EMAIL_PROVIDER": "smtp"})  # enough for a producer
    with pytest.raises(SettingsError, match="SMTP_HOST is required when EMAIL_PROVIDER is smtp"):
        settings.check_worker()
    load_settings(
        environ={"EMAIL_PROVIDER": "smtp", "SMTP_HOST": "smtp.example.net"}
    ).check_worker()


def test_the_config_yaml_of_the_working_directory_is_read_only_once_claimed(
    tmp_path: Path,
) -> None:
    (tmp_path / "config.yaml").write_text("queue: {queue_name: from-yaml}\n")
    code = (
        "from email_worker.config import get_settings, use_local_config_file\n"
        "print(get_settings().queue_name)\n"
        "use_local_config_file()\n"
        "print(get_settings().queue_name)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "QUEUE_NAME": "", "PYTHONPATH": str(ROOT)},
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["email-jobs", "from-yaml"]


def test_secrets_never_show_in_repr_or_errors(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(ORIGINAL_YAML)
    settings = load_settings(environ={"CONFIG_FILE": str(config), "SENDGRID_API_KEY": "SG.key"})
    shown = repr(settings) + str(settings)
    for secret in ("s3cr3t-yaml", "smtp-pass", "SG.key"):
        assert secret not in shown
    assert settings.smtp_password.reveal() == "smtp-pass"
    assert repr(Secret("x")) == "Secret('**********')"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30", 30.0), ("1.5s", 1.5), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25), (12, 12.0)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        (
            {"SCHEDULE_THRESHOLD": "36s"},
            r"SCHEDULE_THRESHOLD \+ PROCESS_TIMEOUT \+ 25s must be at most "
            r"BROKER_VISIBILITY_TIMEOUT \(36s \+ 30s \+ 25s = 91s > 90s\)",
        ),
        (
            {"PROCESS_TIMEOUT": "1m", "BROKER_VISIBILITY_TIMEOUT": "100s"},
            r"\(30s \+ 60s \+ 25s = 115s > 100s\)",
        ),
        ({"BROKER_VISIBILITY_TIMEOUT": "59"}, "BROKER_VISIBILITY_TIMEOUT: must be at least 60"),
        ({"BROKER_TIMEOUT": "0"}, "BROKER_TIMEOUT: must be at least 0.1"),
        ({"EMAIL_FROM": "not-an-address"}, "EMAIL_FROM: not a valid email address"),
        ({"QUEUE_NAME": " "}, "QUEUE_NAME cannot be empty"),
        ({"DB_MASTER_PORT": "-1"}, "DB_MASTER_PORT: must be at least 1"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL: not a database URL"),
    ],
)
def test_values_that_would_misbehave_later_are_refused_at_start_up(
    environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        load_settings(environ=environ)


def test_delays_that_fit_in_the_visibility_timeout_are_accepted() -> None:
    settings = load_settings(
        environ={"SCHEDULE_THRESHOLD": "35s", "RETRY_BACKOFF_MAX": "1h"}  # 35 + 30 + 25 = 90
    )
    assert (settings.schedule_threshold, settings.retry_backoff_max) == (35.0, 3600.0)
    longer = load_settings(environ={"SCHEDULE_THRESHOLD": "10m", "BROKER_VISIBILITY_TIMEOUT": "1h"})
    assert longer.schedule_threshold == 600.0


def test_a_yaml_error_names_the_place_but_never_quotes_the_line(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text('queue:\n  redis:\n    password: "hunter2-SECRET\n')
    with pytest.raises(SettingsError, match=r"not valid YAML at line \d+") as caught:
        load_settings(environ={"CONFIG_FILE": str(config)})
    assert "hunter2" not in str(caught.value)


def test_a_redis_password_with_url_characters_reaches_the_broker_intact() -> None:
    from kombu.utils.url import url_to_parts

    code = "import email_worker.celery_settings as s; print(s.broker_url)"
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "REDIS_PASSWORD": "s3cr%41t/x@y"},
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert url_to_parts(done.stdout.strip()).password == "s3cr%41t/x@y"

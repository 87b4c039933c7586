"""Settings come from the environment, then config.yaml, then defaults; bad values say which."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

from email_worker.config import Secret, Settings, SettingsError, load_settings, parse_duration
from email_worker.db.models import EmailJob
from email_worker.db.session import primary_session
from tests.conftest import purge_queues, queue_length
from tests.support.commands import email_worker
from tests.support.paths import ROOT
from tests.support.processes import running_worker
from tests.support.waiting import wait_for_log

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
    assert settings.email_provider == ""  # a worker refuses to start without one
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


@pytest.mark.parametrize(
    ("environ", "name", "message"),
    [
        ({"REDIS_PORT": "abc"}, "redis_port", "REDIS_PORT: expected a whole number, got 'abc'"),
        ({"WORKER_COUNT": "0"}, "worker_count", "WORKER_COUNT: must be at least 1"),
        ({"LOG_LEVEL": "loud"}, "log_level", "LOG_LEVEL: must be one of"),
        (
            {"DB_CONN_MAX_LIFETIME": "five minutes"},
            "db_conn_max_lifetime",
            "DB_CONN_MAX_LIFETIME: expected a duration",
        ),
    ],
)
def test_a_wrong_value_names_the_setting_when_read(
    environ: dict[str, str], name: str, message: str
) -> None:
    settings = load_settings(environ=environ)
    with pytest.raises(SettingsError, match=message):
        getattr(settings, name)
    with pytest.raises(SettingsError, match=message):
        settings.validate()


def test_a_wrong_yaml_value_names_the_file_and_path(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("worker:\n  worker_count: many\n")
    settings = load_settings(environ={"CONFIG_FILE": str(config)})
    with pytest.raises(SettingsError, match=r"config.yaml worker.worker_count: expected a whole"):
        _ = settings.worker_count


def test_a_missing_config_file_refuses_what_it_would_have_given() -> None:
    settings = load_settings(
        environ={"CONFIG_FILE": "/nonexistent/config.yaml", "QUEUE_NAME": "from-env"}
    )
    assert settings.queue_name == "from-env"
    with pytest.raises(SettingsError, match="CONFIG_FILE: no such file"):
        _ = settings.redis_host
    with pytest.raises(SettingsError, match="CONFIG_FILE: no such file"):
        settings.validate()


# What live mode needs to store personal data (tests/conftest.py sets the same).
KEYS = {name: os.environ[name] for name in ("ENCRYPTION_KEYS", "ENCRYPTION_LOOKUP_KEY")}


def test_live_mode_needs_both_keys_and_the_other_modes_say_they_use_published_ones() -> None:
    for missing in ("ENCRYPTION_KEYS", "ENCRYPTION_LOOKUP_KEY"):
        given = {name: value for name, value in KEYS.items() if name != missing}
        with pytest.raises(SettingsError, match="^ENCRYPTION_KEYS and ENCRYPTION_LOOKUP_KEY are"):
            load_settings(environ=given).validate()
    quick = load_settings(environ={"DELIVERY_MODE": "outbox"})
    quick.validate()
    assert "ENCRYPTION_KEYS" in (quick.development_keys_warning() or "")
    assert load_settings(environ=KEYS).development_keys_warning() is None


def test_a_wrong_key_is_refused_without_showing_it() -> None:
    for value, reason in (
        ("not base64!", "key 1 is not base64"),
        (f"{KEYS['ENCRYPTION_KEYS']},c2hvcnQ=", "key 2 is 5 bytes, not 32"),
    ):
        with pytest.raises(SettingsError, match=f"^ENCRYPTION_KEYS: {reason}") as refused:
            load_settings(environ={**KEYS, "ENCRYPTION_KEYS": value}).validate()
        assert value not in str(refused.value)
    with pytest.raises(SettingsError, match="^ENCRYPTION_LOOKUP_KEY: must be at least 32"):
        load_settings(environ={**KEYS, "ENCRYPTION_LOOKUP_KEY": "short"}).validate()


def test_smtp_provider_needs_a_host_in_a_worker_only() -> None:
    settings = load_settings(environ={**KEYS, "EMAIL_PROVIDER": "smtp"})  # enough for a producer
    with pytest.raises(SettingsError, match="SMTP_HOST is required when EMAIL_PROVIDER is smtp"):
        settings.check_worker()
    load_settings(
        environ={**KEYS, "EMAIL_PROVIDER": "smtp", "SMTP_HOST": "smtp.example.net"}
    ).check_worker()


def test_a_worker_needs_email_provider_and_a_producer_does_not() -> None:
    settings = load_settings(environ=KEYS)
    settings.validate()  # a producer, beat or web process: none of them sends
    with pytest.raises(SettingsError, match="^EMAIL_PROVIDER is required for a worker: smtp"):
        settings.check_worker()
    assert settings.provider_chain(None) == ()
    assert settings.non_delivering_warning() is None


def test_providers_that_keep_emails_on_the_host_are_named_with_their_setting() -> None:
    settings = load_settings(
        environ={"EMAIL_PROVIDER": "smtp", "EMAIL_KIND_PROVIDERS": "welcome_email=console"}
    )
    assert "EMAIL_KIND_PROVIDERS names console" in (settings.non_delivering_warning() or "")
    warning = load_settings(environ={"EMAIL_PROVIDER": "outbox"}).non_delivering_warning()
    assert warning and warning.startswith("EMAIL_PROVIDER names outbox: ")


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
        ({"QUEUE_NAME": " "}, "QUEUE_NAME: cannot be empty"),
        ({"DB_MASTER_PORT": "-1"}, "DB_MASTER_PORT: must be at least 1"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL: not a database URL"),
    ],
)
def test_values_that_would_misbehave_later_are_refused_at_start_up(
    environ: dict[str, str], message: str
) -> None:
    settings = load_settings(environ=environ)  # a producer reads only what it uses
    with pytest.raises(SettingsError, match=message):
        settings.validate()
    with pytest.raises(SettingsError, match=message):
        settings.check_worker()


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
        load_settings(environ={"CONFIG_FILE": str(config)}).validate()
    assert "hunter2" not in str(caught.value)


def test_a_redis_password_with_url_characters_reaches_the_broker_intact() -> None:
    from kombu.utils.url import url_to_parts

    code = "import email_worker.celeryapp.settings as s; print(s.broker_url)"
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


# A host service's environment: what Kubernetes and the host itself put there.
HOST_ENVIRONMENT = {
    "REDIS_PORT": "tcp://127.0.0.1:6379",
    "LOG_LEVEL": "TRACE",
    "LOG_FORMAT": "logfmt",
    "SERVER_PORT": "http",
    "WORKER_COUNT": "auto",
    "DB_PORT": "tcp://10.0.0.5:5432",
}


@pytest.mark.parametrize(
    ("variable", "name"),
    [
        ("REDIS_PORT", "redis_port"),
        ("DB_MASTER_PORT", "db_master_port"),
        ("DB_SLAVE_PORT", "db_slave_port"),
        ("DB_PORT", "db_port"),
        ("SMTP_PORT", "smtp_port"),
        ("WEB_PORT", "web_port"),
        ("SERVER_PORT", "server_port"),
    ],
)
def test_a_port_takes_a_service_link(variable: str, name: str) -> None:
    assert getattr(load_settings(environ={variable: "tcp://10.1.2.3:6380"}), name) == 6380
    assert getattr(load_settings(environ={variable: "udp://[fd00::1]:5353"}), name) == 5353
    assert getattr(load_settings(environ={variable: " 2525 "}), name) == 2525


def test_a_port_in_config_yaml_takes_a_service_link_too(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("queue: {redis: {port: 'tcp://redis.internal:6390'}}\n")
    assert load_settings(environ={"CONFIG_FILE": str(config)}).redis_port == 6390


@pytest.mark.parametrize("value", ["http", "tcp://10.1.2.3", "tcp://10.1.2.3:http", "10.1.2.3:80"])
def test_a_port_that_is_neither_a_number_nor_a_link_names_its_variable(value: str) -> None:
    settings = load_settings(environ={"SERVER_PORT": value})
    with pytest.raises(SettingsError, match=f"SERVER_PORT: expected a whole number, got '{value}'"):
        _ = settings.server_port


def test_the_prefixed_variable_wins_over_the_plain_one() -> None:
    settings = load_settings(
        environ={
            **HOST_ENVIRONMENT,
            "EMAIL_WORKER_LOG_LEVEL": "debug",
            "EMAIL_WORKER_WORKER_COUNT": "8",
            "QUEUE_NAME": "plain-name-still-read",
        }
    )
    assert (settings.log_level, settings.worker_count) == ("debug", 8)
    assert settings.queue_name == "plain-name-still-read"
    assert settings.redis_port == 6379


def test_a_prefixed_variable_present_but_empty_hides_the_plain_one(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("logging: {level: warning}\n")
    settings = load_settings(
        environ={
            "EMAIL_WORKER_LOG_LEVEL": "",
            "LOG_LEVEL": "TRACE",
            "EMAIL_WORKER_CONFIG_FILE": str(config),
            "CONFIG_FILE": "/the/host/service/config.ini",
        }
    )
    assert settings.log_level == "warning"  # from our config.yaml; the host's value unread
    no_file = load_settings(
        environ={
            **KEYS,
            "EMAIL_WORKER_CONFIG_FILE": "",
            "CONFIG_FILE": "/the/host/service/config.ini",
        }
    )
    no_file.validate()
    assert no_file.log_level == "info"


def test_an_error_names_the_variable_actually_read() -> None:
    settings = load_settings(
        environ={
            "EMAIL_WORKER_WORKER_COUNT": "lots",
            "WORKER_COUNT": "4",
            "EMAIL_WORKER_ALLOWED_RECIPIENTS": "qa@example.com, nobody",
        }
    )
    with pytest.raises(SettingsError, match="^EMAIL_WORKER_WORKER_COUNT: expected a whole number"):
        _ = settings.worker_count
    with pytest.raises(SettingsError, match="^EMAIL_WORKER_ALLOWED_RECIPIENTS: entry 2 is neither"):
        _ = settings.allowed_recipients
    missing = load_settings(environ={"EMAIL_WORKER_CONFIG_FILE": "/nonexistent.yaml"})
    with pytest.raises(SettingsError, match="^EMAIL_WORKER_CONFIG_FILE: no such file"):
        missing.validate()


def test_a_wrong_value_fails_only_when_read_and_every_time() -> None:
    settings = load_settings(environ=HOST_ENVIRONMENT)
    # What a producer reads is there.
    assert (settings.redis_port, settings.queue_name, settings.db_port) == (
        6379,
        "email-jobs",
        5432,
    )
    for _ in range(2):
        with pytest.raises(SettingsError, match="LOG_LEVEL: must be one of .*got 'TRACE'"):
            _ = settings.log_level
    with pytest.raises(SettingsError, match="LOG_FORMAT: must be one of json, text, got 'logfmt'"):
        _ = settings.log_format
    with pytest.raises(SettingsError, match="WORKER_COUNT: expected a whole number, got 'auto'"):
        _ = settings.worker_count
    assert set(settings.refused) == {"log_level", "log_format", "server_port", "worker_count"}
    assert "log_level=<refused>" in repr(settings)


def test_this_services_own_processes_still_refuse_every_wrong_value() -> None:
    environ = {**HOST_ENVIRONMENT, **KEYS, "EMAIL_PROVIDER": "outbox"}
    # Each wrong value in turn, in the order of the settings reference, until none is left.
    for variable, message, fixed in [
        ("WORKER_COUNT", "expected a whole number, got 'auto'", "4"),
        ("SERVER_PORT", "expected a whole number, got 'http'", "tcp://10.0.0.9:8080"),
        ("LOG_LEVEL", "must be one of debug, info, warning, error, critical", "info"),
        ("LOG_FORMAT", "must be one of json, text, got 'logfmt'", ""),
    ]:
        with pytest.raises(SettingsError, match=f"^{variable}: {message}"):
            load_settings(environ=environ).check_worker()
        environ[f"EMAIL_WORKER_{variable}"] = fixed
    settings = load_settings(environ=environ)
    settings.check_worker()
    assert (settings.worker_count, settings.server_port, settings.log_format) == (4, 8080, "json")


def test_celery_configuration_loads_with_the_defaults_of_worker_only_values() -> None:
    code = (
        "import email_worker.celeryapp.settings as s\n"
        "print(s.worker_concurrency, s.task_soft_time_limit, s.broker_url)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **HOST_ENVIRONMENT, "WORKER_COUNT": "auto", "PROCESS_TIMEOUT": "soon"},
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["5", "30.0", "redis://127.0.0.1:6379/0"]


def test_settings_built_in_code_check_each_value_at_once() -> None:
    with pytest.raises(SettingsError, match="QUEUE_NAME: cannot be empty"):
        Settings(queue_name=" ")
    with pytest.raises(SettingsError, match="EMAIL_PROVIDER_FALLBACKS: unknown provider 'mailgun'"):
        Settings(email_provider_fallbacks=("mailgun",))


def test_reading_a_setting_is_a_plain_attribute_read() -> None:
    settings = load_settings(environ=HOST_ENVIRONMENT)
    # Valid values live on the instance and nothing on the class stands in front of them.
    assert vars(settings)["queue_name"] == "email-jobs"
    assert not hasattr(type(settings).__dict__.get("queue_name"), "__get__")
    assert type(load_settings(environ={})) is Settings


def test_a_producer_in_a_host_environment_imports_the_tasks_and_sends(
    redis_client: redis.Redis,
) -> None:
    purge_queues(redis_client)
    code = (
        "from email_worker.tasks import send_email\n"
        "email = {'to': 'ann@example.com', 'subject': 'Hello', 'text': 'Hi Ann'}\n"
        "print(send_email.apply_async(kwargs=email).id)\n"
        "print(send_email.apply_async(kwargs={**email, 'tracked': True}).id)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, **HOST_ENVIRONMENT},
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    fast, tracked = done.stdout.split()
    assert queue_length(redis_client, "default") == 2
    with primary_session() as session:
        job = session.get(EmailJob, uuid.UUID(tracked))
        assert job is not None and job.recipient_email == "ann@example.com"
    assert fast != tracked
    purge_queues(redis_client)


def test_a_worker_refuses_a_wrong_log_level_in_one_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "email_worker", "worker", "--without-mingle"],
        capture_output=True,
        text=True,
        env={**os.environ, "LOG_LEVEL": "TRACE"},
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode != 0
    assert (done.stdout + done.stderr).strip().splitlines() == [
        "email-worker: configuration error: LOG_LEVEL: must be one of debug, info, warning, "
        "error, critical, got 'TRACE'"
    ]


def test_a_worker_whose_prefixed_log_level_is_right_starts(tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    env = {"EMAIL_WORKER_LOG_LEVEL": "info", "LOG_LEVEL": "TRACE", "REDIS_PORT": "tcp://x:6379"}
    with running_worker(log, **env):
        wait_for_log(log, " ready.")


def test_the_web_app_and_check_refuse_a_wrong_value_at_start() -> None:
    web = email_worker("web", "--port", "0", check=False, env={"WORKER_COUNT": "auto"})
    assert web.returncode == 2
    assert web.stderr.strip().splitlines() == [
        "email-worker: configuration error: WORKER_COUNT: expected a whole number, got 'auto'"
    ]
    checked = email_worker("check", check=False, env={"EMAIL_WORKER_LOG_FORMAT": "logfmt"})
    assert checked.returncode == 1
    assert checked.stdout.startswith(
        "FAIL settings   EMAIL_WORKER_LOG_FORMAT: must be one of json, text, got 'logfmt'"
    )


def test_the_settings_import_nothing_of_the_package_above_them() -> None:
    below = {"email_worker.config", "email_worker.addresses"}
    imported = set()
    for source in (ROOT / "email_worker" / "config").glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    above = {
        name
        for name in imported
        if name.startswith("email_worker") and not name.startswith(tuple(below))
    }
    assert above == set()


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("sentinel://:s3cr3t@h1:26379;redis://h2:6379", "Sentinel 2 of the URL must start with"),
        ("sentinel://:s3cr3t@h1:port/0", "Sentinel 1: the port must be a number from 1 to 65535"),
        ("sentinel://:s3cr3t@h1:26379;;sentinel://h2", "Sentinel 2 of the URL is empty"),
        ("sentinel://:s3cr3t@h1/0;sentinel://h2/1", "the Sentinels name different databases"),
        ("sentinel://:s3cr3t@h1/zero", "Sentinel 1: the database must be a number"),
        ("sentinel://:s3cr3t@:26379", "Sentinel 1: no host"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_naming_the_problem_not_the_password(
    url: str, error: str
) -> None:
    settings = load_settings(environ={"BROKER_URL": url})
    with pytest.raises(SettingsError) as raised:
        _ = settings.broker_url
    assert str(raised.value).startswith(f"BROKER_URL: {error}")
    assert "s3cr3t" not in str(raised.value)


def test_sentinels_in_any_form_give_one_url_with_the_master_credentials_on_each() -> None:
    from email_worker.redis_client import redis_url

    written = "sentinel://:p%40ss@10.0.0.1;sentinel://10.0.0.2:26380/2"
    settings = load_settings(environ={"BROKER_URL": written})
    assert redis_url(settings) == (
        "sentinel://:p%40ss@10.0.0.1:26379/2;sentinel://:p%40ss@10.0.0.2:26380/2"
    )
    listed = load_settings(
        environ={"REDIS_SENTINELS": "10.0.0.1, 10.0.0.2:26380", "REDIS_PASSWORD": "p@ss"}
    )
    assert redis_url(listed) == redis_url(settings).replace("/2", "/0")
    with pytest.raises(SettingsError, match="REDIS_SENTINELS: Sentinel 'h:x'"):
        _ = load_settings(environ={"REDIS_SENTINELS": "h:x"}).redis_sentinels

"""The deploy files: they parse, follow their schemas, and name only real settings and commands."""

from __future__ import annotations

import argparse
import dataclasses
import importlib.resources
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import jsonschema
import kubernetes_validate
import promql_parser
import pytest
import yaml

from email_worker.config import HARD_LIMIT_MARGIN, Settings, load_settings
from tests.support.paths import ROOT

DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
DEFAULTS = Settings()
WORKER_PORT = DEFAULTS.server_port
BEAT_PORT = DEFAULTS.server_port + 1
FLOWER_PORT = 5555
HARD_TIME_LIMIT = DEFAULTS.process_timeout + HARD_LIMIT_MARGIN
SETTING_NAMES = {f.metadata["env"] for f in dataclasses.fields(Settings) if f.metadata["env"]}
# Read by the processes in the image without being email-worker settings: Python's own.
PROCESS_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}
# Only for compose.yaml's own ${...} interpolation (the other services' passwords).
COMPOSE_ONLY = {"DB_REPLICATION_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
APP_IMAGE = "email-worker"

# The metric names agreed for the project; checked against the metrics module once it exists.
PROJECT_METRICS = {
    "email_jobs_processed_total",
    "email_jobs_queued_total",
    "email_jobs_tracked_total",
    "email_job_processing_duration_seconds",
    "email_provider_requests_total",
    "email_provider_errors_total",
    "email_job_retries_total",
    "email_replica_fallbacks_total",
    "queue_size",
    "email_jobs_stranded_total",
    "email_jobs_reaped_total",
    "email_jobs_oldest_due_age_seconds",
    "email_worker_up",
    "email_beat_last_run_timestamp_seconds",
}
PROMETHEUS_OWN = {"up"}
# redis_exporter's, for the alerts on Redis's memory (compose.yaml runs it).
REDIS_EXPORTER = {"redis_memory_used_bytes", "redis_memory_max_bytes"}


def _yaml_documents(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load((DEPLOY / "compose.yaml").read_text()))


def _app_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in _compose()["services"].items()
        if service.get("image", "").split(":")[0] == APP_IMAGE
    }


def _manifests() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in _yaml_documents(path):
            if "apiVersion" in doc and "kustomize" not in doc["apiVersion"]:
                yield path, doc


def _containers(kind: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    for _, doc in _manifests():
        if doc["kind"] not in ("Deployment", "Job") or (kind and doc["kind"] != kind):
            continue
        pod = doc["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield doc["metadata"]["name"], container


def _deployment(name: str) -> dict[str, Any]:
    found = [doc for _, doc in _manifests() if doc["metadata"]["name"] == name]
    return next(doc for doc in found if doc["kind"] == "Deployment")


def _command_lines(command: list[str] | str) -> list[list[str]]:
    """The command lines a container runs, with `sh -c "a && exec b"` split into a and b."""
    words = shlex.split(command) if isinstance(command, str) else list(command)
    if words[:2] == ["sh", "-c"]:
        words = shlex.split(words[2])
    lines: list[list[str]] = [[]]
    for word in words:
        if word == "&&":
            lines.append([])
        elif not (word == "exec" and not lines[-1]):
            lines[-1].append(word)
    return lines


def _compose_command_lines(service: dict[str, Any]) -> list[list[str]]:
    """What the container's shell sees: compose turns ``$$`` into ``$``."""
    command = service["command"]
    unescaped = (
        command.replace("$$", "$")
        if isinstance(command, str)
        else [word.replace("$$", "$") for word in command]
    )
    return _command_lines(unescaped)


def _all_command_lines() -> list[list[str]]:
    lines = [
        line for service in _app_services().values() for line in _compose_command_lines(service)
    ]
    lines += [
        line
        for _, container in _containers()
        if container["image"].split(":")[0] == APP_IMAGE
        for line in _command_lines(container["command"])
    ]
    return lines


def test_every_yaml_and_json_file_parses() -> None:
    yaml_files = sorted(DEPLOY.rglob("*.y*ml"))
    json_files = sorted(DEPLOY.rglob("*.json"))
    assert len(yaml_files) >= 15 and json_files
    for path in yaml_files:
        assert _yaml_documents(path), path
    for path in json_files:
        assert isinstance(json.loads(path.read_text()), dict), path


def test_compose_file_follows_the_compose_spec() -> None:
    vendored = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads((vendored / "compose-spec.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_compose())]
    assert errors == []


def test_compose_services_are_wired_together() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        assert "image" in service or "build" in service, name
        for target in service.get("depends_on", {}):
            assert target in services, f"{name} depends on unknown {target}"
        check = service.get("healthcheck")
        if check and not check.get("disable"):
            assert check["test"][0] in ("CMD", "CMD-SHELL"), name
    for name in ("worker", "worker-high", "beat"):
        wait = services[name]["depends_on"]
        assert wait["migrate"]["condition"] == "service_completed_successfully"
        assert _compose_command_lines(services[name])[0] == ["email-worker", "check"]
    assert services["migrate"]["command"] == ["email-worker", "migrate"]
    assert "--appendonly yes" in " ".join(services["redis"]["command"])


def test_compose_workers_consume_the_queues_with_task_events_and_room_to_finish() -> None:
    services = _compose()["services"]
    high = _compose_command_lines(services["worker-high"])[-1]
    general = _compose_command_lines(services["worker"])[-1]
    assert high[high.index("-Q") + 1] == "${QUEUE_NAME:-email-jobs}.high"
    assert "-Q" not in general  # every queue the app declares
    for line in (high, general):
        assert line[:4] == ["celery", "-A", "email_worker", "worker"] and "-E" in line
    for name in ("worker", "worker-high"):
        grace = services[name]["stop_grace_period"]
        assert int(grace.removesuffix("s")) > HARD_TIME_LIMIT


def test_every_command_the_deploy_files_run_exists() -> None:
    import flower.options  # noqa: F401  (defines Flower's options)
    from celery.bin.base import CLIContext
    from celery.bin.beat import beat
    from celery.bin.worker import worker
    from tornado.options import options

    from email_worker import app
    from email_worker.cli import build_parser

    parser = build_parser()
    subcommands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    email_worker_commands = set(subcommands.choices)
    context = CLIContext(app=app, no_color=True, workdir=None, quiet=True)
    lines = _all_command_lines()
    assert len(lines) >= 10
    for line in lines:
        if line[0] == "email-worker":
            assert line[1] in email_worker_commands, line
            continue
        assert line[:3] == ["celery", "-A", "email_worker"], line
        command, arguments = line[3], line[4:]
        if command == "flower":
            for argument in arguments:
                assert argument.lstrip("-").split("=")[0].replace("-", "_") in options.as_dict()
            continue
        assert command in ("worker", "beat"), line
        celery_command = worker if command == "worker" else beat
        try:
            celery_command.make_context(command, list(arguments), obj=context)
        except click.UsageError as exc:
            pytest.fail(f"{' '.join(line)}: {exc}")


def test_deploy_files_set_only_real_settings() -> None:
    env_example = (DEPLOY / ".env.example").read_text()
    listed = set(re.findall(r"^(?:# )?([A-Z][A-Z0-9_]*)=", env_example, re.MULTILINE))
    assert listed - COMPOSE_ONLY == SETTING_NAMES  # every setting, and nothing else
    compose_text = (DEPLOY / "compose.yaml").read_text()
    for name in COMPOSE_ONLY:
        assert "${" + name in compose_text

    used: set[str] = set()
    for service in _app_services().values():
        used |= set(service.get("environment", {}))
    config_map = next(doc for _, doc in _manifests() if doc["kind"] == "ConfigMap")
    used |= set(config_map["data"])
    for _, container in _containers():
        if container["image"].split(":")[0] == APP_IMAGE:
            used |= {variable["name"] for variable in container.get("env", [])}
    final_stage = _dockerfile_lines()[_final_stage_start() :]
    for line in final_stage:
        if line.startswith("ENV "):
            used |= set(re.findall(r"([A-Z][A-Z0-9_]*)=", line))
    assert used - SETTING_NAMES - PROCESS_ENV == set()


def test_kubernetes_manifests_follow_the_kubernetes_schemas() -> None:
    version = kubernetes_validate.latest_version()
    documents = list(_manifests())
    assert {doc["kind"] for _, doc in documents} >= {
        "Deployment",
        "Service",
        "Secret",
        "ConfigMap",
        "Job",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
    }
    for path, doc in documents:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{path.name} {doc['kind']}: {exc.message}")
    listed = set(yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"])
    on_disk = {path.name for path in KUBERNETES.glob("*.yaml")}
    assert listed == on_disk - {"kustomization.yaml", "prometheus-adapter-rules.yaml"}


def test_kubernetes_workers_have_probes_resources_and_a_start_gate() -> None:
    for name, port in (
        ("email-worker", WORKER_PORT),
        ("email-worker-high", WORKER_PORT),
        ("email-worker-beat", BEAT_PORT),
    ):
        pod = _deployment(name)["spec"]["template"]["spec"]
        container = pod["containers"][0]
        live, ready = container["livenessProbe"], container["readinessProbe"]
        assert live["httpGet"] == ready["httpGet"] == {"path": "/health", "port": port}
        assert (live["initialDelaySeconds"], live["periodSeconds"]) == (30, 10)
        assert (ready["initialDelaySeconds"], ready["periodSeconds"]) == (5, 5)
        assert container["resources"] == {
            "requests": {"memory": "128Mi", "cpu": "100m"},
            "limits": {"memory": "512Mi", "cpu": "500m"},
        }
        assert [c["command"] for c in pod["initContainers"]] == [["email-worker", "check"]]
        assert pod["securityContext"]["runAsNonRoot"] is True
    for name in ("email-worker", "email-worker-high"):
        pod = _deployment(name)["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > HARD_TIME_LIMIT
    beat = _deployment("email-worker-beat")["spec"]
    assert beat["replicas"] == 1 and beat["strategy"] == {"type": "Recreate"}


def test_kubernetes_secrets_are_placeholders_that_the_pods_reference() -> None:
    secret = next(doc for _, doc in _manifests() if doc["kind"] == "Secret")
    values = secret["stringData"]
    assert all(value == "" or "change-me" in value for value in values.values())
    for name, container in _containers():
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                assert reference["name"] == secret["metadata"]["name"], name
                assert reference["key"] in values, f"{name}: {reference['key']}"


def test_autoscaler_metric_is_the_one_the_adapter_rule_serves() -> None:
    rules = yaml.safe_load((KUBERNETES / "prometheus-adapter-rules.yaml").read_text())
    rule = rules["rules"]["external"][0]
    assert _metric_names(rule["seriesQuery"]) == {"queue_size"}
    served = rule["name"]["as"]
    scalers = [doc for _, doc in _manifests() if doc["kind"] == "HorizontalPodAutoscaler"]
    assert {s["spec"]["scaleTargetRef"]["name"] for s in scalers} == {
        "email-worker",
        "email-worker-high",
    }
    for scaler in scalers:
        metric = scaler["spec"]["metrics"][0]["external"]["metric"]
        assert metric["name"] == served
        assert metric["selector"]["matchLabels"]["queue"] in DEFAULTS.queues.values()


def _metric_names(expression: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), visit)
    return names


def _defined_metrics() -> set[str]:
    """The agreed names, narrowed to those the metrics code defines once it exists."""
    sources = [
        path.read_text()
        for path in (ROOT / "email_worker" / "observability").glob("*.py")
        if "prometheus_client" in path.read_text()
    ]
    if not sources:
        return PROJECT_METRICS
    text = "\n".join(sources)
    return {
        name for name in PROJECT_METRICS if re.search(rf"\b{name.removesuffix('_total')}", text)
    }


def _base_name(name: str) -> str:
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and name.removesuffix(suffix) in PROJECT_METRICS:
            return name.removesuffix(suffix)
    return name


def test_alert_rules_parse_and_use_the_project_metrics() -> None:
    rules = [
        rule
        for group in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
        for rule in group["rules"]
    ]
    used: set[str] = set()
    for rule in rules:
        assert {"alert", "expr", "labels", "annotations"} <= set(rule), rule
        assert rule["labels"]["severity"] in ("warning", "critical")
        used |= {_base_name(name) for name in _metric_names(rule["expr"])}
    assert used - PROMETHEUS_OWN - REDIS_EXPORTER <= _defined_metrics()
    assert used >= REDIS_EXPORTER
    assert used >= {
        "queue_size",
        "email_jobs_oldest_due_age_seconds",
        "email_jobs_processed_total",
        "email_replica_fallbacks_total",
        "email_beat_last_run_timestamp_seconds",
        "up",
    }


def test_dashboard_shows_every_project_metric() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboard.json").read_text())
    used: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == "prometheus"
        for target in panel["targets"]:
            used |= {_base_name(name) for name in _metric_names(target["expr"])}
    assert used == _defined_metrics()
    datasources = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )
    assert datasources["datasources"][0]["uid"] == "prometheus"


def test_prometheus_scrapes_the_ports_the_processes_serve() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert jobs["email-worker"]["dns_sd_configs"][0]["port"] == WORKER_PORT
    assert set(jobs["email-worker"]["dns_sd_configs"][0]["names"]) == {"worker", "worker-high"}
    assert jobs["email-beat"]["static_configs"][0]["targets"] == [f"beat:{BEAT_PORT}"]
    assert jobs["celery-exporter"]["static_configs"][0]["targets"] == ["celery-exporter:9808"]
    assert jobs["redis"]["static_configs"][0]["targets"] == ["redis-exporter:9121"]
    assert "redis-exporter" in _compose()["services"]
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    beat_check = " ".join(_compose()["services"]["beat"]["healthcheck"]["test"])
    assert f"127.0.0.1:{BEAT_PORT}/health" in beat_check


def _dockerfile_lines() -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments left out."""
    text = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and line[0] != "#"]


def _final_stage_start() -> int:
    return max(i for i, line in enumerate(_dockerfile_lines()) if line.startswith("FROM "))


def test_dockerfile_runs_as_a_user_on_slim_python_with_a_healthcheck() -> None:
    lines = _dockerfile_lines()
    stages = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(stages) >= 2 and all(stage == "python:3.11-slim" for stage in stages)
    final = lines[_final_stage_start() :]
    users = [line.split()[1] for line in final if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    healthcheck = next(line for line in final if line.startswith("HEALTHCHECK "))
    assert f"http://127.0.0.1:${{SERVER_PORT:-{WORKER_PORT}}}/health" in healthcheck
    assert "urllib" in healthcheck and "curl" not in healthcheck
    assert "STOPSIGNAL SIGTERM" in final
    assert any("pip install" in line and "[server]" in line for line in lines)
    assert not re.search(r"(PASSWORD|SECRET|API_KEY|TOKEN)", " ".join(final))


def test_one_image_with_the_server_extra_serves_every_role_web_included() -> None:
    lines = _dockerfile_lines()
    (install,) = [line for line in lines if "pip install" in line]
    assert re.findall(r"\.whl\)\[([\w,]+)\]", install) == ["server"]  # the wheel, that extra only
    exposed = {
        int(port) for line in lines if line.startswith("EXPOSE ") for port in line.split()[1:]
    }
    assert exposed == {WORKER_PORT, BEAT_PORT, FLOWER_PORT, DEFAULTS.web_port}
    roles = {line[1] if line[0] == "email-worker" else line[3] for line in _all_command_lines()}
    assert roles == {"worker", "beat", "flower", "web", "migrate", "check"}
    web = _deployment("email-worker-web")["spec"]["template"]["spec"]["containers"][0]
    assert web["readinessProbe"]["httpGet"] == {"path": "/health", "port": DEFAULTS.web_port}
    web_check = " ".join(_compose()["services"]["web"]["healthcheck"]["test"])
    assert f"127.0.0.1:{DEFAULTS.web_port}/health" in web_check


def test_the_sentinel_overlay_follows_the_schemas_and_sets_real_settings() -> None:
    folder = KUBERNETES / "sentinel"
    version = kubernetes_validate.latest_version()
    overlay = yaml.safe_load((folder / "kustomization.yaml").read_text())
    assert overlay["resources"][0] == ".."
    for name in overlay["resources"][1:]:
        for doc in _yaml_documents(folder / name):
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                pytest.fail(f"{name} {doc['kind']}: {exc.message}")
    for patch in overlay["patches"]:
        doc = yaml.safe_load((folder / patch["path"]).read_text())
        assert doc["kind"] == "ConfigMap" and doc["metadata"]["name"] == "email-worker-config"
        assert set(doc["data"]) <= SETTING_NAMES
        settings = load_settings(environ=doc["data"])
        assert len(settings.redis_sentinels) == 3 and settings.redis_sentinel_master
    services = _compose()["services"]
    assert [n for n, s in services.items() if "sentinel" in s.get("profiles", [])] == [
        "redis-replica",
        "sentinel-1",
        "sentinel-2",
        "sentinel-3",
    ]

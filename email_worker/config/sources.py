"""Where settings come from: the environment, then ``config.yaml``, then the defaults.

Any variable may carry the prefix ``EMAIL_WORKER_`` (``EMAIL_WORKER_LOG_LEVEL``): when
the prefixed one is present, even empty, the plain one is not read, so a host service
keeps its own ``LOG_LEVEL``.  Nothing is refused while loading: a wrong value is kept
back with its reason, and reading it raises (see :mod:`email_worker.config.model`).

``./config.yaml`` is read only by this service's own processes (they call
:func:`~email_worker.config.use_local_config_file`): a producer that imports the package
runs in another service's folder, whose ``config.yaml`` is not ours.  ``CONFIG_FILE``
works everywhere.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from email_worker.config.fields import convert
from email_worker.config.model import Settings
from email_worker.config.values import SettingsError

ENV_PREFIX = "EMAIL_WORKER_"
"""The prefix any setting's variable may carry; the prefixed variable wins over the plain one."""

LOCAL_CONFIG_FILE = Path("config.yaml")
_local_config_file_read = False


def read_local_config_file() -> None:
    """Read ``./config.yaml`` (when present) in every load from now on."""
    global _local_config_file_read
    _local_config_file_read = True


def _yaml_value(document: Mapping[str, Any], path: str) -> Any:
    node: Any = document
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _environment_value(environ: Mapping[str, str], name: str) -> tuple[str, str]:
    """The value of ``EMAIL_WORKER_<name>`` if present (even empty), else of ``<name>``."""
    prefixed = ENV_PREFIX + name
    if prefixed in environ:
        return environ[prefixed], prefixed
    return environ.get(name, ""), name


def _config_file(environ: Mapping[str, str]) -> Path | None:
    explicit, variable = _environment_value(environ, "CONFIG_FILE")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise SettingsError(f"{variable}: no such file: {explicit}")
        return path
    if _local_config_file_read and LOCAL_CONFIG_FILE.is_file():
        return LOCAL_CONFIG_FILE
    return None


def _read_yaml(path: Path) -> Mapping[str, Any]:
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        # The parser's message quotes the offending line, which may hold a password.
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SettingsError(f"{path}: not valid YAML{where}") from None
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise SettingsError(f"{path}: expected a mapping at the top level")
    return document


def load_settings(
    environ: Mapping[str, str] | None = None, config_file: Path | None = None
) -> Settings:
    """Build the settings from the environment, then ``config.yaml``, then defaults.

    Nothing is refused here: a wrong value is kept back, and reading it raises.
    """
    environ = os.environ if environ is None else environ
    unreadable = None  # a config file that cannot be read refuses what it would have given
    try:
        path = config_file or _config_file(environ)
        document = _read_yaml(path) if path else {}
    except SettingsError as exc:
        path, document, unreadable = None, {}, str(exc)
    values: dict[str, Any] = {}
    refused: dict[str, str] = {}
    for spec in dataclasses.fields(Settings):
        meta = spec.metadata
        raw, source = _environment_value(environ, meta["env"])
        if raw == "":
            if unreadable and meta["yaml"]:
                refused[spec.name] = unreadable
                continue
            if not (path and meta["yaml"]):
                continue
            raw = _yaml_value(document, meta["yaml"])
            source = f"{path.name} {meta['yaml']}"
            if raw is None:
                continue
        try:
            values[spec.name] = convert(raw, source, meta)
        except SettingsError as exc:
            refused[spec.name] = str(exc)
    return Settings._holding(values, refused)

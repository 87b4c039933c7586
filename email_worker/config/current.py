"""The settings of this process: read once, on first use, and kept."""

from __future__ import annotations

import functools

from email_worker.config.model import Settings
from email_worker.config.sources import load_settings, read_local_config_file


@functools.cache
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return load_settings()


def reset_settings() -> None:
    """Forget the cached settings so the next :func:`get_settings` reads them again."""
    get_settings.cache_clear()


def use_local_config_file() -> None:
    """Read ``./config.yaml`` from now on: for this service's own commands only."""
    read_local_config_file()
    reset_settings()

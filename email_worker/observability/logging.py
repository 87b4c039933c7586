"""Structured logging: one JSON object per line (or plain text for development)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from email_worker.config import Settings
from email_worker.privacy import redact_text

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Celery repeats its message arguments as ``data``; text lines stay readable without them.
_TEXT_SKIPPED = _STANDARD | {"data"}


class JsonFormatter(logging.Formatter):
    """Formats records as JSON with their ``extra`` fields; addresses in text are masked."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a JSON line."""
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact_text(record.getMessage()),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if isinstance(entry.get("data"), dict):  # Celery's own fields: task arguments, results
            entry["data"] = {
                k: redact_text(v) if isinstance(v, str) else v for k, v in entry["data"].items()
            }
        if record.exc_info:
            entry["exception"] = redact_text(self.formatException(record.exc_info))
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """Plain lines with the ``extra`` fields appended as key=value; addresses masked."""

    def format(self, record: logging.LogRecord) -> str:
        """Render one record as a text line."""
        fields = " ".join(
            f"{k}={v}"
            for k, v in vars(record).items()
            if k not in _TEXT_SKIPPED and not k.startswith("_")
        )
        line = (
            f"[{self.formatTime(record)}] {record.levelname} {record.name}: {record.getMessage()}"
        )
        if fields:
            line += f" {fields}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return redact_text(line)


def configure_logging(settings: Settings) -> None:
    """Send every log record to stderr in the configured format and level."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())

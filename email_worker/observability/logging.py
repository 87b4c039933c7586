"""Structured logging: one JSON object per line (or plain text for development)."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

from celery.worker.consumer import consumer as celery_consumer

from email_worker.config import Settings
from email_worker.privacy import redact_text

# Attributes every LogRecord has; anything else was passed with ``extra=`` and is a field.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}
# Celery repeats its message arguments as ``data``; text lines stay readable without them.
_TEXT_SKIPPED = _STANDARD | {"data"}


# Celery's lines about a message it refuses quote the body and headers (template data,
# subjects, addresses); they are replaced by lines that say what was wrong, and no more.
_REFUSED_MESSAGE_LINES = {
    celery_consumer.UNKNOWN_FORMAT: "Received and deleted a message that is not a task",
    celery_consumer.UNKNOWN_TASK_ERROR: "Received unregistered task of type %s; discarded",
    celery_consumer.INVALID_TASK_ERROR: "Received invalid task message: %s; discarded",
    celery_consumer.MESSAGE_DECODE_ERROR: "Can't decode message body: %s; discarded",
}
_SHOWN_REASON = 200


class RefusedMessageFilter(logging.Filter):
    """Keeps the contents of refused messages out of Celery's log lines about them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite a refused-message line to its reason; pass every other record as it is."""
        if not isinstance(record.msg, str) or record.msg not in _REFUSED_MESSAGE_LINES:
            return True
        reason = record.args[0] if isinstance(record.args, tuple) and record.args else None
        line = _REFUSED_MESSAGE_LINES[record.msg]
        record.msg = line + " (its contents are not logged)"
        record.args = (redact_text(str(reason))[:_SHOWN_REASON],) if "%s" in line else ()
        return True


class ExpectedFailureFilter(logging.Filter):
    """Drops Celery's "raised expected" line: the task's own "email failed" line says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Pass every record but the tracer's line about an error a task declared it throws."""
        data = getattr(record, "data", None)
        return not (
            record.name == "celery.app.trace"
            and isinstance(data, dict)
            and data.get("description") == "raised expected"
        )


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
            # Not its copy of the traceback: "exception" holds it when Celery logs one.
            entry["data"] = {
                k: redact_text(v) if isinstance(v, str) else v
                for k, v in entry["data"].items()
                if k != "traceback"
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
    handler.addFilter(RefusedMessageFilter())
    handler.addFilter(ExpectedFailureFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # Python's warnings (Celery's SecurityWarning, deprecations) become records in the same
    # format instead of bare lines on stderr.
    logging.captureWarnings(True)

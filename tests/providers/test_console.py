"""The console provider: the whole message on a terminal in development, never in a log."""

from __future__ import annotations

import io
import logging
import os
import pty

import pytest

from email_worker.providers.console import ConsoleProvider
from tests.providers.test_outbox import outgoing


def on_a_terminal(whole_messages: bool, caplog: pytest.LogCaptureFixture) -> str:
    """What a ConsoleProvider writes to a real terminal (a pty); its log goes to caplog."""
    reader, terminal = pty.openpty()
    try:
        with os.fdopen(terminal, "w") as stream, caplog.at_level(logging.INFO):
            ConsoleProvider(stream, whole_messages=whole_messages).send(outgoing())
            os.set_blocking(reader, False)
            try:
                return os.read(reader, 65536).decode()
            except BlockingIOError:
                return ""
    finally:
        os.close(reader)


def test_outside_live_mode_a_terminal_shows_the_whole_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    written = on_a_terminal(True, caplog)
    assert "Subject: Hi" in written and "Body" in written
    assert caplog.records == []


def test_in_live_mode_even_a_terminal_gets_only_a_summary(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert on_a_terminal(False, caplog) == ""
    (record,) = caplog.records
    assert record.getMessage() == "console provider: email not delivered"
    assert record.to == "a***@example.com"  # type: ignore[attr-defined]


def test_a_stream_that_is_not_a_terminal_gets_nothing_and_the_log_no_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stream = io.StringIO()  # a pipe or a file: what a log collector reads
    with caplog.at_level(logging.INFO):
        result = ConsoleProvider(stream, whole_messages=True).send(outgoing())
    assert stream.getvalue() == ""
    assert result.accepted == ("ann@example.com",)
    (record,) = caplog.records
    assert record.bytes > 0 and record.kind == "email"  # type: ignore[attr-defined]
    logged = str(vars(record))
    assert "Body" not in logged and "Hi" not in logged and "ann@" not in logged

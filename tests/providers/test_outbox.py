from __future__ import annotations

import email
import email.policy
from pathlib import Path

from email_worker.kinds import GENERIC
from email_worker.mime.messages import Sender, build_message
from email_worker.producer.validation import validate_request
from email_worker.providers.outbox import OutboxProvider
from email_worker.rendering.renderer import render_inline


def outgoing():  # type: ignore[no-untyped-def]
    request = validate_request(
        GENERIC,
        {"to": "ann@example.com", "subject": "Hi", "text": "Body"},
        template_exists=lambda t: True,
    )
    return build_message(request, render_inline("Hi", None, "Body"), sender=Sender("a@example.com"))


def test_outbox_writes_one_eml_file_per_message(tmp_path: Path) -> None:
    provider = OutboxProvider(tmp_path / "outbox")
    built = outgoing()
    path = Path(provider.send(built).message_id or "")
    assert path.parent == tmp_path / "outbox" and path.suffix == ".eml"
    assert "-email-" in path.name
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert message["Message-ID"] == built.message_id
    assert list((tmp_path / "outbox").iterdir()) == [path]  # no partial files left behind
    assert provider.check()

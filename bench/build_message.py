"""Building one message: the wire builder against the standard library's EmailMessage.

Run from the repository root (pure CPU; no server needed):

    .venv/bin/python bench/build_message.py [--messages 3000]

For each email it prints the median time to build and serialise one message with the
reference (``email.message.EmailMessage`` and its header registry, as the builder did
before) and with ``email_worker.mime.messages.build_message``, and their ratio.  The two
run in alternating batches in one process, so the ratio holds on a busy machine even
when the absolute figures do not.  Both messages are parsed back and compared first.
"""

from __future__ import annotations

import argparse
import datetime as dt
import re
import statistics
import sys
import time
from collections.abc import Callable
from email import message_from_bytes, policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import content as bench_email  # noqa: E402
from email_worker.mime.content import RenderedEmail  # noqa: E402
from email_worker.mime.email_request import EmailRequest  # noqa: E402
from email_worker.mime.messages import Sender, build_message  # noqa: E402

BATCH = 50
SENDER = Sender(bench_email.SENDER, "Example Bookings")

# The reference: the essential code of the builder that used the header registry.
_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def _address(addr: str, name: str = "") -> Address:
    local, _, domain = addr.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def _check_header_block(wire: bytes, message: EmailMessage) -> None:
    block = wire.partition(b"\r\n\r\n")[0]
    names = [
        line.partition(b":")[0].decode("ascii", "replace").lower()
        for line in block.split(b"\r\n")
        if not line.startswith((b" ", b"\t"))
    ]
    bare = block.replace(b"\r\n", b"")
    if names != [name.lower() for name in message] or b"\r" in bare or b"\n" in bare:
        raise ValueError("a header value would add lines of its own to the message")


def reference_build(request: EmailRequest, content: RenderedEmail, *, sender: Sender) -> bytes:
    """Build and serialise with EmailMessage, as the previous builder did."""
    from_email = request.from_email or sender.email
    from_name = request.from_name if request.from_name is not None else sender.name
    addresses = (from_email, *request.to, *request.cc, *request.bcc, *request.reply_to)
    msg = EmailMessage(
        policy=policy.SMTPUTF8 if not all(map(str.isascii, addresses)) else policy.SMTP
    )
    msg["From"] = _address(from_email, _UNSAFE_IN_HEADER.sub("\ufffd", from_name))
    msg["To"] = [_address(a) for a in request.to]
    msg["Subject"] = _UNSAFE_IN_HEADER.sub("\ufffd", content.subject)
    msg["Date"] = format_datetime(dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=from_email.rpartition("@")[2])
    for name, value in request.headers.items():
        msg[name] = _UNSAFE_IN_HEADER.sub("\ufffd", value)
    msg.set_content(content.text, subtype="plain", charset="utf-8")
    if content.html:
        msg.add_alternative(content.html, subtype="html", charset="utf-8")
        for part in msg.iter_parts():
            del part["MIME-Version"]
    wire = msg.as_bytes(policy=msg.policy)
    _check_header_block(wire, msg)
    return wire


def wire_build(request: EmailRequest, content: RenderedEmail, *, sender: Sender) -> bytes:
    """Build and serialise with the wire builder."""
    return build_message(request, content, sender=sender).as_bytes()


def emails() -> dict[str, tuple[EmailRequest, RenderedEmail]]:
    """The benchmark's email, and variants that take the builder's slower branches."""
    name = bench_email.DATA["name"]
    ours = RenderedEmail(
        subject=bench_email.SUBJECT.format(name=name),
        text=bench_email.TEXT.format(name=name),
        html=bench_email.HTML.format(name=name),
    )
    request = EmailRequest(kind="bench", to=[bench_email.RECIPIENT])
    german = RenderedEmail(
        subject="Ihre Buchung ist bestätigt, Jürgen 🎉 — Köln, Philharmonie, 12. März",
        text=ours.text.replace("Hello", "Grüß Gott"),
        html=ours.html.replace("Hello", "Grüß Gott") if ours.html else None,
    )
    return {
        "benchmark email (text + HTML)": (request, ours),
        "text only": (request, RenderedEmail(subject=ours.subject, text=ours.text)),
        "non-ASCII subject, name and body": (
            EmailRequest(kind="bench", to=[bench_email.RECIPIENT], from_name="Bücherei Köln"),
            german,
        ),
        "5 recipients, custom headers": (
            EmailRequest(
                kind="bench",
                to=[f"user{i}@example.com" for i in range(5)],
                headers={"X-Campaign": "november", "List-Unsubscribe": "<https://e.example/u>"},
            ),
            ours,
        ),
    }


def misread(
    build: Callable[..., bytes], request: EmailRequest, content: RenderedEmail
) -> list[str]:
    """What a reader of this builder's message gets differently from what was asked."""
    msg = message_from_bytes(build(request, content, sender=SENDER), policy=policy.default)
    expected = {
        "From": f"{request.from_name or SENDER.name} <{SENDER.email}>",
        "To": ", ".join(request.to),
        "Subject": content.subject,
        **request.headers,
    }
    wrong = [name for name, value in expected.items() if msg[name] != value]
    bodies = [
        str(p.get_content()).replace("\r\n", "\n") for p in msg.walk() if not p.is_multipart()
    ]
    if bodies != [text for text in (content.text, content.html) if text]:
        wrong.append("body")
    return wrong


def per_message(
    build: Callable[..., bytes], request: EmailRequest, content: RenderedEmail
) -> float:
    """Seconds per message over one batch."""
    started = time.perf_counter()
    for _ in range(BATCH):
        build(request, content, sender=SENDER)
    return (time.perf_counter() - started) / BATCH


def main() -> None:
    """Print the median time per message of each builder and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=3000, help="per builder and email")
    args = parser.parse_args()
    batches = max(args.messages // BATCH, 5)
    print(f"build and serialise one message: median of {batches} batches of {BATCH}")
    print(f"{'email':<36}{'EmailMessage':>14}{'wire builder':>14}{'speed-up':>10}")
    for label, (request, content) in emails().items():
        assert not misread(wire_build, request, content), misread(wire_build, request, content)
        for build in (reference_build, wire_build):  # warm up
            per_message(build, request, content)
        old: list[float] = []
        new: list[float] = []
        for _ in range(batches):
            old.append(per_message(reference_build, request, content))
            new.append(per_message(wire_build, request, content))
        before, after = statistics.median(old), statistics.median(new)
        print(f"{label:<36}{before * 1e6:>11.0f} us{after * 1e6:>11.1f} us{before / after:>9.1f}x")
        if wrong := misread(reference_build, request, content):
            print(f"  the reference's message reads back wrong: {', '.join(wrong)}")


if __name__ == "__main__":
    main()

"""A local SendGrid v3 mail send API that records each request and answers from a script.

In a test::

    with FakeSendGrid(api_key="SG.test") as api:
        provider = SendGridProvider("SG.test", api_url=api.url)
        api.reply(429, headers={"X-RateLimit-Reset": "..."})  # the next answer, then 202s

Standalone, for worker subprocesses: ``python -m tests.fakes.sendgrid_api --port N
--record PATH`` answers every mail send with a 202 and appends each request to PATH
as one JSON line; it prints nothing.  :func:`read_records` reads that file back.

Without a scripted answer the fake checks a request as SendGrid does (the rules of
the v3 mail send reference that a client can break) and answers 400 with errors in
SendGrid's shape, 401 for a wrong key, or 202 with an ``X-Message-Id``.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import json
import signal
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

MAIL_SEND = "/v3/mail/send"
BAD_KEY = "The provided authorization grant is invalid, expired, or revoked"
RESERVED_HEADERS = {
    "x-sg-id",
    "x-sg-eid",
    "received",
    "dkim-signature",
    "content-type",
    "content-transfer-encoding",
    "to",
    "from",
    "subject",
    "reply-to",
    "cc",
    "bcc",
}


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it; header names are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass(frozen=True)
class Reply:
    """A scripted answer: status, headers, body, and how long to wait before sending it."""

    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


def errors_body(*messages: str, field: str | None = None) -> dict[str, Any]:
    """An error reply body in SendGrid's shape."""
    return {"errors": [{"message": m, "field": field, "help": None} for m in messages]}


class FakeSendGrid:
    """The fake API on 127.0.0.1, serving from a thread; use as a context manager."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        record: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api_key = api_key  # when set, any other bearer token gets a 401
        self.record = record
        self.requests: list[Recorded] = []
        self.replies: deque[Reply] = deque()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The base URL to give the client (``api_url``)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeSendGrid:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def serve(self) -> None:
        """Serve in the calling thread until the process is told to stop."""
        try:
            self._server.serve_forever()
        finally:
            self.stopping.set()
            self._server.server_close()

    def stop(self) -> None:
        self.stopping.set()  # wakes handlers that are holding back an answer
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reply(
        self,
        status: int,
        body: dict[str, Any] | str | bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        times: int = 1,
    ) -> None:
        """Queue the answer to the next ``times`` requests."""
        if isinstance(body, dict):
            raw = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        else:
            raw = body.encode() if isinstance(body, str) else body
        with self.lock:
            self.replies.extend([Reply(status, headers or {}, raw, delay)] * times)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[Recorded]:
        """The requests received, once there are at least ``count`` of them."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.requests) >= count:
                    return list(self.requests)
            time.sleep(0.01)
        raise AssertionError(f"expected {count} requests, got {len(self.requests)}")

    def answer(self, request: Recorded) -> Reply:
        """Record a request and choose its answer: scripted, or what SendGrid would say."""
        with self.lock:
            self.requests.append(request)
            if self.record is not None:
                with self.record.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(asdict(request)) + "\n")
            if self.replies:
                return self.replies.popleft()
        if request.method != "POST" or request.path != MAIL_SEND:
            return _error(404, "not found")
        if self.api_key is not None and request.headers.get("authorization") != (
            f"Bearer {self.api_key}"
        ):
            return _error(401, BAD_KEY)
        problems = mail_send_problems(request.body)
        if problems:
            return _error(400, *problems)
        return Reply(202, {"X-Message-Id": uuid.uuid4().hex[:22]})


def _error(status: int, *messages: str) -> Reply:
    body = json.dumps(errors_body(*messages)).encode()
    return Reply(status, {"Content-Type": "application/json"}, body)


def mail_send_problems(body: Any) -> list[str]:
    """What SendGrid would refuse in a mail send request body (empty when none)."""
    if not isinstance(body, dict):
        return ["The request body must be a JSON object."]
    problems: list[str] = []
    personalizations = body.get("personalizations")
    if not isinstance(personalizations, list) or not 1 <= len(personalizations) <= 1000:
        problems.append("The personalizations field must hold 1 to 1000 personalizations.")
        personalizations = []
    for index, personalization in enumerate(personalizations):
        problems += _personalization_problems(index, personalization)
        if "subject" not in body and "subject" not in (personalization or {}):
            problems.append("The subject is required.")
    if not _is_address(body.get("from")):
        problems.append("The from object must be provided for every email send.")
    contents = body.get("content")
    if not isinstance(contents, list) or not contents:
        problems.append("Unless a valid template_id is provided, the content is required.")
    else:
        types = [c.get("type") for c in contents]
        if any(not c.get("value") for c in contents):
            problems.append("The content value must be a string at least one character long.")
        if "text/plain" in types and types[0] != "text/plain":
            problems.append("The text/plain content type must be first.")
    if "reply_to" in body and "reply_to_list" in body:
        problems.append("The reply_to and reply_to_list fields cannot both be set.")
    for name in body.get("headers", {}):
        if name.lower() in RESERVED_HEADERS:
            problems.append(f"The header {name} is reserved.")
    for attachment in body.get("attachments", []):
        try:
            base64.b64decode(attachment["content"], validate=True)
        except (KeyError, binascii.Error, TypeError):
            problems.append("The attachment content must be base64 encoded.")
        if not attachment.get("filename"):
            problems.append("The attachment filename is required.")
    if len(body.get("categories", [])) > 10:
        problems.append("No more than 10 categories may be set.")
    return problems


def _personalization_problems(index: int, personalization: Any) -> list[str]:
    to = personalization.get("to") if isinstance(personalization, dict) else None
    if not to:
        return [f"The to array is required for all personalization objects (#{index})."]
    seen: set[str] = set()
    for kind in ("to", "cc", "bcc"):
        for address in personalization.get(kind, []):
            if not _is_address(address):
                return [f"Does not contain a valid address (personalizations.{index}.{kind})."]
            if address["email"].lower() in seen:
                return [
                    "Each email address in the personalization block should be unique between "
                    f"to, cc, and bcc. We found the first duplicate instance of "
                    f"[{address['email']}] in the personalizations.{index}.{kind} field."
                ]
            seen.add(address["email"].lower())
    return []


def _is_address(value: Any) -> bool:
    return isinstance(value, dict) and "@" in str(value.get("email", ""))


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        fake: FakeSendGrid = self.server.fake  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = fake.answer(Recorded(self.command, self.path, headers, body))
        if reply.delay and fake.stopping.wait(reply.delay):
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            pass  # the client gave up waiting

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a standalone server prints nothing."""


def read_records(path: Path) -> list[Recorded]:
    """The requests a standalone server recorded, in order."""
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8").splitlines()
    return [Recorded(**json.loads(line)) for line in lines if line.strip()]


def main(argv: list[str] | None = None) -> None:
    """Serve until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record", type=Path, help="append each request to this JSON-lines file")
    parser.add_argument("--api-key", help="answer 401 to any other bearer token")
    args = parser.parse_args(argv)
    fake = FakeSendGrid(api_key=args.api_key, record=args.record, port=args.port)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        fake.serve()


if __name__ == "__main__":
    main()

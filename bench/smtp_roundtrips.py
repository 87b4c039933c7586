"""SMTP round trips: emails/s on one reused connection, with PIPELINING (RFC 2920) or without.

Run from the repository root (nothing else needs to be running):

    .venv/bin/python bench/smtp_roundtrips.py [--emails 2000] [--rounds 5] [--recipients 1]

Each round sends the same email ``--emails`` times through ``SmtpProvider`` on one
connection, once with pipelining and once without (``SmtpProvider(pipelining=False)``),
in alternating order, to:

- an aiosmtpd server in a process of its own that advertises PIPELINING and counts
  the chunks of bytes that reach it (the client's writes, one per round trip);
- Postfix's ``smtp-sink`` (it advertises PIPELINING), taken from ``bench/.cache`` when
  the main benchmark has unpacked it there, else from ``apt-get download postfix`` and
  ``dpkg-deb -x`` into a temporary folder; skipped when neither works.

It prints, per server, the median emails/s of the rounds, the client's wall and CPU
time per email, the round trips per email, and the ratio pipelined / unpipelined.
Absolute figures depend on the machine; on loopback a round trip costs the client
mostly system calls and a wake-up, so the ratio grows with the network's latency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from email_worker.kinds import GENERIC  # noqa: E402
from email_worker.mime.messages import OutgoingEmail, Sender, build_message  # noqa: E402
from email_worker.producer.validation import validate_request  # noqa: E402
from email_worker.providers.smtp import SmtpProvider  # noqa: E402
from email_worker.rendering.renderer import render_inline  # noqa: E402

CACHED_SINK = ROOT / "bench" / ".cache" / "postfix"
TEXT = "Hello Ann,\n\n" + "Thank you for signing up to Example Bookings. " * 6 + "\n"
HTML = "<p>Hello <b>Ann</b>,</p>" + "<p>Thank you for signing up to Example Bookings.</p>" * 11


def serve(port: int) -> None:
    """Run an aiosmtpd sink that offers PIPELINING; print each connection's arrivals."""
    from aiosmtpd.smtp import SMTP, Envelope, Session

    class Sink:
        async def handle_EHLO(
            self,
            server: SMTP,
            session: Session,
            envelope: Envelope,
            hostname: str,
            responses: list[str],
        ) -> list[str]:
            session.host_name = hostname
            responses.insert(-1, "250-PIPELINING")
            return responses

        async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
            return "250 2.0.0 Ok: queued"

    class CountingSMTP(SMTP):
        arrivals = 0

        def data_received(self, data: bytes) -> None:
            self.arrivals += 1
            super().data_received(data)

        def connection_lost(self, exc: Exception | None) -> None:
            print(f"arrivals {self.arrivals}", flush=True)
            super().connection_lost(exc)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: CountingSMTP(Sink(), hostname="sink.test"), "127.0.0.1", port
        )
        print("ready", flush=True)
        async with server:
            await server.serve_forever()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    asyncio.run(main())


def email(recipients: int) -> OutgoingEmail:
    """The benchmark's email: ~300 bytes of text and ~600 of HTML, as the worker builds it."""
    request = validate_request(
        GENERIC,
        {
            "to": [f"user{n}@example.com" for n in range(recipients)],
            "subject": "Welcome to Example Bookings",
            "text": TEXT,
            "html": HTML,
        },
        template_exists=lambda _template: True,
    )
    return build_message(
        request,
        render_inline("Welcome to Example Bookings", HTML, TEXT),
        sender=Sender("noreply@mail.example.com", "Example"),
    )


@dataclass
class Run:
    """One timed run on one connection."""

    seconds: float
    cpu_seconds: float
    emails: int

    @property
    def per_second(self) -> float:
        return self.emails / self.seconds


def timed_run(port: int, message: OutgoingEmail, emails: int, pipelining: bool) -> Run:
    """Send ``emails`` times on one connection (opened and warmed up before timing)."""
    provider = SmtpProvider("127.0.0.1", port, security="none", timeout=10, pipelining=pipelining)
    try:
        for _ in range(20):
            provider.send(message)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(emails):
            provider.send(message)
        run = Run(time.perf_counter() - wall, time.process_time() - cpu, emails)
        assert provider.connections_opened == 1, "the connection was not reused"
        return run
    finally:
        provider.close()


@dataclass
class Server:
    """A sink in its own process."""

    name: str
    port: int
    process: subprocess.Popen[str]
    counts_arrivals: bool

    def arrivals(self) -> int | None:
        """The chunks of bytes the last connection's client sent, when the sink counts them."""
        if not self.counts_arrivals or self.process.stdout is None:
            return None
        line = self.process.stdout.readline().split()
        return int(line[1]) if line[:1] == ["arrivals"] else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"sink exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_aiosmtpd() -> Server:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    wait_for_port(port, process)
    process.stdout.readline()  # the probe connection's arrivals
    return Server("aiosmtpd (PIPELINING)", port, process, counts_arrivals=True)


def smtp_sink_root(scratch: Path) -> Path | None:
    """An unpacked postfix package whose smtp-sink runs, or None."""
    if runs(CACHED_SINK):
        return CACHED_SINK
    download = subprocess.run(
        ["apt-get", "download", "postfix"], cwd=scratch, capture_output=True, timeout=120
    )
    packages = sorted(scratch.glob("postfix_*.deb"))
    if download.returncode or not packages:
        return None
    root = scratch / "postfix"
    subprocess.run(["dpkg-deb", "-x", str(packages[-1]), str(root)], check=False, timeout=120)
    return root if runs(root) else None


def runs(root: Path) -> bool:
    """Whether smtp-sink starts from this unpacked package (without arguments: its usage)."""
    sink = root / "usr/sbin/smtp-sink"
    if not sink.exists():
        return False
    probe = subprocess.run([str(sink)], capture_output=True, env=sink_environment(root), timeout=30)
    return b"usage" in probe.stderr


def sink_environment(root: Path) -> dict[str, str]:
    return {**os.environ, "LD_LIBRARY_PATH": str(root / "usr/lib/postfix")}


def start_smtp_sink(root: Path) -> Server:
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        [str(root / "usr/sbin/smtp-sink"), *user, f"127.0.0.1:{port}", "100"],
        env=sink_environment(root),
        stdout=subprocess.DEVNULL,
        text=True,
    )
    wait_for_port(port, process)
    return Server("Postfix smtp-sink (PIPELINING)", port, process, counts_arrivals=False)


def measure(server: Server, message: OutgoingEmail, emails: int, rounds: int) -> None:
    """Alternate pipelined and unpipelined runs; print medians and the ratio."""
    runs: dict[bool, list[Run]] = {True: [], False: []}
    trips: dict[bool, list[float]] = {True: [], False: []}
    for n in range(rounds):
        for pipelining in (True, False) if n % 2 == 0 else (False, True):
            runs[pipelining].append(timed_run(server.port, message, emails, pipelining))
            arrivals = server.arrivals()
            if arrivals is not None:  # EHLO and QUIT are one write each
                trips[pipelining].append((arrivals - 2) / (emails + 20))
    print(f"\n{server.name}: {emails} emails x {rounds} rounds, median of rounds")
    columns = ("emails/s", "wall µs/email", "cpu µs/email", "writes/email")
    print(f"{'client':<14}" + "".join(f"{c:>15}" for c in columns))
    for pipelining in (True, False):
        done = runs[pipelining]
        rate = statistics.median(r.per_second for r in done)
        wall = statistics.median(r.seconds / r.emails for r in done) * 1e6
        cpu = statistics.median(r.cpu_seconds / r.emails for r in done) * 1e6
        writes = f"{statistics.median(trips[pipelining]):.2f}" if trips[pipelining] else "-"
        label = "pipelined" if pipelining else "unpipelined"
        print(f"{label:<14}{rate:>15.0f}{wall:>15.0f}{cpu:>15.0f}{writes:>15}")
    ratios = [p.per_second / u.per_second for p, u in zip(runs[True], runs[False], strict=True)]
    print(
        f"ratio pipelined / unpipelined: {statistics.median(ratios):.2f}"
        f" (rounds: {', '.join(f'{r:.2f}' for r in ratios)})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--recipients", type=int, default=1)
    parser.add_argument("--no-smtp-sink", action="store_true", help="only the aiosmtpd sink")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    message = email(args.recipients)
    print(
        f"one email of {len(message.as_bytes())} bytes to {args.recipients} recipient(s); "
        f"round trips per email: 2 pipelined, {3 + args.recipients} unpipelined"
    )
    server = start_aiosmtpd()
    try:
        measure(server, message, args.emails, args.rounds)
    finally:
        server.stop()
    if args.no_smtp_sink:
        return
    scratch = Path(tempfile.mkdtemp(prefix="smtp-roundtrips-"))
    try:
        root = smtp_sink_root(scratch)
        if root is None:
            print("\nPostfix smtp-sink: not available (apt-get download postfix failed)")
            return
        sink = start_smtp_sink(root)
        try:
            measure(sink, message, args.emails, args.rounds)
        finally:
            sink.stop()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Benchmark email-worker against the reference Celery tasks, in one run, on this machine.

From the repository root, with Redis (6379) and PostgreSQL (5432, replica 5433 if any) up:

    .venv/bin/python bench/run.py [--quick]

It starts what it needs: Postfix's smtp-sink (downloaded and unpacked into bench/.cache),
a scratch PostgreSQL database (migrated, dropped at the end), an empty Redis database of
its own (emptied at the end), and one worker at a time with the settings the README ships:
``celery -A email_worker worker --concurrency=2`` (prefork, acks late, prefetch 1), or
``celery -A bench.reference worker`` for the references. It prints one table: each figure,
its ratio to the reference measured in this run, the target, and PASS or MISS.

Throughput is measured on a queue filled beforehand (so the producer does not share the
cores with the worker), from the moment 10% of the emails reached the sink to the last one,
in three rounds of the no-op, the fast path and the tracked path: each figure is the median
of its rounds, and each ratio to the no-op the median of the ratios taken within a round.
The producer's calls are timed while filling. ``--quick`` uses small counts (2-3 minutes).
"""

from __future__ import annotations

import argparse
import base64
import os
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import content, infra  # noqa: E402
from bench.processes import BenchError, Processes, tree_rss, wait_for  # noqa: E402
from bench.sinks import CountingSink, TimingSink, fetch_smtp_sink  # noqa: E402


@dataclass(frozen=True)
class Counts:
    """How many emails each figure uses."""

    noop: int
    naive: int
    fast: int
    tracked: int
    single: int
    backlog: int
    high: int
    scheduled: int
    due: int
    calls: int
    bulk: int
    memory_sends: int
    memory_pending: int
    fresh: int = 7  # fresh processes for each producer import and first-call figure


QUICK = Counts(2000, 1000, 3000, 600, 1200, 2000, 30, 20_000, 10, 300, 5000, 5000, 20_000)
FULL = Counts(
    20_000, 10_000, 50_000, 10_000, 10_000, 20_000, 200, 100_000, 40, 2000, 50_000, 50_000, 100_000
)


Measured = tuple[str, str, bool | None]
"""A figure's value, its ratio as shown, and whether it meets its target (None: no target)."""


@dataclass
class Row:
    """One line of the table."""

    figure: str
    value: str
    ratio: str = ""
    target: str = ""
    verdict: str = ""


@dataclass
class Results:
    """What the run measured, and notes on how."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)
    # The throughput figures of each round, in order: a round measures the no-op, the fast
    # path and the tracked path one after the other, so each ratio is taken within minutes.
    rounds: dict[str, list[float]] = field(default_factory=dict)


class Bench:
    """One run: the services, the worker under test, the measurements."""

    def __init__(self, counts: Counts, folder: Path, processes: Processes) -> None:
        self.counts = counts
        self.folder = folder
        self.processes = processes
        self.results = Results()
        self.redis_db = -1
        self.database = ""
        self.sink: CountingSink | TimingSink
        self.env: dict[str, str] = {}
        self.started = 0

    # Set-up -------------------------------------------------------------------------------

    def set_up(self) -> None:
        """Start the sink, claim a Redis database, create and migrate the scratch database."""
        problem = fetch_smtp_sink()
        if problem:
            self.results.notes.append(f"smtp-sink could not run ({problem}); aiosmtpd instead")
            self.sink = TimingSink.start(self.processes, self.folder, "counting-sink")
        else:
            self.sink = CountingSink.start(self.processes, self.folder)
        self.redis_db = infra.claim_redis_db()
        self.database = infra.create_database()
        primary = f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.database}"
        replica = primary.replace(":5432/", ":5433/") if infra.replica_has(self.database) else ""
        if not replica:
            self.results.notes.append("no streaming replica on 5433: reads use the primary")
        queue = f"bench-{secrets.token_hex(3)}"
        self.env = {
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": "6379",
            "REDIS_DB": str(self.redis_db),
            "QUEUE_NAME": queue,
            "DATABASE_URL": primary,
            "DATABASE_REPLICA_URL": replica,
            "EMAIL_PROVIDER": "smtp",
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(self.sink.port),
            "SMTP_SECURITY": "none",
            "SMTP_USE_TLS": "false",
            "EMAIL_FROM": content.SENDER,
            "TEMPLATES_DIR": str(content.write_template(self.folder / "templates")),
            "LOG_LEVEL": "warning",
            "WORKER_COUNT": "2",
            "BENCH_BROKER_URL": f"redis://127.0.0.1:6379/{self.redis_db}",
            "BENCH_QUEUE": f"{queue}-reference",
            "BENCH_SMTP_PORT": str(self.sink.port),
            # Personal data is sealed at rest: keys of this run's own.
            "ENCRYPTION_KEYS": base64.b64encode(secrets.token_bytes(32)).decode(),
            "ENCRYPTION_LOOKUP_KEY": secrets.token_urlsafe(32),
            # What a bulk (marketing) send needs in live mode: unsubscribe links, an address.
            "TRACKING_SECRET": secrets.token_urlsafe(24),
            "PUBLIC_URL": "https://mail.example.com",
            "TRACK_OPENS_CLICKS": "false",
            "SENDER_POSTAL_ADDRESS": "Example Bookings, 1 Example Street, Example City",
        }
        for name in ("BROKER_URL", "RESULT_BACKEND", "CONFIG_FILE"):
            os.environ.pop(name, None)
        # Settings are read once per process: this one is a producer from here on.
        os.environ.update(self.env)
        from email_worker.db import migrate

        migrate.upgrade(primary)

    def tear_down(self) -> None:
        """Stop every process, drop the scratch database, empty the Redis database."""
        self.processes.stop_all()
        if "email_worker.db.engines" in sys.modules:
            from email_worker.db.engines import dispose_engines

            dispose_engines()
        if self.database:
            infra.drop_database(self.database)
        if self.redis_db >= 0:
            infra.release_redis_db(self.redis_db)

    # Helpers ------------------------------------------------------------------------------

    def start_worker(self, app: str, concurrency: int = 2, *extra: str, **env: str) -> str:
        """``celery -A <app> worker --concurrency=N``; return its name in the registry."""
        self.started += 1
        name = f"{app}-worker-{self.started}"
        command = [sys.executable, "-m", "celery", "-A", app, "worker"]
        self.processes.start(
            name,
            [*command, f"--concurrency={concurrency}", *extra],
            env={**os.environ, **env},
            log=self.folder / f"{name}.log",
        )
        return name

    def stop_worker(self, name: str) -> None:
        """Stop a worker and drop what it left in the queues."""
        self.processes.stop(name)
        infra.purge_queues(self.redis_db)

    def publish(self, count: int, call: Callable[[int], Any]) -> float:
        """Call ``call(i)`` ``count`` times; return the calls per second after 20 warm-up calls."""
        for i in range(min(20, count)):
            call(i)
        started = time.perf_counter()
        for i in range(20, count):
            call(i)
        return (count - 20) / (time.perf_counter() - started)

    def drain(
        self,
        worker: str,
        done: Callable[[], int],
        total: int,
        *,
        at_warm: Callable[[], None] | None = None,
    ) -> float:
        """Emails per second between 10% and 100% of ``total`` done (``done`` counts them)."""
        warm = max(total // 10, 1)

        def reached(target: int) -> Callable[[], bool]:
            def check() -> bool:
                self.processes.check(worker)
                return done() >= target

            return check

        wait_for(reached(warm), timeout=120, what=f"{warm} emails through {worker}")
        started, first = time.perf_counter(), done()
        if at_warm:
            at_warm()
        timeout = 60 + total / 20
        wait_for(reached(total), timeout=timeout, what=f"{total} emails through {worker}")
        return (done() - first) / (time.perf_counter() - started)

    def sink_counter(self, sink: CountingSink | TimingSink | None = None) -> Callable[[], int]:
        """A count of what ``sink`` accepted from now on."""
        target = sink or self.sink
        base = target.count()
        return lambda: target.count() - base

    # Figures ------------------------------------------------------------------------------

    def references(self) -> None:
        """The no-op ceiling and the naive email task."""
        from bench import reference

        self.noop_round()

        n = self.counts.naive
        self.publish(n, lambda i: reference.naive_email.delay(content.RECIPIENT, content.DATA))
        worker = self.start_worker("bench.reference", 2, "-Q", reference.NAIVE_QUEUE)
        self.results.values["naive"] = self.drain(worker, self.sink_counter(), n)
        self.stop_worker(worker)

    def noop_round(self) -> None:
        """The no-op ceiling: a queue of no-op tasks drained by the reference worker."""
        from bench import reference

        n = self.counts.noop
        queue = reference.NOOP_QUEUE
        self.publish(n, lambda i: reference.noop.delay(to=content.RECIPIENT, data=content.DATA))
        worker = self.start_worker("bench.reference", 2, "-Q", queue)
        rate = self.drain(
            worker,
            lambda: n - infra.queued(self.redis_db, queue) - infra.unacknowledged(self.redis_db),
            n,
        )
        self.stop_worker(worker)
        self.record("noop", rate)

    def record(self, figure: str, rate: float) -> None:
        """Keep one round's throughput; the figure's value is the median of its rounds."""
        rounds = self.results.rounds.setdefault(figure, [])
        rounds.append(rate)
        self.results.values[figure] = statistics.median(rounds)

    def rounds(self) -> None:
        """Two more rounds of the no-op, fast-path and tracked-path throughput, in turn."""
        for _ in range(EXTRA_ROUNDS):
            self.noop_round()
            self.fast_round()
            self.tracked_round()

    def producer(self) -> None:
        """The producer's calls: plain delay(), fast and tracked apply_async, interleaved."""
        from bench import reference

        calls: dict[str, Callable[[int], Any]] = {
            "delay": lambda i: reference.noop.delay(to=content.RECIPIENT, data=content.DATA),
            "producer_fast": self.send,
            "producer_tracked": lambda i: self.send(i, kwargs={"tracked": True}),
        }
        # Three rounds, each call in turn, best of each: the machine's load moves.
        for _ in range(3):
            for name, call in calls.items():
                rate = self.publish(self.counts.calls, call)
                self.results.values[name] = max(rate, self.results.values.get(name, 0.0))
        infra.purge_queues(self.redis_db)

    def producer_import(self) -> None:
        """A producer's import of the tasks and its first tracked call, in fresh processes."""
        from bench import fresh_process

        env = dict(os.environ)
        figures = fresh_process.import_figures(self.counts.fresh, env)
        self.results.values.update(
            import_s=figures.seconds,
            import_reference_s=figures.reference_seconds,
            import_ratio=figures.ratio,
            import_rss=figures.peak_rss,
            import_reference_rss=figures.reference_peak_rss,
        )
        self.results.values["first_tracked_s"] = fresh_process.first_tracked_call(
            self.counts.fresh,
            env,
            to=content.RECIPIENT,
            template=content.TEMPLATE_ID,
            data=content.DATA,
        )
        infra.purge_queues(self.redis_db)

    def send(self, i: int, **options: Any) -> Any:
        """``send_email.apply_async`` of the benchmark email."""
        from email_worker.tasks import send_email

        kwargs = {"to": content.RECIPIENT, "template_id": content.TEMPLATE_ID, "data": content.DATA}
        kwargs.update(options.pop("kwargs", {}))
        return send_email.apply_async(kwargs=kwargs, **options)

    def fast_path(self) -> None:
        """Fast-path throughput, 2 processes, with RSS after warm-up and at the end."""
        n = self.counts.fast
        self.publish(n, self.send)
        worker = self.start_worker("email_worker")
        pid = self.processes.running[worker][0].pid
        marks: dict[str, float] = {}

        def at_warm() -> None:
            marks["rss"] = tree_rss(pid)
            marks["commands"] = infra.redis_commands()

        counter = self.sink_counter()
        self.record("fast", self.drain(worker, counter, n, at_warm=at_warm))
        commands = infra.redis_commands() - marks["commands"]
        time.sleep(1)
        self.results.values["rss_warm"] = marks["rss"]
        self.results.values["rss_end"] = tree_rss(pid)
        self.results.values["pss_end"] = tree_rss(pid, proportional=True)
        self.results.values["redis_per_email"] = commands / (n - n // 10)
        self.stop_worker(worker)

    def fast_round(self) -> None:
        """Fast-path throughput alone (a later round)."""
        n = self.counts.fast
        self.publish(n, self.send)
        worker = self.start_worker("email_worker")
        self.record("fast", self.drain(worker, self.sink_counter(), n))
        self.stop_worker(worker)

    def tracked_path(self) -> None:
        """Tracked-path throughput and the database transactions per email, both sides."""
        n = self.counts.tracked
        before = infra.transactions(self.database)
        self.tracked_round()
        time.sleep(1.5)  # statistics reach pg_stat_database within a second
        self.results.values["xact_per_email"] = (infra.transactions(self.database) - before) / n

    def tracked_round(self) -> None:
        """Tracked-path throughput alone."""
        n = self.counts.tracked
        self.publish(n, lambda i: self.send(i, kwargs={"tracked": True}))
        worker = self.start_worker("email_worker")
        self.record("tracked", self.drain(worker, self.sink_counter(), n))
        self.stop_worker(worker)

    def bulk(self) -> None:
        """Bulk send: one send_bulk of one template to many recipients, 2 processes."""
        from email_worker.tasks import send_bulk

        n = self.counts.bulk
        recipients = [{"to": content.RECIPIENT, "data": content.DATA} for _ in range(n)]
        send_bulk.apply_async(kwargs={"template_id": content.TEMPLATE_ID, "recipients": recipients})
        worker = self.start_worker("email_worker")
        self.results.values["bulk"] = self.drain(worker, self.sink_counter(), n)
        self.stop_worker(worker)

    def one_process(self) -> None:
        """Fast-path throughput with one pool process."""
        n = self.counts.single
        self.publish(n, self.send)
        worker = self.start_worker("email_worker", 1)
        self.results.values["single"] = self.drain(worker, self.sink_counter(), n)
        self.stop_worker(worker)

    def priority(self) -> None:
        """Latency of high-priority emails sent while a backlog of low ones drains."""
        sink = TimingSink.start(self.processes, self.folder)
        backlog = self.counts.backlog
        self.publish(backlog, lambda i: self.send(i, kwargs={"priority": "low"}))
        worker = self.start_worker("email_worker", 2, SMTP_PORT=str(sink.port))
        counter = self.sink_counter(sink)
        wait_for(lambda: counter() >= 20, timeout=120, what="the backlog to start draining")
        published: dict[str, float] = {}
        for i in range(self.counts.high):
            address = f"high-{i}@example.com"
            published[address] = time.time()
            self.send(i, kwargs={"to": address, "priority": "high"})
            time.sleep(0.05)

        def arrived() -> dict[str, float]:
            return {who: at for at, who in sink.arrivals() if who in published}

        wait_for(
            lambda: len(arrived()) == len(published), timeout=120, what="the high-priority emails"
        )
        left = infra.queued(self.redis_db, self.env["QUEUE_NAME"] + ".low")
        latencies = sorted((at - published[who]) * 1000 for who, at in arrived().items())
        self.results.values["p50"] = statistics.median(latencies)
        self.results.values["p99"] = latencies[max(int(len(latencies) * 0.99) - 1, 0)]
        self.results.values["max"] = latencies[-1]
        self.results.values["backlog_left"] = left
        self.stop_worker(worker)

    def scheduled(self) -> None:
        """Worker RSS with many scheduled sends pending, and how late due sends leave."""
        from email_worker.config import get_settings

        sink = TimingSink.start(self.processes, self.folder, "due-sink")
        first = self.send(0, countdown=3600)
        infra.clone_scheduled(self.database, str(first.id), self.counts.scheduled - 1)
        pending = infra.scheduled_jobs(self.database)
        worker = self.start_worker("email_worker", 2, SMTP_PORT=str(sink.port))
        beat = "beat"
        self.processes.start(
            beat,
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "email_worker",
                "beat",
                "-s",
                str(self.folder / "beat-schedule"),
            ],
            env={**os.environ, "SMTP_PORT": str(sink.port)},
            log=self.folder / "beat.log",
        )
        counter = self.sink_counter(sink)
        self.send(0, kwargs={"to": "ready@example.com"})
        wait_for(lambda: counter() >= 1, timeout=120, what="the worker to start")
        threshold = get_settings().schedule_threshold
        due: dict[str, float] = {}
        for i in range(self.counts.due):
            countdown = threshold + 5 + i * 0.5
            address = f"due-{i}@example.com"
            due[address] = time.time() + countdown
            self.send(i, countdown=countdown, kwargs={"to": address})
        pid = self.processes.running[worker][0].pid
        rss = [float(tree_rss(pid))]

        def all_arrived() -> bool:
            self.processes.check(worker)
            self.processes.check(beat)
            rss.append(tree_rss(pid))
            return sum(1 for _, who in sink.arrivals() if who in due) == len(due)

        wait_for(
            all_arrived, timeout=max(due.values()) - time.time() + 60, what="the scheduled sends"
        )
        late = sorted(at - due[who] for at, who in sink.arrivals() if who in due)
        self.results.values.update(
            pending=pending,
            rss_scheduled=max(rss),
            late_max=late[-1],
            late_median=statistics.median(late),
            beat_rss=tree_rss(self.processes.running[beat][0].pid),
        )
        self.processes.stop(beat)
        self.stop_worker(worker)

    def worker_memory(self) -> None:
        """Idle worker RSS against a plain Celery worker, then after sends with many pending."""
        from bench import reference

        plain = self.start_worker("bench.reference", 2, "-Q", reference.NOOP_QUEUE)
        worker = self.start_worker("email_worker")
        pids = {name: self.processes.running[name][0].pid for name in (plain, worker)}
        for name, pid in pids.items():
            settled_rss(pid, lambda name=name: self.processes.check(name))
        v = self.results.values
        v["plain_idle"], v["worker_idle"] = tree_rss(pids[plain]), tree_rss(pids[worker])
        v["plain_idle_pss"] = tree_rss(pids[plain], proportional=True)
        v["worker_idle_pss"] = tree_rss(pids[worker], proportional=True)
        self.processes.stop(plain)
        missing = self.counts.memory_pending - infra.scheduled_jobs(self.database)
        if missing > 0:
            first = self.send(0, countdown=3600)
            infra.clone_scheduled(self.database, str(first.id), missing - 1)
        v["memory_pending"] = infra.scheduled_jobs(self.database)
        n = self.counts.memory_sends
        counter = self.sink_counter()
        self.publish(n, self.send)
        self.drain(worker, counter, n)
        v["worker_after"] = settled_rss(pids[worker], lambda: self.processes.check(worker))
        v["worker_after_pss"] = tree_rss(pids[worker], proportional=True)
        self.stop_worker(worker)

    # The table ----------------------------------------------------------------------------

    def tabulate(self) -> None:
        """Turn the values into the rows of the table; a figure that failed says so."""
        v, c = self.results.values, self.counts
        mb = 2**20

        def ratio(value: str, reference: str, least: float) -> Measured:
            share = round_ratio(value, reference) or v[value] / v[reference]
            return f"{v[value]:.0f}", f"{share:.2f}", (share >= least if least else None)

        def round_ratio(value: str, reference: str) -> float | None:
            """The median of the ratios taken round by round, when both were measured so."""
            mine, theirs = self.results.rounds.get(value, []), self.results.rounds.get(reference)
            if len(mine) < 2 or not theirs or len(theirs) != len(mine):
                return None
            return statistics.median(a / b for a, b in zip(mine, theirs, strict=True))

        def producer_import() -> Measured:
            grew = (v["import_rss"] - v["import_reference_rss"]) / mb
            met = v["import_ratio"] <= 2 and grew <= 15
            shown = f"{v['import_s']:.2f} s, {v['import_rss'] / mb:.0f} MB"
            return shown, f"{v['import_ratio']:.2f}, {grew:+.1f} MB", met

        def growth() -> Measured:
            grew = v["rss_end"] / v["rss_warm"] - 1
            shown = f"{v['rss_warm'] / mb:.0f} -> {v['rss_end'] / mb:.0f} MB"
            return shown, f"{grew:+.1%}", grew <= 0.10

        def rss_ratio(value: str, most: float, shown: str = "") -> Measured:
            share = v[value] / v["plain_idle"]
            plain = f" ({v['plain_idle'] / mb:.0f})" if shown else ""
            return f"{v[value] / mb:.0f}{plain}", f"{share:.2f}", share <= most

        figures: list[tuple[str, str, Callable[[], Measured]]] = [
            (
                "no-op Celery task (the ceiling), emails/s",
                "reference",
                lambda: (f"{v['noop']:.0f}", "1.00", None),
            ),
            ("naive Celery email task, emails/s", "reference", lambda: ratio("naive", "noop", 0)),
            (
                "fast path, one email per task, emails/s",
                ">= 0.90 x no-op",
                lambda: ratio("fast", "noop", 0.90),
            ),
            (
                "  the same, vs the naive task",
                ">= 1.2 x naive",
                lambda: ("", *ratio("fast", "naive", 1.2)[1:]),
            ),
            ("tracked path, emails/s", ">= 0.60 x no-op", lambda: ratio("tracked", "noop", 0.60)),
            (
                "bulk send (one template, many recipients), recipients/s",
                ">= 2 x no-op",
                lambda: ratio("bulk", "noop", 2.0),
            ),
            (
                "producer: plain delay() of the no-op, calls/s",
                "reference",
                lambda: (f"{v['delay']:.0f}", "1.00", None),
            ),
            (
                "producer: apply_async, fast path, calls/s",
                ">= 0.8 x delay()",
                lambda: ratio("producer_fast", "delay", 0.8),
            ),
            (
                "producer: apply_async, tracked, calls/s",
                ">= 0.35 x delay()",
                lambda: ratio("producer_tracked", "delay", 0.35),
            ),
            (
                "producer: import celery, kombu, redis (fresh process)",
                "reference",
                lambda: (
                    f"{v['import_reference_s']:.2f} s, {v['import_reference_rss'] / mb:.0f} MB",
                    "1.00",
                    None,
                ),
            ),
            (
                "producer: import email_worker.tasks (fresh process)",
                "<= 2 x time, <= +15 MB",
                producer_import,
            ),
            (
                "producer: first tracked call in a fresh process, s",
                "<= 0.3 s",
                lambda: (
                    f"{v['first_tracked_s']:.2f}",
                    f"{v['first_tracked_s'] / v['import_reference_s']:.1f} x the import reference",
                    v["first_tracked_s"] <= 0.3,
                ),
            ),
            (
                f"high priority behind {c.backlog:,} low: p99 ms (p50, max)",
                "<= 250 ms",
                lambda: (f"{v['p99']:.0f} ({v['p50']:.0f}, {v['max']:.0f})", "", v["p99"] <= 250),
            ),
            (
                f"worker RSS, {c.scheduled:,} scheduled sends pending, MB",
                "<= 150 MB",
                lambda: (f"{v['rss_scheduled'] / mb:.0f}", "", v["rss_scheduled"] <= 150 * mb),
            ),
            (
                "due sends: lateness, s (max; median)",
                "<= 2 s",
                lambda: (f"{v['late_max']:.2f}; {v['late_median']:.2f}", "", v["late_max"] <= 2),
            ),
            (
                f"worker RSS growth over {c.fast - c.fast // 10:,} sends after warm-up",
                "<= +10%",
                growth,
            ),
            (
                "idle worker -c 2, summed RSS, MB (plain Celery worker -c 2)",
                "<= 1.3 x plain",
                lambda: rss_ratio("worker_idle", 1.3, shown="(plain)"),
            ),
            (
                f"  after {c.memory_sends:,} sends, {c.memory_pending:,} scheduled pending, MB",
                "<= 1.4 x plain idle",
                lambda: rss_ratio("worker_after", 1.4),
            ),
            (
                "2 worker processes vs 1, emails/s",
                ">= 1.8",
                lambda: (f"{v['fast']:.0f} / {v['single']:.0f}", *ratio("fast", "single", 1.8)[1:]),
            ),
        ]
        for figure, target, measure in figures:
            try:
                value, shown, met = measure()
            except (KeyError, ZeroDivisionError):
                value, shown, met = "not measured", "", None
            verdict = "" if met is None else ("PASS" if met else "MISS")
            self.results.rows.append(Row(figure, value, shown, target, verdict))
        self.notes()

    def notes(self) -> None:
        """Numbers behind the figures, for capacity planning (when their figure was measured)."""
        v, c = self.results.values, self.counts
        notes: list[Callable[[], str]] = [
            lambda: (
                f"tracked path: {v['xact_per_email']:.1f} database transactions per email, "
                "producer and worker together (pg_stat_database of the scratch database)"
            ),
            lambda: (
                f"fast path: {v['redis_per_email']:.1f} Redis commands per email while "
                "draining (a server-wide count: an upper bound when other clients are busy)"
            ),
            lambda: (
                f"per pool process: {v['single']:.0f} emails/s fast path with 1 process, "
                f"{v['fast'] / 2:.0f} each with 2"
            ),
            lambda: (
                f"worker after the fast path: RSS {v['rss_end'] / 2**20:.0f} MB summed over its "
                f"processes, PSS {v['pss_end'] / 2**20:.0f} MB (shared pages counted once)"
            ),
            lambda: (
                f"worker memory: idle PSS {v['worker_idle_pss'] / 2**20:.0f} MB (plain Celery "
                f"worker {v['plain_idle_pss'] / 2**20:.0f} MB), after the sends "
                f"{v['worker_after_pss'] / 2**20:.0f} MB; {v['memory_pending']:,.0f} scheduled "
                "sends were pending"
            ),
            lambda: (
                f"beat RSS with {v['pending']:,.0f} scheduled sends pending: "
                f"{v['beat_rss'] / 2**20:.0f} MB"
            ),
            lambda: (
                f"high-priority figure: {c.high} emails, 1 every 50 ms; "
                f"{v['backlog_left']:,.0f} low ones still queued after the last arrived"
            ),
        ]
        rounds = self.results.rounds
        if len(rounds.get("noop", [])) > 1:
            shown = ", ".join(
                f"{name} {' / '.join(f'{rate:.0f}' for rate in rates)}"
                for name, rates in rounds.items()
            )
            notes.insert(
                0,
                lambda: (
                    f"throughput in {len(rounds['noop'])} rounds, emails/s: {shown}; each "
                    "figure is the median of its rounds, each ratio the median of the ratios "
                    "taken within a round"
                ),
            )
        for note in notes:
            try:
                self.results.notes.append(note())
            except (KeyError, ZeroDivisionError):
                continue

    def print_table(self, mode: str, seconds: float) -> None:
        """Print the header, the table and the notes."""
        c = self.counts
        print(
            f"\nemail-worker benchmark ({mode}, {seconds:.0f} s): sink {self.sink.name}; "
            "latency and scheduled figures use the aiosmtpd timing sink"
        )
        print(
            f"counts: no-op {c.noop:,}, naive {c.naive:,}, fast {c.fast:,}, "
            f"tracked {c.tracked:,}, one process {c.single:,}, backlog {c.backlog:,} low + "
            f"{c.high} high, scheduled {c.scheduled:,} + {c.due} due, worker memory "
            f"{c.memory_sends:,} sends with {c.memory_pending:,} pending"
        )
        print(
            "workers: prefork, --concurrency=2 (1 for the one-process figure), acks late, "
            "prefetch 1; references on Celery's defaults otherwise (no task events)\n"
        )
        header = Row("figure", "value", "ratio", "target", "")
        rows = [header, *self.results.rows]
        widths = [
            max(len(getattr(r, f)) for r in rows) for f in ("figure", "value", "ratio", "target")
        ]
        for row in rows:
            cells = (row.figure, row.value, row.ratio, row.target)
            print(
                "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
                + "  "
                + row.verdict
            )
        print()
        for note in self.results.notes:
            print(f"- {note}")


# Rounds of the throughput figures after the first: the machine's speed drifts over
# minutes, and a ratio of two figures taken far apart would carry the drift.
EXTRA_ROUNDS = 2

STEPS = (
    "producer_import",
    "producer",
    "references",
    "fast_path",
    "bulk",
    "tracked_path",
    "rounds",
    "one_process",
    "priority",
    "scheduled",
    "worker_memory",
)


def settled_rss(pid: int, check: Callable[[], None], timeout: float = 60) -> int:
    """The summed RSS of ``pid``'s tree once it has stopped changing: a started worker that
    has forked its pool and gone idle (two readings a second apart within 1%, after 3 s)."""
    time.sleep(3)
    deadline = time.monotonic() + timeout
    last = tree_rss(pid)
    while time.monotonic() < deadline:
        check()
        time.sleep(1)
        now = tree_rss(pid)
        if abs(now - last) <= last * 0.01:
            return now
        last = now
    raise BenchError(f"the RSS of process {pid} did not settle within {timeout:g}s")


def main() -> None:
    """Run every figure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small counts, 2-3 minutes")
    parser.add_argument("--keep", action="store_true", help="keep the logs of the run")
    parser.add_argument(
        "--only", default="", help=f"comma-separated figures to run, of: {', '.join(STEPS)}"
    )
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    folder = Path(tempfile.mkdtemp(prefix="email-worker-bench-"))
    processes = Processes()
    bench = Bench(QUICK if args.quick else FULL, folder, processes)
    started = time.monotonic()
    failed = True
    try:
        bench.set_up()
        chosen = [name for name in args.only.split(",") if name] or list(STEPS)
        for step in (getattr(bench, name) for name in STEPS if name in chosen):
            print(f"[{time.monotonic() - started:5.0f}s] {step.__doc__}", flush=True)
            try:
                step()
            except Exception as exc:  # one figure failing leaves the others to measure
                bench.results.notes.append(f"{step.__name__} failed: {exc!r}"[:400])
                print(f"  failed: {exc!r}"[:2000], file=sys.stderr, flush=True)
                for name in [n for n in processes.running if "sink" not in n]:
                    processes.stop(name)
                infra.purge_queues(bench.redis_db)
        bench.tabulate()
        failed = False
    except BenchError as exc:
        print(f"benchmark failed: {exc}", file=sys.stderr)
    finally:
        bench.tear_down()
        if failed or args.keep:
            print(f"logs of the run: {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if failed:
        sys.exit(1)
    bench.print_table("quick" if args.quick else "full", time.monotonic() - started)


if __name__ == "__main__":
    main()

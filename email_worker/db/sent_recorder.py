"""Records of sent emails, written by a thread of each pool process while it sends the next.

Once a provider has taken a tracked email, its row moves to ``sent``. Written by the
task itself, that record is a round trip and a commit on every email's path: on two
cores, a sixth of a pool process's time went to waiting for it. In a prefork pool
process (:func:`enable`, at ``worker_process_init``) the task hands the record to this
module's thread instead and returns. Records that arrive while the thread is writing
wait for it and then go in together: one statement and one commit for all of them
(:func:`email_worker.db.send_path.record_sent`), so under load there are fewer commits
than emails.

What it changes: the message is acknowledged before its record is committed. A pool
process killed in between (SIGKILL, the hard time limit) leaves the job ``sending``;
when the lease runs out beat's reaper sends it again. That is the window the README
names for duplicates (between the provider's acceptance and the status commit), longer
by the wait in this queue, which is the length of one write. A pool process that exits
normally (warm shutdown, ``--max-tasks-per-child``) writes what is queued first
(:func:`flush`).

A batch the primary does not take is tried again after each of the pauses of
:mod:`email_worker.db.primary_retry`; then each of its records goes to its ``defer``
callback, which publishes a message that records it once the primary is back (as the
task does when it records itself).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from email_worker.db.send_path import SentRecord

log = logging.getLogger(__name__)

BATCH_LIMIT = 64  # records per statement; the rest wait for the next one
FLUSH_TIMEOUT = 15.0  # longer than every pause of primary_retry.RECORD_PAUSES together

# Imported by every pool process as it starts (enable): SQLAlchemy and the send path's
# statements are imported by the first write, so an idle pool process does without them.
Defer = Callable[["SentRecord"], None]
_Item = tuple["SentRecord", Defer] | None  # None: write what came before, then stop


class SentRecorder:
    """A queue of records of sent emails and the thread that writes them."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, record: SentRecord, defer: Defer) -> None:
        """Queue ``record``; ``defer`` takes it if the primary does not within the pauses."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="email-worker-sent-records", daemon=True
                )
                self._thread.start()
        self._queue.put((record, defer))

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Write everything queued and stop the thread; False if it did not finish in time."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None or not thread.is_alive():
            return True
        self._queue.put(None)
        thread.join(timeout)
        if thread.is_alive():
            log.error("records of sent emails still unwritten at exit; their jobs will be reaped")
            return False
        return True

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch, stop = [item], False
            while len(batch) < BATCH_LIMIT:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                _write(batch)
            except Exception:  # the thread must outlive any one batch
                log.exception("recording sent emails failed")
            if stop:
                return


def _write(batch: list[tuple[SentRecord, Defer]]) -> None:
    from sqlalchemy.exc import SQLAlchemyError

    from email_worker.db import send_path
    from email_worker.db.primary_retry import with_pauses
    from email_worker.db.session import primary_connection

    records = [record for record, _ in batch]

    def write() -> None:
        with primary_connection() as connection:
            send_path.record_sent(connection, records)

    try:
        with_pauses(write)
        return
    except SQLAlchemyError as exc:
        log.warning(
            "recording a sent email is deferred: the primary database is unavailable",
            extra={"emails": len(records), "error": type(exc).__name__},
        )
    for record, defer in batch:
        try:
            defer(record)
        except Exception as exc:
            log.error(
                "a sent email could not be recorded or deferred; its job will be reaped",
                extra={"job_id": str(record.job_id), "error": type(exc).__name__},
            )


_recorder: SentRecorder | None = None


def enable() -> None:
    """Write records of sent emails in the background from now on (in this process)."""
    global _recorder
    _recorder = SentRecorder()


def recorder() -> SentRecorder | None:
    """This process's recorder, or None when the task records itself."""
    return _recorder


def flush() -> None:
    """Write every queued record (a pool process about to exit)."""
    if _recorder is not None:
        _recorder.flush()

"""A producer process sending a burst of tracked emails, as an application does.

``python -m tests.support.tracked_burst COUNT INTERVAL OUT`` sends COUNT verification
emails (the tracked path: the job is committed on the primary, then published), one every
INTERVAL seconds, with the database settings of its environment. An email the producer is
refused is tried again 0.1 s later until it is accepted, as an application retrying a
request would. Every attempt is one JSON line in OUT: ``index``, ``task_id``, ``at``
(``time.monotonic()``, the same clock as the test's), ``ok`` and ``error``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

RETRY_PAUSE = 0.1


def main(count: int, interval: float, out: Path) -> None:
    """Send the burst; write one line per attempt."""
    from email_worker.kinds import get_kind
    from email_worker.tasks import send_email_verification

    data = dict(get_kind("email_verification").sample_data)
    with out.open("a", buffering=1) as lines:
        for index in range(count):
            task_id = str(uuid.uuid4())
            while True:
                started = time.monotonic()
                try:
                    send_email_verification.apply_async(
                        kwargs={"to": f"user{index}@example.com", "data": data}, task_id=task_id
                    )
                except Exception as exc:
                    error: str | None = f"{type(exc).__name__}: {exc}"
                else:
                    error = None
                record = {"index": index, "task_id": task_id, "at": started, "ok": error is None}
                lines.write(json.dumps({**record, "error": error}) + "\n")
                if error is None:
                    break
                time.sleep(RETRY_PAUSE)
            time.sleep(interval)


if __name__ == "__main__":
    main(int(sys.argv[1]), float(sys.argv[2]), Path(sys.argv[3]))

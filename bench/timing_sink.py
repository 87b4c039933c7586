"""An SMTP sink that writes each accepted message's arrival time and recipients to a file.

``python -m bench.timing_sink PORT FILE``: one line per message, ``<unix time> <rcpt,...>``.
It serves the figures that need to know *which* email arrived *when* (a high-priority
email behind a backlog, a scheduled send), and stands in for smtp-sink when that cannot run.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from typing import IO, Any

from aiosmtpd.controller import Controller


class TimingHandler:
    """Accept every message and note when it arrived."""

    def __init__(self, log: IO[str]) -> None:
        self.log = log

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.log.write(f"{time.time():.6f} {','.join(envelope.rcpt_tos)}\n")
        self.log.flush()
        return "250 OK"


def main() -> None:
    """Serve on 127.0.0.1:PORT until SIGTERM or SIGINT."""
    port, path = int(sys.argv[1]), sys.argv[2]
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    with open(path, "a", encoding="utf-8") as log:
        controller = Controller(TimingHandler(log), hostname="127.0.0.1", port=port)
        controller.start()
        try:
            stopped.wait()
        finally:
            controller.stop()


if __name__ == "__main__":
    main()

"""Free ports on this machine, for the servers a test starts.

The ports are taken below the kernel's ephemeral range. A client connecting to a
port in that range before the server listens can be given that very port as its own
source port and connect to itself (TCP simultaneous open): it then reads back its
own request, ``GET /health HTTP/1.1``, as the answer.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

FALLBACK_EPHEMERAL_START = 32768
LOWEST = 20000


def _ephemeral_start() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return FALLBACK_EPHEMERAL_START


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_run(length: int) -> int:
    top = _ephemeral_start() - length
    low = LOWEST if top > LOWEST + 1000 else 1024
    while True:
        port = random.randint(low, top)
        if all(_bindable(port + i) for i in range(length)):
            return port


def free_port() -> int:
    """A port nothing listens on now, outside the range clients' own ports come from."""
    return _free_run(1)


def free_port_pair() -> int:
    """A free port whose next port is free too: beat serves on SERVER_PORT + 1."""
    return _free_run(2)

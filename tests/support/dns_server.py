"""A DNS server the test starts: TXT records it serves, over UDP and TCP on one free port.

Names it has records for answer them; names in ``nxdomain`` answer NXDOMAIN; names in
``servfail`` answer SERVFAIL; every other name exists with no TXT record (an empty
answer). A long record is split into 255-byte strings as zone files do, and an answer too
big for UDP comes back truncated, so the client asks again over TCP.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import DNSHandler, DNSLogger, DNSServer

from tests.support.ports import free_port


class _Handler(DNSHandler):
    """Answers larger than plain DNS allows over UDP (512 bytes) come back truncated."""

    def get_reply(self, data: bytes) -> bytes:
        request = DNSRecord.parse(data)
        reply = self.server.resolver.resolve(request, self)
        packed: bytes = reply.pack()
        if self.protocol == "udp" and len(packed) > 512:
            # dnslib's truncate() drops the question; a resolver refuses an answer without it.
            truncated = reply.truncate()
            truncated.add_question(request.q)
            packed = truncated.pack()
        return packed


class _Zone:
    def __init__(
        self, txt: Mapping[str, list[str]], nxdomain: set[str], servfail: set[str]
    ) -> None:
        self.txt = {_key(name): records for name, records in txt.items()}
        self.nxdomain = {_key(name) for name in nxdomain}
        self.servfail = {_key(name) for name in servfail}
        self.asked: list[str] = []
        self._lock = threading.Lock()

    def resolve(self, request: DNSRecord, handler: Any) -> DNSRecord:
        reply = request.reply()
        name = _key(str(request.q.qname))
        with self._lock:
            self.asked.append(name)
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
        elif name in self.nxdomain:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for record in self.txt.get(name, []):
                data = record.encode()
                chunks = [data[i : i + 255] for i in range(0, len(data), 255)] or [b""]
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(chunks), ttl=60))
        return reply


def _key(name: str) -> str:
    return name.rstrip(".").lower()


@contextmanager
def dns_server(
    txt: Mapping[str, list[str]],
    *,
    nxdomain: set[str] | frozenset[str] = frozenset(),
    servfail: set[str] | frozenset[str] = frozenset(),
) -> Iterator[tuple[str, list[str]]]:
    """Serve the records on 127.0.0.1; yield ``host:port`` and the names asked, in order."""
    zone = _Zone(txt, set(nxdomain), set(servfail))
    quiet = DNSLogger("-request,-reply,-truncated,-error", prefix=False)
    servers: list[DNSServer] = []
    for _attempt in range(20):
        port = free_port()
        try:
            for tcp in (False, True):
                servers.append(
                    DNSServer(
                        zone,
                        address="127.0.0.1",
                        port=port,
                        tcp=tcp,
                        logger=quiet,
                        handler=_Handler,
                    )
                )
            break
        except OSError:  # the UDP port was taken, or another process took the TCP one
            for server in servers:
                server.server.server_close()
            servers = []
    else:
        raise RuntimeError("no free port for the DNS server")
    for server in servers:
        server.start_thread()
    try:
        yield f"127.0.0.1:{port}", zone.asked
    finally:
        for server in servers:
            server.stop()
            server.server.server_close()

"""Reading a message as it goes over the wire."""

from __future__ import annotations


def header_names(raw: bytes) -> list[str]:
    """The field names of a header block on the wire, in order, continuation lines aside."""
    block = raw.partition(b"\r\n\r\n")[0]
    return [
        line.partition(b":")[0].decode().lower()
        for line in block.split(b"\r\n")
        if not line.startswith((b" ", b"\t"))
    ]

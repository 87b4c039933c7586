"""A TCP proxy between a process and a server, which a test can cut or black-hole.

``close()`` resets every connection and refuses new ones, as a server that went away.
``black_hole()`` keeps every connection open and new ones are accepted, but no byte gets
through either way: a network partition, where a client learns of the loss only from
its own timeouts. ``heal()`` lets traffic through again (connections made during the
partition are dropped, as a real partition's half-open connections end up).
"""

from __future__ import annotations

import contextlib
import socket
import threading

from tests.support.ports import free_port


class TcpProxy:
    """A TCP proxy on a free port of 127.0.0.1 to ``target`` on 127.0.0.1."""

    def __init__(self, target: int = 5432) -> None:
        self.target = target
        self.port = free_port()
        self.connections: list[socket.socket] = []
        self.listener: socket.socket | None = None
        self.blocked = threading.Event()
        self._lock = threading.Lock()

    def open(self) -> TcpProxy:
        """Listen and forward."""
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self.listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def close(self) -> None:
        """Stop listening and reset every connection."""
        if self.listener is not None:
            with contextlib.suppress(OSError):
                self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
            self.listener.close()
            self.listener = None
        self._drop_all()

    def black_hole(self) -> None:
        """Let nothing through, and close nothing: a network partition."""
        self.blocked.set()

    def heal(self) -> None:
        """End the partition: connections held through it are dropped, new ones forward."""
        self._drop_all()
        self.blocked.clear()

    def _drop_all(self) -> None:
        with self._lock:
            connections, self.connections = self.connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)
            connection.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.blocked.is_set():
                with self._lock:
                    self.connections.append(client)  # accepted, and then silence
                continue
            try:
                server = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self.connections += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(source, sink), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if not self.blocked.is_set():
                    sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

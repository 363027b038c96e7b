"""Fake peers on real loopback sockets for the client tests: servers that misbehave on purpose
(never accept, never answer, close after reading a command, record how requests arrive)."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from dumbkv.resp import Parser

Handler = Callable[["FakePeer", int, socket.socket], None]


class FakePeer:
    """A listening socket; each accepted connection runs ``handler(peer, index, sock)`` in a
    thread of its own. Records every command read (``commands``) and every chunk received
    (``chunks``). ``close()`` stops everything."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address: tuple[str, int] = self.listener.getsockname()[:2]
        self.connections = 0
        self.commands: list[list[bytes]] = []
        self.chunks: list[bytes] = []
        self._socks: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self._lock:
                index = self.connections
                self.connections += 1
                self._socks.append(sock)
            thread = threading.Thread(target=self._serve, args=(index, sock), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _serve(self, index: int, sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self.handler(self, index, sock)
        sock.close()

    def read_commands(self, sock: socket.socket, count: int) -> list[list[bytes]] | None:
        """Read until ``count`` complete commands arrived (None at EOF); record them."""
        parser = Parser()
        got: list[list[bytes]] = []
        while len(got) < count:
            data = sock.recv(65536)
            if not data:
                return None
            with self._lock:
                self.chunks.append(data)
            got += parser.feed(data)
        with self._lock:
            self.commands += got
        return got

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._acceptor.join(5)
        with self._lock:
            socks = list(self._socks)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)


@contextlib.contextmanager
def fake_peer(handler: Handler) -> Iterator[FakePeer]:
    peer = FakePeer(handler)
    try:
        yield peer
    finally:
        peer.close()


def read_one_then_close(peer: FakePeer, index: int, sock: socket.socket) -> None:
    """Read one command, then close without answering."""
    peer.read_commands(sock, 1)


def pong_forever(peer: FakePeer, index: int, sock: socket.socket) -> None:
    """Answer +PONG to every command until the client closes."""
    while peer.read_commands(sock, 1) is not None:
        sock.sendall(b"+PONG\r\n")


def first_breaks_then_pong(peer: FakePeer, index: int, sock: socket.socket) -> None:
    """The first connection reads one command and closes; later ones answer +PONG."""
    (read_one_then_close if index == 0 else pong_forever)(peer, index, sock)


def answer_after_three(peer: FakePeer, index: int, sock: socket.socket) -> None:
    """Answer nothing until three commands arrived, then +OK three times: a client that waits
    for each reply before sending the next command never gets an answer."""
    if peer.read_commands(sock, 3) is not None:
        sock.sendall(b"+OK\r\n" * 3)
        peer.read_commands(sock, 1)  # hold the connection until the client closes


def garbage_reply(peer: FakePeer, index: int, sock: socket.socket) -> None:
    """Answer a command with bytes that are not RESP."""
    if peer.read_commands(sock, 1) is not None:
        sock.sendall(b"!not resp\r\n")
        peer.read_commands(sock, 1)


@contextlib.contextmanager
def silent_listener() -> Iterator[tuple[str, int]]:
    """A socket that listens (the kernel completes the handshake) and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        yield listener.getsockname()[:2]
    finally:
        listener.close()


@contextlib.contextmanager
def full_backlog() -> Iterator[tuple[str, int]]:
    """An address whose accept queue is full, so a new connect hangs (SYN dropped)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()[:2]
    filler = socket.create_connection(address, timeout=5)
    try:
        yield address
    finally:
        filler.close()
        listener.close()


@contextlib.contextmanager
def many_open_files(lowest_free: int = 1100) -> Iterator[None]:
    """Hold open files until the lowest free descriptor is at least ``lowest_free`` (past
    ``select``'s 1024 limit), raising the soft file limit for the block if needed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = lowest_free + 200
    if hard != resource.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard open-file limit ({hard}) is below {wanted}")
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    held: list[int] = []
    try:
        while not held or held[-1] < lowest_free - 1:
            held.append(os.open(os.devnull, os.O_RDONLY))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

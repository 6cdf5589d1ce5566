"""Callback endpoints that misbehave, on raw sockets in background threads: one that dribbles its
answer a byte at a time, one that never answers, one that answers with an endless body. Each counts
the requests it got and what it managed to send."""

from __future__ import annotations

import socket
import threading
import time


class HostileEndpoint:
    def __init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self._lock = threading.Lock()
        self._requests = 0
        self._open = 0
        self.bytes_sent = 0
        self.release = threading.Event()  # set to make every open answer end now
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"

    @property
    def requests(self) -> int:
        with self._lock:
            return self._requests

    @property
    def open_requests(self) -> int:
        """Requests whose answer is still being served."""
        with self._lock:
            return self._open

    def wait_requests(self, count: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.requests < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.requests} requests within {timeout}s, wanted {count}")
            time.sleep(0.02)

    def __enter__(self) -> HostileEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release.set()
        self._stopped.set()
        self._thread.join(timeout=5)
        self._sock.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            if not self._read_request(conn):
                return
            with self._lock:
                self._requests += 1
                self._open += 1
            try:
                self.answer(conn)
            except OSError:
                pass  # the client hung up: what a cut answer looks like from here
            finally:
                with self._lock:
                    self._open -= 1

    @staticmethod
    def _read_request(conn: socket.socket) -> bool:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            body += chunk
        return True

    def answer(self, conn: socket.socket) -> None:
        raise NotImplementedError


class Dribbler(HostileEndpoint):
    """Answers 200 with a long body, one byte every `every` seconds, until released."""

    def __init__(self, every: float = 0.2) -> None:
        super().__init__()
        self.every = every

    def answer(self, conn: socket.socket) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1000000\r\n\r\n")
        while not self.release.wait(self.every):
            conn.sendall(b" ")


class Silent(HostileEndpoint):
    """Reads the request and never answers, until released."""

    def answer(self, conn: socket.socket) -> None:
        self.release.wait()


class Flood(HostileEndpoint):
    """Answers 200 with a body of `size` bytes, sent as fast as the client takes it."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def answer(self, conn: socket.socket) -> None:
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {self.size}\r\n\r\n"
        conn.sendall(head.encode())
        chunk = b"<" * 65536
        while self.bytes_sent < self.size and not self.release.is_set():
            conn.sendall(chunk)
            with self._lock:
                self.bytes_sent += len(chunk)

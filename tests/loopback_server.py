"""A real HTTP(S) server on 127.0.0.1, in a thread, for the download tests and benchmark.

Routes map a path (or a path prefix ending in "/") to a function that answers the request; the
helpers below build the usual answers: a file, an error status, a redirect, a slow body, a body
that never ends. Every request is logged as (time, path) so tests can count what was fetched.
"""
from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Responder = Callable[[BaseHTTPRequestHandler], None]


class _Server(ThreadingHTTPServer):
    """A listen backlog for many downloads at once: the constructor listens, so this must be the
    class's (socketserver's default, 5, dropped the connections of 16 threads connecting together)."""

    daemon_threads = True
    request_queue_size = 1024


class LoopbackServer:
    def __init__(self, tls_context: ssl.SSLContext | None = None):
        self.routes: dict[str, Responder] = {}
        self.requests: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), self._handler_class())
        if tls_context is not None:
            self._server.socket = tls_context.wrap_socket(self._server.socket, server_side=True)
        self.scheme = "https" if tls_context is not None else "http"
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def count(self, path: str) -> int:
        with self._lock:
            return sum(1 for _, p in self.requests if p == path)

    def times(self, path: str) -> list[float]:
        with self._lock:
            return [t for t, p in self.requests if p == path]

    def _route(self, path: str) -> Responder | None:
        if path in self.routes:
            return self.routes[path]
        prefixes = [p for p in self.routes if p.endswith("/") and path.startswith(p)]
        return self.routes[max(prefixes, key=len)] if prefixes else None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
                with server._lock:
                    server.requests.append((time.monotonic(), self.path))
                responder = server._route(self.path)
                try:
                    if responder is None:
                        send_status(self, 404)
                    else:
                        responder(self)
                except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                    pass

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
                pass

        return Handler


def send_bytes(handler: BaseHTTPRequestHandler, data: bytes, content_type: str = "video/mp4",
               status: int = 200, length: int | None = None) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(data) if length is None else length))
    handler.end_headers()
    handler.wfile.write(data)


def send_status(handler: BaseHTTPRequestHandler, status: int, headers: dict | None = None) -> None:
    body = f"<html><body>{status}</body></html>".encode()
    handler.send_response(status)
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Type", "text/html")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def file_responder(data: bytes, content_type: str = "video/mp4") -> Responder:
    return lambda handler: send_bytes(handler, data, content_type)


def redirect_responder(location: str, status: int = 302) -> Responder:
    return lambda handler: send_status(handler, status, {"Location": location})


def failing_then(responder: Responder, failures: int, status: int = 500,
                 headers: dict | None = None) -> Responder:
    """Answers `status` to the first `failures` requests, then as `responder` does."""
    seen = []

    def respond(handler: BaseHTTPRequestHandler) -> None:
        seen.append(1)
        if len(seen) <= failures:
            send_status(handler, status, headers)
        else:
            responder(handler)

    return respond


def slow_responder(data: bytes, bytes_per_step: int, step_s: float) -> Responder:
    """Sends `data` (with its true Content-Length) a few bytes at a time."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        for start in range(0, len(data), bytes_per_step):
            handler.wfile.write(data[start : start + bytes_per_step])
            handler.wfile.flush()
            time.sleep(step_s)

    return respond


def slow_headers_responder(step_s: float, steps: int) -> Responder:
    """A status line, then a header trickling in one byte per `step_s`: every read gets data in
    time, so only a limit on the whole download stops it."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        for _ in range(steps):
            handler.wfile.write(b"a")
            handler.wfile.flush()
            time.sleep(step_s)
        handler.close_connection = True

    return respond


def endless_responder(head: bytes, limit: int) -> Responder:
    """A body with no Content-Length that starts like a video and goes on until the client
    hangs up (or `limit` bytes, so a broken client cannot make it run forever)."""

    def respond(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "video/mp4")
        handler.end_headers()
        filler = head + bytes(1 << 16)
        sent = 0
        while sent < limit:
            handler.wfile.write(filler)
            sent += len(filler)
        handler.close_connection = True

    return respond

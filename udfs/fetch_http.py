"""The HTTP(S) fetcher: `http.client` with connections that pick and check their own address.

`http.client` would resolve the host and connect to whatever the name points at. Here the
connection's `connect()` resolves the name itself, drops every address the safety rules refuse,
connects to an allowed one and checks the peer it actually reached; TLS then runs over that
socket with the URL's host name for SNI and certificate checking. Redirects are followed by
hand, so each hop's URL and address go through the same checks. A watchdog shuts the socket when
an attempt runs past `download.timeout_s`, which also stops a body that trickles in slowly
enough to never trip a per-read timeout.
"""
from __future__ import annotations

import email.utils
import heapq
import http.client
import ipaddress
import itertools
import random
import socket
import ssl
import threading
import time
from datetime import datetime, timezone
from urllib.parse import urljoin

from udfs.fetch_base import (
    CONNECTION_ERROR,
    HTTP_ERROR,
    TIMEOUT,
    Deadline,
    FetchFailure,
    FetchSettings,
)
from udfs.fetch_safety import HttpTarget, check_address, parse_http_url, resolve_checked
from udfs.fetch_store import BodySink

REDIRECT_CODES = (301, 302, 303, 307, 308)
CHUNK_BYTES = 1 << 20


class _CheckedConnect:
    """The connect() both connection classes share: resolve, check, connect, check the peer."""

    host: str
    port: int
    allow_hosts: tuple
    connect_timeout: float
    timeout: float

    def _checked_socket(self) -> socket.socket:
        last_error: OSError | None = None
        for family, sockaddr in resolve_checked(self.host, self.port, self.allow_hosts):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(self.connect_timeout)
            try:
                sock.connect(sockaddr)
                peer = ipaddress.ip_address(sock.getpeername()[0].split("%")[0])
                check_address(self.host, peer, self.allow_hosts)
            except OSError as err:
                sock.close()
                last_error = err
                continue
            except FetchFailure:
                sock.close()
                raise
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.timeout)
            return sock
        raise FetchFailure(
            CONNECTION_ERROR, f"cannot connect to {self.host}:{self.port}: {last_error}", retryable=True
        )


class CheckedHTTPConnection(_CheckedConnect, http.client.HTTPConnection):
    def __init__(self, target: HttpTarget, settings: FetchSettings, connect_timeout: float):
        super().__init__(target.host, target.port, timeout=settings.read_timeout_s)
        self.allow_hosts = settings.allow_hosts
        self.connect_timeout = connect_timeout
        self.raw_socket: socket.socket | None = None

    def connect(self) -> None:
        self.sock = self.raw_socket = self._checked_socket()


class CheckedHTTPSConnection(_CheckedConnect, http.client.HTTPSConnection):
    def __init__(self, target: HttpTarget, settings: FetchSettings, connect_timeout: float):
        context = ssl.create_default_context(cafile=settings.tls_ca_file)
        super().__init__(target.host, target.port, timeout=settings.read_timeout_s, context=context)
        self.allow_hosts = settings.allow_hosts
        self.connect_timeout = connect_timeout
        self.raw_socket: socket.socket | None = None

    def connect(self) -> None:
        sock = self._checked_socket()
        try:
            self.sock = self.raw_socket = self._context.wrap_socket(sock, server_hostname=self.host)
        except (ssl.SSLError, ssl.CertificateError) as err:
            sock.close()
            raise FetchFailure(CONNECTION_ERROR, f"TLS with {self.host} failed: {err}") from None


class _Watchdog:
    """Shuts the current connection's socket when the attempt's deadline passes.

    One shared thread (`_WatchdogThread`) serves every attempt in the process, so an attempt
    costs a heap push, not a thread."""

    def __init__(self, deadline: Deadline):
        self.ends = deadline.ends
        self.fired = False
        self.done = False
        self.connection: CheckedHTTPConnection | CheckedHTTPSConnection | None = None

    def __enter__(self) -> _Watchdog:
        _WatchdogThread.shared().watch(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.done = True

    def fire(self) -> None:
        self.fired = True
        sock = self.connection.raw_socket if self.connection else None
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _WatchdogThread:
    """A daemon thread that fires each watched attempt whose deadline passed while it still ran."""

    _instance: _WatchdogThread | None = None
    _instance_lock = threading.Lock()

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._heap: list[tuple[float, int, _Watchdog]] = []
        self._compact_at = 64
        self._sequence = itertools.count()
        threading.Thread(target=self._run, name="vidlake-fetch-watchdog", daemon=True).start()

    @classmethod
    def shared(cls) -> _WatchdogThread:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def watch(self, watchdog: _Watchdog) -> None:
        """Adds an attempt. The thread is woken only when the attempt ends before every other one
        (attempts share one timeout, so that is rare): a wake-up per download cost more CPU than
        the download's own Python code."""
        with self._condition:
            if len(self._heap) >= self._compact_at:
                self._heap = [entry for entry in self._heap if not entry[2].done]
                heapq.heapify(self._heap)
                self._compact_at = max(64, 2 * len(self._heap))
            earliest = not self._heap or watchdog.ends < self._heap[0][0]
            heapq.heappush(self._heap, (watchdog.ends, next(self._sequence), watchdog))
            if earliest:
                self._condition.notify()

    def _run(self) -> None:
        with self._condition:
            while True:
                while self._heap and (self._heap[0][2].done or self._heap[0][0] <= time.monotonic()):
                    _, _, watchdog = heapq.heappop(self._heap)
                    if not watchdog.done:
                        watchdog.fire()
                timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                self._condition.wait(timeout)


def fetch_http(url: str, sink: BodySink, settings: FetchSettings) -> None:
    """Fetches `url` into `sink`, retrying 429, 5xx and connection errors with backoff."""
    for attempt in range(settings.retries + 1):
        try:
            _attempt(url, sink, settings)
            return
        except FetchFailure as failure:
            if not failure.retryable or attempt == settings.retries:
                suffix = f" (after {attempt + 1} attempts)" if attempt else ""
                raise FetchFailure(failure.status, failure.message + suffix) from None
            sink.reset()
            time.sleep(backoff_s(attempt, failure.retry_after_s, settings))


def backoff_s(attempt: int, retry_after_s: float | None, settings: FetchSettings) -> float:
    """Exponential backoff with jitter; a server's Retry-After wins when longer, up to its cap."""
    base = min(settings.backoff_max_s, settings.backoff_s * 2**attempt)
    wait = base * random.uniform(0.5, 1.0)
    if retry_after_s is not None:
        wait = max(wait, min(retry_after_s, settings.retry_after_max_s))
    return wait


def _attempt(url: str, sink: BodySink, settings: FetchSettings) -> None:
    deadline = Deadline(settings.timeout_s)
    with _Watchdog(deadline) as watchdog:
        try:
            _follow_redirects(url, sink, settings, deadline, watchdog)
        except FetchFailure:
            raise
        except (OSError, http.client.HTTPException) as err:
            if watchdog.fired or deadline.remaining() <= 0:
                raise FetchFailure(TIMEOUT, f"{_over_time(settings)} ({sink.size} bytes received)") from None
            if isinstance(err, TimeoutError):
                raise FetchFailure(TIMEOUT, f"the server sent nothing for download.read_timeout_s="
                                            f"{settings.read_timeout_s:g} s") from None
            raise FetchFailure(CONNECTION_ERROR, f"{type(err).__name__}: {err}", retryable=True) from None


def _over_time(settings: FetchSettings) -> str:
    return f"the download took longer than download.timeout_s={settings.timeout_s:g} s"


def _follow_redirects(url: str, sink: BodySink, settings: FetchSettings, deadline: Deadline,
                      watchdog: _Watchdog) -> None:
    for hop in range(settings.max_redirects + 1):
        connection = _open(url, hop, settings, deadline)
        watchdog.connection = connection
        try:
            response = connection.getresponse()
            try:
                if response.status in REDIRECT_CODES:
                    url = _redirect_target(url, response)
                    continue
                _check_status(response)
                _read_body(response, connection, sink, settings, deadline, watchdog)
                return
            finally:
                response.close()
        finally:
            connection.close()
            if connection.raw_socket is not None:
                connection.raw_socket.close()
    raise FetchFailure(HTTP_ERROR, f"more than download.max_redirects={settings.max_redirects} redirects")


def _open(url: str, hop: int, settings: FetchSettings, deadline: Deadline):
    """A connection with the GET request sent; a refusal after a redirect names the redirect's target."""
    try:
        target = parse_http_url(url, settings.allow_hosts)
        deadline.check("connecting")
        connection_class = CheckedHTTPSConnection if target.scheme == "https" else CheckedHTTPConnection
        connection = connection_class(target, settings, min(settings.connect_timeout_s, deadline.remaining()))
        try:
            connection.request("GET", target.path, headers=_headers(settings))
        except BaseException:
            connection.close()
            raise
        return connection
    except FetchFailure as failure:
        if hop == 0:
            raise
        message = f"redirected to {url}: {failure.message}"
        raise FetchFailure(failure.status, message, failure.retryable) from None


def _headers(settings: FetchSettings) -> dict:
    return {
        "User-Agent": settings.user_agent,
        "Accept": "video/*, application/octet-stream;q=0.9, */*;q=0.5",
        "Accept-Encoding": "identity",
        "Connection": "close",
    }


def _redirect_target(url: str, response: http.client.HTTPResponse) -> str:
    location = response.getheader("Location")
    if not location:
        raise FetchFailure(HTTP_ERROR, f"HTTP {response.status} redirect without a Location header")
    return urljoin(url, location.strip())


def _check_status(response: http.client.HTTPResponse) -> None:
    if response.status == 200:
        return
    message = f"HTTP {response.status} {response.reason}".rstrip()
    retryable = response.status == 429 or response.status >= 500
    raise FetchFailure(HTTP_ERROR, message, retryable=retryable,
                       retry_after_s=_retry_after_s(response.getheader("Retry-After")))


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as seconds: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _content_length(response: http.client.HTTPResponse) -> int | None:
    value = response.getheader("Content-Length")
    if value is None or response.getheader("Transfer-Encoding"):
        return None
    try:
        return int(value.strip())
    except ValueError:
        raise FetchFailure(HTTP_ERROR, f"invalid Content-Length {value!r}") from None


def _read_body(response: http.client.HTTPResponse, connection, sink: BodySink, settings: FetchSettings,
               deadline: Deadline, watchdog: _Watchdog) -> None:
    """Reads the body into the sink: what came with the headers first (enough to check it is a
    video), then up to CHUNK_BYTES per read into the thread's buffer. Each read of the socket and
    each write of the spool hands the GIL to another download thread, so the fewer the better."""
    expected = _content_length(response)
    sink.expect_length(expected)
    buffer = _thread_buffer()
    chunk = response.read1(CHUNK_BYTES)
    while chunk:
        sink.write(chunk)
        deadline.check("the download")
        _bound_read_timeout(connection.raw_socket, settings, deadline)
        chunk = buffer[: response.readinto(buffer)]
    if watchdog.fired:
        raise FetchFailure(TIMEOUT, _over_time(settings))
    if expected is not None and sink.size < expected:
        raise FetchFailure(CONNECTION_ERROR, f"the body ended after {sink.size} of its {expected} bytes",
                           retryable=True)
    sink.finish()


def _bound_read_timeout(sock: socket.socket | None, settings: FetchSettings, deadline: Deadline) -> None:
    """Shortens the socket's read timeout (download.read_timeout_s) once the attempt's deadline is
    nearer than that; the watchdog would also end the read, this only makes it end on time."""
    remaining = deadline.remaining()
    if sock is not None and remaining < settings.read_timeout_s:
        sock.settimeout(max(0.01, remaining))


def _thread_buffer() -> memoryview:
    """A CHUNK_BYTES buffer per download thread, reused: a fresh one per download would be mapped
    and faulted in each time."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = memoryview(bytearray(CHUNK_BYTES))
    return buffer


_buffers = threading.local()

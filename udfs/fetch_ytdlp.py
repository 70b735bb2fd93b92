"""The optional page-URL fetcher: yt-dlp, for sets whose URLs are video pages (Panda-70M and
MiraData point at YouTube).

yt-dlp is an optional dependency (`pip install vidlake[youtube]`): without it such a video gets
the status `fetcher_unavailable`, and any yt-dlp failure (video removed, private, no format
matching `download.ytdlp.format`, over `download.max_bytes`) is `fetch_error` with yt-dlp's
message.

yt-dlp makes its own connections, so the address rules of the HTTP fetcher are applied to them
twice. Before: the page URL's host before the page is read, then, once yt-dlp has read the page
and chosen a format (`extract_info(download=False)`), every URL that format's download starts
from (its URL, manifest and fragments, for each format merged); a host must have no refused
address at all, since yt-dlp may connect to any of them. And while it runs: every TCP connection
the calling thread opens is checked against the address it is about to connect to
(`connections_checked`), so a redirect yt-dlp follows, a segment an HLS manifest lists, or
another DNS answer for a checked name cannot reach a refused address either (blocked_url).
"""
from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from urllib.parse import urljoin

from udfs.fetch_base import BLOCKED_URL, FETCH_ERROR, FETCHER_UNAVAILABLE, FetchFailure, FetchSettings
from udfs.fetch_safety import check_every_address, parse_http_url

ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


class _CollectingLogger:
    """Keeps yt-dlp's errors for the row's message and prints nothing."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def debug(self, message: str) -> None:
        pass

    def info(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def error(self, message: str) -> None:
        self.errors.append(ANSI_ESCAPE.sub("", message))


def is_page_host(host: str, settings: FetchSettings) -> bool:
    """True when `host` (or a parent domain of it) is one of `download.ytdlp.hosts`."""
    host = host.lower().rstrip(".")
    return any(host == h or host.endswith("." + h) for h in settings.ytdlp_hosts)


def ytdlp_module():
    """The yt_dlp module; fetcher_unavailable when it is not installed (checked before any network use)."""
    try:
        import yt_dlp
    except ImportError:
        raise FetchFailure(
            FETCHER_UNAVAILABLE, "this is a video page URL and needs yt-dlp, which is not installed "
            "(pip install yt-dlp, or vidlake[youtube])"
        ) from None
    return yt_dlp


def check_hosts(urls: list[str], allow_hosts: tuple, what: str) -> None:
    """blocked_url unless every URL is http(s) and every address of every host is allowed."""
    hosts: dict[tuple[str, int], None] = {}
    try:
        for url in urls:
            target = parse_http_url(url, allow_hosts)
            hosts[target.host, target.port] = None
        for host, port in hosts:
            check_every_address(host, port, allow_hosts)
    except FetchFailure as failure:
        raise FetchFailure(failure.status, f"{what}: {failure.message}", failure.retryable) from None


_checked_thread = threading.local()
_install_lock = threading.Lock()


class RefusedConnection(ConnectionRefusedError):
    """A connection `connections_checked` stopped before it was made."""


@contextlib.contextmanager
def connections_checked(allow_hosts: Sequence[str]) -> Iterator[list[str]]:
    """Within the block, every IPv4/IPv6 socket the calling thread connects is first checked as
    the HTTP fetcher checks its own (the address against download.allow_hosts' addresses and
    networks); a refused one raises RefusedConnection instead of connecting, and its reason is
    added to the list the block gets. Other threads are not affected."""
    _install_connect_check()
    refused: list[str] = []
    _checked_thread.guard = (tuple(allow_hosts), refused)
    try:
        yield refused
    finally:
        _checked_thread.guard = None


def _install_connect_check() -> None:
    """Wraps socket.socket.connect, once per process, with the check of the calling thread's guard."""
    with _install_lock:
        original = socket.socket.connect
        if getattr(original, "vidlake_checked", False):
            return

        def connect(sock: socket.socket, address) -> None:
            guard = getattr(_checked_thread, "guard", None)
            if guard is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                _check_connection(str(address[0]), int(address[1]), *guard)
            return original(sock, address)

        connect.vidlake_checked = True
        socket.socket.connect = connect


def _check_connection(host: str, port: int, allow_hosts: tuple, refused: list[str]) -> None:
    """The address a socket connects to (a name, which connect resolves itself, by all its
    addresses). A name that does not resolve is left to the connect call to fail."""
    try:
        check_every_address(host, port, allow_hosts)
    except FetchFailure as failure:
        if failure.status != BLOCKED_URL:
            return
        refused.append(failure.message)
        raise RefusedConnection(f"vidlake refused the connection: {failure.message}") from None


def media_urls(info: dict) -> list[str]:
    """The URLs the download of yt-dlp's chosen format starts from: for each format it merges
    (or the one chosen), its URL, manifest URL, fragment base URL and listed fragments."""
    if info.get("_type", "video") != "video":
        raise FetchFailure(FETCH_ERROR, f"yt-dlp: the page is a {info.get('_type')}, not one video")
    urls: list[str] = []
    for chosen in info.get("requested_formats") or [info]:
        base = chosen.get("fragment_base_url")
        urls += [chosen.get("url"), chosen.get("manifest_url"), base]
        fragments = chosen.get("fragments")
        if isinstance(fragments, (list, tuple)):
            urls += [f.get("url") or (urljoin(base, f["path"]) if base and f.get("path") else None) for f in fragments]
    found = [u for u in dict.fromkeys(urls) if u]
    if not found:
        raise FetchFailure(BLOCKED_URL, f"yt-dlp chose format {info.get('format_id')!r} with no URL to check "
                                        f"(protocol {info.get('protocol')!r}); it is not fetched")
    return found


def fetch_with_ytdlp(url: str, folder: str, settings: FetchSettings) -> str:
    """Downloads the video of page `url` into the empty `folder` (the caller's); returns the file's path.

    yt-dlp has no total time limit: `download.read_timeout_s` bounds each of its reads."""
    yt_dlp = ytdlp_module()
    check_hosts([url], settings.allow_hosts, "the page URL")
    logger = _CollectingLogger()
    options = {
        "format": settings.ytdlp_format,
        "outtmpl": os.path.join(folder, "video.%(ext)s"),
        "noplaylist": True,
        "max_filesize": settings.max_bytes,
        "socket_timeout": settings.read_timeout_s,
        "retries": settings.retries,
        "logger": logger,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "concurrent_fragment_downloads": 1,  # fragments on this thread, where connections are checked
        "cachedir": False,
        "color": {"stderr": "no_color", "stdout": "no_color"},
    }
    error = None
    with connections_checked(settings.allow_hosts) as refused:
        try:
            with yt_dlp.YoutubeDL(options) as downloader:
                info = downloader.extract_info(url, download=False)
                check_hosts(media_urls(info), settings.allow_hosts, "the media URL yt-dlp chose")
                downloader.process_info(info)
        except FetchFailure:
            raise
        except Exception as err:  # noqa: BLE001 - yt-dlp raises many types; every one is this video's failure
            error = logger.errors[-1] if logger.errors else f"{type(err).__name__}: {err}"
    if refused:  # whether yt-dlp raised or only warned and wrote no file
        raise FetchFailure(BLOCKED_URL, f"yt-dlp was stopped connecting: {refused[0]}")
    if error is not None:
        raise FetchFailure(FETCH_ERROR, f"yt-dlp: {ANSI_ESCAPE.sub('', error)}")
    files = [f for f in os.listdir(folder) if not f.endswith((".part", ".ytdl"))]
    if not files:
        raise FetchFailure(FETCH_ERROR, "yt-dlp wrote no file: no format matched download.ytdlp.format, or "
                                        f"the video is over download.max_bytes={settings.max_bytes}")
    return os.path.join(folder, files[0])

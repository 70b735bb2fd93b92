"""The optional page-URL fetcher: yt-dlp, for sets whose URLs are video pages (Panda-70M and
MiraData point at YouTube).

yt-dlp is an optional dependency (`pip install vidlake[youtube]`): without it such a video gets
the status `fetcher_unavailable`, and any yt-dlp failure (video removed, private, no format
matching `download.ytdlp.format`, over `download.max_bytes`) is `fetch_error` with yt-dlp's
message. The page URL's host is checked like any other, but the connections yt-dlp then makes
on its own are not: only hosts listed in `download.ytdlp.hosts` are handed to it.
"""
from __future__ import annotations

import os
import re

from udfs.fetch_base import FETCH_ERROR, FETCHER_UNAVAILABLE, FetchFailure, FetchSettings

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


def fetch_with_ytdlp(url: str, folder: str, settings: FetchSettings) -> str:
    """Downloads the video of page `url` into the empty `folder` (the caller's); returns the file's path.

    yt-dlp has no total time limit: `download.read_timeout_s` bounds each of its reads."""
    yt_dlp = ytdlp_module()
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
        "cachedir": False,
        "color": {"stderr": "no_color", "stdout": "no_color"},
    }
    try:
        with yt_dlp.YoutubeDL(options) as downloader:
            downloader.download([url])
    except Exception as err:  # noqa: BLE001 - yt-dlp raises many types; every one is this video's failure
        message = logger.errors[-1] if logger.errors else f"{type(err).__name__}: {err}"
        raise FetchFailure(FETCH_ERROR, f"yt-dlp: {ANSI_ESCAPE.sub('', message)}") from None
    files = [f for f in os.listdir(folder) if not f.endswith((".part", ".ytdl"))]
    if not files:
        raise FetchFailure(FETCH_ERROR, "yt-dlp wrote no file: no format matched download.ytdlp.format, or "
                                        f"the video is over download.max_bytes={settings.max_bytes}")
    return os.path.join(folder, files[0])

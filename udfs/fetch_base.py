"""What every fetcher shares: the row statuses, the failure they raise, and the settings from conf.

A fetcher never returns a half result: it fills a sink with the whole body or raises
`FetchFailure(status, message)`, which becomes one `video_files` row with that status.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

from udfs.probe import INDEX_MAX_BYTES

OK = "ok"
HTTP_ERROR = "http_error"  # a final HTTP status other than 200: the message starts with "HTTP <code>",
# where `vidlake download --retry-failed` reads the code (download.retry_http_codes)
TIMEOUT = "timeout"  # the attempt ran past download.timeout_s, or the peer went silent for read_timeout_s
TOO_LARGE = "too_large"  # Content-Length or the bytes actually sent exceed download.max_bytes
BLOCKED_URL = "blocked_url"  # a scheme, host, address or local path the safety rules refuse
INVALID_URL = "invalid_url"  # not a URL or path vidlake can parse
INVALID_ID = "invalid_id"  # a video_id that is not a hex hash, so it cannot name a blob
CONNECTION_ERROR = "connection_error"  # refused, reset, unresolvable, TLS failure, body cut short
NOT_VIDEO = "not_video"  # the first bytes are not a video container (HTML, JSON, an image...)
DECODE_ERROR = "decode_error"  # a video container PyAV cannot open or decode, or a truncated one
FETCHER_UNAVAILABLE = "fetcher_unavailable"  # a page URL needs yt-dlp and it is not installed
FETCH_ERROR = "fetch_error"  # yt-dlp failed, a local file is missing, the blob store refused the bytes

STATUSES = (
    OK, HTTP_ERROR, TIMEOUT, TOO_LARGE, BLOCKED_URL, INVALID_URL, INVALID_ID, CONNECTION_ERROR,
    NOT_VIDEO, DECODE_ERROR, FETCHER_UNAVAILABLE, FETCH_ERROR,
)


class FetchFailure(Exception):
    """A video that could not be fetched or probed: `status` is one of STATUSES."""

    def __init__(self, status: str, message: str, retryable: bool = False,
                 retry_after_s: float | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class FetchSettings:
    """The `download` section of the configuration, checked once per task.

    `blob_root`, `allow_local_paths` and `local_roots` must be resolved by the caller (the job
    fills in the lake-relative default and the ingest settings)."""

    blob_root: str
    allow_hosts: tuple = ()
    allow_local_paths: bool = False
    local_roots: tuple = ()  # folders a local file must be under (symlinks resolved); empty: anywhere
    timeout_s: float = 300.0
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 30.0
    max_bytes: int = 2 * 1024**3
    max_redirects: int = 5
    retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 60.0
    concurrency: int = 16
    probes_at_once: int = 1
    count_frames_by_demux: bool = False
    index_max_bytes: int = INDEX_MAX_BYTES
    spool_dir: str | None = None
    part_max_age_s: float = 3600.0
    user_agent: str = "vidlake/0.1"
    tls_ca_file: str | None = None
    ytdlp_enabled: bool = True
    ytdlp_hosts: tuple = ()
    ytdlp_format: str = "b"

    @classmethod
    def from_conf(cls, conf: dict[str, Any]) -> FetchSettings:
        """Settings from the `download` section (a plain dict); its `ytdlp` subsection is flattened."""
        flat = {k: v for k, v in conf.items() if k != "ytdlp"}
        flat.update({f"ytdlp_{k}": v for k, v in (conf.get("ytdlp") or {}).items()})
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in flat.items() if k in known}
        if not values.get("blob_root"):
            raise ValueError("download.blob_root must be resolved to a folder or URL before fetching")
        for key in ("allow_hosts", "ytdlp_hosts"):
            values[key] = tuple(str(h).strip().lower() for h in values.get(key) or ())
        values["local_roots"] = tuple(str(root) for root in values.get("local_roots") or ())
        settings = cls(**values)
        for key in ("timeout_s", "connect_timeout_s", "read_timeout_s", "max_bytes", "concurrency", "probes_at_once",
                    "index_max_bytes"):
            if getattr(settings, key) <= 0:
                raise ValueError(f"download.{key} must be positive, got {getattr(settings, key)!r}")
        if settings.part_max_age_s <= settings.longest_untouched_part_s():
            raise ValueError(f"download.part_max_age_s={settings.part_max_age_s:g} would remove parts still being "
                             f"written: it must be over {settings.longest_untouched_part_s():g} s (timeout_s and "
                             "the longest backoff)")
        return settings

    def longest_untouched_part_s(self) -> float:
        """The longest a live download leaves its part unwritten: a whole attempt (a body that
        trickles in stays in the write buffer) plus the wait before the next one."""
        return self.timeout_s + max(self.backoff_max_s, self.retry_after_max_s)


class Deadline:
    """The time budget of one attempt."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def remaining(self) -> float:
        return self.ends - time.monotonic()

    def check(self, what: str) -> None:
        if self.remaining() <= 0:
            raise FetchFailure(TIMEOUT, f"{what} took longer than download.timeout_s={self.seconds:g} s")

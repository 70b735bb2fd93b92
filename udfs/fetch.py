"""Download and probe a batch of videos: one `video_files` row per input row (SpoolError only when the
spool cannot be written).

    download_batch(rows, conf[, cutoff]) -> rows with the `video_files` columns

`rows` carries `video_id`, `url` and optionally `attempts` (the downloads tried so far). Each
URL goes to its fetcher (http/https, a yt-dlp page URL, or a local path where allowed), the
body lands in a spool file, is probed with PyAV, and only then is published to the blob store.
Any failure of a video is a row with its status and message; a spool folder that cannot be
written (a full disk) is the machine's failure, and raises SpoolError. Many downloads run at once
in a thread pool (`download.concurrency`): the work is waiting on the network, not the CPU.
Probing is CPU work (it decodes a keyframe), so only `download.probes_at_once` files are probed at
a time. A `Cutoff` stops the batch from starting downloads after a time: the rows it did not
reach get no result row.
"""
from __future__ import annotations

import itertools
import os
import stat
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from urllib.parse import unquote, urlsplit

import pandas as pd

from udfs.fetch_base import (
    BLOCKED_URL,
    DECODE_ERROR,
    FETCH_ERROR,
    INVALID_URL,
    OK,
    TOO_LARGE,
    Deadline,
    FetchFailure,
    FetchSettings,
)
from udfs.fetch_http import fetch_http
from udfs.fetch_store import BlobStore, BodySink, SpoolError, check_video_id, discard
from udfs.fetch_ytdlp import fetch_with_ytdlp, is_page_host
from udfs.probe import ProbeError, probe_video
from udfs.sources import LocalPaths

# The `video_files` columns (schemas.tables.VIDEO_FILES, which this module cannot import: udfs
# stay free of pyspark) with the pandas dtype each is returned as.
VIDEO_FILES_DTYPES = {
    "video_id": "string",
    "status": "string",
    "error": "string",
    "url": "string",
    "uri": "string",
    "bytes": "Int64",
    "sha256": "string",
    "container": "string",
    "codec": "string",
    "width": "Int32",
    "height": "Int32",
    "fps": "Float64",
    "num_frames": "Int64",
    "duration_s": "Float64",
    "has_audio": "boolean",
    "attempts": "Int32",
    "fetched_at": "datetime64[us, UTC]",
}
LOCAL_CHUNK_BYTES = 1 << 20


class Cutoff:
    """When downloads stop being started: once the wall-clock time `stop_at` (seconds since the
    epoch; the Spark driver sets it, so every executor stops at the same moment) has passed, but
    never before `first` downloads have started, so every round of a batch makes progress."""

    def __init__(self, stop_at: float, first: int):
        self.stop_at = stop_at
        self.first = first
        self._started = itertools.count()

    def allows_start(self) -> bool:
        return next(self._started) < self.first or time.time() < self.stop_at


def download_batch(rows: pd.DataFrame, conf: dict | FetchSettings, cutoff: Cutoff | None = None) -> pd.DataFrame:
    """Fetches, probes and stores the rows' videos concurrently: one result row per input row, or,
    with a `cutoff`, per row whose download started before it (the others are left to the caller)."""
    settings = conf if isinstance(conf, FetchSettings) else FetchSettings.from_conf(conf)
    store = BlobStore(settings.blob_root, settings.spool_dir)
    store.sweep_parts(settings.part_max_age_s)
    records = rows.to_dict("records")
    if not records:
        return video_files_frame([])

    probe_slots = threading.BoundedSemaphore(settings.probes_at_once)

    def download(record: dict) -> dict | None:
        if cutoff is not None and not cutoff.allows_start():
            return None
        return download_one(record, settings, store, probe_slots)

    with ThreadPoolExecutor(max_workers=min(settings.concurrency, len(records))) as pool:
        try:
            results = [result for result in pool.map(download, records) if result is not None]
        except BaseException:
            pool.shutdown(cancel_futures=True)  # a full spool fails the batch now, not after every video
            raise
    return video_files_frame(results)


def video_files_frame(results: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(results, columns=list(VIDEO_FILES_DTYPES))
    return frame.astype(VIDEO_FILES_DTYPES)


def download_one(row: dict, settings: FetchSettings, store: BlobStore, probe_slots: threading.Semaphore) -> dict:
    """The `video_files` row of one video: fetched, probed and stored, or failed with a status.
    `probe_slots` bounds the probes that run at once (`download.probes_at_once`)."""
    url = row.get("url")
    previous = row.get("attempts")
    result = {
        "video_id": row.get("video_id"),
        "url": url,
        "attempts": (0 if pd.isna(previous) else int(previous)) + 1,
        "fetched_at": datetime.now(timezone.utc),
    }
    try:
        video_id = check_video_id(row.get("video_id"))
        result.update(_fetch_probe_store(video_id, url, settings, store, probe_slots), status=OK)
    except FetchFailure as failure:
        result.update(status=failure.status, error=failure.message)
    except SpoolError:
        raise
    except Exception as err:  # noqa: BLE001 - one video's unexpected failure must not stop the other videos
        result.update(status=FETCH_ERROR, error=f"unexpected {type(err).__name__}: {err}")
    return result


def _fetch_probe_store(video_id: str, url: object, settings: FetchSettings, store: BlobStore,
                       probe_slots: threading.Semaphore) -> dict:
    spool = store.spool_path(video_id)
    sink = BodySink(spool, settings.max_bytes)
    published = False
    try:
        fetch_into(url, sink, settings)
        sink.close()
        try:
            with probe_slots:
                probe = probe_video(spool, settings.count_frames_by_demux, sink.container, settings.index_max_bytes)
        except ProbeError as err:
            raise FetchFailure(DECODE_ERROR, str(err)) from None
        uri = store.publish(spool, video_id, sink.container)
        published = True
    finally:
        sink.close()
        if not published:
            discard(spool)
    return {
        "uri": uri,
        "bytes": sink.size,
        "sha256": sink.sha256,
        "container": sink.container,
        "codec": probe.codec,
        "width": probe.width,
        "height": probe.height,
        "fps": probe.fps,
        "num_frames": probe.num_frames,
        "duration_s": probe.duration_s,
        "has_audio": probe.has_audio,
    }


def fetch_into(url: object, sink: BodySink, settings: FetchSettings) -> None:
    """Sends `url` to its fetcher, which fills `sink` with the whole body or raises FetchFailure."""
    if not isinstance(url, str) or not url.strip():
        raise FetchFailure(INVALID_URL, f"no URL to fetch: {url!r}")
    url = url.strip()
    local_path = _local_path(url)
    if local_path is not None:
        if not settings.allow_local_paths:
            raise FetchFailure(BLOCKED_URL, f"{url!r} is a local path; local paths are fetched only with "
                                            "download.allow_local_paths (or ingest.allow_local_paths) true")
        copy_file(_within_local_roots(local_path, settings.local_roots), sink, Deadline(settings.timeout_s))
        return
    host = (urlsplit(url).hostname or "") if urlsplit(url).scheme.lower() in ("http", "https") else ""
    if settings.ytdlp_enabled and host and is_page_host(host, settings):
        _fetch_page(url, sink, settings)
        return
    fetch_http(url, sink, settings)


def _local_path(url: str) -> str | None:
    """The path a local reference names (`/data/a.mp4`, `./a.mp4`, `file:///data/a.mp4`), else None."""
    parts = urlsplit(url)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            raise FetchFailure(BLOCKED_URL, f"file URL with a remote host {parts.netloc!r} is not fetched")
        return unquote(parts.path)
    if not parts.scheme:
        return url
    return None


def _within_local_roots(path: str, local_roots: tuple) -> str:
    """The file a local path names, symlinks resolved, where it is under one of `local_roots` (or
    they are empty): a link swapped since ingest, or a row ingested before the roots were set, is
    not read. The resolved path is what is opened, so the link cannot change in between."""
    real = os.path.realpath(path)
    problem = LocalPaths(None, local_roots).problem(real, None) if local_roots else None
    if problem:
        raise FetchFailure(BLOCKED_URL, problem)
    return real


def copy_file(path: str, sink: BodySink, deadline: Deadline) -> None:
    """Copies a local regular file into the sink, under the same size cap and content check."""
    try:
        info = os.stat(path)
    except OSError as err:
        raise FetchFailure(FETCH_ERROR, f"cannot read local file {path!r}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        raise FetchFailure(FETCH_ERROR, f"{path!r} is not a regular file")
    if info.st_size > sink.max_bytes:
        raise FetchFailure(TOO_LARGE, f"{path!r} has {info.st_size} bytes, over "
                                      f"download.max_bytes={sink.max_bytes}")
    with open(path, "rb") as source:
        while chunk := source.read(LOCAL_CHUNK_BYTES):
            deadline.check("copying the local file")
            sink.write(chunk)
    sink.finish()


def _fetch_page(url: str, sink: BodySink, settings: FetchSettings) -> None:
    """A page URL through yt-dlp, which checks its page and media hosts as a direct download's are."""
    with tempfile.TemporaryDirectory(prefix="vidlake-ytdlp-", dir=settings.spool_dir) as folder:
        copy_file(fetch_with_ytdlp(url, folder, settings), sink, Deadline(settings.timeout_s))

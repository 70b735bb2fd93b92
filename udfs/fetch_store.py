"""Where fetched bytes go: a local spool file while they arrive, then the blob store.

The body is written to a temporary file as it arrives, hashed and size-checked on the way, and
its first bytes are checked to be a video container before the rest is read. Only a complete,
probed file is published under its final name (an atomic rename on a local blob root; an
object store publishes an object only when its upload completes), so a crash never leaves a
partial blob under a final name. The final name comes from the video_id alone, which must be a
hex hash: no URL or source id text ever reaches a path.

The temporary files (`.part`) live in one folder of their own: `<blob_root>/.parts` on a local
root (the same file system, so publishing is a rename), `<spool_dir>/vidlake-parts` otherwise. A
killed run leaves its parts there, and every batch removes those untouched for
`download.part_max_age_s`; a part whose download is alive is written, or truncated for a retry,
more often than that (`FetchSettings` checks the age against the timeouts), so it is never removed.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
import time
import uuid
from typing import BinaryIO

from udfs.fetch_base import FETCH_ERROR, INVALID_ID, NOT_VIDEO, TOO_LARGE, FetchFailure
from udfs.probe import SNIFF_BYTES, describe_head, sniff_container

VIDEO_ID_PATTERN = re.compile(r"[0-9a-f]{8,64}")
PART_SUFFIX = ".part"
LOCAL_PARTS_FOLDER = ".parts"  # under a local blob root
SPOOL_PARTS_FOLDER = "vidlake-parts"  # under download.spool_dir (or the system temp folder)


def check_video_id(video_id: object) -> str:
    """The id, if it is a lower-case hex hash (what schemas.ids.video_id makes); else invalid_id."""
    if not isinstance(video_id, str) or not VIDEO_ID_PATTERN.fullmatch(video_id):
        raise FetchFailure(INVALID_ID, f"video_id {video_id!r} is not a hex hash, so it cannot name a blob")
    return video_id


class BodySink:
    """Receives a body chunk by chunk: enforces the size cap, hashes, and checks the first bytes.

    The file at `path` is created by the first chunk, not before: a fetcher that works elsewhere
    first (yt-dlp, for as long as it takes) leaves no untouched part that a sweep could take for
    an abandoned one."""

    def __init__(self, path: str, max_bytes: int):
        self.path = path
        self.max_bytes = max_bytes
        self.file: BinaryIO | None = None
        self.reset()

    def reset(self) -> None:
        """Forget what was received (before a retry)."""
        if self.file is not None:
            self.file.seek(0)
            self.file.truncate()
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = b""
        self.container: str | None = None

    def expect_length(self, length: int | None) -> None:
        """Refuse before reading when the announced length is over the cap."""
        if length is not None and length > self.max_bytes:
            raise FetchFailure(TOO_LARGE, f"Content-Length {length} is over {self._cap()}")

    def write(self, chunk: bytes) -> None:
        if self.size + len(chunk) > self.max_bytes:
            raise FetchFailure(TOO_LARGE, f"the body passed {self._cap()}; stopped reading")
        if self.file is None:
            self.file = open(self.path, "wb")  # noqa: SIM115 - closed by close(), it outlives this call
        self.size += len(chunk)
        self.digest.update(chunk)
        self.file.write(chunk)
        if self.container is None and len(self.head) < SNIFF_BYTES:
            self.head += chunk[: SNIFF_BYTES - len(self.head)]
            if len(self.head) >= SNIFF_BYTES:
                self._sniff()

    def _cap(self) -> str:
        return f"download.max_bytes={self.max_bytes}"

    def finish(self) -> None:
        """The body is complete: check the container if the body was shorter than the sniff window."""
        if self.container is None:
            self._sniff()
        if self.file is not None:
            self.file.flush()

    def _sniff(self) -> None:
        self.container = sniff_container(self.head)
        if self.container is None:
            raise FetchFailure(NOT_VIDEO, f"the body is {describe_head(self.head)}, not a video container")

    def close(self) -> None:
        if self.file is not None:
            self.file.close()

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


class BlobStore:
    """The blob root: a local folder or any fsspec URL (s3://, gs://, abfs://, ...)."""

    def __init__(self, root: str, spool_dir: str | None = None):
        from fsspec.core import url_to_fs

        self.fs, self.root = url_to_fs(root)
        self.root = self.root.rstrip("/")
        self.local = "file" in _protocols(self.fs)
        if self.local:
            self.parts_dir = f"{self.root}/{LOCAL_PARTS_FOLDER}"
        else:
            self.parts_dir = os.path.join(spool_dir or tempfile.gettempdir(), SPOOL_PARTS_FOLDER)
        os.makedirs(self.parts_dir, exist_ok=True)

    def final_path(self, video_id: str, container: str) -> str:
        """`<root>/<first two hex digits>/<video_id>.<container>`: from the checked id alone."""
        video_id = check_video_id(video_id)
        return f"{self.root}/{video_id[:2]}/{video_id}.{container}"

    def uri(self, path: str) -> str:
        return path if self.local else self.fs.unstrip_protocol(path)

    def spool_path(self, video_id: str) -> str:
        """A fresh temporary file for the body, in the parts folder."""
        video_id = check_video_id(video_id)
        return os.path.join(self.parts_dir, f"{video_id}.{uuid.uuid4().hex}{PART_SUFFIX}")

    def sweep_parts(self, max_age_s: float) -> int:
        """Removes the parts nobody has written for `max_age_s` (left by a killed run); returns how many."""
        stale_before = time.time() - max_age_s
        removed = 0
        with os.scandir(self.parts_dir) as entries:
            for entry in entries:
                try:
                    if entry.name.endswith(PART_SUFFIX) and entry.stat().st_mtime < stale_before:
                        os.remove(entry.path)
                        removed += 1
                except FileNotFoundError:  # published, discarded or swept by another task meanwhile
                    continue
        return removed

    def publish(self, spool_path: str, video_id: str, container: str) -> str:
        """Moves a complete, probed file to its final name; returns its URI."""
        final = self.final_path(video_id, container)
        try:
            if self.local:
                os.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                os.replace(spool_path, final)
            else:
                self.fs.makedirs(final.rsplit("/", 1)[0], exist_ok=True)
                self.fs.put_file(spool_path, final)
                os.remove(spool_path)
        except OSError as err:
            raise FetchFailure(FETCH_ERROR, f"cannot store the blob at {self.uri(final)}: {err}") from None
        return self.uri(final)

    def exists(self, uri: str) -> bool:
        return self.fs.exists(uri)


def discard(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _protocols(fs) -> tuple:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)

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
import itertools
import os
import re
import secrets
import tempfile
import time

from udfs.errors import VidlakeError
from udfs.fetch_base import FETCH_ERROR, INVALID_ID, NOT_VIDEO, TOO_LARGE, FetchFailure
from udfs.probe import SNIFF_BYTES, describe_head, sniff_container

VIDEO_ID_PATTERN = re.compile(r"[0-9a-f]{8,64}")
PART_SUFFIX = ".part"
LOCAL_PARTS_FOLDER = ".parts"  # under a local blob root
SPOOL_PARTS_FOLDER = "vidlake-parts"  # under download.spool_dir (or the system temp folder)


class SpoolError(VidlakeError):
    """The spool folder cannot take a body (full, read-only, gone): the machine's fault, not the
    video's. It fails the task rather than becoming a failed row for every video that follows."""


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
        self.fd: int | None = None
        self.reset()

    def reset(self) -> None:
        """Forget what was received (before a retry)."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.lseek(self.fd, 0, os.SEEK_SET)
        self.size = 0
        self.digest = hashlib.sha256()
        self.head = b""
        self.container: str | None = None

    def expect_length(self, length: int | None) -> None:
        """Refuse before reading when the announced length is over the cap."""
        if length is not None and length > self.max_bytes:
            raise FetchFailure(TOO_LARGE, f"Content-Length {length} is over {self._cap()}")

    def write(self, chunk: bytes | memoryview) -> None:
        """Takes the next bytes of the body. The file is a bare descriptor: a buffered file object
        costs three system calls more to open, and every system call hands the GIL to another of
        the many download threads."""
        if self.size + len(chunk) > self.max_bytes:
            raise FetchFailure(TOO_LARGE, f"the body passed {self._cap()}; stopped reading")
        try:
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            view = memoryview(chunk)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as err:
            raise SpoolError(f"cannot write a downloaded body to {self.path}: {err.strerror} (the spool folder is "
                             "<blob_root>/.parts, or download.spool_dir for an object-store blob_root)") from None
        self.size += len(chunk)
        self.digest.update(chunk)
        if self.container is None and len(self.head) < SNIFF_BYTES:
            self.head += bytes(chunk[: SNIFF_BYTES - len(self.head)])
            if len(self.head) >= SNIFF_BYTES:
                self._sniff()

    def _cap(self) -> str:
        return f"download.max_bytes={self.max_bytes}"

    def finish(self) -> None:
        """The body is complete: check the container if the body was shorter than the sniff window."""
        if self.container is None:
            self._sniff()

    def _sniff(self) -> None:
        self.container = sniff_container(self.head)
        if self.container is None:
            raise FetchFailure(NOT_VIDEO, f"the body is {describe_head(self.head)}, not a video container")

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

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
        return os.path.join(self.parts_dir, f"{video_id}.{_part_names.next()}{PART_SUFFIX}")

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


class _PartNames:
    """Unique part names without a system call each (uuid4 reads the kernel's random source, and
    every system call hands the GIL to another download thread): a random token per process,
    drawn again in a forked child (Spark forks its Python workers from one daemon), and a counter."""

    def __init__(self) -> None:
        self.renew()
        os.register_at_fork(after_in_child=self.renew)

    def renew(self) -> None:
        self.token = secrets.token_hex(8)
        self.counter = itertools.count()

    def next(self) -> str:
        return f"{self.token}{next(self.counter):x}"


_part_names = _PartNames()


def discard(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _protocols(fs) -> tuple:
    protocol = fs.protocol
    return tuple(protocol) if isinstance(protocol, (tuple, list)) else (protocol,)

"""Are a batch of stored files there, whole? The per-task work of `vidlake check`.

Each row names a file by an absolute uri (a local path or any fsspec URL), with the size and
sha256 its table records where it records them. A file is checked for being there and, where a
size is recorded, for having it; with `hashes`, its bytes are read and hashed. The checks wait
on the file system or the object store, so a batch runs `concurrency` of them at once.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor

import pandas as pd

from udfs.decode import local_path

# What a check returns per file with a problem (the rows without one are left out).
PROBLEM_COLUMNS = ("key", "uri", "problem")
READ_CHUNK_BYTES = 1 << 20


def file_problems(rows: pd.DataFrame, hashes: bool, concurrency: int) -> pd.DataFrame:
    """The problems of `rows` (columns key, uri, and optionally bytes and sha256): one row per
    file that is missing, of another size than recorded or, with `hashes`, of another sha256."""
    records = rows.to_dict("records")
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(records)))) as pool:
        found = list(pool.map(lambda record: _problem(record, hashes), records))
    problems = [(r["key"], r["uri"], problem) for r, problem in zip(records, found, strict=True) if problem]
    return pd.DataFrame(problems, columns=list(PROBLEM_COLUMNS), dtype=object)


def _problem(record: dict, hashes: bool) -> str | None:
    uri = record.get("uri")
    if not isinstance(uri, str) or not uri:
        return "its row names no file (uri is empty)"
    try:
        filesystem, path = _filesystem(uri)
        if not filesystem.exists(path):
            return "is missing"
        size = filesystem.size(path)
        recorded = _recorded(record.get("bytes"))
        if recorded is not None and size != recorded:
            return f"has {size} bytes; its row records {recorded}"
        expected = record.get("sha256")
        if hashes and isinstance(expected, str) and expected and _sha256(filesystem, path) != expected:
            return f"does not match its recorded sha256 {expected[:12]}…"
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    return None


def _recorded(value) -> int | None:
    return None if value is None or pd.isna(value) else int(value)


def _filesystem(uri: str):
    from fsspec.core import url_to_fs
    from fsspec.implementations.local import LocalFileSystem

    path = local_path(uri)
    if path is not None:
        return LocalFileSystem(), path
    return url_to_fs(uri)


def _sha256(filesystem, path: str) -> str:
    digest = hashlib.sha256()
    with filesystem.open(path, "rb") as handle:
        while chunk := handle.read(READ_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()

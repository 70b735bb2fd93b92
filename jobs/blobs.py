"""Where a lake's files outside its tables are, and how `uri` columns name them.

The blob root is `download.blob_root`, by default `<lake.root>/blobs` beside the tables; clip files
go to `split.clip_root`, by default `<blob_root>/clips`. `video_files.uri` and `clips.uri` are
stored relative to the blob root when the file is under it (`ab/ab12….mp4`, `clips/<video_id>/<clip_id>.mp4`),
so a lake copied with its blobs (`cp -a`, a sync to object storage) reads its own copy; a file
outside the root (a clip root configured elsewhere, a row written before uris were relative) keeps
its absolute uri. Every job resolves those columns here, against the blob root of the lake it runs
on, before a udf or a user sees them: udfs always get absolute uris.
"""
from __future__ import annotations

import os
import re

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.config import Config
from jobs.lake import Lake

# A uri that names its file on its own: a path from the root folder, or a URL with a scheme
# (s3://, file://, dbfs:/). Anything else is relative to the blob root.
ABSOLUTE_URI = "^(/|[A-Za-z][A-Za-z0-9+.-]*:)"
_ABSOLUTE = re.compile(ABSOLUTE_URI)
_SCHEME = re.compile("^[A-Za-z][A-Za-z0-9+.-]*:")
# Scheme spellings that name the same store (Spark's s3a:// is fsspec's s3://).
_SAME_STORE = (("s3a://", "s3://"), ("s3n://", "s3://"))


def blob_root(cfg: Config, lake_root: str) -> str:
    """The blob root of the lake at `lake_root`: `download.blob_root`, or `<lake_root>/blobs`; a local
    folder as an absolute path, so every worker reads and writes the same place."""
    return _absolute(cfg.get("download.blob_root") or f"{lake_root.rstrip('/')}/blobs")


def clip_root(cfg: Config, lake_root: str) -> str:
    """Where split writes clip files: `split.clip_root`, or `<blob_root>/clips`."""
    return _absolute(cfg.get("split.clip_root") or f"{blob_root(cfg, lake_root)}/clips")


def _absolute(root: str) -> str:
    root = root.rstrip("/")
    return root if _SCHEME.match(root) else os.path.abspath(os.path.expanduser(root))


def stored_uri(uri: str | None, root: str) -> str | None:
    """How a row stores the file at `uri`: relative to the blob root `root` when under it, else as
    it is. Runs on the executors that write the rows."""
    if not isinstance(uri, str) or not _ABSOLUTE.match(uri):
        return uri
    location, base = _comparable(uri), _comparable(root).rstrip("/") + "/"
    return location[len(base):] if location.startswith(base) and len(location) > len(base) else uri


def _comparable(uri: str) -> str:
    if uri.startswith("file://"):
        return uri[len("file://"):]
    for alias, scheme in _SAME_STORE:
        if uri.startswith(alias):
            return scheme + uri[len(alias):]
    return uri


def resolved_uri(column: str, root: str) -> Column:
    """The column's uri as an absolute one: a relative uri under the blob root `root`."""
    value = F.col(column)
    return F.when(value.isNull() | value.rlike(ABSOLUTE_URI), value).otherwise(
        F.concat(F.lit(root.rstrip("/") + "/"), value))


def resolved_uri_sql(expression: str, root: str) -> str:
    """resolved_uri as Spark SQL text over `expression`, for views written in SQL."""
    prefix = (root.rstrip("/") + "/").replace("\\", "\\\\").replace("'", "\\'")
    return (f"CASE WHEN {expression} IS NULL OR {expression} RLIKE '{ABSOLUTE_URI}' THEN {expression} "
            f"ELSE concat('{prefix}', {expression}) END")


def read_video_files(lake: Lake, root: str) -> DataFrame:
    """The `video_files` table with `uri` resolved against the blob root."""
    return lake.read("video_files").withColumn("uri", resolved_uri("uri", root))


def read_clips(lake: Lake, root: str) -> DataFrame:
    """The `clips` table with `uri` resolved against the blob root."""
    return lake.read("clips").withColumn("uri", resolved_uri("uri", root))

"""`clip_view`: one row per clip with its scores, its video's source and its chosen caption.

This is the one definition of the view that `vidlake sql`, `vidlake curate`, `vidlake report`
and the notebooks filter on. Its columns are the clips columns, the scores columns, and:

- `duration_s`: end_s - start_s of the clip;
- `source`, `video_url`: the video's source set and URL; `video_uri`: the downloaded file;
- `uri`, `video_uri`: absolute, resolved against the lake's blob root (jobs/blobs.py; the tables
  store them relative to it);
- `text`, `caption_model`, `caption_kind`, `match`: the chosen caption: of the configured kind
  (`curate.caption_kind`) from the preferred models (`curate.caption_models`) in order, then any
  other model, then the caption the source set shipped, then the video's source caption.
  Captions flagged empty or degenerate are never chosen.
"""
from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.blobs import blob_root, read_clips, read_video_files, resolved_uri_sql
from jobs.config import Config
from jobs.lake import Lake
from jobs.output import QueryError, reported
from jobs.sql_guard import Statement, TableReference, check_statement
from schemas.tables import CLIPS, SCORES, TABLES
from udfs.errors import VidlakeError

CLIP_VIEW = "clip_view"
SOURCE_MODEL = "source"
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def clip_view_sql(caption_kind: str, caption_models: Sequence[str], root: str) -> str:
    """The SELECT behind clip_view, over the lake's table views (`Lake.register_views`), with the
    uris resolved against the blob root `root`."""
    for name in (caption_kind, *caption_models):
        if not _NAME.match(name):
            raise VidlakeError(f"caption kind or model {name!r} may hold only letters, digits, '_', '.', '-'")
    preference = " ".join(
        f"WHEN model = '{model}' THEN {rank}" for rank, model in enumerate(caption_models)
    )
    other_model_rank = len(caption_models)
    clip_columns = ", ".join(
        f"{resolved_uri_sql('c.uri', root)} AS uri" if f.name == "uri" else f"c.`{f.name}`" for f in CLIPS.fields
    )
    score_columns = ", ".join(f"s.`{f.name}`" for f in SCORES.fields if f.name != "clip_id")
    return f"""
WITH usable_captions AS (
  SELECT clip_id, caption, model, kind, `match`, created_at,
         CASE
           WHEN kind = '{caption_kind}' AND model <> '{SOURCE_MODEL}'
             THEN CASE {preference or "WHEN false THEN 0"} ELSE {other_model_rank} END
           WHEN kind = '{caption_kind}' THEN {other_model_rank + 1}
           WHEN model = '{SOURCE_MODEL}' THEN {other_model_rank + 2}
         END AS preference
  FROM captions
  WHERE caption IS NOT NULL AND trim(caption) <> '' AND coalesce(quality, 'ok') = 'ok'
),
chosen_captions AS (
  SELECT * FROM (
    SELECT *, row_number() OVER (
      PARTITION BY clip_id ORDER BY preference, created_at DESC, model, kind) AS choice
    FROM usable_captions WHERE preference IS NOT NULL
  ) WHERE choice = 1
)
SELECT {clip_columns},
       c.end_s - c.start_s AS duration_s,
       {score_columns},
       v.source, v.url AS video_url, {resolved_uri_sql('f.uri', root)} AS video_uri,
       coalesce(k.caption, v.caption) AS text,
       CASE WHEN k.caption IS NOT NULL THEN k.model WHEN v.caption IS NOT NULL THEN '{SOURCE_MODEL}' END
         AS caption_model,
       CASE WHEN k.caption IS NOT NULL THEN k.kind WHEN v.caption IS NOT NULL THEN 'video' END AS caption_kind,
       k.`match`
FROM clips c
LEFT JOIN scores s ON s.clip_id = c.clip_id
LEFT JOIN videos v ON v.video_id = c.video_id
LEFT JOIN video_files f ON f.video_id = c.video_id
LEFT JOIN chosen_captions k ON k.clip_id = c.clip_id
"""


def register_clip_view(lake: Lake, cfg: Config, caption_kind: str | None = None) -> DataFrame:
    """Registers every lake table and `clip_view` as temporary views; returns clip_view."""
    kind = caption_kind or cfg.get("curate.caption_kind")
    lake.register_views()
    view = lake.spark.sql(clip_view_sql(kind, cfg.get("curate.caption_models"), blob_root(cfg, lake.root)))
    view.createOrReplaceTempView(CLIP_VIEW)
    return view


def resolved_statement(lake: Lake, statement: Statement, what: str) -> str:
    """The statement's text with each lake reference (`clips VERSION AS OF 3`, `clips TIMESTAMP AS
    OF ...`, ``delta.`<lake>/clips` ``) pointing at a temporary view of that snapshot of the table,
    registered here: `clips__v3`, `clips__at_<microseconds since 1970>`, `clips__current`."""
    views: dict[TableReference, str] = {}
    registered: set[str] = set()
    for ref in statement.references:
        name = _table_at(lake, ref.path, what) if ref.path else ref.name[0]
        version, timestamp = _snapshot_of(lake, ref, what)
        if version is not None:
            view = f"{name}__v{version}"
        elif timestamp is not None:
            view = f"{name}__at_{(timestamp - _EPOCH) // timedelta(microseconds=1)}"
        else:
            view = f"{name}__current"
        if view not in registered:
            lake.read(name, version, timestamp).createOrReplaceTempView(view)
            registered.add(view)
        views[ref] = view
    text = statement.rewritten(views)
    if check_statement(lake.spark, text, what, metadata=True).references:  # the rewrite names views only
        raise QueryError(f"{what}: this statement's lake references could not be resolved")
    return text


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _snapshot_of(lake: Lake, ref: TableReference, what: str) -> tuple[int | None, datetime | None]:
    """The version, or the moment (UTC), a reference reads; the moment's expression is evaluated
    by Spark, in the session's time zone, as Spark evaluates `TIMESTAMP AS OF` itself."""
    if ref.version is not None:
        if not ref.version.isdigit():
            raise QueryError(f"{what}: VERSION AS OF takes a version number (a commit of the table), "
                             f"not {ref.version!r}")
        return int(ref.version), None
    if ref.timestamp is None:
        return None, None
    query = f"SELECT unix_micros(CAST(({ref.timestamp}) AS TIMESTAMP)) AS micros"
    check_statement(lake.spark, query, what)
    micros = reported(lambda: lake.spark.sql(query).collect()[0].micros, f"{what}: TIMESTAMP AS OF")
    if micros is None:
        raise QueryError(f"{what}: TIMESTAMP AS OF {ref.timestamp} is not a timestamp")
    return None, _EPOCH + timedelta(microseconds=micros)


def _table_at(lake: Lake, path: str, what: str) -> str:
    """The lake table whose folder `path` names (a relative path is taken from the current folder):
    SQL reads files by path only there, and only through Delta's own reader (delta-spark)."""
    if lake.engine_name != "delta-spark":
        raise QueryError(f"{what}: delta.`{path}` needs the delta-spark engine (--set lake.engine=delta-spark); "
                         "on delta-rs name the table itself (FROM clips)")
    wanted = _normalised_location(path)
    for name in TABLES:
        if _normalised_location(lake.path(name)) == wanted:
            return name
    inside = wanted.startswith(_normalised_location(lake.root) + "/")
    where = "is in the lake but not one of its tables" if inside else "is outside the lake"
    raise QueryError(f"{what}: delta.`{path}` {where}; SQL reads by path only the lake's tables, "
                     f"{lake.root}/<table> ({', '.join(TABLES)})")


def _normalised_location(location: str) -> str:
    """A location as one comparable string: object-store URLs with s3a:// as s3:// and no trailing
    slash, local paths absolute and resolved (`file:` URIs too)."""
    location = location.rstrip("/")
    if location.startswith("s3a://"):
        return "s3://" + location[len("s3a://"):]
    if location.startswith("file:"):
        location = "/" + location[len("file:"):].lstrip("/")
    elif "://" in location or location.startswith("dbfs:"):
        return location
    return str(Path(location).expanduser().resolve())


def file_span_columns() -> list[Column]:
    """`start_s`, `end_s` of a clip within the file at its `uri`, given its `video_uri`: a clip cut
    into a file of its own (materialized) spans [0, end_s - start_s) of that file."""
    own_file = F.col("video_uri").isNotNull() & (F.col("uri") != F.col("video_uri"))
    return [
        F.when(own_file, F.lit(0.0)).otherwise(F.col("start_s")).alias("start_s"),
        F.when(own_file, F.col("end_s") - F.col("start_s")).otherwise(F.col("end_s")).alias("end_s"),
    ]


def clip_spans(lake: Lake, cfg: Config) -> DataFrame:
    """clip_id, video_id, uri (absolute) and the clip's span within that file: what a stage decodes
    frames from."""
    root = blob_root(cfg, lake.root)
    clips = read_clips(lake, root).select("clip_id", "video_id", "uri", "start_s", "end_s")
    files = read_video_files(lake, root).select("video_id", F.col("uri").alias("video_uri"))
    return clips.join(files, "video_id", "left").select("clip_id", "video_id", "uri", *file_span_columns())

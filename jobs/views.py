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

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.blobs import blob_root, read_clips, read_video_files, resolved_uri_sql
from jobs.config import Config
from jobs.lake import Lake
from schemas.tables import CLIPS, SCORES
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

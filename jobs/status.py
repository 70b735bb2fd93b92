"""`vidlake status`: the lake's Delta engine and why it runs, then per stage, rows done, pending and
failed, read from the tables.

    ingest    videos       videos ingested; source rows rejected (ingest_errors, severity rejected)
    download  video_files  videos fetched ok; videos with no video_files row yet; failed fetches
    split     clips        clips; ok videos neither split nor in split_errors; videos in split_errors
    score     scores       clips scored; clips with no scores row; rows with a scorer error
    caption   captions     clips with a caption; clips without one; captions not ok
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from pyspark.sql import functions as F

from jobs.context import JobContext
from jobs.lake import Lake
from jobs.session import lake_engine


@dataclass(frozen=True)
class StageStatus:
    stage: str
    table: str
    done: int
    pending: int | None
    failed: int
    meaning: str


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """No options: the lake comes from --lake / lake.root."""


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    print(f"lake: {ctx.lake.root} (Delta engine: {ctx.lake.engine_name})")
    _, why = lake_engine(ctx.spark, ctx.cfg.get("lake.engine"))
    print(f"lake engine: {ctx.lake.engine_name} ({why})")
    print(format_status(lake_status(ctx.lake)))
    return 0


def lake_status(lake: Lake) -> list[StageStatus]:
    return [_ingest(lake), _download(lake), _split(lake), _score(lake), _caption(lake)]


def format_status(rows: list[StageStatus]) -> str:
    header = ("stage", "table", "done", "pending", "failed", "what the numbers count")
    cells = [header] + [
        (r.stage, r.table, str(r.done), "-" if r.pending is None else str(r.pending), str(r.failed), r.meaning)
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    lines = []
    for row in cells:
        pairs = enumerate(zip(row, widths, strict=False))
        padded = [cell.rjust(w) if i in (2, 3, 4) else cell.ljust(w) for i, (cell, w) in pairs]
        lines.append("  ".join([*padded, row[-1]]))
    return "\n".join(lines)


def _ingest(lake: Lake) -> StageStatus:
    videos = lake.read("videos").count()
    rejected = lake.read("ingest_errors").where(F.col("severity") == "rejected").count()
    return StageStatus("ingest", "videos", videos, None, rejected, "videos ingested; source rows rejected")


def _download(lake: Lake) -> StageStatus:
    files = lake.read("video_files")
    ok = files.where(F.col("status") == "ok").count()
    failed = files.where(F.col("status") != "ok").count()
    pending = lake.read("videos").join(files.select("video_id"), "video_id", "left_anti").count()
    return StageStatus("download", "video_files", ok, pending, failed,
                       "videos fetched ok; videos not fetched yet; failed fetches")


def _split(lake: Lake) -> StageStatus:
    clips = lake.read("clips")
    errors = lake.read("split_errors")
    split_videos = clips.select("video_id").union(errors.select("video_id")).distinct()
    ok_files = lake.read("video_files").where(F.col("status") == "ok").select("video_id")
    pending = ok_files.join(split_videos, "video_id", "left_anti").count()
    videos_with_clips = clips.select("video_id").distinct().count()
    return StageStatus("split", "clips", clips.count(), pending, errors.select("video_id").distinct().count(),
                       f"clips (from {videos_with_clips} videos); ok videos not split yet; videos that failed")


def _score(lake: Lake) -> StageStatus:
    scores = lake.read("scores")
    pending = lake.read("clips").join(scores.select("clip_id"), "clip_id", "left_anti").count()
    failed = scores.where(F.col("errors").isNotNull() & (F.size("errors") > 0)).count()
    return StageStatus("score", "scores", scores.count(), pending, failed,
                       "clips scored; clips not scored yet; clips with a scorer error")


def _caption(lake: Lake) -> StageStatus:
    captions = lake.read("captions")
    captioned = captions.select("clip_id").distinct()
    pending = lake.read("clips").join(captioned, "clip_id", "left_anti").count()
    failed = captions.where(F.coalesce(F.col("quality"), F.lit("ok")) != "ok").count()
    return StageStatus("caption", "captions", captioned.count(), pending, failed,
                       "clips with a caption; clips without one; captions empty, degenerate or failed")


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("status"))

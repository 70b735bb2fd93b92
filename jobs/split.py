"""vidlake split: cut the downloaded videos into scene clips (`video_files` -> `clips`, `split_errors`).

A video is pending when its `video_files` row is `ok`, it has no clips yet, and no split error under
this detector (with --retry-errors: its errors are retried). Pending videos, with the clip hints
their source shipped (`videos.clip_hints`), go through udfs.split.SceneSplitter in mapInPandas, a few
videos per task; the output is computed once (a local checkpoint) and written to both tables.
TransNetV2 runs under the stage's GPU resource profile where the cluster takes one (jobs.gpu).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from jobs.context import JobContext
from jobs.gpu import gpu_map
from jobs.progress import StageLog
from schemas.tables import CLIPS
from udfs.errors import VidlakeError
from udfs.scenes import DETECTORS

STAGE = "split"
INPUT_COLUMNS = ("video_id", "uri", "clip_hints")
# The udf's rows: CLIPS with every column nullable (an error row has only video_id, detector,
# created_at) plus the error.
OUTPUT_SCHEMA = StructType(
    [StructField(f.name, f.dataType, True) for f in CLIPS.fields] + [StructField("split_error", StringType(), True)]
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detector", choices=DETECTORS, help="scene detector (default: split.detector)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="also re-split videos whose earlier run under this detector recorded a split error")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    conf = split_conf(ctx)
    detector = args.detector or conf["detector"]
    if detector not in DETECTORS:
        raise VidlakeError(f"split.detector is {detector!r}; choose one of {', '.join(DETECTORS)}")
    retry = bool(args.retry_errors or conf["retry_errors"])
    log = StageLog(STAGE)
    todo = pending_videos(ctx, detector, retry)
    count = todo.count()
    if count == 0:
        log.done(0, 0, detector=detector, note="nothing pending")
        return 0
    log.note(f"{count} videos to split with {detector}, materialize={conf['materialize']}")
    partitions = split_partitions(count, int(conf["videos_per_task"]), ctx.spark.sparkContext.defaultParallelism)
    rows = split_videos(ctx, todo.repartition(partitions), conf, detector)
    # Splitting decodes the videos: run it exactly once, whatever the summary and the writes read.
    rows = rows.localCheckpoint(eager=True)
    clips = rows.where(F.col("split_error").isNull()).drop("split_error")
    errors = rows.where(F.col("split_error").isNotNull()).select(
        "video_id", "detector", F.col("split_error").alias("reason"), F.col("created_at").alias("recorded_at")
    )
    clip_count, failed, warned = outcome(rows)
    ctx.lake.append(clips, "clips")
    if failed or warned:
        ctx.lake.upsert(errors, "split_errors")
    rows.unpersist()
    log.done(count, failed, clips=clip_count, warnings=warned, detector=detector, materialize=conf["materialize"])
    return 0


def outcome(rows: DataFrame) -> tuple[int, int, int]:
    """(clips, videos with an error row and no clip, videos with both), in one pass over the rows."""
    per_video = rows.groupBy("video_id").agg(
        F.count(F.when(F.col("split_error").isNull(), 1)).alias("clips"),
        F.count(F.when(F.col("split_error").isNotNull(), 1)).alias("errors"),
    )
    errors_only = (F.col("errors") > 0) & (F.col("clips") == 0)
    both = (F.col("errors") > 0) & (F.col("clips") > 0)
    totals = per_video.agg(
        F.coalesce(F.sum("clips"), F.lit(0)).alias("clips"),
        F.count(F.when(errors_only, 1)).alias("failed"),
        F.count(F.when(both, 1)).alias("warned"),
    ).first()
    return int(totals["clips"]), int(totals["failed"]), int(totals["warned"])


def split_partitions(videos: int, videos_per_task: int, parallelism: int) -> int:
    """Tasks for `videos`: about `split.videos_per_task` each, in whole waves of the cluster's task
    slots (one video per task at least), so no slot idles while another splits a last task: 12
    videos on 2 slots are 4 tasks of 3, not 3 tasks of 4 (the third alone on one core)."""
    waves = math.ceil(math.ceil(videos / videos_per_task) / parallelism)
    return max(1, min(videos, waves * parallelism))


def split_conf(ctx: JobContext) -> dict:
    """The `split` section with the clip root resolved (beside the video blobs by default)."""
    conf = ctx.cfg.section("split")
    if not conf.get("clip_root"):
        blob_root = ctx.cfg.get("download.blob_root", None) or f"{ctx.lake.root}/blobs"
        conf["clip_root"] = f"{blob_root.rstrip('/')}/clips"
    return conf


def pending_videos(ctx: JobContext, detector: str, retry_errors: bool) -> DataFrame:
    """The ok video files not split yet, with their source's clip hints."""
    files = ctx.lake.read("video_files").where(F.col("status") == "ok").select("video_id", "uri")
    todo = ctx.lake.pending(files, "clips", keys=["video_id"])
    if not retry_errors:
        failed = ctx.lake.read("split_errors").where(F.col("detector") == detector).select("video_id")
        todo = todo.join(failed, "video_id", "left_anti")
    hints = ctx.lake.read("videos").select("video_id", "clip_hints")
    return todo.join(hints, "video_id", "left").select(*INPUT_COLUMNS)


def split_videos(ctx: JobContext, videos: DataFrame, conf: Mapping[str, Any], detector: str) -> DataFrame:
    """mapInPandas of the split udf; TransNetV2 under the GPU resource profile, the rest on CPUs."""
    fn = partition_splitter(conf, detector)
    if detector == "transnetv2":
        return gpu_map(videos, fn, OUTPUT_SCHEMA, conf["gpu"], ctx.spark, STAGE)
    return videos.mapInPandas(fn, OUTPUT_SCHEMA)


def partition_splitter(conf: Mapping[str, Any], detector: str):
    """The mapInPandas function: one SceneSplitter per Python worker, one video's rows at a time."""
    settings = dict(conf)
    conf_key = json.dumps([settings, detector], sort_keys=True, default=str)

    def split_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from udfs.device import cached_model, task_device
        from udfs.split import OUTPUT_COLUMNS, SceneSplitter

        use_gpu = detector == "transnetv2" and bool(settings["gpu"]["use_gpu"])
        device = task_device(prefer_gpu=use_gpu)
        splitter = cached_model(
            ("scene-splitter", conf_key, device),
            lambda: SceneSplitter(settings, detector, clip_root=settings["clip_root"], device=device),
        )
        for batch in batches:
            for video in batch.itertuples(index=False):
                rows = splitter.split_one(video.video_id, video.uri, video.clip_hints)
                yield pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))

    return split_partition


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for(STAGE))

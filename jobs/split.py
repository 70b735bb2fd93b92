"""vidlake split: cut the downloaded videos into scene clips (`video_files` -> `clips`, `split_errors`).

A video is pending when its `video_files` row is `ok`, it has no clips yet, and no split error under
this detector (with --retry-errors: its errors are retried). Pending videos, with the clip hints
their source shipped (`videos.clip_hints`), go through udfs.split.SceneSplitter in mapInArrow, a few
videos per task, in batches of `split.commit_every` videos (jobs.runtime: by a hash of the video
id), one Delta commit each. Each task writes its clips as a parquet file of the table itself and reports the
file, its error rows and its counts; the driver commits the clips files in one transaction and
upserts the errors. The videos are decoded once, and no clip row is held by Spark or read twice.
TransNetV2 runs under the stage's GPU resource profile where the cluster takes one (jobs.gpu).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pyarrow as pa
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import ArrayType, LongType, StructField, StructType

from jobs.blobs import blob_root, clip_root, read_video_files, stored_uri
from jobs.context import JobContext
from jobs.gpu import gpu_map
from jobs.lake import WRITTEN_FILES, TableFiles
from jobs.progress import StageLog
from jobs.runtime import Batch, batch_count, run_batches
from schemas.tables import CLIPS, SPLIT_ERRORS
from udfs.errors import VidlakeError
from udfs.scenes import DETECTORS

STAGE = "split"
INPUT_COLUMNS = ("video_id", "uri", "clip_hints")
# What each task reports: the clips files it wrote, its error rows, its counts.
TASK_REPORT = StructType(
    [
        StructField("clip_files", ArrayType(WRITTEN_FILES), False),
        StructField("errors", ArrayType(SPLIT_ERRORS), False),
        *(StructField(count, LongType(), False) for count in ("videos", "clips", "failed", "warned")),
    ]
)
TASK_REPORT_ARROW = to_arrow_schema(TASK_REPORT, timezone="UTC")
CLIPS_ARROW = to_arrow_schema(CLIPS, timezone="UTC")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--detector", choices=DETECTORS, help="scene detector (default: split.detector)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="also re-split videos whose earlier run under this detector recorded a split error")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    conf = split_conf(ctx)
    detector = args.detector or conf["detector"]
    if detector not in DETECTORS:
        raise VidlakeError(f"split.detector is {detector!r}; choose one of {', '.join(DETECTORS)}")
    commit_every = int(conf["commit_every"])
    retry = bool(args.retry_errors or conf["retry_errors"])
    log = StageLog(STAGE)
    todo, count = counted_pending(ctx, pending_videos(ctx, detector, retry), commit_every)
    if count == 0:
        log.done(0, 0, detector=detector, note="nothing pending")
        return 0
    log.note(f"{count} videos to split with {detector}, materialize={conf['materialize']}, "
             f"in {batch_count(count, commit_every)} commit(s)")
    total = SplitOutcome()

    def split_one_batch(videos: DataFrame, batch: Batch) -> SplitOutcome:
        outcome = split_batch(ctx, videos, batch.rows, conf, detector)
        total.add(outcome)
        return outcome

    run_batches(ctx.spark, log, todo, count, commit_every, ["video_id"], split_one_batch)
    log.done(count, total.failed, clips=total.clips, warnings=total.warned, detector=detector,
             materialize=conf["materialize"])
    return 0


def counted_pending(ctx: JobContext, todo: DataFrame, commit_every: int) -> tuple[DataFrame, int]:
    """The pending videos and how many there are. Where `video_files` holds no more than one
    commit's videos, the pending ones are collected to the driver: one query finds and counts
    them, and the split reads them from there instead of joining the tables a second time (on a
    short run, that second plan and its shuffles kept the driver's JIT compiler busy on the task
    cores). A snapshot, too: the videos split are exactly the videos counted."""
    if ctx.lake.row_count("video_files") > commit_every:
        return todo, todo.count()
    videos = todo.collect()
    return ctx.spark.createDataFrame(videos, todo.schema), len(videos)


def split_batch(ctx: JobContext, videos: DataFrame, count: int, conf: Mapping[str, Any],
                detector: str) -> SplitOutcome:
    """Splits about `count` videos in one Spark job and commits what its tasks wrote: the clips files
    in one transaction, then the error rows."""
    partitions = split_partitions(count, int(conf["videos_per_task"]), ctx.spark.sparkContext.defaultParallelism)
    clip_files = ctx.lake.table_files("clips")
    outcome = SplitOutcome()
    for report in split_videos(ctx, videos.repartition(partitions), conf, detector, clip_files).collect():
        outcome.add_report(report)
    ctx.lake.commit_files("clips", clip_files, outcome.clip_files)
    if outcome.errors:
        ctx.lake.upsert(ctx.spark.createDataFrame(outcome.errors, SPLIT_ERRORS), "split_errors")
    return outcome


@dataclass
class SplitOutcome:
    """What splitting reported: the clips files to commit, the error rows, the counts (a video with
    an error and no clip is failed, one with both warned). Each task fills one from its videos'
    udf rows; the driver adds up the tasks' reports."""

    clip_files: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    videos: int = 0
    clips: int = 0
    failed: int = 0
    warned: int = 0

    def add_video(self, rows: list[dict]) -> list[dict]:
        """Counts one video's udf rows and keeps its error rows; returns its clip rows."""
        clips = [row for row in rows if row["split_error"] is None]
        errors = [_error_row(row) for row in rows if row["split_error"] is not None]
        self.videos += 1
        self.clips += len(clips)
        self.failed += bool(errors and not clips)
        self.warned += bool(errors and clips)
        self.errors += errors
        return clips

    def add_report(self, report: Row) -> None:
        self.clip_files += [written.asDict() for written in report.clip_files]
        self.errors += report.errors
        self.add(report)

    def add(self, other: Any) -> None:
        """Adds the counts of `other` (a task's report, a batch's outcome)."""
        self.videos += other.videos
        self.clips += other.clips
        self.failed += other.failed
        self.warned += other.warned

    @property
    def rows(self) -> int:
        """The videos split (what the runtime's progress line counts)."""
        return self.videos

    def report_batch(self) -> pa.RecordBatch:
        return pa.RecordBatch.from_pylist([asdict(self)], schema=TASK_REPORT_ARROW)


def _error_row(row: dict) -> dict:
    return {"video_id": row["video_id"], "detector": row["detector"], "reason": row["split_error"],
            "recorded_at": row["created_at"]}


def split_partitions(videos: int, videos_per_task: int, parallelism: int) -> int:
    """Tasks for `videos`: about `split.videos_per_task` each, in whole waves of the cluster's task
    slots (one video per task at least), so no slot idles while another splits a last task: 12
    videos on 2 slots are 4 tasks of 3, not 3 tasks of 4 (the third alone on one core)."""
    waves = math.ceil(math.ceil(videos / videos_per_task) / parallelism)
    return max(1, min(videos, waves * parallelism))


def split_conf(ctx: JobContext) -> dict:
    """The `split` section with the clip root resolved (beside the video blobs by default) and the
    blob root that clip rows store their uri relative to."""
    conf = ctx.cfg.section("split")
    conf["clip_root"] = clip_root(ctx.cfg, ctx.lake.root)
    conf["blob_root"] = blob_root(ctx.cfg, ctx.lake.root)
    return conf


def pending_videos(ctx: JobContext, detector: str, retry_errors: bool) -> DataFrame:
    """The ok video files not split yet (uri resolved), with their source's clip hints."""
    files = read_video_files(ctx.lake, blob_root(ctx.cfg, ctx.lake.root))
    files = files.where(F.col("status") == "ok").select("video_id", "uri")
    todo = ctx.lake.pending(files, "clips", keys=["video_id"])
    if not retry_errors:
        failed = ctx.lake.read("split_errors").where(F.col("detector") == detector).select("video_id")
        todo = todo.join(failed, "video_id", "left_anti")
    hints = ctx.lake.read("videos").select("video_id", "clip_hints")
    return todo.join(hints, "video_id", "left").select(*INPUT_COLUMNS)


def split_videos(ctx: JobContext, videos: DataFrame, conf: Mapping[str, Any], detector: str,
                 clip_files: TableFiles) -> DataFrame:
    """The tasks' reports (TASK_REPORT) of the split udf; TransNetV2 under the GPU resource profile,
    the rest on CPUs."""
    fn = partition_splitter(conf, detector, clip_files)
    if detector == "transnetv2":
        return gpu_map(videos, fn, TASK_REPORT, conf["gpu"], ctx.spark, STAGE, arrow=True)
    return videos.mapInArrow(fn, TASK_REPORT)


def partition_splitter(conf: Mapping[str, Any], detector: str, clip_files: TableFiles):
    """The mapInArrow function: one SceneSplitter per Python worker, one video at a time; the task
    writes its clips itself (one file) and reports it with its error rows and counts."""
    settings = dict(conf)
    conf_key = json.dumps([settings, detector], sort_keys=True, default=str)

    def split_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        from udfs.device import cached_model, task_device
        from udfs.split import SceneSplitter

        use_gpu = detector == "transnetv2" and bool(settings["gpu"]["use_gpu"])
        device = task_device(prefer_gpu=use_gpu)
        splitter = cached_model(
            ("scene-splitter", conf_key, device),
            lambda: SceneSplitter(settings, detector, clip_root=settings["clip_root"], device=device),
        )
        outcome = SplitOutcome()

        def clip_batches() -> Iterator[pa.RecordBatch]:
            for batch in batches:
                for video in batch.to_pandas().itertuples(index=False):
                    clips = outcome.add_video(splitter.split_one(video.video_id, video.uri, video.clip_hints))
                    for clip in clips:
                        clip["uri"] = stored_uri(clip["uri"], settings["blob_root"])
                    if clips:
                        yield pa.RecordBatch.from_pylist(clips, schema=CLIPS_ARROW)  # takes CLIPS' columns

        outcome.clip_files = clip_files.write(clip_batches())
        yield outcome.report_batch()

    return split_partition


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for(STAGE))

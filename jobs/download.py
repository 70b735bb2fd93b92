"""`vidlake download`: fetch and probe the videos that have no `video_files` row yet.

    vidlake download [--lake DIR] [--limit N] [--retry-failed [all]]
    spark-submit jobs/download.py [--lake DIR] [--limit N] [--retry-failed [all]]

The work is split into batches of `download.commit_every` videos (jobs.runtime: by a hash of the
video id, so no list of ids ever goes through the driver). Each batch is one Spark job over many tasks, each
task downloading `download.concurrency` videos at once, and ends in one Delta commit. Progress is
also committed every `download.commit_every_s` seconds, however slow the downloads: tasks cannot
commit, so a batch's tasks start no download after that time, return the rows they finished, and
the driver commits them and runs the batch again on its videos that still have no row (an
anti-join), until a round reaches them all. A crash loses at most the round in flight; a re-run
starts from the anti-join against `video_files` again, so nothing committed is fetched twice and
no row is duplicated. A blob written by a lost round has no row, so it is not counted as done: the
re-run fetches that video again and replaces it.

With `--retry-failed`, videos whose last download failed for a reason that may pass (the
statuses in `download.retry_statuses`; an http_error only with a code in
`download.retry_http_codes`: 429 and 5xx by default) are fetched again first, and the new row
replaces the old one (`attempts` counts the downloads tried). `--retry-failed all` fetches again
every failed video, a 404 or a page that is not a video included.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import pandas as pd
from pyspark import StorageLevel
from pyspark.accumulators import AccumulatorParam
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.blobs import blob_root, stored_uri
from jobs.config import Config
from jobs.context import JobContext
from jobs.progress import StageLog
from jobs.runtime import Batch, batch_count, run_batches
from schemas.tables import VIDEO_FILES
from udfs.errors import VidlakeError
from udfs.fetch import Cutoff, download_batch
from udfs.fetch_base import HTTP_ERROR, OK, STATUSES, FetchSettings

STAGE = "download"
TABLE = "video_files"
RETRY_TRANSIENT = "transient"
RETRY_ALL = "all"
HTTP_CODE_ENTRY = re.compile(r"[1-5]([0-9]{2}|xx)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--limit", type=int, metavar="N", help="download at most N videos in this run")
    parser.add_argument("--retry-failed", nargs="?", const=RETRY_TRANSIENT, choices=(RETRY_TRANSIENT, RETRY_ALL),
                        metavar="all", help="first fetch again the videos whose last download failed for a reason "
                        "that may pass (download.retry_statuses and retry_http_codes: timeouts, connection "
                        "errors, HTTP 429 and 5xx); with 'all', every failed video. The new row replaces the old one")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    conf = download_conf(ctx.cfg, ctx.lake.root)
    if args.limit is not None and args.limit < 0:
        raise VidlakeError(f"--limit must be 0 or more, got {args.limit}")
    log = StageLog(STAGE)
    log.note(f"blobs under {conf['blob_root']}")
    statuses: Counter = Counter()
    remaining = args.limit
    retry = retry_mode(args.retry_failed)
    if retry:
        statuses += download_all(ctx, failed_videos(ctx, conf, retry), conf, log, remaining, replace=True)
        remaining = None if remaining is None else max(0, remaining - sum(statuses.values()))
    statuses += download_all(ctx, new_videos(ctx), conf, log, remaining, replace=False,
                             at_most=ctx.lake.row_count("videos"))
    rows = sum(statuses.values())
    failed = rows - statuses[OK]
    log.done(rows, failed, **{status: n for status, n in sorted(statuses.items())})
    return 0


def download_conf(cfg: Config, lake_root: str) -> dict:
    """The `download` section with its defaults resolved: the blob root beside the lake's tables
    (a relative folder made absolute, so every worker writes to the same place), local paths
    allowed as the ingest stage allows them and under its local_roots. Checked here, on the driver."""
    conf = cfg.section("download")
    conf["blob_root"] = blob_root(cfg, lake_root)
    if conf.get("allow_local_paths") is None:
        conf["allow_local_paths"] = bool(cfg.get("ingest.allow_local_paths"))
    if conf.get("local_roots") is None:
        conf["local_roots"] = list(cfg.get("ingest.local_roots"))
    try:
        FetchSettings.from_conf(conf)
    except (TypeError, ValueError) as err:
        raise VidlakeError(f"download configuration: {err}") from None
    unknown = [s for s in conf["retry_statuses"] if s not in STATUSES or s == OK]
    if unknown:
        raise VidlakeError(f"download.retry_statuses: {unknown} are not failure statuses; they are "
                           f"{', '.join(s for s in STATUSES if s != OK)}")
    http_code_pattern(conf["retry_http_codes"])
    return conf


def retry_mode(value: str | bool | None) -> str | None:
    """`--retry-failed`'s value: None (not given), `transient` or `all`; True, from a caller that
    builds its own arguments, means the flag without a value."""
    if value is True:
        return RETRY_TRANSIENT
    return value or None


def http_code_pattern(codes: list) -> str:
    """The regular expression of `download.retry_http_codes` (429, "5xx", ...) over an http_error
    row's message, which starts with `HTTP <code>`."""
    entries = [str(code) for code in codes]
    bad = [entry for entry in entries if not HTTP_CODE_ENTRY.fullmatch(entry)]
    if bad:
        raise VidlakeError(f"download.retry_http_codes: {bad} are not HTTP codes (429) or classes (\"5xx\")")
    alternatives = "|".join(entry.replace("xx", "[0-9]{2}") for entry in entries) or "(?!)"
    return rf"^HTTP ({alternatives})\b"


def new_videos(ctx: JobContext) -> DataFrame:
    """Videos with no `video_files` row: (video_id, url, attempts = 0)."""
    videos = ctx.lake.read("videos").select("video_id", "url")
    return ctx.lake.pending(videos, TABLE).withColumn("attempts", F.lit(0))


def failed_videos(ctx: JobContext, conf: dict, retry: str) -> DataFrame:
    """Videos whose `video_files` row is a failure that `retry` fetches again, with the URL `videos`
    has for them now."""
    failed = ctx.lake.read(TABLE).where(retried(conf, retry)).select("video_id", "attempts")
    return ctx.lake.read("videos").select("video_id", "url").join(failed, "video_id")


def retried(conf: dict, retry: str) -> Column:
    """The failed rows to fetch again: every one with `all`, else those whose status is in
    `download.retry_statuses`, an http_error only when its code is in `download.retry_http_codes`."""
    status = F.col("status")
    if retry == RETRY_ALL:
        return status != OK
    plain = [s for s in conf["retry_statuses"] if s != HTTP_ERROR]
    condition = status.isin(plain)
    if HTTP_ERROR in conf["retry_statuses"]:
        code_matches = F.coalesce(F.col("error").rlike(http_code_pattern(conf["retry_http_codes"])), F.lit(False))
        condition = condition | ((status == HTTP_ERROR) & code_matches)
    return condition


def download_all(ctx: JobContext, todo: DataFrame, conf: dict, log: StageLog, limit: int | None,
                 replace: bool, at_most: int | None = None) -> Counter:
    """Downloads `todo` in batches of `download.commit_every`, one Delta commit per batch.

    `at_most` bounds how many videos `todo` holds (the `videos` table's rows, from the Delta log).
    When that is one batch or less, the batch runs straight from `todo`: counting and keeping the
    pending videos first costs a Spark job and a disk write (0.4-0.8 s on a 2-core machine) that
    only a run of several batches needs. A batch's later rounds evaluate `todo` again, which is
    right for new videos (those still without a row); failed videos fetched again, or a
    `--limit`, need the set kept as it was, so they always take the counted path."""
    tasks = tasks_per_batch(conf, ctx.spark.sparkContext.defaultParallelism)
    todo = todo.select("video_id", "url", F.coalesce("attempts", F.lit(0)).cast("int").alias("attempts"))
    # Hash-partitioned by id with an explicit count: every batch runs as `tasks` tasks (adaptive
    # execution does not coalesce an explicit repartition), and the dedup needs no second shuffle.
    todo = todo.repartition(tasks, "video_id").dropDuplicates(["video_id"])
    what = "failed videos to fetch again" if replace else "videos to fetch"
    if at_most == 0:
        return Counter()
    if at_most is not None and limit is None and not replace and at_most <= int(conf["commit_every"]):
        log.note(f"at most {at_most} {what}: one batch, {tasks} tasks")
        return _download_batch(ctx, todo, conf, replace, tasks, log, "batch 1/1")
    if limit is not None:
        todo = todo.limit(limit).repartition(tasks, "video_id")
    todo = todo.persist(StorageLevel.DISK_ONLY)
    try:
        total = todo.count()
        if total == 0:
            return Counter()
        commit_every = int(conf["commit_every"])
        log.note(f"{total} {what} in {batch_count(total, commit_every)} batch(es) of about {commit_every}, "
                 f"{tasks} tasks each")

        def download_batch_of(rows: DataFrame, batch: Batch) -> BatchStatuses:
            return BatchStatuses(_download_batch(ctx, rows, conf, replace, tasks, log, batch.name))

        outcomes = run_batches(ctx.spark, log, todo, total, commit_every, ["video_id"], download_batch_of)
        return sum((outcome.statuses for outcome in outcomes), Counter())
    finally:
        todo.unpersist()


def tasks_per_batch(conf: dict, default_parallelism: int) -> int:
    """`download.partitions_per_batch`, else as many tasks as the cluster runs at once, but no more
    than keeps each task's `download.concurrency` downloads busy with a batch's videos."""
    if conf.get("partitions_per_batch"):
        return int(conf["partitions_per_batch"])
    filled = math.ceil(int(conf["commit_every"]) / int(conf["concurrency"]))
    return max(1, min(default_parallelism, filled))


def _download_batch(ctx: JobContext, rows: DataFrame, conf: dict, replace: bool, tasks: int, log: StageLog,
                    name: str) -> Counter:
    counts = _commit_rounds(ctx, rows, conf, replace, tasks, log, name)
    if counts:
        log.note(f"{name} committed: {sum(counts.values())} videos, {counts[OK]} ok")
    else:
        log.note(f"{name}: nothing left to fetch")
    return counts


def _commit_rounds(ctx: JobContext, rows: DataFrame, conf: dict, replace: bool, tasks: int, log: StageLog,
                   name: str) -> Counter:
    """Downloads one batch in rounds of at most `download.commit_every_s`, one commit per round;
    returns the rows per status."""
    statuses: Counter = Counter()
    todo, round_number = rows, 1
    while True:
        counts, unreached = _commit_round(ctx, todo, conf, replace)
        statuses += counts
        if not unreached:
            return statuses
        log.note(f"{name}, round {round_number}: {sum(counts.values())} videos committed after "
                 f"download.commit_every_s={conf['commit_every_s']:g}; the batch's other videos go to the next round")
        todo, round_number = unfinished(ctx, rows).repartition(tasks, "video_id"), round_number + 1


def unfinished(ctx: JobContext, rows: DataFrame) -> DataFrame:
    """The rows that `video_files` has no result of yet: no row at all for a new video (attempts 0),
    no row with more attempts than the failed one had for a video fetched again."""
    done = ctx.lake.read(TABLE).select(F.col("video_id").alias("_done_id"), F.col("attempts").alias("_done_attempts"))
    written = (F.col("video_id") == F.col("_done_id")) & (F.col("_done_attempts") > F.col("attempts"))
    return rows.join(done, written, "left_anti")


def _commit_round(ctx: JobContext, rows: DataFrame, conf: dict, replace: bool) -> tuple[Counter, int]:
    """Downloads the rows its tasks reach before `download.commit_every_s` and commits them; returns
    the rows per status and how many rows the tasks did not reach (0: the round did them all)."""
    counter = ctx.spark.sparkContext.accumulator(Counter(), StatusCounter())
    unreached = ctx.spark.sparkContext.accumulator(0)
    stop_at = time.time() + float(conf["commit_every_s"])
    results = rows.mapInPandas(_downloader(conf, stop_at, counter, unreached), schema=VIDEO_FILES)
    if not replace:
        ctx.lake.append(results, TABLE)
        return Counter(counter.value), unreached.value
    # A MERGE reads its source more than once: keep the downloads' rows so each video is fetched once.
    results = results.persist(StorageLevel.DISK_ONLY)
    try:
        results.count()
        ctx.lake.upsert(results, TABLE)
        return Counter(counter.value), unreached.value
    finally:
        results.unpersist()


def _downloader(conf: dict, stop_at: float, counter, unreached):
    def download(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        settings = FetchSettings.from_conf(conf)
        cutoff = Cutoff(stop_at, first=settings.concurrency)
        for rows in batches:
            result = download_batch(rows, settings, cutoff)
            counter.add(Counter(result["status"].tolist()))
            unreached.add(len(rows) - len(result))
            # The table names a blob relative to the blob root, so the lake moves with its blobs.
            stored = result["uri"].map(lambda uri: stored_uri(uri, settings.blob_root), na_action="ignore")
            yield result.assign(uri=stored)

    return download


@dataclass(frozen=True)
class BatchStatuses:
    """A committed batch's rows per status, as the runtime's progress line counts them."""

    statuses: Counter

    @property
    def rows(self) -> int:
        return sum(self.statuses.values())

    @property
    def failed(self) -> int:
        return self.rows - self.statuses[OK]


class StatusCounter(AccumulatorParam):
    """Rows per status, summed over the tasks (for the log line; a retried task may count twice)."""

    def zero(self, value: Counter) -> Counter:
        return Counter()

    def addInPlace(self, value1: Counter, value2: Counter) -> Counter:  # noqa: N802 - pyspark's name
        value1.update(value2)
        return value1


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for(STAGE))

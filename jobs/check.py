"""`vidlake check [--hashes]`: is the lake whole?

    vidlake check [--lake DIR] [--hashes]
    spark-submit jobs/check.py [--lake DIR] [--hashes]

For every table: its Delta log parses (every commit file it holds, and the checkpoint a reader
starts from), and every data file its current snapshot names is there, at the size the log
records. For `video_files`, every `ok` row's blob is there at its recorded size (with --hashes,
its bytes hash to the recorded sha256); for `clips`, every materialized clip file (a `uri` that
is not its source video's) is there. Blobs and clip files are checked by Spark tasks over the rows
(`check.files_per_task` each, `check.concurrency` at a time), never listed on the driver, so the
check runs at the cluster's pace on ten million videos.

One line per table and per problem (naming the table and the commit or file), then a summary.
Exit status 0 when nothing is wrong, 1 when something is (2: the lake is missing, a bad flag).
"""
from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.fs as pafs
from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.blobs import blob_root, read_clips, read_video_files
from jobs.context import JobContext
from jobs.lake import Lake, LakeError, arrow_filesystem
from schemas.tables import TABLES

STAGE = "check"
PROBLEM_SCHEMA = "key string, uri string, problem string"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--hashes", action="store_true",
                        help="also read every ok video blob and compare its sha256 with the one video_files records")


@dataclass
class Findings:
    """The problems found, per table, and what was checked."""

    problems: dict[str, int] = field(default_factory=dict)
    checked: list[str] = field(default_factory=list)

    def report(self, table: str, lines: list[str], total: int | None = None) -> None:
        """Prints `lines` (problems of `table`); `total` counts them when only some are listed."""
        for line in lines:
            print(f"{table}: {line}")
        count = len(lines) if total is None else total
        if count > len(lines):
            print(f"{table}: ... and {count - len(lines)} more problems of this kind")
        if count:
            self.problems[table] = self.problems.get(table, 0) + count


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    conf = ctx.cfg.section("check")
    print(f"lake: {ctx.lake.root} (Delta engine: {ctx.lake.engine_name})")
    findings = Findings()
    readable = [name for name in TABLES if check_table(ctx.lake, name, findings)]
    root = blob_root(ctx.cfg, ctx.lake.root)
    if "video_files" in readable:
        blobs = video_blobs(ctx.lake, root)
        check_files(ctx, FileKind("video_files", "blob", "video"), blobs, conf, bool(args.hashes), findings)
    elif ctx.lake.exists("video_files"):
        print("video_files: blobs not checked: the table cannot be read")
    if "clips" in readable and "video_files" in readable:
        check_files(ctx, FileKind("clips", "clip file", "clip"), clip_files(ctx.lake, root), conf, False, findings)
    elif ctx.lake.exists("clips"):
        print("clips: clip files not checked: " + ("the table cannot be read" if "clips" not in readable else
              "video_files cannot be read, so which clips have files of their own is not known"))
    total = sum(findings.problems.values())
    if total:
        tables = ", ".join(f"{name} ({count})" for name, count in findings.problems.items())
        print(f"check: {total} problem(s) in {tables}")
        return 1
    print(f"check: the lake is whole: {'; '.join(findings.checked)}")
    return 0


def check_table(lake: Lake, name: str, findings: Findings) -> bool:
    """The table's log and data files; True when its rows can be read."""
    if not lake.exists(name):
        print(f"{name}: not written yet")
        return False
    damaged = lake.log_problems(name)
    if damaged:
        findings.report(name, damaged)
        return False
    try:
        version, files = lake.snapshot_files(name)
    except LakeError as err:
        findings.report(name, [str(err)])
        return False
    missing = data_file_problems(lake, name, version, files)
    findings.report(name, missing)
    if missing:
        return False
    print(f"{name}: ok (version {version}, {len(files)} data files)")
    findings.checked.append(f"{name} v{version}")
    return True


def data_file_problems(lake: Lake, name: str, version: int, files: list[tuple[str, int | None]]) -> list[str]:
    """A line per data file of the snapshot that is missing or of another size than the log records."""
    filesystem, root = arrow_filesystem(lake.path(name))
    infos = filesystem.get_file_info([f"{root}/{path}" for path, _ in files])
    problems = []
    for (path, size), info in zip(files, infos, strict=True):
        if info.type == pafs.FileType.NotFound:
            problems.append(f"data file {path} of version {version} is missing")
        elif size is not None and info.size != size:
            problems.append(f"data file {path} of version {version} has {info.size} bytes; the log records {size}")
    return problems


def video_blobs(lake: Lake, root: str) -> DataFrame:
    """The `ok` video_files rows as files to check: video id, absolute uri, recorded size and sha256."""
    files = read_video_files(lake, root).where(F.col("status") == "ok")
    return files.select(F.col("video_id").alias("key"), "uri", "bytes", "sha256")


def clip_files(lake: Lake, root: str) -> DataFrame:
    """The clips whose uri is a file of their own (materialized), not their source video."""
    videos = read_video_files(lake, root).select("video_id", F.col("uri").alias("video_uri"))
    clips = read_clips(lake, root).select("clip_id", "video_id", "uri").join(videos, "video_id", "left")
    own = clips.where(F.col("uri").isNotNull() & (F.col("video_uri").isNull() | (F.col("uri") != F.col("video_uri"))))
    return own.select(F.col("clip_id").alias("key"), "uri", F.lit(None).cast("long").alias("bytes"),
                      F.lit(None).cast("string").alias("sha256"))


@dataclass(frozen=True)
class FileKind:
    """Files a table's rows name: `<noun> of <owner> <key>` in a problem line."""

    table: str
    noun: str
    owner: str


def check_files(ctx: JobContext, kind: FileKind, rows: DataFrame, conf: dict, hashes: bool,
                findings: Findings) -> None:
    """Checks `rows`' files in Spark tasks (about check.files_per_task each, the table's rows
    bounding how many); prints the first `check.max_listed` problems."""
    counted = ctx.spark.sparkContext.accumulator(0)
    tasks = max(1, math.ceil(ctx.lake.row_count(kind.table) / int(conf["files_per_task"])))
    checker = file_checker(hashes, int(conf["concurrency"]), counted)
    problems = rows.repartition(tasks).mapInPandas(checker, PROBLEM_SCHEMA).persist(StorageLevel.DISK_ONLY)
    try:
        total = problems.count()
        listed = problems.orderBy("key").limit(int(conf["max_listed"])).collect()
    finally:
        problems.unpersist()
    lines = [f"{kind.noun} of {kind.owner} {row.key} {row.problem}: {row.uri}" for row in listed]
    findings.report(kind.table, lines, total)
    if not total:
        present = f"{counted.value} {kind.noun}s present" + (", their sha256 as recorded" if hashes else "")
        findings.checked.append(present)
        print(f"{kind.table}: {present}")


def file_checker(hashes: bool, concurrency: int, counted):
    """The mapInPandas function: each batch's files checked, its problems returned."""

    def check(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from udfs.file_check import file_problems

        for rows in batches:
            counted.add(len(rows))
            yield file_problems(rows, hashes, concurrency)

    return check


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for(STAGE))

"""The stage runtime: one driver loop that cuts a stage's pending work into batches and commits
each batch as it ends, so a killed driver loses at most the batch in flight.

    outcomes = run_batches(spark, log, todo, total, commit_every, keys=["clip_id"], process=score_batch)

`run_batches` cuts `todo` into ceil(total / commit_every) batches by a hash of the keys (the only
place vidlake batches by hash: no list of keys goes through the driver), names each batch's Spark
jobs in the UI ("score batch 3/12"), hands each batch to the stage's `process`, which runs its
tasks and commits what they wrote in one Delta transaction, and prints one progress line per
committed batch. A re-run starts from the stage's pending rule again, so what a killed run
committed is not done twice.

`BatchOutput` and `table_writing_task` are the write-once path of a stage whose tasks produce a
table's rows (score, caption): each task writes its rows as parquet files itself and reports them;
the driver commits them as an append (new keys) or, where the keys can already have a row, upserts
from the staged files (read twice by a MERGE, never computed twice). No batch's rows are held in
Spark's block managers.
"""
from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import ArrayType, LongType, MapType, StringType, StructField, StructType

from jobs.lake import WRITTEN_FILES, Lake, TableFiles, delete_path
from jobs.progress import StageLog
from schemas.tables import table

# What a table-writing task reports: the files it wrote, its rows, those that failed, its devices,
# and its rows per value of the column the stage tallies (caption: quality).
TASK_REPORT = StructType(
    [
        StructField("files", ArrayType(WRITTEN_FILES), False),
        StructField("rows", LongType(), False),
        StructField("failed", LongType(), False),
        StructField("devices", ArrayType(StringType()), False),
        StructField("tally", MapType(StringType(), LongType()), False),
    ]
)
TASK_REPORT_ARROW = to_arrow_schema(TASK_REPORT, timezone="UTC")
# The column a stage's worker adds to its rows to say which device it ran on (not a table column).
DEVICE_COLUMN = "_device"


@dataclass(frozen=True)
class Batch:
    """One batch of a run: its name in logs and the Spark UI, and about how many rows it holds."""

    name: str
    rows: int


class BatchResult(Protocol):
    """What a stage's `process` returns for a batch: at least its rows and failures."""

    rows: int
    failed: int


def batch_of(keys: Sequence[str], batches: int) -> Column:
    """The batch (0 .. batches-1) of a row: a hash of its keys, stable across runs and processes."""
    return F.pmod(F.xxhash64(*[F.col(key) for key in keys]), F.lit(batches))


def batch_count(total: int, commit_every: int) -> int:
    return max(1, math.ceil(total / commit_every))


def run_batches(
    spark: SparkSession,
    log: StageLog,
    todo: DataFrame,
    total: int,
    commit_every: int,
    keys: Sequence[str],
    process: Callable[[DataFrame, Batch], BatchResult],
    what: str = "",
) -> list[BatchResult]:
    """Runs `process(rows, batch)` on each batch of `todo` (about `total` rows, `commit_every` a
    batch) and returns the batches' results. `process` runs the batch's tasks and commits their
    output in one transaction; a progress line follows each batch. With more than one batch,
    `todo` is kept on the executors' disks (the pending input, not a result) unless the caller
    keeps it already, so every batch takes its share of one evaluation of the pending rule."""
    batches = batch_count(total, commit_every)
    progress = BatchProgress(log, total, batches, what)
    if batches == 1:
        return [progress.run(spark, 1, lambda: process(todo, progress.batch(1)))]
    keep_here = not todo.is_cached
    if keep_here:
        todo = todo.persist(StorageLevel.DISK_ONLY)
    try:
        results = []
        for number in range(1, batches + 1):
            rows = todo.where(batch_of(keys, batches) == number - 1)
            results.append(progress.run(spark, number, lambda rows=rows, n=number: process(rows, progress.batch(n))))
        return results
    finally:
        if keep_here:
            todo.unpersist()


@dataclass
class BatchProgress:
    """Counts a run's committed batches and prints the line after each: rows done / total, rate,
    failures and the time the rest will take at the rate so far."""

    log: StageLog
    total: int
    batches: int
    what: str = ""
    done: int = 0
    failed: int = 0
    started: float = field(default_factory=time.monotonic)

    def name(self, batch: int) -> str:
        return f"{self.log.stage} batch {batch}/{self.batches}" + (f" ({self.what})" if self.what else "")

    def batch(self, batch: int) -> Batch:
        return Batch(self.name(batch), math.ceil(self.total / self.batches))

    def run(self, spark: SparkSession, batch: int, work: Callable[[], BatchResult]) -> BatchResult:
        """`work()` with the batch's Spark jobs grouped and described under its name."""
        name = self.name(batch)
        context = spark.sparkContext
        context.setJobGroup(f"vidlake-{self.log.stage}-{batch}", name)
        context.setJobDescription(name)
        try:
            result = work()
        finally:
            context.setJobDescription(None)
            context.setLocalProperty("spark.jobGroup.id", None)  # pyspark has no clearJobGroup
        self.done += result.rows
        self.failed += result.failed
        self.log.batch(name, self.done, max(self.total, self.done), self.failed, time.monotonic() - self.started)
        return result


@dataclass
class TaskOutcome:
    """The reports of a batch's table-writing tasks, added up on the driver."""

    files: list[dict] = field(default_factory=list)
    rows: int = 0
    failed: int = 0
    devices: set[str] = field(default_factory=set)
    tally: Counter = field(default_factory=Counter)

    def add(self, report: Row) -> None:
        self.files += [written.asDict() for written in report.files]
        self.rows += report.rows
        self.failed += report.failed
        self.devices |= set(report.devices)
        self.tally.update(report.tally)

    def add_up(self, other: TaskOutcome) -> None:
        """Adds a batch's counts to a run's (its files are committed already)."""
        self.rows += other.rows
        self.failed += other.failed
        self.devices |= other.devices
        self.tally.update(other.tally)


class BatchOutput:
    """Where a batch's tasks write a table's rows, and the batch's one commit of them.

    `replace` False: every key is new, so the tasks write the table's own files and the driver adds
    them (an append: no read of the table). `replace` True: a key can already have a row, so the
    tasks write staging files beside the table and the driver upserts from them (`merge` turns the
    staged rows into the upsert's source, e.g. merging them with the rows they replace)."""

    def __init__(self, lake: Lake, name: str, replace: bool, max_rows_per_file: int):
        self.lake, self.name, self.replace = lake, name, replace
        self.contract = table(name)
        if replace:
            staging = f"{lake.root}/_staging/{name}-{uuid.uuid4().hex}"
            self.files = TableFiles(staging, self.contract, max_rows_per_file)
        else:
            self.files = lake.table_files(name)

    def commit(self, outcome: TaskOutcome, merge: Callable[[DataFrame], DataFrame] | None = None) -> None:
        if not self.replace:
            self.lake.commit_files(self.name, self.files, outcome.files)
            return
        try:
            if outcome.files:
                staged = (self.lake.spark.read.schema(self.contract.schema)
                          .option("basePath", self.files.directory).parquet(self.files.directory))
                self.lake.upsert(merge(staged) if merge else staged, self.name)
        finally:
            delete_path(self.lake.spark, self.files.directory)


def run_writing_tasks(df: DataFrame, task: Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]],
                      apply: Callable[..., DataFrame] | None = None) -> TaskOutcome:
    """Runs `task` (table_writing_task) over `df`'s partitions and adds up the reports; `apply`
    maps `df` with the task (default: mapInArrow; a GPU stage passes its gpu_map)."""
    reports = (apply or (lambda frame, fn, schema: frame.mapInArrow(fn, schema)))(df, task, TASK_REPORT)
    outcome = TaskOutcome()
    for report in reports.collect():
        outcome.add(report)
    return outcome


def table_writing_task(
    files: TableFiles,
    worker: Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]],
    columns: Sequence[str],
    failed: Callable[[pd.DataFrame], int],
    tally_column: str | None = None,
) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The mapInArrow function of a table-writing stage: `worker` (the stage's per-worker function
    over pandas batches, yielding the table's `columns` and DEVICE_COLUMN) runs on the task's
    rows, which the task writes with `files` (the table's other columns null) and reports with
    its counts (`failed(frame)`: the frame's rows that failed; its rows per value of
    `tally_column`) as one TASK_REPORT row."""
    column_names = list(columns)

    def write_task(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        schema = pa.schema([f for f in files.file_schema if f.name in column_names])
        report: dict[str, Any] = {"rows": 0, "failed": 0, "devices": set(), "tally": Counter()}

        def table_batches() -> Iterator[pa.RecordBatch]:
            for frame in worker(batch.to_pandas() for batch in batches):
                if frame.empty:
                    continue
                report["rows"] += len(frame)
                report["failed"] += int(failed(frame))
                if DEVICE_COLUMN in frame:
                    report["devices"] |= set(frame[DEVICE_COLUMN])
                if tally_column:
                    report["tally"].update(frame[tally_column].astype(str).tolist())
                yield _full_batch(pa.RecordBatch.from_pandas(frame[column_names], schema=schema, preserve_index=False),
                                  files.file_schema)

        written = files.write(table_batches())
        row = {**report, "files": written, "devices": sorted(report["devices"]), "tally": dict(report["tally"])}
        yield pa.RecordBatch.from_pylist([row], schema=TASK_REPORT_ARROW)

    return write_task


def _full_batch(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """`batch` with every column of `schema`, those it lacks null."""
    arrays = [batch.column(f.name) if f.name in batch.schema.names else pa.nulls(batch.num_rows, f.type)
              for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)

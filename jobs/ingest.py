"""`vidlake ingest`: source tables (CSV, JSON, parquet) -> `videos` and `ingest_errors`.

    vidlake ingest --format webvid10m --input results_10M_train.csv
    vidlake ingest --format panda70m --input panda70m_training_10m.csv --lake s3://bucket/lake
    vidlake ingest --format generic --input mine.jsonl --set ingest.generic.caption=text

Every input row ends up counted once: accepted (its video is in `videos`, added now or already
there), rejected (a row in `ingest_errors` says why) or folded (a later row with the id and URL of
an earlier one). A usable row with a broken optional field is accepted and gets a warning row.

Two passes, no shuffle of rows; Spark schedules the tasks, Arrow does the per-row work:
- Pass 1, one task per input block: CSV files are read in byte ranges by udfs/csv_blocks.py (a file
  in which a newline inside a quoted field broke rows apart, or a gzip file, is read as one stream
  and staged in chunks as it is parsed); JSON, parquet and files on a file system pyarrow cannot
  open are read by Spark. udfs/candidates.py gives every row its ids, URL and own problem, and the
  task writes it once, as Arrow, under the bucket of its video id (<lake>/_staging/<batch>/rows/_bucket=N).
- Pass 2, one task per bucket: udfs/duplicates.py decides each row's status (all rows of a video,
  and the lake's row for it, are in one bucket); the task builds the new videos' fields and the
  error rows, and writes both tables' files itself. The driver commits them, errors first.
- Sets with one row per clip (MiraData, Open-Sora-Plan) keep their new clip rows for Spark, which
  folds them into one video each.

`ingest_batch` is `ingest-<16 hex>`, a hash of the format and each input file's path, size and
modification time: re-ingesting unchanged files is the same batch, so it adds no row to either
table; a changed file is a new batch.

`ingest_errors` lists the rejections of each input file's latest ingest: a run that rejects other
rows of a file than the run before it did (another setting, such as ingest.allow_local_paths, or
the file edited) replaces the file's rejections, so a row accepted later is no longer listed.
Warnings stay, one per warned row and batch.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyspark import TaskContext
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from jobs.context import JobContext
from jobs.lake import WRITTEN_FILES, TableFiles, arrow_filesystem
from jobs.progress import StageLog
from schemas import ids, sources
from schemas.tables import table
from udfs import candidates as rules
from udfs import csv_blocks, duplicates
from udfs.errors import VidlakeError

ORDER = duplicates.ORDER  # file order: files by path, then block, then position in the block
EXTRA = MapType(StringType(), StringType())
MULTILINE_MODES = ("auto", "always", "never")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", dest="source_format", required=True, choices=list(sources.FORMATS),
                        help="the source set's file layout")
    parser.add_argument("--input", dest="inputs", nargs="+", action="extend", required=True, metavar="PATH",
                        help="input files, folders or globs (local or any Hadoop file system URL)")


@dataclass(frozen=True)
class InputFile:
    path: str
    size: int
    modified_ms: int


@dataclass
class IngestCounts:
    input_rows: int
    accepted: int
    rejected: int
    folded: int
    warnings: int
    already_in_lake: int
    videos_added: int

    def summary(self) -> str:
        return (
            f"{self.input_rows} input rows = {self.accepted} accepted + {self.rejected} rejected + "
            f"{self.folded} folded; {self.videos_added} videos added ({self.already_in_lake} rows already "
            f"in the lake), {self.warnings} warnings"
        )


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    log = StageLog("ingest")
    fmt = sources.source_format(args.source_format)
    settings = ctx.cfg.section("ingest")
    if settings["csv_multiline"] not in MULTILINE_MODES:
        raise VidlakeError(f"ingest.csv_multiline must be one of {', '.join(MULTILINE_MODES)}")
    relative_roots = [root for root in settings["local_roots"] if not str(root).startswith("/")]
    if relative_roots:
        raise VidlakeError(f"ingest.local_roots must be absolute folders, not {', '.join(map(str, relative_roots))}")
    files = resolve_inputs(ctx.spark, args.inputs)
    batch = ingest_batch(fmt.name, files)
    counts = ingest(ctx, fmt, files, settings, batch, log)
    print(f"[vidlake] ingest: {counts.summary()}", flush=True)
    log.done(counts.input_rows, failed=counts.rejected, videos_added=counts.videos_added, ingest_batch=batch)
    return 0


def resolve_inputs(spark: SparkSession, inputs: list[str]) -> list[InputFile]:
    """The files behind each input (a file, a folder's files or a glob), sorted by path; a clear error
    for one that matches nothing."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    found: dict[str, InputFile] = {}
    for given in inputs:
        path = jvm.org.apache.hadoop.fs.Path(given)
        statuses = path.getFileSystem(conf).globStatus(path) or []
        files = []
        for status in statuses:
            children = [status]
            if status.isDirectory():
                children = status.getPath().getFileSystem(conf).listStatus(status.getPath())
            files += [c for c in children if c.isFile() and not c.getPath().getName().startswith(("_", "."))]
        if not files:
            raise VidlakeError(f"input {given!r} not found (no file matches it)")
        for status in files:
            name = status.getPath().toString()
            found[name] = InputFile(name, status.getLen(), status.getModificationTime())
    return [found[name] for name in sorted(found)]


def ingest_batch(format_name: str, files: list[InputFile]) -> str:
    """The run's id: the same files, unchanged, give the same id."""
    digest = hashlib.sha256(format_name.encode())
    for f in files:
        digest.update(f"\n{f.path}\t{f.size}\t{f.modified_ms}".encode())
    return f"ingest-{digest.hexdigest()[:16]}"


def ingest(
    ctx: JobContext, fmt: sources.SourceFormat, files: list[InputFile], settings: dict, batch: str, log: StageLog
) -> IngestCounts:
    """Pass 1 writes every row to staging under its bucket; pass 2 writes both tables' files per
    bucket; the driver commits them (errors first: a run stopped between the two commits adds the
    videos when run again, and its errors are not recorded twice). Where ingest_errors has rows of
    this batch or rejections of these files, pass 2 stages its error rows instead, and the driver
    records only what changed (record_errors). Staging is removed at the end."""
    staging = f"{ctx.lake.root}/_staging/{batch}"
    now = datetime.now(timezone.utc)
    buckets = bucket_count(ctx.spark, files, settings["bucket_mb"])
    try:
        staged = write_candidates(ctx, fmt, files, settings, f"{staging}/rows", buckets, log)
        log.note(f"pass 1: {staged.total_rows()} rows from {len(staged.blocks)} blocks staged in {buckets} buckets "
                 f"({log.elapsed():.1f} s)")
        lake_urls = _write_lake_urls(ctx.lake, fmt, f"{staging}/lake", buckets)
        recorded = _recorded_errors(ctx.lake, fmt, files, batch)
        errors_files = (ctx.lake.table_files("ingest_errors") if recorded is None else
                        TableFiles(f"{staging}/errors", table("ingest_errors"), ctx.cfg.get("lake.max_rows_per_file")))
        videos_files = ctx.lake.table_files("videos") if fmt.rows_per_video == "one" else None
        task = BucketTask(fmt, settings, staging, lake_urls, videos_files, errors_files, batch, now,
                          staged.row_offsets(), staged.columns)
        outcome = run_buckets(ctx.spark, task, buckets)
        stats = BlockStats(outcome["block"])
        log.note(f"pass 2: {stats.total('accepted', in_lake=False)} new rows, {sum(outcome['warnings'])} warnings "
                 f"({log.elapsed():.1f} s)")
        if recorded is None:
            ctx.lake.commit_files("ingest_errors", errors_files, outcome["error_file"])
        else:
            record_errors(ctx, fmt, files, recorded, errors_files.directory if outcome["error_file"] else None, log)
        added = stats.total("accepted", in_lake=False)
        if videos_files is not None:
            ctx.lake.commit_files("videos", videos_files, outcome["video_file"])
        elif sum(outcome["kept"]):
            added = _fold_clip_rows(ctx, fmt, f"{staging}/kept", batch, now)
    finally:
        _remove(staging)
    return IngestCounts(
        input_rows=stats.total(), accepted=stats.total("accepted"), rejected=stats.total("rejected"),
        folded=stats.total("folded"), warnings=sum(outcome["warnings"]),
        already_in_lake=stats.total("accepted", in_lake=True), videos_added=added,
    )


def bucket_count(spark: SparkSession, files: list[InputFile], bucket_mb: int) -> int:
    """Buckets of at most about bucket_mb of input each (a pass-2 task holds one in memory), as a
    multiple of the cores so that pass 2's last wave keeps every core busy. A gzip file counts as
    GZIP_EXPANSION times its size."""
    cores = spark.sparkContext.defaultParallelism
    input_bytes = sum(f.size * (GZIP_EXPANSION if csv_blocks.compressed(f.path) else 1) for f in files)
    by_size = -(-input_bytes // (bucket_mb * 2**20))
    return cores * max(1, -(-by_size // cores))


def _remove(directory: str) -> None:
    """Removes a staging folder (pass 1 and 2 write it with pyarrow, so pyarrow can remove it). Its
    files go in parallel: removing a file whose blocks were written back takes milliseconds of
    waiting on local disks, and a request on object stores."""
    from concurrent.futures import ThreadPoolExecutor

    from pyarrow import fs

    filesystem, root = arrow_filesystem(directory)
    if filesystem.get_file_info(root).type == fs.FileType.NotFound:
        return
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    with ThreadPoolExecutor(REMOVE_THREADS) as pool:
        list(pool.map(filesystem.delete_file, [f.path for f in found if f.type == fs.FileType.File]))
    filesystem.delete_dir(root)


ERROR_KEY = ["ingest_batch", "input_file", "row_number", "severity", "reason"]  # one error row


def _file_rejections(fmt: sources.SourceFormat, files: list[InputFile]) -> Column:
    """The ingest_errors rows that list rows of these files as rejected, whatever batch wrote them."""
    names = [display_name(f.path) for f in files]
    return (F.col("source") == fmt.name) & F.col("input_file").isin(names) & (F.col("severity") == "rejected")


def _recorded_errors(lake, fmt: sources.SourceFormat, files: list[InputFile], batch: str) -> DataFrame | None:
    """ingest_errors' rows of this batch and rejections of these files; None where there are none
    (a first ingest, whose error rows are all new)."""
    if not lake.exists("ingest_errors"):
        return None
    recorded = lake.read("ingest_errors").where((F.col("ingest_batch") == batch) | _file_rejections(fmt, files))
    return None if recorded.limit(1).isEmpty() else recorded


def record_errors(
    ctx: JobContext, fmt: sources.SourceFormat, files: list[InputFile], recorded: DataFrame, staged: str | None,
    log: StageLog,
) -> None:
    """Records a re-ingest's error rows (`staged`, None where it had none): where its rejections are
    not the ones recorded for these files, those are replaced by these; warnings not recorded yet
    are added (a run stopped after its errors' commit warned of its videos already)."""
    found = (ctx.spark.read.schema(table("ingest_errors").schema).parquet(staged) if staged
             else ctx.spark.createDataFrame([], table("ingest_errors").schema))
    rejected = found.where(F.col("severity") == "rejected")
    was_rejected = recorded.where(_file_rejections(fmt, files))
    changed = not (rejected.select(ERROR_KEY).exceptAll(was_rejected.select(ERROR_KEY)).isEmpty()
                   and was_rejected.select(ERROR_KEY).exceptAll(rejected.select(ERROR_KEY)).isEmpty())
    warned = found.where(F.col("severity") == "warning").join(
        recorded.where(F.col("severity") == "warning").select(ERROR_KEY), ERROR_KEY, "left_anti")
    if changed:
        log.note("rejections differ from the ones recorded for these files: replacing them")
        ctx.lake.delete("ingest_errors", _file_rejections(fmt, files))
    added = warned.unionByName(rejected) if changed else warned
    if not added.isEmpty():
        ctx.lake.append(added, "ingest_errors")


def _write_lake_urls(lake, fmt: sources.SourceFormat, lake_dir: str, buckets: int) -> str | None:
    """The lake's (video_id, url) of this source under the same buckets, for pass 2; None when the
    lake has no videos yet."""
    if not lake.exists("videos"):
        return None
    existing = lake.read("videos").where(F.col("source") == fmt.name).select("video_id", "url")
    first_bits = F.conv(F.substring("video_id", 1, ids.BUCKET_HEX), 16, 10).cast("long")
    existing = existing.withColumn(BUCKET, F.pmod(first_bits, F.lit(buckets)))
    existing.write.partitionBy(BUCKET).parquet(lake_dir)
    return lake_dir


# --- pass 1: every input row, staged under its bucket ------------------------------------------------

BUCKET = "_bucket"
STAGED = StructType(
    [
        StructField("_file", StringType()),
        StructField("_block", LongType()),
        StructField("rows", LongType()),
        StructField("first_pos", LongType()),
        StructField("malformed", LongType()),
        StructField("columns", StringType()),
    ]
)
GZIP_EXPANSION = 5  # what gzip shrinks metadata CSV by (4.8x for make_metadata's WebVid rows at level 1)
REMOVE_THREADS = 16  # staged files removed at once (2.5 s -> 1.4 s for 700 files of 3 MB here)
STAGE_ROWS = 1 << 20  # rows of Spark-read input a pass-1 task gathers before it stages them
ARROW_SCHEMES = ("", "file", "s3", "s3a", "gs", "dbfs")  # where pass 1 reads CSV blocks itself


@dataclass
class Staged:
    """What pass 1 reported: per block (file, block start) its rows, the first row's position and
    its malformed rows, and per file the columns its rows keep."""

    blocks: dict = field(default_factory=dict)
    columns: dict = field(default_factory=dict)

    def add(self, report: dict) -> None:
        key = (report["_file"], report["_block"])
        rows, first_pos, malformed = self.blocks.get(key, (0, report["first_pos"], 0))
        self.blocks[key] = (rows + report["rows"], min(first_pos, report["first_pos"]), malformed + report["malformed"])
        self.columns[report["_file"]] = json.loads(report["columns"])

    def total_rows(self) -> int:
        return sum(rows for rows, _, _ in self.blocks.values())

    def malformed_files(self) -> set[str]:
        return {file for (file, _), (_, _, malformed) in self.blocks.items() if malformed}

    def row_offsets(self) -> dict[tuple[str, int], int]:
        """Per block, what turns a row's position into its 1-based row number in its file."""
        offsets, before, current = {}, 0, None
        for (file, block), (rows, first_pos, _) in sorted(self.blocks.items()):
            before = 0 if file != current else before
            current = file
            offsets[(file, block)] = before - first_pos + 1
            before += rows
        return offsets


def write_candidates(
    ctx: JobContext, fmt: sources.SourceFormat, files: list[InputFile], settings: dict, rows_dir: str, buckets: int,
    log: StageLog,
) -> Staged:
    """Pass 1. A CSV file read in blocks whose rows did not fit its header (a newline inside a
    quoted field breaks rows at a block's edge) is read again as one stream (auto mode)."""
    streams = {f.path for f in files} if settings["csv_multiline"] == "always" else set()
    while True:
        staged, in_blocks = _stage(ctx, fmt, files, settings, rows_dir, buckets, streams)
        broken = set()
        if settings["csv_multiline"] == "auto":
            broken = {path for path, name in in_blocks.items() if name in staged.malformed_files()}
        if not broken:
            return staged
        for path in sorted(broken):
            log.note(f"{path}: rows broken by a newline inside a quoted field; reading it again as one stream")
        streams |= broken
        _remove(rows_dir)


def _stage(
    ctx: JobContext, fmt: sources.SourceFormat, files: list[InputFile], settings: dict, rows_dir: str, buckets: int,
    streams: set[str],
) -> tuple[Staged, dict[str, str]]:
    """Runs pass 1 once; also the CSV files it read in blocks (path -> the name their rows carry)."""
    task = StageTask(fmt, settings, rows_dir, buckets)
    arrow_csv = [f for f in files if _file_kind(fmt, f.path) == "csv" and _scheme(f.path) in ARROW_SCHEMES]
    by_spark = [f for f in files if f not in arrow_csv]
    staged = Staged()
    if arrow_csv:
        block_bytes = max(1, int(settings["block_mb"] * 2**20))
        blocks = [b for f in arrow_csv for b in csv_blocks.plan_blocks(f.path, f.size, block_bytes, f.path in streams)]
        headers = {f.path: _csv_header(fmt, f.path) for f in arrow_csv}
        columns = {path: _source_columns(fmt, header, settings, path) for path, header in headers.items()}
        reader = BlockReader(task, blocks, headers, columns, block_bytes)
        for row in ctx.spark.range(len(blocks), numPartitions=len(blocks)).mapInArrow(reader, STAGED).collect():
            staged.add(row.asDict())
    for number, group in enumerate(read_source(ctx.spark, fmt, by_spark, streams, settings) if by_spark else []):
        stager = RowStager(task, group.columns, f"g{number}")
        for row in _as_text_columns(group).mapInArrow(stager, STAGED).collect():
            staged.add(row.asDict())
    csv_files = [f.path for f in files if _file_kind(fmt, f.path) == "csv" and f.path not in streams
                 and not csv_blocks.compressed(f.path)]  # compressed files are streams already
    return staged, {path: display_name(path) for path in csv_files}


@dataclass(frozen=True)
class StageTask:
    """Pass 1's work on rows of one file block (sent to the executors)."""

    fmt: sources.SourceFormat
    settings: dict
    rows_dir: str
    buckets: int

    def stage(self, rows: pa.Table, file_name: str, block: int, columns: list[str], name: str) -> dict:
        """Stages the rows under their buckets as `<rows_dir>/_bucket=N/<name>.arrow` (the same name
        when a task runs again, so a retry replaces its files); what it staged."""
        staged, bucket = rules.candidates(rows, self.fmt, self.settings, file_name, block, columns, self.buckets)
        _write_buckets(staged, bucket, self.rows_dir, name)
        positions = rows[csv_blocks.POSITION]
        return {
            "_file": file_name, "_block": block, "rows": rows.num_rows,
            "first_pos": pc.min(positions).as_py() if rows.num_rows else 0,
            "malformed": pc.sum(pc.is_valid(rows[csv_blocks.CORRUPT_RECORD])).as_py() or 0,
            "columns": json.dumps(columns),
        }


@dataclass(frozen=True)
class BlockReader:
    """Pass 1 over CSV blocks that pyarrow reads itself: one block per Spark task. A stream block
    (a whole file) is staged in chunks of about `chunk_bytes` as it is parsed."""

    task: StageTask
    blocks: list
    headers: dict
    columns: dict
    chunk_bytes: int

    def __call__(self, block_ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for index in _range_ids(block_ids):
            block = self.blocks[index]
            filesystem, path = arrow_filesystem(block.path)
            located = csv_blocks.CsvBlock(path, block.start, block.end, block.stream)
            chunks = csv_blocks.read_chunks(filesystem, located, self.headers[block.path], self.chunk_bytes)
            reports = [self.task.stage(rows, display_name(block.path), block.start, self.columns[block.path],
                                       f"b{index:06d}-{chunk:05d}") for chunk, rows in enumerate(chunks)]
            yield pa.RecordBatch.from_pylist(reports, schema=to_arrow_schema(STAGED))


@dataclass(frozen=True)
class RowStager:
    """Pass 1 over rows Spark read (columns as text, CORRUPT_RECORD, _file as Spark names it, _block
    and POSITION): gathered into chunks of STAGE_ROWS, one staging per file of a chunk."""

    task: StageTask
    columns: list
    name: str

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        partition = TaskContext.get().partitionId()
        gathered, count, chunk = [], 0, 0
        for batch in batches:
            gathered.append(batch)
            count += batch.num_rows
            if count >= STAGE_ROWS:
                yield from self._stage(pa.Table.from_batches(gathered), f"{self.name}-p{partition:05d}-c{chunk:04d}")
                gathered, count, chunk = [], 0, chunk + 1
        if gathered:
            yield from self._stage(pa.Table.from_batches(gathered), f"{self.name}-p{partition:05d}-c{chunk:04d}")

    def _stage(self, rows: pa.Table, name: str) -> Iterator[pa.RecordBatch]:
        reports = []
        for number, uri in enumerate(pc.unique(rows["_file"]).to_pylist()):
            of_file = rows.filter(pc.equal(rows["_file"], uri))
            for block in pc.unique(of_file["_block"]).to_pylist():
                part = of_file.filter(pc.equal(of_file["_block"], block))
                file_name = _spark_file_name(uri)
                reports.append(self.task.stage(part, file_name, block, self.columns, f"{name}-{number}-{block}"))
        yield pa.RecordBatch.from_pylist(reports, schema=to_arrow_schema(STAGED))


def _range_ids(batches: Iterator[pa.RecordBatch]) -> Iterator[int]:
    """The ids of `spark.range(n, numPartitions=n)` a task got: the blocks or buckets it works on."""
    for batch in batches:
        yield from batch.column(0).to_pylist()


def _write_buckets(rows: pa.Table, bucket: np.ndarray, rows_dir: str, name: str) -> None:
    order = np.argsort(bucket, kind="stable")
    ordered = rows.combine_chunks().take(pa.array(order))
    by_bucket = bucket[order]
    filesystem, root = arrow_filesystem(rows_dir)
    for number in np.unique(by_bucket):
        start, end = np.searchsorted(by_bucket, [number, number + 1])
        folder = f"{root}/{BUCKET}={number}"
        filesystem.create_dir(folder, recursive=True)
        part = ordered.slice(start, end - start)
        _write_whole(filesystem, f"{folder}/{name}.arrow", lambda out, part=part: _write_ipc(out, part))


def _write_ipc(out, rows: pa.Table) -> None:
    with pa.ipc.new_file(out, rows.schema) as writer:
        writer.write_table(rows)


def _write_whole(filesystem, path: str, write) -> None:
    """Writes a file under a hidden temporary name, then moves it into place: a reader sees whole
    files only, even where two attempts of one task (a retry, a speculative copy) write it at once."""
    folder, name = path.rsplit("/", 1)
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    with filesystem.open_output_stream(temporary) as out:
        write(out)
    filesystem.move(temporary, path)


def _scheme(path: str) -> str:
    found = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):", path)
    return found.group(1).lower() if found else ""


def display_name(path: str) -> str:
    """An input file's name as the user wrote it (Hadoop's `file:` prefix dropped)."""
    return re.sub(r"^file:(//)?", "", path)


def _spark_file_name(uri: str) -> str:
    """display_name of a file as Spark's _metadata names it (a URL-encoded URI)."""
    return display_name(unquote(uri))


def _csv_header(fmt: sources.SourceFormat, path: str) -> list[str]:
    """A CSV file's header; a clear error where it is not the format's."""
    filesystem, located = arrow_filesystem(path)
    header = csv_blocks.read_header(filesystem, located)
    _check_header(fmt, path, tuple(header))
    return header


def _check_header(fmt: sources.SourceFormat, path: str, header: tuple) -> None:
    """A fixed format's header must name its columns in order (trailing unnamed columns aside)."""
    if fmt.columns and _named(header) != list(fmt.named_columns):
        raise VidlakeError(
            f"{path}: its header {list(header)} is not {fmt.name}'s ({', '.join(fmt.named_columns)}); "
            "is --format right?"
        )


def _source_columns(fmt: sources.SourceFormat, header: list[str], settings: dict, path: str) -> list[str]:
    """The columns a row keeps: a fixed format's named ones, or a generic file's own, which must
    hold the columns `ingest.generic` maps (a clear error where they do not)."""
    if fmt.columns:
        return list(fmt.named_columns)
    try:
        rules.check_generic_mapping(settings["generic"], list(header), path)
    except ValueError as err:
        raise VidlakeError(str(err)) from None
    return list(header)


# --- reading ---------------------------------------------------------------------------------------


@dataclass
class SourceGroup:
    """Input files Spark read with one schema: `df` has the source's columns, the corrupt-record
    column, and _file (as Spark names it), _block, _pos (its place in file order)."""

    df: DataFrame
    columns: list[str]


def read_source(
    spark: SparkSession, fmt: sources.SourceFormat, files: list[InputFile], multiline: set[str], settings: dict
) -> list[SourceGroup]:
    """The files pass 1 does not read itself, as Spark reads them, by kind and schema."""
    by_kind: dict[tuple, list[str]] = {}
    for f in files:
        kind = _file_kind(fmt, f.path)
        by_kind.setdefault((kind, f.path in multiline), []).append(f.path)
    groups = []
    for (kind, as_stream), paths in sorted(by_kind.items()):
        if kind == "csv":
            groups += _read_csv(spark, fmt, paths, as_stream, settings)
            continue
        if kind in ("json", "jsonl"):
            df = _read_json(spark, fmt, paths, lines=kind == "jsonl")
        else:
            df = spark.read.parquet(*paths)
        columns = [c for c in df.columns if c != sources.CORRUPT_RECORD]
        groups.append(SourceGroup(_with_position(df), _source_columns(fmt, columns, settings, ", ".join(paths))))
    return groups


def _file_kind(fmt: sources.SourceFormat, path: str) -> str:
    name = path.lower().rsplit("/", 1)[-1]
    for suffix, kind in ((".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"), (".parquet", "parquet")):
        if name.endswith(suffix):
            found = kind
            break
    else:
        found = "csv" if name.endswith((".csv", ".csv.gz")) or fmt.reader == "csv" else None
    allowed = {"csv": ("csv",), "json": ("json", "jsonl"), "any": ("csv", "json", "jsonl", "parquet")}[fmt.reader]
    if found not in allowed:
        raise VidlakeError(
            f"{path}: format {fmt.name} reads {' or '.join(allowed)} files (by extension), not this one"
        )
    return found


def _csv_reader(spark: SparkSession, as_stream: bool):
    return (
        spark.read.option("header", True)
        .option("escape", '"')
        .option("multiLine", as_stream)
        .option("mode", "PERMISSIVE")
        .option("columnNameOfCorruptRecord", sources.CORRUPT_RECORD)
    )


def _read_csv(
    spark: SparkSession, fmt: sources.SourceFormat, paths: list[str], as_stream: bool, settings: dict
) -> list[SourceGroup]:
    """One group per distinct header."""
    _quiet_csv_header_check(spark)
    by_header: dict[tuple, list[str]] = {}
    for path in paths:
        header = tuple(_csv_reader(spark, False).csv(path).columns)
        _check_header(fmt, path, header)
        by_header.setdefault(header, []).append(path)
    groups = []
    for header, group_paths in by_header.items():
        df = _csv_reader(spark, as_stream).schema(sources.text_schema(header)).csv(group_paths)
        columns = _source_columns(fmt, list(header), settings, ", ".join(group_paths))
        groups.append(SourceGroup(_with_position(df), columns))
    return groups


def _quiet_csv_header_check(spark: SparkSession) -> None:
    """Silence Spark's warning that a header's empty names (MiraData's last two columns) are not the
    schema's `_c<position>`: the header was checked here, with a clear error where it is wrong."""
    jvm = spark.sparkContext._jvm
    level = jvm.org.apache.logging.log4j.Level.ERROR
    jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(
        "org.apache.spark.sql.catalyst.csv.CSVHeaderChecker", level
    )


def _named(header: tuple) -> list[str]:
    """The header without trailing unnamed columns (Spark calls them _c<position>)."""
    names = list(header)
    while names and names[-1] == f"_c{len(names) - 1}":
        names.pop()
    return names


def _read_json(spark: SparkSession, fmt: sources.SourceFormat, paths: list[str], lines: bool) -> DataFrame:
    reader = spark.read.option("multiLine", not lines).option("columnNameOfCorruptRecord", sources.CORRUPT_RECORD)
    if fmt.name == sources.OPENSORA_PLAN.name:
        reader = reader.schema(sources.OPENSORA_PLAN_SCHEMA)
    return reader.json(paths)


def _as_text_columns(group: SourceGroup) -> DataFrame:
    """A group's source columns as text (nested values as JSON), and what pass 1 needs besides."""
    df = group.df
    corrupt = F.col(sources.CORRUPT_RECORD) if sources.CORRUPT_RECORD in df.columns else F.lit(None)
    return df.select(
        *[_as_text(df, c).alias(c) for c in group.columns],
        corrupt.cast("string").alias(csv_blocks.CORRUPT_RECORD),
        *ORDER,
    )


def _as_text(df: DataFrame, name: str) -> Column:
    dtype = df.schema[name].dataType
    column = F.col(f"`{name}`")
    if isinstance(dtype, StringType):
        return column
    if isinstance(dtype, (StructType, ArrayType, MapType)):
        return F.to_json(column)
    return column.cast("string")


def _with_position(df: DataFrame) -> DataFrame:
    """The rows with their place in file order, taken right at the scan (before any shuffle)."""
    return df.select(
        "*",
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_pos"),
    )


# --- pass 2: one task per bucket -------------------------------------------------------------------

BLOCK_COUNTS = StructType(
    [
        StructField("_file", StringType()),
        StructField("_block", LongType()),
        StructField("status", StringType()),
        StructField("in_lake", BooleanType()),
        StructField("rows", LongType()),
    ]
)
BUCKET_OUTPUT = StructType(
    [
        StructField("video_file", WRITTEN_FILES),
        StructField("error_file", WRITTEN_FILES),
        StructField("block", BLOCK_COUNTS),
        StructField("kept", LongType()),
        StructField("warnings", LongType()),
    ]
)
KEPT_ROW_GROUP = 65_536  # rows per row group of the kept files: Spark can split them, and a reader's memory stays small
VIDEO_FIELDS = ("caption", "duration_s", "clip_hints", "extra")


@dataclass(frozen=True)
class BucketTask:
    """What a pass-2 task needs (sent to the executors): staging's folders, the table writers
    (videos: None where clip rows are folded by Spark afterwards; errors: None where this batch's
    are recorded already), and what pass 1 learned about the files."""

    fmt: sources.SourceFormat
    settings: dict
    staging: str
    lake_urls: str | None
    videos_files: TableFiles | None
    errors_files: TableFiles | None
    batch: str
    now: datetime
    row_offsets: dict
    file_columns: dict

    def __call__(self, bucket_ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for bucket in _range_ids(bucket_ids):
            yield from self.run(bucket)

    def run(self, bucket: int) -> Iterator[pa.RecordBatch]:
        rows = _read_staged(f"{self.staging}/rows", bucket)
        if rows is None:
            return
        classified = duplicates.classify(rows, _read_lake_urls(self.lake_urls, bucket) if self.lake_urls else None)
        new_at = np.flatnonzero(pc.and_(pc.equal(classified["status"], "accepted"),
                                        pc.invert(classified["in_lake"])).to_numpy(zero_copy_only=False))
        new = classified.take(pa.array(new_at))
        fields = rules.video_fields(new, self.fmt, self.settings, self.file_columns)
        warned_at, warnings = duplicates.warnings(classified, new_at, fields["warnings"])
        outputs = [{"block": b} for b in _block_counts(classified)]
        if self.videos_files is not None:
            written = self.videos_files.write(self._video_rows(new, fields).to_batches())
            outputs += [{"video_file": f} for f in written]
        elif new.num_rows:
            _write_parquet(self._clip_rows(new, fields), f"{self.staging}/kept/bucket-{bucket:05d}.parquet")
        if self.errors_files is not None:
            errors = rules.error_rows(classified, warned_at, warnings, self.fmt.name, self.row_offsets,
                                      self.file_columns, self.batch, self.now)
            outputs += [{"error_file": f} for f in self.errors_files.write(errors.to_batches())]
        outputs.append({"kept": new.num_rows if self.videos_files is None else 0, "warnings": len(warned_at)})
        yield pa.RecordBatch.from_pylist(outputs, schema=to_arrow_schema(BUCKET_OUTPUT))

    def _video_rows(self, new: pa.Table, fields: dict) -> pa.Table:
        n = new.num_rows
        return pa.table({
            "video_id": new["video_id"],
            "source": pa.repeat(pa.scalar(self.fmt.name), n),
            "source_video_id": new["source_video_id"],
            "url": new["url"],
            **{name: fields[name] for name in VIDEO_FIELDS},
            "ingest_batch": pa.repeat(pa.scalar(self.batch), n),
            "ingested_at": pa.repeat(pa.scalar(self.now, pa.timestamp("us", tz="UTC")), n),
        })

    def _clip_rows(self, new: pa.Table, fields: dict) -> pa.Table:
        """A clip row of a video added now, with what Spark needs to fold it into its video."""
        columns = {name: new[name] for name in (*ORDER, "video_id", "source_video_id", "url")}
        return pa.table({**columns, **{name: fields[name] for name in (*VIDEO_FIELDS, "clip_json")}})


def run_buckets(spark: SparkSession, task: BucketTask, buckets: int) -> dict[str, list]:
    """Pass 2 over every bucket; what the tasks reported, by kind: files written, block counts, clip
    rows kept for Spark, and warnings."""
    rows = spark.range(buckets, numPartitions=buckets).mapInArrow(task, BUCKET_OUTPUT).collect()
    found: dict[str, list] = {"video_file": [], "error_file": [], "block": [], "kept": [], "warnings": []}
    for row in rows:
        for kind, value in row.asDict().items():
            if value is not None:
                found[kind].append(value.asDict() if isinstance(value, type(row)) else value)
    return found


def _read_staged(rows_dir: str, bucket: int) -> pa.Table | None:
    """A bucket's staged rows from every pass-1 task, `_file` as plain text."""
    from pyarrow import fs

    filesystem, root = arrow_filesystem(f"{rows_dir}/{BUCKET}={bucket}")
    found = filesystem.get_file_info(fs.FileSelector(root, allow_not_found=True))
    parts = []
    for info in sorted((i for i in found if not i.base_name.startswith(".")), key=lambda i: i.path):
        with filesystem.open_input_file(info.path) as source:
            part = pa.ipc.open_file(source).read_all()
        parts.append(part.set_column(0, "_file", pc.cast(part["_file"], pa.string())))
    if not parts:
        return None
    return pa.concat_tables(parts, promote_options="default").combine_chunks()


def _read_lake_urls(directory: str, bucket: int) -> pa.Table | None:
    from pyarrow import fs
    from pyarrow import parquet as pq

    filesystem, root = arrow_filesystem(f"{directory}/{BUCKET}={bucket}")
    if filesystem.get_file_info(root).type == fs.FileType.NotFound:
        return None
    # Without Spark's row schema in the metadata: files written from this table describe their own.
    return pq.read_table(root, filesystem=filesystem, partitioning=None).replace_schema_metadata(None)


def _write_parquet(rows: pa.Table, uri: str) -> None:
    from pyarrow import parquet as pq

    filesystem, path = arrow_filesystem(uri)
    filesystem.create_dir(path.rsplit("/", 1)[0], recursive=True)
    _write_whole(filesystem, path, lambda out: pq.write_table(rows, out, row_group_size=KEPT_ROW_GROUP))


def _block_counts(classified: pa.Table) -> list[dict]:
    counts = classified.group_by(["_file", "_block", "status", "in_lake"]).aggregate([("_pos", "count")])
    return [
        {"_file": r["_file"], "_block": r["_block"], "status": r["status"], "in_lake": r["in_lake"],
         "rows": r["_pos_count"]}
        for r in counts.to_pylist()
    ]


# --- outputs ---------------------------------------------------------------------------------------


@dataclass
class BlockStats:
    """Rows per input block, status and whether their video was in the lake."""

    rows: list

    def total(self, status: str | None = None, in_lake: bool | None = None) -> int:
        return sum(
            r["rows"] for r in self.rows
            if (status is None or r["status"] == status) and (in_lake is None or r["in_lake"] == in_lake)
        )


def _fold_clip_rows(ctx: JobContext, fmt: sources.SourceFormat, kept_dir: str, batch: str, now: datetime) -> int:
    """Appends one video per video id of the kept clip rows; how many."""
    videos = new_videos(ctx.spark.read.parquet(kept_dir), fmt, batch, now).persist()
    try:
        added = videos.count()
        ctx.lake.append(videos, "videos")
    finally:
        videos.unpersist()
    return added


def new_videos(clip_rows: DataFrame, fmt: sources.SourceFormat, batch: str, now: datetime) -> DataFrame:
    """One row per video of the clip rows of videos added now."""
    return _fold_clips(clip_rows).select(
        "video_id", F.lit(fmt.name).alias("source"), "source_video_id", "url", "caption", "duration_s",
        "clip_hints", "extra", F.lit(batch).alias("ingest_batch"), F.lit(now).alias("ingested_at"),
    )


def _fold_clips(rows: DataFrame) -> DataFrame:
    """Clip rows of one video as one video: its first row's fields, every row's hints by start time,
    and (MiraData) every clip's structured captions as extra.clip_captions, a JSON list."""
    order = F.struct(*ORDER)
    clip = F.struct(F.get_json_object("clip_json", "$.start_s").try_cast("double").alias("start"), order.alias("at"),
                    F.col("clip_json").alias("json"))
    folded = rows.groupBy("video_id", "source_video_id", "url").agg(
        F.min_by("caption", order).alias("caption"),
        F.min_by("duration_s", order).alias("duration_s"),
        F.min_by("extra", order).alias("extra"),
        F.array_sort(F.flatten(F.collect_list("clip_hints"))).alias("clip_hints"),
        F.array_sort(F.collect_list(F.when(F.col("clip_json").isNotNull(), clip))).alias("clips"),
    )
    captions = F.concat(F.lit("["), F.array_join(F.transform("clips", lambda c: c["json"]), ","), F.lit("]"))
    extra = F.when(
        F.size("clips") > 0,
        F.map_concat(F.coalesce("extra", F.create_map().cast(EXTRA)), F.create_map(F.lit("clip_captions"), captions)),
    ).otherwise(F.col("extra"))
    return folded.withColumn("extra", extra)


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("ingest"))

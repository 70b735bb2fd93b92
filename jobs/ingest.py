"""`vidlake ingest`: source tables (CSV, JSON, parquet) -> `videos` and `ingest_errors`.

    vidlake ingest --format webvid10m --input results_10M_train.csv
    vidlake ingest --format panda70m --input panda70m_training_10m.csv --lake s3://bucket/lake
    vidlake ingest --format generic --input mine.jsonl --set ingest.generic.caption=text

Every input row ends up counted once: accepted (its video is in `videos`, added now or already
there), rejected (a row in `ingest_errors` says why) or folded (a later row with the id and URL of
an earlier one). A usable row with a broken optional field is accepted and gets a warning row.

Where each rule lives:
- Spark SQL, here (pass 1): reading the files (CSV in parallel blocks, re-read as one stream where
  a newline inside a quoted field broke rows), ids (sha2, as schemas.ids.video_id), the URL rules,
  WebVid's and generic fields (durations), and the bucket of each row's video id; after pass 2, the
  fold of clip rows into one video and the error rows.
- Arrow, udfs/duplicates.py (pass 2, one task per bucket): duplicates in file order (by file,
  block and position) and against the lake. No full-row shuffle: pass 1 writes each row once,
  under its bucket, and pass 2 writes the new videos' files itself.
- Python, udfs/sources.py through mapInPandas: Panda-70M's Python-literal lists, MiraData's and
  Open-Sora-Plan's clip rows.

`ingest_batch` is `ingest-<16 hex>`, a hash of the format and each input file's path, size and
modification time: re-ingesting unchanged files is the same batch, so it adds no row to either
table; a changed file is a new batch.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial, reduce
from urllib.parse import unquote

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
)

from jobs.context import JobContext
from jobs.lake import WRITTEN_FILES, TableFiles, arrow_filesystem, delete_path
from jobs.progress import StageLog
from schemas import sources
from schemas.ids import VIDEO_ID_HEX
from schemas.tables import CLIP_HINT
from udfs import duplicates
from udfs import sources as parse
from udfs.errors import VidlakeError

ORDER = duplicates.ORDER  # file order: files by path, then block, then position in the block
HINTS = ArrayType(CLIP_HINT)
WARNINGS = ArrayType(StringType())
EXTRA = MapType(StringType(), StringType())
ID_SEPARATOR = "\u001f"
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
    """Two passes, no shuffle. Pass 1 (Spark SQL) parses every input row into a candidate with its
    video fields and writes it to staging under a bucket of its video_id, so every row that could
    duplicate another (and the lake's row for its video) lands in one bucket. Pass 2 runs one task
    per bucket (udfs/duplicates.py): it decides every row's status, writes the new videos' files
    straight into the table, and keeps the rows that become errors or clips to fold. The driver then
    commits the videos and appends ingest_errors. Staging (<lake>/_staging/<batch>) is removed at the end."""
    staging = f"{ctx.lake.root}/_staging/{batch}"
    now = datetime.now(timezone.utc)
    buckets = bucket_count(ctx.spark, files, settings["bucket_mb"])
    try:
        _write_candidates(ctx, fmt, files, settings, f"{staging}/rows", buckets, log)
        lake_urls = _write_lake_urls(ctx.lake, fmt, f"{staging}/lake", buckets)
        videos_files = ctx.lake.table_files("videos") if fmt.rows_per_video == "one" else None
        outcome = run_buckets(ctx.spark, BucketTask(fmt.name, staging, lake_urls, videos_files, batch, now), buckets)
        stats = BlockStats(outcome["block"])
        added = stats.total("accepted", in_lake=False)
        if videos_files is not None:
            ctx.lake.commit_files("videos", videos_files, outcome["file"])
        kept = ctx.spark.read.parquet(f"{staging}/kept") if sum(outcome["kept"]) else None
        if kept is not None and videos_files is None:
            videos = new_videos(kept, fmt, batch, now).persist()
            added = videos.count()
            ctx.lake.append(videos, "videos")
            videos.unpersist()
        if kept is not None:
            errors = error_rows(ctx.spark, kept, stats, fmt, batch, now)
            ctx.lake.append(ctx.lake.pending(errors, "ingest_errors"), "ingest_errors")
    finally:
        delete_path(ctx.spark, staging)
    return IngestCounts(
        input_rows=stats.total(), accepted=stats.total("accepted"), rejected=stats.total("rejected"),
        folded=stats.total("folded"), warnings=sum(outcome["warnings"]),
        already_in_lake=stats.total("accepted", in_lake=True), videos_added=added,
    )


def bucket_count(spark: SparkSession, files: list[InputFile], bucket_mb: int) -> int:
    """Buckets of at most about bucket_mb of input each (a pass-2 task holds one in memory), as a
    multiple of the cores so that pass 2's last wave keeps every core busy."""
    cores = spark.sparkContext.defaultParallelism
    by_size = -(-sum(f.size for f in files) // (bucket_mb * 2**20))
    return cores * max(1, -(-by_size // cores))


def _bucket(buckets: int, video_id: Column) -> Column:
    return F.pmod(F.xxhash64(video_id), F.lit(buckets)).alias(BUCKET)


def _write_candidates(
    ctx: JobContext, fmt: sources.SourceFormat, files: list[InputFile], settings: dict, rows_dir: str, buckets: int,
    log: StageLog,
) -> None:
    """Pass 1: every input row as a candidate under its bucket. CSV files read in parallel blocks in
    which a newline inside a quoted field broke rows apart are read again as one stream (auto mode)."""
    multiline = {f.path for f in files} if settings["csv_multiline"] == "always" else set()
    while True:
        groups = read_source(ctx.spark, fmt, files, multiline)
        candidates = reduce(DataFrame.unionByName, [normalise(fmt, g, settings) for g in groups])
        rows = prepare(candidates, fmt, settings)
        rows = rows.withColumn(BUCKET, _bucket(buckets, F.coalesce("video_id", F.col("_pos").cast("string"))))
        rows.write.mode("overwrite").partitionBy(BUCKET).parquet(rows_dir)
        broken = _broken_csv_files(fmt, _malformed_files(ctx.spark, rows_dir), multiline, settings)
        if not broken:
            return
        for path in sorted(broken):
            log.note(f"{path}: rows broken by a newline inside a quoted field; reading it again as one stream")
        multiline |= broken


def _malformed_files(spark: SparkSession, rows_dir: str) -> set[str]:
    found = spark.read.parquet(rows_dir).where(F.col("malformed")).select("_file").distinct().collect()
    return {unquote(r["_file"]) for r in found}


def _write_lake_urls(lake, fmt: sources.SourceFormat, lake_dir: str, buckets: int) -> str | None:
    """The lake's (video_id, url) of this source under the same buckets, for pass 2; None when the
    lake has no videos yet."""
    if not lake.exists("videos"):
        return None
    existing = lake.read("videos").where(F.col("source") == fmt.name).select("video_id", "url")
    existing.withColumn(BUCKET, _bucket(buckets, F.col("video_id"))).write.partitionBy(BUCKET).parquet(lake_dir)
    return lake_dir


def _broken_csv_files(fmt: sources.SourceFormat, malformed: set[str], multiline: set[str], settings: dict) -> set[str]:
    """CSV files read in parallel blocks whose rows did not fit the header: a newline inside a quoted
    field splits a row when a file is read in blocks, so in auto mode these are read again whole."""
    if settings["csv_multiline"] != "auto":
        return set()
    return {f for f in malformed - multiline if _file_kind(fmt, f) == "csv"}


# --- reading ---------------------------------------------------------------------------------------


@dataclass
class SourceGroup:
    """Input files read with one schema: `df` has the source's columns (as text), the corrupt-record
    column, and _file, _block, _pos (its place in file order)."""

    df: DataFrame
    columns: list[str]


def read_source(
    spark: SparkSession, fmt: sources.SourceFormat, files: list[InputFile], multiline: set[str]
) -> list[SourceGroup]:
    by_kind: dict[tuple, list[str]] = {}
    for f in files:
        kind = _file_kind(fmt, f.path)
        by_kind.setdefault((kind, f.path in multiline), []).append(f.path)
    groups = []
    for (kind, as_stream), paths in sorted(by_kind.items()):
        if kind == "csv":
            groups += _read_csv(spark, fmt, paths, as_stream)
        elif kind == "json":
            groups.append(_read_json(spark, fmt, paths, lines=False))
        elif kind == "jsonl":
            groups.append(_read_json(spark, fmt, paths, lines=True))
        else:
            df = spark.read.parquet(*paths)
            groups.append(SourceGroup(_with_position(df), df.columns))
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


def _read_csv(spark: SparkSession, fmt: sources.SourceFormat, paths: list[str], as_stream: bool) -> list[SourceGroup]:
    """One group per distinct header. A fixed format's header must name its columns in order
    (trailing unnamed columns aside); a generic file's header names its own columns."""
    _quiet_csv_header_check(spark)
    by_header: dict[tuple, list[str]] = {}
    for path in paths:
        header = tuple(_csv_reader(spark, False).csv(path).columns)
        if fmt.columns and _named(header) != list(fmt.named_columns):
            raise VidlakeError(
                f"{path}: its header {list(header)} is not {fmt.name}'s "
                f"({', '.join(fmt.named_columns)}); is --format right?"
            )
        by_header.setdefault(header, []).append(path)
    groups = []
    for header, group_paths in by_header.items():
        df = _csv_reader(spark, as_stream).schema(sources.text_schema(header)).csv(group_paths)
        groups.append(SourceGroup(_with_position(df), list(fmt.named_columns) if fmt.columns else list(header)))
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


def _read_json(spark: SparkSession, fmt: sources.SourceFormat, paths: list[str], lines: bool) -> SourceGroup:
    reader = spark.read.option("multiLine", not lines).option("columnNameOfCorruptRecord", sources.CORRUPT_RECORD)
    if fmt.name == sources.OPENSORA_PLAN.name:
        reader = reader.schema(sources.OPENSORA_PLAN_SCHEMA)
    df = reader.json(paths)
    return SourceGroup(_with_position(df), [c for c in df.columns if c != sources.CORRUPT_RECORD])


def _with_position(df: DataFrame) -> DataFrame:
    """The rows with their place in file order, taken right at the scan (before any shuffle)."""
    return df.select(
        "*",
        F.col("_metadata.file_path").alias("_file"),
        F.col("_metadata.file_block_start").alias("_block"),
        F.monotonically_increasing_id().alias("_pos"),
    )


# --- candidates: every format's rows with one set of key columns --------------------------------------
#
# A candidate row keeps its source fields as `src` (a map, so files with other columns union) and
# adds source_video_id, row_key and url, the columns duplicate detection needs. The other video
# fields are computed from `src` after classification (`video_fields`), except the Python-parsed
# ones (p_*), which are parsed once, before it.

# The Python-parsed columns, and which of them each Python-parsed format fills (udfs/sources.py).
PARSED_TYPES = {
    "p_caption": StringType(),
    "p_duration_s": DoubleType(),
    "p_clip_hints": HINTS,
    "p_extra": EXTRA,
    "p_clip_json": StringType(),
    "p_warnings": WARNINGS,
}
PARSERS = {
    "panda70m": (lambda settings: parse.panda70m_fields, ("clip_hints", "warnings")),
    "miradata": (
        lambda settings: partial(parse.miradata_fields, hint_caption=settings["miradata"]["hint_caption"]),
        ("clip_hints", "clip_json", "warnings"),
    ),
    "opensora-plan": (
        lambda settings: parse.opensora_plan_fields,
        ("caption", "duration_s", "clip_hints", "extra", "warnings"),
    ),
}


def normalise(fmt: sources.SourceFormat, group: SourceGroup, settings: dict) -> DataFrame:
    """A group's rows as candidates: ORDER, src, malformed, row_hash, reject, source_video_id,
    row_key, url and the p_* columns, whatever the format."""
    df, columns = _parsed_in_python(fmt, group, settings), group.columns
    corrupt = F.col(sources.CORRUPT_RECORD) if sources.CORRUPT_RECORD in df.columns else F.lit(None).cast("string")
    malformed = corrupt.isNotNull()
    keys = _keys(fmt, lambda name: F.col(_quoted(name)), columns, settings)
    empty_id = f"{parse.EMPTY_ID}: {fmt.video_id_column or 'its id or url column'} is empty"
    reject = F.when(malformed, F.lit(f"{parse.MALFORMED_ROW}: its fields do not match the header"))
    reject = reject.when(_blank(keys["source_video_id"]), F.lit(empty_id))
    src = F.when(malformed, F.create_map(F.lit(sources.CORRUPT_RECORD), corrupt)).otherwise(_source_map(df, columns))
    return df.select(
        *ORDER,
        src.alias("src"),
        malformed.alias("malformed"),
        F.xxhash64(*[F.coalesce(_as_text(df, c), F.lit("\u0000")) for c in columns]).alias("row_hash"),
        reject.alias("reject"),
        *[keys[k].alias(k) for k in ("source_video_id", "row_key", "url")],
        *[F.col(n) if n in df.columns else F.lit(None).cast(t).alias(n) for n, t in PARSED_TYPES.items()],
    )


def _quoted(name: str) -> str:
    return f"`{name}`"


def _as_text(df: DataFrame, name: str) -> Column:
    """A source column as text: strings as they are, nested values as JSON, others cast."""
    dtype = df.schema[name].dataType
    column = F.col(_quoted(name))
    if isinstance(dtype, StringType):
        return column
    if isinstance(dtype, (StructType, ArrayType, MapType)):
        return F.to_json(column)
    return column.cast("string")


def _source_map(df: DataFrame, columns: list[str]) -> Column:
    return F.create_map(*[part for c in columns for part in (F.lit(c), _as_text(df, c))])


def _blank(col: Column) -> Column:
    return col.isNull() | (F.trim(col) == "")


def _text(col: Column) -> Column:
    """A text field, trimmed; null where blank."""
    return F.when(~_blank(col), F.trim(col))


def _parsed_in_python(fmt: sources.SourceFormat, group: SourceGroup, settings: dict) -> DataFrame:
    """The group with the p_* columns of a format whose fields need Python (udfs/sources.py)."""
    if fmt.name not in PARSERS:
        return group.df
    make_parser, outputs = PARSERS[fmt.name]
    parser, source_columns = make_parser(settings), list(group.columns)
    added = [StructField(f"p_{name}", PARSED_TYPES[f"p_{name}"], True) for name in outputs]
    schema = StructType(group.df.schema.fields + added)
    names = schema.fieldNames()

    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            parsed = parser(batch[source_columns])
            yield batch.assign(**{f"p_{name}": parsed[name] for name in outputs})[names]

    return group.df.mapInPandas(apply, schema)


def _keys(fmt: sources.SourceFormat, field, columns: list[str], settings: dict) -> dict[str, Column]:
    """source_video_id, row_key (the unit of duplicate detection) and url of a format's rows."""
    if fmt.name == "generic":
        return _generic_keys(field, columns, settings["generic"])
    video_id = _text(field(fmt.video_id_column))
    if fmt.name == "miradata":
        template = settings["miradata"]["url_template"]
        url = F.replace(F.lit(template), F.lit("{video_id}"), video_id)
        frames = F.concat_ws(ID_SEPARATOR, video_id, field("start_frame"), field("end_frame"))
        return {"source_video_id": video_id, "row_key": F.coalesce(_text(field("index")), frames), "url": url}
    if fmt.name == "opensora-plan":
        url = _resolved(video_id, settings["opensora_plan"]["data_root"])
        row_key = F.concat_ws(ID_SEPARATOR, video_id, F.coalesce(_text(field("frame_idx")), F.lit("")))
        return {"source_video_id": video_id, "row_key": row_key, "url": url}
    url_column = {"webvid10m": "contentUrl", "panda70m": "url"}[fmt.name]
    return {"source_video_id": video_id, "row_key": video_id, "url": _text(field(url_column))}


def _generic_keys(field, columns: list[str], mapping: dict) -> dict[str, Column]:
    def mapped(key: str) -> Column | None:
        name = mapping.get(key)
        if name is None:
            return None
        if name not in columns:
            if key in ("url", "path"):
                return None
            raise VidlakeError(
                f"ingest.generic.{key} names column {name!r}, which the input lacks (it has {columns})"
            )
        return _text(field(name))

    url, path = mapped("url"), mapped("path")
    if url is None and path is None:
        raise VidlakeError(
            f"the input has neither a url column {mapping.get('url')!r} nor a path column {mapping.get('path')!r} "
            f"(it has {columns}); map yours with --set ingest.generic.url=NAME or ingest.generic.path=NAME"
        )
    resolved = _resolved(path, mapping["data_root"]) if path is not None else None
    location = F.coalesce(*[c for c in (url, resolved) if c is not None])
    identity = mapped("id")
    identity = location if identity is None else identity
    return {"source_video_id": identity, "row_key": identity, "url": location}


def _local_name(file_uri: Column) -> Column:
    """An input file's name as the user wrote it: Spark's URL-encoded file URI decoded, file: dropped."""
    decoded = F.url_decode(F.replace(file_uri, F.lit("+"), F.lit("%2B")))
    return F.regexp_replace(decoded, r"^file:(//)?", "")


def _resolved(path: Column, data_root: str | None) -> Column:
    """A path as a location: absolute paths and URLs as they are, relative ones under data_root, or
    under the input file's folder where data_root is not set."""
    if data_root:
        base = F.lit(data_root.rstrip("/"))
    else:
        base = F.regexp_replace(_local_name(F.col("_file")), "/[^/]*$", "")
    absolute = path.startswith("/") | path.rlike(parse.URL_SCHEME)
    relative = F.concat(base, F.lit("/"), F.regexp_replace(path, r"^\./", ""))
    return F.when(absolute, path).when(path.isNotNull(), relative)


# --- classification --------------------------------------------------------------------------------


def video_id_column(source: str, source_video_id: Column) -> Column:
    """schemas.ids.video_id in Spark SQL: the first hex digits of sha256(source \\x1f source_video_id)."""
    return F.substring(F.sha2(F.concat(F.lit(source), F.lit(ID_SEPARATOR), source_video_id), 256), 1, VIDEO_ID_HEX)


def url_problem(url: Column, allow_local_paths: bool) -> Column:
    """Why a URL cannot be ingested, or null: http(s) with a host and no whitespace, or (where
    allowed) an absolute local path or file:// URL."""
    scheme = F.lower(F.regexp_extract(url, parse.URL_SCHEME, 1))
    local = url.startswith("/") | (scheme == "file")
    shown = F.substring(url, 1, 200)
    return (
        F.when(url.rlike(parse.HTTP_URL), F.lit(None))  # most rows: one regex, then done
        .when(_blank(url), F.lit(f"{parse.EMPTY_URL}: the row has no url"))
        .when(scheme.isin("http", "https"),
              F.when(~url.rlike(parse.HTTP_URL), F.concat(F.lit(f"{parse.UNPARSABLE_URL}: "), shown)))
        .when(local & F.lit(not allow_local_paths),
              F.lit(f"{parse.LOCAL_PATH_NOT_ALLOWED}: set ingest.allow_local_paths=true to ingest local files"))
        .when(scheme == "file",
              F.when(~url.rlike(parse.FILE_URL), F.concat(F.lit(f"{parse.UNPARSABLE_URL}: "), shown)))
        .when(local, F.lit(None))
        .when(scheme != "",
              F.concat(F.lit(f"{parse.SCHEME_NOT_ALLOWED}: "), scheme, F.lit(" (only http and https)")))
        .otherwise(F.concat(F.lit(f"{parse.UNPARSABLE_URL}: "), shown))
    )


def prepare(candidates: DataFrame, fmt: sources.SourceFormat, settings: dict) -> DataFrame:
    """Pass 1's per-row work: each candidate's video_id, its own problem (`reject`: malformed, no id,
    URL) and its video fields; duplicates are decided in pass 2 (udfs/duplicates.py)."""
    source_video_id = F.col("source_video_id")
    video_id = F.when(source_video_id.isNotNull(), video_id_column(fmt.name, source_video_id))
    reject = F.coalesce("reject", url_problem(F.col("url"), settings["allow_local_paths"]))
    fields = video_fields(fmt, settings)
    return candidates.select(
        *ORDER, "src", "malformed", "row_hash", "source_video_id", "row_key", "url",
        video_id.alias("video_id"), reject.alias("reject"),
        *[fields[n].alias(n) for n in ("caption", "duration_s", "clip_hints", "extra", "clip_json")],
        fields["warnings"].alias("field_warnings"),
    )


# --- pass 2: one task per bucket -------------------------------------------------------------------

BUCKET = "_bucket"
BLOCK_COUNTS = StructType(
    [
        StructField("_file", StringType()),
        StructField("_block", LongType()),
        StructField("status", StringType()),
        StructField("in_lake", BooleanType()),
        StructField("rows", LongType()),
        StructField("first_pos", LongType()),
    ]
)
BUCKET_OUTPUT = StructType(
    [
        StructField("file", WRITTEN_FILES),
        StructField("block", BLOCK_COUNTS),
        StructField("kept", LongType()),
        StructField("warnings", LongType()),
    ]
)
KEPT_ROW_GROUP = 65_536  # rows per row group of the kept files: Spark can split them, and a reader's memory stays small
VIDEO_COLUMNS = ("video_id", "source_video_id", "url", "caption", "duration_s", "clip_hints", "extra")


@dataclass(frozen=True)
class BucketTask:
    """What a pass-2 task needs (sent to the executors): staging's folders, where the new videos'
    files go (None where clip rows are folded into videos by Spark afterwards), and the batch."""

    source: str
    staging: str
    lake_urls: str | None
    videos_files: TableFiles | None
    batch: str
    now: datetime

    def __call__(self, bucket_ids: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for ids in bucket_ids:
            for bucket in ids.column(0).to_pylist():
                yield from self.run(bucket)

    def run(self, bucket: int) -> Iterator[pa.RecordBatch]:
        rows = _read_bucket(f"{self.staging}/rows", bucket)
        if rows is None:
            return
        classified = duplicates.classify(rows, _read_bucket(self.lake_urls, bucket) if self.lake_urls else None)
        new = pc.and_(pc.equal(classified["status"], "accepted"), pc.invert(classified["in_lake"]))
        warned = pc.greater(pc.list_value_length(classified["warnings"]), 0)
        keep = pc.or_(pc.equal(classified["status"], "rejected"), warned)
        written = []
        if self.videos_files is None:
            keep = pc.or_(keep, new)
        else:
            written = self.videos_files.write(self._video_rows(classified.filter(new)).to_batches())
        kept = classified.filter(keep)
        if kept.num_rows:
            _write_parquet(kept, f"{self.staging}/kept/bucket-{bucket:05d}.parquet")
        warned_rows = kept.filter(pc.not_equal(kept["status"], "rejected"))
        outputs = [{"file": f} for f in written] + [{"block": b} for b in _block_counts(classified)]
        warnings = pc.sum(pc.list_value_length(warned_rows["warnings"])).as_py() or 0
        outputs.append({"kept": kept.num_rows, "warnings": warnings})
        yield pa.RecordBatch.from_pylist(outputs, schema=to_arrow_schema(BUCKET_OUTPUT))

    def _video_rows(self, rows: pa.Table) -> pa.Table:
        constants = {
            "source": pa.scalar(self.source, pa.string()),
            "ingest_batch": pa.scalar(self.batch, pa.string()),
            "ingested_at": pa.scalar(self.now, pa.timestamp("us", tz="UTC")),
        }
        videos = rows.select(list(VIDEO_COLUMNS))
        for name, value in constants.items():
            videos = videos.append_column(name, pa.repeat(value, rows.num_rows))
        return videos


def run_buckets(spark: SparkSession, task: BucketTask, buckets: int) -> dict[str, list]:
    """Pass 2 over every bucket; what the tasks reported, by kind: files written, block counts, rows
    kept for Spark, and warnings among them (one ingest_errors row each)."""
    rows = spark.range(buckets, numPartitions=buckets).mapInArrow(task, BUCKET_OUTPUT).collect()
    found: dict[str, list] = {"file": [], "block": [], "kept": [], "warnings": []}
    for row in rows:
        for kind, value in row.asDict().items():
            if value is not None:
                found[kind].append(value.asDict() if kind in ("file", "block") else value)
    return found


def _read_bucket(directory: str, bucket: int) -> pa.Table | None:
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
    pq.write_table(rows, path, filesystem=filesystem, row_group_size=KEPT_ROW_GROUP)


def _block_counts(classified: pa.Table) -> list[dict]:
    counts = classified.group_by(["_file", "_block", "status", "in_lake"]).aggregate(
        [("_pos", "count"), ("_pos", "min")]
    )
    return [
        {"_file": r["_file"], "_block": r["_block"], "status": r["status"], "in_lake": r["in_lake"],
         "rows": r["_pos_count"], "first_pos": r["_pos_min"]}
        for r in counts.to_pylist()
    ]


# --- the video fields ------------------------------------------------------------------------------


def _src(name: str) -> Column:
    return F.try_element_at(F.col("src"), F.lit(name))


def video_fields(fmt: sources.SourceFormat, settings: dict) -> dict[str, Column]:
    """caption, duration_s, clip_hints, extra, warnings and clip_json of a classified row, from its
    source fields (SQL) or its Python-parsed p_* columns."""
    parsed = {name[2:]: F.col(name) for name in PARSED_TYPES}
    if fmt.name == "webvid10m":
        seconds, warning = duration_seconds(_text(_src("duration")))
        return {
            "caption": _text(_src("name")), "duration_s": seconds, "clip_hints": F.lit(None).cast(HINTS),
            "extra": F.create_map(F.lit("page_dir"), _src("page_dir")), "warnings": _present(warning),
            "clip_json": F.lit(None).cast(StringType()),
        }
    if fmt.name == "generic":
        return _generic_fields(settings["generic"])
    fields = {"caption": F.lit(None).cast(StringType()), "duration_s": F.lit(None).cast("double"), **parsed}
    if fmt.name != "opensora-plan":
        fields["extra"] = F.lit(None).cast(EXTRA)
    fields["warnings"] = F.coalesce(fields["warnings"], F.array().cast(WARNINGS))
    return fields


def _generic_fields(mapping: dict) -> dict[str, Column]:
    mapped = [mapping[k] for k in ("url", "path", "caption", "id", "duration") if mapping.get(k)]
    seconds, warning = (
        duration_seconds(_text(_src(mapping["duration"]))) if mapping.get("duration") else (F.lit(None), F.lit(None))
    )
    return {
        "caption": _text(_src(mapping["caption"])) if mapping.get("caption") else F.lit(None).cast(StringType()),
        "duration_s": seconds.cast("double"),
        "clip_hints": F.lit(None).cast(HINTS),
        "extra": F.map_filter("src", lambda k, _v: ~k.isin(*mapped)),
        "warnings": _present(warning.cast(StringType())),
        "clip_json": F.lit(None).cast(StringType()),
    }


def _present(warning: Column) -> Column:
    """A warning as a one-element array, or an empty array where there is none."""
    return F.when(warning.isNotNull(), F.array(warning)).otherwise(F.array().cast(WARNINGS))


def duration_seconds(value: Column) -> tuple[Column, Column]:
    """Seconds from ISO 8601 (PT00H00M11S), H:MM:SS or a plain number; and the warning where the
    value is there but is none of these."""
    iso = [F.coalesce(F.regexp_extract(value, parse.ISO_DURATION, i).try_cast("double"), F.lit(0.0)) for i in (1, 2, 3)]
    clock = [F.coalesce(F.regexp_extract(value, parse.CLOCK_TIME, i).try_cast("double"), F.lit(0.0)) for i in (1, 2, 3)]
    number = value.try_cast("double")
    fixed, fixed_seconds = _fixed_iso_duration(value)
    seconds = (
        F.when(fixed, fixed_seconds)
        .when(value.rlike(parse.ISO_DURATION) & (value != "PT"), iso[0] * 3600 + iso[1] * 60 + iso[2])
        .when(value.rlike(parse.CLOCK_TIME), clock[0] * 3600 + clock[1] * 60 + clock[2])
        .when((number >= 0) & ~F.isnan(number) & (number < float("inf")), number)
    )
    warning = F.when(
        value.isNotNull() & seconds.isNull(),
        F.concat(F.lit(f"{parse.UNPARSABLE_DURATION}: "), F.substring(value, 1, 120)),
    )
    return seconds, warning


def _fixed_iso_duration(value: Column) -> tuple[Column, Column]:
    """WebVid's own shape, PT00H00M11S, read by position: every WebVid row has it, and substrings
    cost a fraction of the general regexes, which the other shapes still go through."""
    digits = F.concat(*[F.substring(value, start, 2) for start in (3, 6, 9)])
    fixed = (
        (F.length(value) == 11) & value.startswith("PT") & (F.substring(value, 5, 1) == "H")
        & (F.substring(value, 8, 1) == "M") & value.endswith("S") & (F.translate(digits, "0123456789", "") == "")
    )
    hours, minutes, secs = (F.substring(value, start, 2).cast("double") for start in (3, 6, 9))
    return fixed, hours * 3600 + minutes * 60 + secs


# --- outputs ---------------------------------------------------------------------------------------


@dataclass
class BlockStats:
    """Rows per input block and status: the counts, and each block's first position (for row numbers)."""

    rows: list

    def total(self, status: str | None = None, in_lake: bool | None = None) -> int:
        return sum(
            r["rows"] for r in self.rows
            if (status is None or r["status"] == status) and (in_lake is None or r["in_lake"] == in_lake)
        )

    def block_offsets(self) -> list[tuple[str, int, int, int]]:
        """(_file, _block, rows before the block in its file, the block's first _pos) per block."""
        blocks: dict[tuple[str, int], list[int]] = {}
        for r in self.rows:
            entry = blocks.setdefault((r["_file"], r["_block"]), [0, r["first_pos"]])
            entry[0] += r["rows"]
            entry[1] = min(entry[1], r["first_pos"])
        offsets, before, current = [], 0, None
        for (file, block), (rows, first_pos) in sorted(blocks.items()):
            before = 0 if file != current else before
            current = file
            offsets.append((file, block, before, first_pos))
            before += rows
        return offsets


def new_videos(classified: DataFrame, fmt: sources.SourceFormat, batch: str, now: datetime) -> DataFrame:
    """One row per video that is accepted and not in the lake yet."""
    rows = classified.where((F.col("status") == "accepted") & ~F.col("in_lake"))
    if fmt.rows_per_video == "many":
        rows = _fold_clips(rows)
    return rows.select(
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


def error_rows(
    spark: SparkSession, classified: DataFrame, stats: BlockStats, fmt: sources.SourceFormat, batch: str,
    now: datetime,
) -> DataFrame:
    """One row per rejected input row, and one per warning of a row whose video is added now."""
    rejected = F.col("status") == "rejected"
    problems = F.when(rejected, F.array("reason")).otherwise(F.col("warnings"))
    offsets = spark.createDataFrame(stats.block_offsets(), "_file string, _block long, _before long, _first_pos long")
    rows = classified.where(rejected | (F.size("warnings") > 0)).select("*", F.explode(problems).alias("problem"))
    rows = rows.join(F.broadcast(offsets), ["_file", "_block"])
    return rows.select(
        F.lit(fmt.name).alias("source"),
        _local_name(F.col("_file")).alias("input_file"),
        (F.col("_before") + F.col("_pos") - F.col("_first_pos") + 1).alias("row_number"),
        F.when(F.col("malformed"), _src(sources.CORRUPT_RECORD)).otherwise(F.to_json("src")).alias("raw"),
        F.when(rejected, "rejected").otherwise("warning").alias("severity"),
        F.col("problem").alias("reason"),
        F.when(~rejected, F.col("video_id")).alias("video_id"),
        F.lit(batch).alias("ingest_batch"),
        F.lit(now).alias("recorded_at"),
    )


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("ingest"))

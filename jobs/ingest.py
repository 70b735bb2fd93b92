"""`vidlake ingest`: source tables (CSV, JSON, parquet) -> `videos` and `ingest_errors`.

    vidlake ingest --format webvid10m --input results_10M_train.csv
    vidlake ingest --format panda70m --input panda70m_training_10m.csv --lake s3://bucket/lake
    vidlake ingest --format generic --input mine.jsonl --set ingest.generic.caption=text

Every input row ends up counted once: accepted (its video is in `videos`, added now or already
there), rejected (a row in `ingest_errors` says why) or folded (a later row with the id and URL of
an earlier one). A usable row with a broken optional field is accepted and gets a warning row.

Where each rule lives:
- Spark SQL, here: reading the files (CSV in parallel blocks, re-read as one stream where a
  newline inside a quoted field broke rows), ids (sha2, as schemas.ids.video_id), the URL rules,
  WebVid's and generic fields (regexp_extract durations), duplicates in file order (a window over
  the row key ordered by file, block and position), the fold of clip rows into one video, counts.
  A 10M-row WebVid file never goes through Python.
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
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, DoubleType, MapType, StringType, StructField, StructType

from jobs.context import JobContext
from jobs.progress import StageLog
from schemas import sources
from schemas.ids import VIDEO_ID_HEX
from schemas.tables import CLIP_HINT
from udfs import sources as parse
from udfs.errors import VidlakeError

ORDER = ("_file", "_block", "_pos")  # file order: files by path, then block, then position in the block
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
    """Classify every input row into a staging table, then append the new videos and the error rows
    from it. Staging (parquet under <lake>/_staging, removed at the end) keeps the file parsed and
    the duplicates sorted out once for the counts and both tables, at the cost of one columnar write."""
    multiline = {f.path for f in files} if settings["csv_multiline"] == "always" else set()
    staging = f"{ctx.lake.root}/_staging/{batch}"
    try:
        while True:
            groups = read_source(ctx.spark, fmt, files, multiline)
            candidates = reduce(DataFrame.unionByName, [normalise(fmt, g, settings) for g in groups])
            classify(candidates, ctx.lake, fmt, settings).write.mode("overwrite").parquet(staging)
            classified = ctx.spark.read.parquet(staging)
            stats = block_stats(classified)
            broken = _broken_csv_files(fmt, stats, multiline, settings)
            if not broken:
                break
            for path in sorted(broken):
                log.note(f"{path}: rows broken by a newline inside a quoted field; reading it again as one stream")
            multiline |= broken
        now = datetime.now(timezone.utc)
        videos = new_videos(classified, fmt, batch, now)
        added = stats.total("accepted", in_lake=False)
        if fmt.rows_per_video == "many":
            videos = videos.persist()
            added = videos.count()
        ctx.lake.append(videos, "videos")
        videos.unpersist()
        errors = error_rows(ctx.spark, classified, stats, fmt, batch, now).persist()
        warnings = errors.where(F.col("severity") == "warning").count()
        ctx.lake.append(ctx.lake.pending(errors, "ingest_errors"), "ingest_errors")
        errors.unpersist()
    finally:
        _remove(ctx.spark, staging)
    return IngestCounts(
        input_rows=stats.total(), accepted=stats.total("accepted"), rejected=stats.total("rejected"),
        folded=stats.total("folded"), warnings=warnings, already_in_lake=stats.total("accepted", in_lake=True),
        videos_added=added,
    )


def _remove(spark: SparkSession, path: str) -> None:
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(hadoop_path, True)


def _broken_csv_files(fmt: sources.SourceFormat, stats: BlockStats, multiline: set[str], settings: dict) -> set[str]:
    """CSV files read in parallel blocks whose rows did not fit the header: a newline inside a quoted
    field splits a row when a file is read in blocks, so in auto mode these are read again whole."""
    if settings["csv_multiline"] != "auto":
        return set()
    return {f for f in stats.malformed_files - multiline if _file_kind(fmt, f) == "csv"}


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


def classify(candidates: DataFrame, lake, fmt: sources.SourceFormat, settings: dict) -> DataFrame:
    """Every candidate with its status: rejected (reason), folded (a later row with the key and URL
    of the first), or accepted; in_lake marks videos the lake already has, which are not added again.

    The rules, in order: a row's own problems (malformed, no id, URL); a later row whose URL is not
    the first row's (the first in file order wins); a URL that is not the one the lake has for the
    video (the lake's row is older than any input row); a later row with the first one's URL is
    folded. Re-ingesting a file therefore gives every row the status and reason it had the first time."""
    source_video_id = F.col("source_video_id")
    df = candidates.withColumn(
        "video_id", F.when(source_video_id.isNotNull(), video_id_column(fmt.name, source_video_id))
    )
    df = df.withColumn("reject", F.coalesce("reject", url_problem(F.col("url"), settings["allow_local_paths"])))
    valid = F.col("reject").isNull()
    key = F.when(valid, F.col("row_key")).otherwise(F.concat(F.lit("\u0000"), F.col("_pos").cast("string")))
    # One shuffle by video_id serves both the window (per video_id and row key) and the lake join.
    by_key = Window.partitionBy("video_id", key).orderBy(*ORDER)
    df = df.repartition("video_id").select(
        "*",
        F.row_number().over(by_key).alias("_rank"),
        F.first("url").over(by_key).alias("_first_url"),
        F.first("row_hash").over(by_key).alias("_first_hash"),
    )
    if lake.exists("videos"):
        existing = lake.read("videos").where(F.col("source") == fmt.name)
        df = df.join(existing.select("video_id", F.col("url").alias("_lake_url")), "video_id", "left")
    else:
        df = df.withColumn("_lake_url", F.lit(None).cast(StringType()))
    later = valid & (F.col("_rank") > 1)
    conflict = later & (F.col("url") != F.col("_first_url"))
    conflict_reason = F.concat(
        F.lit(f"{parse.CONFLICTING_DUPLICATE}: the first row with this id has "), F.substring("_first_url", 1, 200)
    )
    lake_conflict = F.col("_lake_url").isNotNull() & (F.col("_lake_url") != F.col("url"))
    lake_reason = F.concat(F.lit(f"{parse.CONFLICTS_WITH_LAKE}: "), F.substring("_lake_url", 1, 200))
    reason = F.coalesce(F.col("reject"), F.when(conflict, conflict_reason), F.when(lake_conflict, lake_reason))
    status = F.when(reason.isNotNull(), "rejected").when(later, "folded").otherwise("accepted")
    folded_warning = F.when(
        (status == "folded") & (F.col("row_hash") != F.col("_first_hash")),
        F.lit(f"{parse.DUPLICATE_FOLDED}: the first row with this id and url is kept, this row's other fields dropped"),
    )
    df = df.select(
        *ORDER, "src", "malformed", "source_video_id", "url", *PARSED_TYPES,
        F.when(status != "rejected", F.col("video_id")).alias("video_id"),
        status.alias("status"), reason.alias("reason"), F.col("_lake_url").isNotNull().alias("in_lake"),
        folded_warning.alias("_folded_warning"),
    )
    fields = video_fields(fmt, settings)
    df = df.select("*", *[fields[n].alias(n) for n in ("caption", "duration_s", "clip_hints", "extra", "clip_json")],
                   fields["warnings"].alias("_field_warnings"))
    no_warnings = F.array().cast(WARNINGS)
    warnings = (
        F.when(F.col("in_lake"), no_warnings)
        .when(F.col("status") == "accepted", F.col("_field_warnings"))
        .when(F.col("_folded_warning").isNotNull(), F.array("_folded_warning"))
        .otherwise(no_warnings)
    )
    kept = [c for c in df.columns if not c.startswith(("_field", "_folded", "p_"))]
    return df.select(*kept, warnings.alias("warnings"))


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
    seconds = (
        F.when(value.rlike(parse.ISO_DURATION) & (value != "PT"), iso[0] * 3600 + iso[1] * 60 + iso[2])
        .when(value.rlike(parse.CLOCK_TIME), clock[0] * 3600 + clock[1] * 60 + clock[2])
        .when((number >= 0) & ~F.isnan(number) & (number < float("inf")), number)
    )
    warning = F.when(
        value.isNotNull() & seconds.isNull(),
        F.concat(F.lit(f"{parse.UNPARSABLE_DURATION}: "), F.substring(value, 1, 120)),
    )
    return seconds, warning


# --- outputs ---------------------------------------------------------------------------------------


@dataclass
class BlockStats:
    """Rows per input block and status: the counts, and each block's first position (for row numbers)."""

    rows: list

    @property
    def malformed_files(self) -> set[str]:
        return {unquote(r["_file"]) for r in self.rows if r["malformed"]}

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


def block_stats(classified: DataFrame) -> BlockStats:
    rows = (
        classified.groupBy("_file", "_block", "status", "in_lake")
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.min("_pos").alias("first_pos"),
            F.max(F.col("malformed").cast("int")).alias("malformed"),
        )
        .collect()
    )
    return BlockStats([r.asDict() for r in rows])


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

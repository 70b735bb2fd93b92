"""`vidlake curate`: filter clip_view with SQL and export the training set.

    vidlake curate --where "aesthetic >= 4.5 AND motion BETWEEN 0.5 AND 20" --export opensora-csv --out train.csv
    vidlake curate --sql select.sql --export webdataset --out shards/

`--where` is a condition on clip_view's columns (default `curate.where`); `--sql FILE` is a whole
query over the lake's views whose result has a `clip_id` column (the other export columns come
from clip_view). Exports: an Open-Sora CSV (one file), parquet (one file for `.parquet`, else a
folder of part files), or webdataset tar shards (`curate.export.shard_size` clips each).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DoubleType, LongType, StringType, StructField, StructType

from jobs.context import JobContext
from jobs.output import check_output, reported, write_single_file
from jobs.progress import StageLog
from jobs.sql_guard import check_statement, condition_column
from jobs.views import CLIP_VIEW, register_clip_view, resolved_statement
from udfs import export
from udfs.errors import VidlakeError

EXPORTS = ("opensora-csv", "parquet", "webdataset")
# The exports a trainer reads captions from: a clip without one is left out or refused there.
CAPTIONED_EXPORTS = ("opensora-csv", "webdataset")
MISSING_CAPTION_CHOICES = ("skip", "fail")
# Where the lake keeps tables and blobs: no export writes there (--overwrite would remove them).
LAKE_LOCATIONS = ("lake.root", "download.blob_root", "split.clip_root")
MAX_FAILURES_SHOWN = 10

OPENSORA_SCHEMA = StructType(
    [StructField(name, t) for name, t in (
        ("path", StringType()), ("text", StringType()), ("num_frames", LongType()), ("height", LongType()),
        ("width", LongType()), ("aspect_ratio", DoubleType()), ("fps", DoubleType()), ("resolution", LongType()),
        ("aes", DoubleType()), ("flow", DoubleType()), ("ocr", DoubleType()), ("match", DoubleType()),
        ("pwatermark", DoubleType()), ("nsfw", DoubleType()), ("id", StringType()), ("video_id", StringType()),
        ("source_start_frame", LongType()), ("source_end_frame", LongType()), ("caption_model", StringType()),
    )]
)
# The Open-Sora rows as the export's mapInPandas makes them: why a clip has no file, or null.
OPENSORA_EXPORT_SCHEMA = StructType([*OPENSORA_SCHEMA.fields, StructField("export_error", StringType())])
SHARD_SUMMARY = StructType([
    StructField("shard", StringType()), StructField("clips", LongType()), StructField("video_bytes", LongType()),
    StructField("failures", StringType()),
])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    choose = parser.add_mutually_exclusive_group()
    choose.add_argument("--where", help="SQL condition on clip_view's columns (default: curate.where)")
    choose.add_argument("--sql", metavar="FILE", help="a file holding a query over the lake's views; "
                                                      "its result must have a clip_id column")
    parser.add_argument("--caption-kind", help="the caption kind to export as text (default: curate.caption_kind)")
    parser.add_argument("--export", choices=EXPORTS, required=True, help="the training-set format")
    parser.add_argument("--out", required=True, help="the file (opensora-csv, parquet) or folder to write")
    parser.add_argument("--limit", type=int, help="export at most N clips")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    log = StageLog("curate")
    check_outputs(ctx, args)
    missing_caption = missing_caption_choice(ctx)
    view = register_clip_view(ctx.lake, ctx.cfg, args.caption_kind)
    selected = select_clips(ctx, view, args)
    if args.limit is not None:
        selected = selected.limit(args.limit)
    total = view.count()
    chosen = reported(selected.count, "curation query failed")
    log.note(f"{chosen} of {total} clips selected by {describe_selection(ctx, args)}")
    skipped = 0
    if args.export in CAPTIONED_EXPORTS:
        selected, skipped = captioned_only(selected, missing_caption, log)
    failed = EXPORTERS[args.export](ctx, selected, args)
    log.done(chosen - skipped - failed, failed=failed, skipped_uncaptioned=skipped, export=args.export, out=args.out)
    return 1 if failed else 0


def check_outputs(ctx: JobContext, args: argparse.Namespace) -> None:
    """Every destination the export writes, checked before any query runs (jobs.output.check_output),
    and kept apart from the lake's own folders."""
    single_file = args.export == "opensora-csv" or (args.export == "parquet" and args.out.lower().endswith(".parquet"))
    outputs = [("--out", args.out, "file" if single_file else "folder")]
    if args.export == "opensora-csv":
        outputs.append(("curate.export.clip_dir", clip_dir_of(ctx, args.out), "folder"))
    for option, path, kind in outputs:
        _check_apart_from_lake(ctx, option, path)
        check_output(ctx.spark, path, kind, args.overwrite, option=option)


def _check_apart_from_lake(ctx: JobContext, option: str, path: str) -> None:
    for key in LAKE_LOCATIONS:
        location = ctx.cfg.get(key)
        if location and _overlap(path, location):
            raise VidlakeError(f"{option} {path} overlaps {key} ({location}); write the export to a place of its "
                               "own (--overwrite replaces it)")


def _overlap(first: str, second: str) -> bool:
    """Whether one location is the other or lies inside it."""
    a, b = (p.rstrip("/") if "://" in p else str(Path(p).resolve()) for p in (first, second))
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def clip_dir_of(ctx: JobContext, out: str) -> str:
    """Where the Open-Sora export cuts clip files: curate.export.clip_dir, or `<out stem>_clips`
    beside the CSV; a local folder as an absolute path (the CSV's paths are read from anywhere)."""
    configured = ctx.cfg.get("curate.export.clip_dir")
    if configured:
        return configured if "://" in configured else str(Path(configured).resolve())
    if "://" in out:
        parent, _, name = out.rstrip("/").rpartition("/")
        return f"{parent}/{Path(name).stem}_clips"
    target = Path(out).resolve()
    return str(target.with_name(f"{target.stem}_clips"))


def missing_caption_choice(ctx: JobContext) -> str:
    choice = ctx.cfg.get("curate.export.missing_caption")
    if choice not in MISSING_CAPTION_CHOICES:
        raise VidlakeError(f"curate.export.missing_caption is {choice!r}; choose one of "
                           f"{', '.join(MISSING_CAPTION_CHOICES)}")
    return choice


def captioned_only(clips: DataFrame, missing_caption: str, log: StageLog) -> tuple[DataFrame, int]:
    """The clips that have a caption and how many were left out; with missing_caption=fail, any
    clip without one refuses the export before anything is written."""
    uncaptioned = F.col("text").isNull() | (F.trim(F.col("text")) == "")
    missing = clips.where(uncaptioned)
    count = missing.count()
    if not count:
        return clips, 0
    examples = ", ".join(r.clip_id for r in missing.select("clip_id").orderBy("clip_id").limit(3).collect())
    if missing_caption == "fail":
        raise VidlakeError(f"{count} selected clips have no caption (e.g. {examples}); caption them, select "
                           "fewer, or set curate.export.missing_caption=skip to leave them out")
    log.note(f"{count} clips left out: no caption (curate.export.missing_caption=skip), e.g. {examples}")
    return clips.where(~uncaptioned), count


def describe_selection(ctx: JobContext, args: argparse.Namespace) -> str:
    return f"--sql {args.sql}" if args.sql else f"WHERE {where_of(ctx, args)}"


def where_of(ctx: JobContext, args: argparse.Namespace) -> str:
    return ctx.cfg.get("curate.where") if args.where is None else args.where


def select_clips(ctx: JobContext, view: DataFrame, args: argparse.Namespace) -> DataFrame:
    """The clip_view rows the filter or query selects (with a query's own extra columns)."""
    if args.sql:
        return query_selection(ctx, view, _read_query(args.sql))
    return filtered(ctx, where_of(ctx, args))


def filtered(ctx: JobContext, where: str) -> DataFrame:
    """clip_view rows where `where` holds: one boolean expression (checked by jobs/sql_guard.py),
    applied as a Column, never pasted into SQL text. A condition Spark rejects is a one-line error."""
    if not where.strip():
        raise VidlakeError("--where is empty; give a condition such as 'aesthetic >= 4.5'")
    condition = condition_column(ctx.spark, where, "rejected --where")
    return reported(lambda: ctx.spark.table(CLIP_VIEW).where(condition), "rejected --where")


def query_selection(ctx: JobContext, view: DataFrame, query: str) -> DataFrame:
    """The --sql query's rows (checked read-only by jobs/sql_guard.py) with clip_view's other columns."""
    statement = query.strip().rstrip(";")
    checked = check_statement(ctx.spark, statement, "rejected --sql query")
    query = resolved_statement(ctx.lake, checked, "rejected --sql query")
    result = reported(lambda: ctx.spark.sql(query), "rejected --sql query")
    if "clip_id" not in result.columns:
        raise VidlakeError(f"the --sql query's result needs a clip_id column; it has {', '.join(result.columns)}")
    missing = [c for c in view.columns if c not in result.columns]
    return result.join(view.select("clip_id", *missing), "clip_id", "inner")


def _read_query(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise VidlakeError(f"cannot read --sql file {path}: {err.strerror}") from None


def export_opensora_csv(ctx: JobContext, clips: DataFrame, args: argparse.Namespace) -> int:
    """The CSV, each `path` a file of exactly its clip (cut now where split did not materialize it);
    clips that could not be cut are left out and listed in `<clip dir>/errors.jsonl`."""
    clip_dir = clip_dir_of(ctx, args.out)
    if args.overwrite:
        _remove_folder(clip_dir)
    columns = dict.fromkeys((*filter(None, export.OPENSORA_COLUMNS.values()), *export.CUT_INPUT_COLUMNS))
    parallelism = ctx.spark.sparkContext.defaultParallelism
    rows = clips.select(*columns).repartition(parallelism, "video_id").sortWithinPartitions("video_id", "start_frame")
    cutter = export.ClipFiles(clip_dir, ctx.cfg.section("split.reencode"))
    # Cutting is the expensive part: run it once, whatever the CSV and the failure list read.
    table = rows.mapInPandas(export.opensora_export_batches(cutter), OPENSORA_EXPORT_SCHEMA)
    table = table.localCheckpoint(eager=True)
    failures = [{"clip_id": r.id, "reason": r.export_error}
                for r in table.where(F.col("export_error").isNotNull()).select("id", "export_error").collect()]
    exported = table.where(F.col("export_error").isNull()).drop("export_error")
    write_single_file(exported.orderBy("id"), args.out, "csv", overwrite=args.overwrite)
    cut = exported.where(F.col("path").startswith(clip_dir.rstrip("/") + "/")).count()
    table.unpersist()
    if cut:
        print(f"[vidlake] curate: cut {cut} clips split without clip files into {clip_dir}")
    _report_failures(failures, clip_dir)
    return len(failures)


def export_parquet(ctx: JobContext, clips: DataFrame, args: argparse.Namespace) -> int:
    if args.out.lower().endswith(".parquet"):
        write_single_file(clips, args.out, "parquet", overwrite=args.overwrite)
    else:
        mode = "overwrite" if args.overwrite else "error"
        reported(lambda: clips.write.mode(mode).parquet(args.out), f"writing {args.out}")
    return 0


def export_webdataset(ctx: JobContext, clips: DataFrame, args: argparse.Namespace) -> int:
    """Tar shards of `curate.export.shard_size` clips in clip_id order; failures go to errors.jsonl."""
    shard_size = int(ctx.cfg.get("curate.export.shard_size"))
    out_dir = _prepare_folder(args.out, args.overwrite)
    columns = list(dict.fromkeys((*export.SAMPLE_JSON_COLUMNS, *export.SHARD_INPUT_COLUMNS)))
    ordered = clips.select(*columns).orderBy("clip_id")
    numbered = ordered.rdd.zipWithIndex().map(lambda pair: (*pair[0], pair[1] // shard_size))
    sharded = ctx.spark.createDataFrame(numbered, ordered.schema.add("shard", LongType()))

    def write(rows):
        import pandas as pd

        from udfs.export import write_shard

        summary = write_shard(rows.drop(columns=["shard"]), out_dir, int(rows["shard"].iloc[0]))
        return pd.DataFrame([summary])

    summaries = sharded.groupBy("shard").applyInPandas(write, SHARD_SUMMARY).collect()
    failures = [f for s in summaries for f in json.loads(s.failures)]
    written = [s.shard for s in summaries if s.shard]
    print(f"[vidlake] curate: {len(written)} shards, {sum(s.clips for s in summaries)} clips, "
          f"{sum(s.video_bytes for s in summaries) / 1e6:.1f} MB of video in {out_dir}")
    _report_failures(failures, out_dir)
    return len(failures)


def _remove_folder(path: str) -> None:
    import fsspec

    fs, root = fsspec.core.url_to_fs(path)
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _prepare_folder(out: str, overwrite: bool) -> str:
    import fsspec

    fs, root = fsspec.core.url_to_fs(out)
    if fs.exists(root) and fs.ls(root):
        if not overwrite:
            raise VidlakeError(f"{out} exists and is not empty; remove it or pass --overwrite")
        fs.rm(root, recursive=True)
    fs.makedirs(root, exist_ok=True)
    return out if "://" in out else str(Path(out).resolve())


def _report_failures(failures: list[dict], out_dir: str) -> None:
    if not failures:
        return
    import fsspec

    fs, root = fsspec.core.url_to_fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    path = f"{out_dir.rstrip('/')}/errors.jsonl"
    with fsspec.open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(f) + "\n" for f in failures)
    print(f"[vidlake] curate: {len(failures)} clips not exported (all listed in {path}):", file=sys.stderr)
    for failure in failures[:MAX_FAILURES_SHOWN]:
        print(f"  {failure['clip_id']}: {failure['reason']}", file=sys.stderr)


EXPORTERS = {"opensora-csv": export_opensora_csv, "parquet": export_parquet, "webdataset": export_webdataset}


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("curate"))

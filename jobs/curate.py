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
from jobs.output import reported, write_single_file
from jobs.progress import StageLog
from jobs.sql_guard import check_statement, condition_column
from jobs.views import CLIP_VIEW, register_clip_view
from udfs import export
from udfs.errors import VidlakeError

EXPORTS = ("opensora-csv", "parquet", "webdataset")
MAX_FAILURES_SHOWN = 10

OPENSORA_SCHEMA = StructType(
    [StructField(name, t) for name, t in (
        ("path", StringType()), ("text", StringType()), ("num_frames", LongType()), ("height", LongType()),
        ("width", LongType()), ("aspect_ratio", DoubleType()), ("fps", DoubleType()), ("resolution", LongType()),
        ("aes", DoubleType()), ("flow", DoubleType()), ("ocr", DoubleType()), ("match", DoubleType()),
        ("pwatermark", DoubleType()), ("nsfw", DoubleType()), ("id", StringType()), ("video_id", StringType()),
        ("start_frame", LongType()), ("end_frame", LongType()), ("caption_model", StringType()),
    )]
)
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
    view = register_clip_view(ctx.lake, ctx.cfg, args.caption_kind)
    selected = select_clips(ctx, view, args)
    if args.limit is not None:
        selected = selected.limit(args.limit)
    total = view.count()
    chosen = reported(selected.count, "curation query failed")
    log.note(f"{chosen} of {total} clips selected by {describe_selection(ctx, args)}")
    failed = EXPORTERS[args.export](ctx, selected, args)
    log.done(chosen - failed, failed=failed, export=args.export, out=args.out)
    return 1 if failed else 0


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
    check_statement(ctx.spark, statement, "rejected --sql query")
    result = reported(lambda: ctx.spark.sql(statement), "rejected --sql query")
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
    columns = [c for c in dict.fromkeys(export.OPENSORA_COLUMNS.values()) if c] + ["video_uri"]
    rows = clips.select(*columns)
    _warn_unmaterialized(rows)
    table = rows.mapInPandas(export.opensora_batches, OPENSORA_SCHEMA)
    write_single_file(table.orderBy("id"), args.out, "csv", overwrite=args.overwrite)
    return 0


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
    if shard_size < 1:
        raise VidlakeError(f"curate.export.shard_size must be at least 1, got {shard_size}")
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

    path = f"{out_dir.rstrip('/')}/errors.jsonl"
    with fsspec.open(path, "w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(f) + "\n" for f in failures)
    print(f"[vidlake] curate: {len(failures)} clips not exported (all listed in {path}):", file=sys.stderr)
    for failure in failures[:MAX_FAILURES_SHOWN]:
        print(f"  {failure['clip_id']}: {failure['reason']}", file=sys.stderr)


def _warn_unmaterialized(rows: DataFrame) -> None:
    count = rows.where(F.col("uri") == F.col("video_uri")).count()
    if count:
        print(f"[vidlake] curate: {count} clips are not materialized: their path is the whole source video and "
              "start_frame/end_frame give the clip (split with clips materialized to export clip files)",
              file=sys.stderr)


EXPORTERS = {"opensora-csv": export_opensora_csv, "parquet": export_parquet, "webdataset": export_webdataset}


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("curate"))

"""`vidlake sql "SELECT ..."`: Spark SQL over every lake table and clip_view.

A table reads as Spark users read Delta tables: at a version or a moment (`clips VERSION AS OF 3`,
`clips TIMESTAMP AS OF '2026-12-03 10:00:00'`) on either engine, and on delta-spark by path too
(``delta.`./lake/clips` ``, the lake's own tables only).

Prints the result as a table, or writes it to `--out FILE.csv|.parquet|.json`.
"""
from __future__ import annotations

import argparse
import sys

from jobs.context import JobContext
from jobs.output import output_format, reported, write_single_file
from jobs.sql_guard import METADATA_STATEMENTS, check_statement
from jobs.views import register_clip_view, resolved_statement

DEFAULT_PRINT_LIMIT = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("query", help="the SQL query (tables: videos, ingest_errors, video_files, clips, "
                                      "split_errors, scores, captions, clip_view; a table may be read at "
                                      "'VERSION AS OF n' or 'TIMESTAMP AS OF ts', and on delta-spark as "
                                      f"delta.`<lake>/<table>`), or {METADATA_STATEMENTS}")
    parser.add_argument("--out", help="write the result to FILE.csv, FILE.parquet or FILE.json instead of printing")
    parser.add_argument("--limit", type=int, help=f"at most N rows (printing shows {DEFAULT_PRINT_LIMIT} by default)")
    parser.add_argument("--caption-kind", help="the caption kind of clip_view's `text` (default: curate.caption_kind)")
    parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    statement = check_statement(ctx.spark, args.query, "rejected SQL", metadata=True)
    register_clip_view(ctx.lake, ctx.cfg, args.caption_kind)
    query = resolved_statement(ctx.lake, statement, "rejected SQL")
    result = reported(lambda: ctx.spark.sql(query), "rejected SQL")
    if args.limit is not None:
        result = result.limit(args.limit)
    if args.out:
        write_single_file(result, args.out, output_format(args.out), overwrite=args.overwrite)
        print(f"[vidlake] sql: wrote {args.out}")
        return 0
    limit = args.limit if args.limit is not None else DEFAULT_PRINT_LIMIT
    rows = reported(lambda: result.limit(limit + 1).toPandas(), "query failed")
    print(format_table(rows.head(limit)))
    if len(rows) > limit:
        print(f"(first {limit} rows shown; --limit N shows more, --out FILE writes them all)")
    return 0


def format_table(rows) -> str:
    """A pandas frame as aligned text, long cells shortened."""
    if rows.empty:
        return "(no rows)\ncolumns: " + ", ".join(rows.columns)
    return rows.to_string(index=False, max_colwidth=60)


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("sql"))

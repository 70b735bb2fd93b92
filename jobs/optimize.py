"""`vidlake optimize`: compact the lake's small data files.

    vidlake optimize [--lake DIR] [--table T] [--zorder-by COL[,COL...]]
    spark-submit jobs/optimize.py [--table T] [--zorder-by COLS]

Every written table (or T) has its files smaller than `lake.optimize.target_file_mb` rewritten into
files of about that size, in one commit per table that changes no row (delta-spark's OPTIMIZE, or
delta-rs's compaction); with --zorder-by, T's files are rewritten clustered on those columns. The
files compacted away stay for older snapshots' readers until `vidlake vacuum` deletes them.
One line per table: its data files before and after.
"""
from __future__ import annotations

import argparse
import sys

from jobs.context import JobContext
from jobs.lake import Lake, LakeError
from schemas.tables import TABLES

STAGE = "optimize"
MB = 1024 * 1024


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", help="only this table (default: every table the lake has written)")
    parser.add_argument("--zorder-by", metavar="COLS",
                        help="comma-separated columns to cluster --table's files by (Z-order)")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    zorder_by = [c.strip() for c in (args.zorder_by or "").split(",") if c.strip()]
    if zorder_by and not args.table:
        raise LakeError("--zorder-by needs --table: the columns to cluster by are those of one table")
    target = int(ctx.cfg.get("lake.optimize.target_file_mb")) * MB
    print(f"lake: {ctx.lake.root} (Delta engine: {ctx.lake.engine_name})")
    before = after = 0
    for name in written_tables(ctx.lake, args.table):
        done = ctx.lake.optimize(name, target, zorder_by)
        before, after = before + done.files_before, after + done.files_after
        print(f"{name}: {done.files_before} data files before, {done.files_after} after "
              f"({done.files_removed} rewritten into {done.files_added})")
    print(f"optimize: {before} data files before, {after} after")
    return 0


def written_tables(lake: Lake, name: str | None) -> list[str]:
    """The tables to maintain: `name` (a lake table) or all; those not written yet are named and
    left out."""
    if name is not None and name not in TABLES:
        raise LakeError(f"no lake table named {name!r}; the tables are {', '.join(TABLES)}")
    written = []
    for candidate in [name] if name else list(TABLES):
        if lake.exists(candidate):
            written.append(candidate)
        else:
            print(f"{candidate}: not written yet")
    return written


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for(STAGE))

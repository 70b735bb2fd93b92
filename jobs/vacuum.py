"""`vidlake vacuum`: delete the data files no snapshot within the retention needs.

    vidlake vacuum [--lake DIR] [--table T] [--retain-hours H] [--force]
    spark-submit jobs/vacuum.py [--table T] [--retain-hours H] [--force]

Every written table (or T) loses the files that later commits removed (an optimize's compacted
files, an upsert's rewritten ones) and the parquet files its log never named (a killed task's),
each once older than H hours (`lake.vacuum.retain_hours`, 168 by default: Delta's own check).
The log and the current snapshot's files are never deleted; time travel to a version older than H
hours stops working. Under 168 hours needs --force: a job writing the lake now could lose files it
has written but not committed yet. One line per table: data files removed and their bytes.
"""
from __future__ import annotations

import argparse
import sys

from jobs.context import JobContext
from jobs.lake import LakeError
from jobs.optimize import written_tables

STAGE = "vacuum"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--table", help="only this table (default: every table the lake has written)")
    parser.add_argument("--retain-hours", type=int, metavar="H",
                        help="keep files a snapshot of the last H hours needs (default: lake.vacuum.retain_hours)")
    parser.add_argument("--force", action="store_true",
                        help="allow a retention under Delta's 168-hour check (only when no job writes the lake)")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    hours = ctx.cfg.get("lake.vacuum.retain_hours") if args.retain_hours is None else args.retain_hours
    if hours < 0:
        raise LakeError(f"--retain-hours must be 0 or more, not {hours}")
    print(f"lake: {ctx.lake.root} (Delta engine: {ctx.lake.engine_name}); retaining {hours} hours")
    files = size = 0
    for name in written_tables(ctx.lake, args.table):
        done = ctx.lake.vacuum(name, int(hours), force=bool(args.force))
        files, size = files + done.files_removed, size + done.bytes_removed
        print(f"{name}: {done.files_removed} data files removed ({done.bytes_removed} bytes)")
    print(f"vacuum: {files} data files removed ({size} bytes)")
    return 0


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for(STAGE))

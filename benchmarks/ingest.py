"""Ingest speed against a plain Spark CSV -> parquet copy of the same WebVid-shaped file.

    python benchmarks/ingest.py --rows 1000000
    python benchmarks/ingest.py --rows 10000000 --workdir /tmp/vidlake-bench   # the issue's target: <= 2.0x

Makes the CSV with shared/tools/make_metadata.py (about 1 row in 2,000 malformed on purpose), then in
one Spark session (local[2] by default) times: the plain copy (`spark.read.csv(header) ->
write.parquet`, the floor for anything that parses the file), and `vidlake ingest --format
webvid10m` into an empty Delta lake (parse, validate, duplicates, write videos + ingest_errors).
Prints a table naming the input and the machine; the ratio is ingest / plain copy.

Both ways first run once, untimed, on the file's first --warm-up-rows rows (its times are printed):
a fresh session's first job of each kind pays one-time costs (the JVM compiling that job's code,
Python workers starting) that a long run on a cluster pays once per executor. --warm-up-rows 0
times both cold.
"""
from __future__ import annotations

import argparse
import itertools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--make-metadata", type=Path, default=ROOT.parent / "shared" / "tools" / "make_metadata.py",
                        help="the generator script (default: ../shared/tools/make_metadata.py from the repo root)")
    parser.add_argument("--workdir", type=Path, help="where the CSV, the copy and the lake go (default: a temp dir)")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--warm-up-rows", type=int, default=200_000,
                        help="rows of the file each way runs on once, untimed, before the timed runs (0: none)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the workdir; a later run with the same --workdir and --rows reuses its CSV")
    args = parser.parse_args()
    if not args.make_metadata.is_file():
        sys.exit(f"{args.make_metadata} not found; pass --make-metadata PATH")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vidlake-bench-ingest-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path) -> None:
    csv_path = workdir / f"webvid_{args.rows}.csv"
    made = "kept from an earlier run with --keep"
    if not csv_path.exists():
        started = time.perf_counter()
        subprocess.run([sys.executable, str(args.make_metadata), "webvid", str(args.rows), str(csv_path)], check=True)
        made = f"made in {time.perf_counter() - started:.1f} s"

    from jobs import ingest
    from jobs.config import load_config
    from jobs.context import open_context

    cfg = load_config("local", [f"spark.master={args.master}", f"lake.root={workdir / 'lake'}"])
    ctx = open_context(cfg)
    ctx.spark.range(1000).selectExpr("sum(id)").collect()  # start the executors before timing

    def plain_copy(path: Path) -> float:
        started = time.perf_counter()
        ctx.spark.read.option("header", True).csv(str(path)).write.mode("overwrite").parquet(str(workdir / "copy"))
        return time.perf_counter() - started

    def vidlake_ingest(path: Path) -> tuple[float, int]:
        shutil.rmtree(workdir / "lake", ignore_errors=True)
        started = time.perf_counter()
        status = ingest.run(ctx, argparse.Namespace(source_format="webvid10m", inputs=[str(path)]))
        return time.perf_counter() - started, status

    warm_up = None
    if args.warm_up_rows:
        head = _head(csv_path, args.warm_up_rows, workdir / "warm_up.csv")
        warm_up = (plain_copy(head), vidlake_ingest(head)[0])
    plain_s = plain_copy(csv_path)
    ingest_s, status = vidlake_ingest(csv_path)
    videos = len(ctx.lake.read("videos").select("video_id").collect()) if args.rows <= 1_000_000 else None
    ctx.spark.stop()

    rows = [
        ("input", f"{csv_path.name}: {args.rows:,} WebVid-shaped rows, {csv_path.stat().st_size / 1e9:.2f} GB "
                  f"({made})"),
        ("machine", f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Spark {args.master}, "
                    f"{_memory_gib():.0f} GiB, Python {platform.python_version()}"),
        ("warm-up (untimed)", f"first {args.warm_up_rows:,} rows: plain {warm_up[0]:.1f} s, ingest {warm_up[1]:.1f} s"
                              if warm_up else "none: both timed cold"),
        ("plain Spark csv -> parquet", f"{plain_s:.1f} s ({args.rows / plain_s:,.0f} rows/s)"),
        ("vidlake ingest -> Delta", f"{ingest_s:.1f} s ({args.rows / ingest_s:,.0f} rows/s), exit {status}"),
        ("ratio ingest / plain", f"{ingest_s / plain_s:.2f}x (target <= 2.0x)"),
    ]
    if videos is not None:
        rows.append(("videos rows read back", f"{videos:,}"))
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value}")


def _head(csv_path: Path, rows: int, out: Path) -> Path:
    """The header and the first `rows` lines of a CSV."""
    with open(csv_path, "rb") as source, open(out, "wb") as target:
        target.writelines(itertools.islice(source, rows + 1))
    return out


def _memory_gib() -> float:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 2**20


if __name__ == "__main__":
    main()

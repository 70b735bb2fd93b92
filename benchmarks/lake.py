"""The lake's Delta writes and reads against plain parquet of the same rows, on both engines.

    python benchmarks/lake.py                      # 1,000,000 clips-shaped rows, both engines
    python benchmarks/lake.py --rows 200000 --engines delta-rs

One Spark session with Delta's jars (local[2] by default) serves both engines, so every ratio
compares two ways of moving the same rows in the same session:

- write: `lake.append` of N clips rows into an empty table against `df.write.parquet` of the
  same rows (target: <= 1.5x);
- read: a scan that touches every row and column group a query of the clips table would
  (count, sum of frames, distinct videos) over the Delta table against the same over the plain
  parquet folder;
- upsert: `lake.upsert` of 1% of the rows (existing keys, one column changed) against
  `lake.append` of as many new rows (target: <= 3x). Delta has no in-place update: a MERGE
  rewrites every file that holds a matched key (copy-on-write; neither engine here writes
  deletion vectors, which delta-rs cannot read). So its cost is set by how many files the keys
  fall in, and it is timed twice: keys clustered as a re-run of one batch of videos updates
  them (contiguous clip ids, a few files), and keys spread uniformly over the table (every file).

Every operation first runs once untimed on --warm-up-rows rows: a fresh session's first job of a
kind pays one-time costs (JVM code compilation, Python workers starting).
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

ENGINES = ("delta-rs", "delta-spark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated: delta-rs, delta-spark")
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--files", type=int, default=20, help="files the N rows are written as (Spark partitions)")
    parser.add_argument("--warm-up-rows", type=int, default=20_000)
    parser.add_argument("--workdir", type=Path, help="where the tables go (default: a temp dir, removed after)")
    args = parser.parse_args()
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = set(engines) - set(ENGINES)
    if unknown:
        sys.exit(f"unknown engine(s) {', '.join(sorted(unknown))}; choose from {', '.join(ENGINES)}")

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="vidlake-bench-lake-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        run(args, engines, workdir)
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, engines: list[str], workdir: Path) -> None:
    from jobs.config import load_config
    from jobs.session import build_spark

    cfg = load_config("local", [f"spark.master={args.master}", "lake.engine=delta-spark",
                                f"spark.conf.spark.sql.shuffle.partitions={args.files}"])
    spark = build_spark(cfg)
    rows = [
        ("input", f"{args.rows:,} generated clips-shaped rows (schemas.tables clips), {args.files} files"),
        ("machine", f"{platform.machine()}, {os.cpu_count()} cores, Spark {spark.version} {args.master}, "
                    f"{_memory_gib():.0f} GiB, Python {platform.python_version()}"),
    ]
    for engine in engines:
        if args.warm_up_rows:
            measure(spark, engine, args.warm_up_rows, args.files, workdir / f"warm-{engine}")
        figures = measure(spark, engine, args.rows, args.files, workdir / engine)
        rows.extend(_report(engine, figures, args.rows))
    spark.stop()
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"| {name.ljust(width)} | {value}")


def measure(spark, engine: str, n: int, files: int, workdir: Path) -> dict[str, float]:
    """Seconds per operation on `n` rows of one engine; the plain-parquet baselines beside them."""
    from pyspark.sql import functions as F

    from jobs.lake import Lake

    shutil.rmtree(workdir, ignore_errors=True)
    lake = Lake(spark, str(workdir / "lake"), engine, max_rows_per_file=1_000_000)
    plain = str(workdir / "plain")
    changed = max(n // 100, 1)
    seconds: dict[str, float] = {}

    seconds["plain write"] = _timed(lambda: clips_rows(spark, 0, n, files).write.mode("overwrite").parquet(plain))
    seconds["delta append"] = _timed(lambda: lake.append(clips_rows(spark, 0, n, files), "clips"))
    seconds["plain read"] = _timed(lambda: _scan(spark.read.parquet(plain)))
    seconds["delta read"] = _timed(lambda: _scan(lake.read("clips")))
    seconds["append 1% new"] = _timed(lambda: lake.append(clips_rows(spark, n, n + changed, 1), "clips"))
    clustered = clips_rows(spark, n // 2, n // 2 + changed, 1).withColumn("detector", F.lit("rescored"))
    seconds["upsert 1% clustered"] = _timed(lambda: lake.upsert(clustered, "clips"))
    spread = (clips_rows(spark, 0, n, files).where(F.col("clip_index") % 100 == 7)
              .withColumn("detector", F.lit("rescored-spread")))
    seconds["upsert 1% spread"] = _timed(lambda: lake.upsert(spread, "clips"))
    _check(lake, n + changed)
    return seconds


def clips_rows(spark, start: int, end: int, files: int):
    """Rows of the clips table for ids start..end-1: 10 clips per video, deterministic values."""
    from pyspark.sql import functions as F

    from jobs.lake import conform
    from schemas.tables import table

    ids = spark.range(start, end, numPartitions=files)
    video = F.floor(F.col("id") / 10)
    start_frame = (F.col("id") % 10) * 120
    df = ids.select(
        F.format_string("c%012d", F.col("id")).alias("clip_id"),
        F.format_string("v%011d", video).alias("video_id"),
        F.col("id").cast("int").alias("clip_index"),
        (start_frame / 30.0).alias("start_s"),
        ((start_frame + 120) / 30.0).alias("end_s"),
        start_frame.alias("start_frame"),
        (start_frame + 120).alias("end_frame"),
        F.lit(120).alias("num_frames"),
        F.lit(30.0).alias("fps"),
        F.lit(1280).alias("width"),
        F.lit(720).alias("height"),
        F.lit(0.5625).alias("aspect_ratio"),
        F.lit("720p").alias("resolution"),
        F.lit("content").alias("detector"),
        F.lit('{"threshold": 27.0}').alias("detector_params"),
        F.format_string("videos/%011d.mp4", video).alias("uri"),
        F.current_timestamp().alias("created_at"),
    )
    return conform(df, table("clips"))


def _scan(df) -> None:
    from pyspark.sql import functions as F

    df.agg(F.count("*"), F.sum("num_frames"), F.countDistinct("video_id")).collect()


def _check(lake, expected: int) -> None:
    """The upserts changed rows, never added any: each key once."""
    clips = lake.read("clips")
    rows, keys = clips.count(), clips.select("clip_id").distinct().count()
    if rows != expected or keys != expected:
        raise SystemExit(f"{lake.engine_name}: {rows:,} rows and {keys:,} keys after the upserts, "
                         f"expected {expected:,} of each")


def _timed(operation: Callable[[], object]) -> float:
    started = time.perf_counter()
    operation()
    return time.perf_counter() - started


def _report(engine: str, s: dict[str, float], n: int) -> list[tuple[str, str]]:
    def line(name: str) -> str:
        return f"{s[name]:.1f} s ({n / s[name]:,.0f} rows/s)" if name in ("plain write", "delta append") \
            else f"{s[name]:.1f} s"

    return [
        (f"{engine}: plain parquet write", line("plain write")),
        (f"{engine}: Delta append", line("delta append")),
        (f"{engine}: write ratio", f"{s['delta append'] / s['plain write']:.2f}x (target <= 1.5x)"),
        (f"{engine}: read ratio", f"{s['delta read'] / s['plain read']:.2f}x "
                                  f"(plain {s['plain read']:.1f} s, Delta {s['delta read']:.1f} s)"),
        (f"{engine}: append of 1% new rows", line("append 1% new")),
        (f"{engine}: upsert 1%, clustered keys", f"{s['upsert 1% clustered']:.1f} s, "
                                                 f"{s['upsert 1% clustered'] / s['append 1% new']:.1f}x the append "
                                                 "(target <= 3x)"),
        (f"{engine}: upsert 1%, spread keys", f"{s['upsert 1% spread']:.1f} s, "
                                              f"{s['upsert 1% spread'] / s['append 1% new']:.1f}x the append"),
    ]


def _memory_gib() -> float:
    with open("/proc/meminfo") as f:
        return int(f.readline().split()[1]) / 2**20


if __name__ == "__main__":
    main()

"""What the download threads cost: `download_batch` in one process at several concurrencies.

A loopback server (a process of its own) serves one real video under N URLs; one process fetches
them through `udfs.fetch.download_batch` with 1, 4, 16 and 32 downloads in flight, and prints
the wall clock, the CPU per video (its own process: user + system, from getrusage) and the
voluntary context switches per video. Concurrency 1 is the baseline of the same run: on loopback
there is nothing to wait for, so every extra CPU millisecond at 16 is what the threads cost
(each system call a thread makes hands the GIL to another; with the threads spread over several
cores each hand-over is a wake-up on another core). A Spark executor's Python worker runs
`download.concurrency` threads on however many cores the executor has, which is this case.
Run: python benchmarks/fetch_threads.py [--videos 1000] [--video bikes] [--concurrency 1,4,16,32]
"""
from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

import pandas as pd  # noqa: E402
from download import SPAWN, serve, video_urls  # noqa: E402

from udfs.sample_videos import missing_reason, packaged_videos  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=1000, help="URLs to fetch at each concurrency (default 1000)")
    parser.add_argument("--video", default="bikes", help="packaged video served under every URL")
    parser.add_argument("--concurrency", default="1,4,16,32", help="downloads in flight, comma-separated")
    return parser.parse_args()


def timed_batch(urls: list[str], concurrency: int, work: Path) -> tuple[float, float, float]:
    """(seconds, CPU seconds, voluntary context switches) of one download_batch over `urls`."""
    from udfs.fetch import download_batch

    conf = {"blob_root": str(work / f"blobs-{concurrency}"), "allow_hosts": ["127.0.0.1"], "concurrency": concurrency}
    rows = pd.DataFrame({"video_id": [f"{concurrency:04x}{i:016x}" for i in range(len(urls))], "url": urls})
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    result = download_batch(rows, conf)
    seconds, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_SELF)
    if set(result["status"]) != {"ok"}:
        raise RuntimeError(f"statuses at concurrency {concurrency}: {result['status'].value_counts().to_dict()}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu, after.ru_nvcsw - before.ru_nvcsw


def main() -> None:
    args = parse_args()
    video = packaged_videos().get(args.video)
    if video is None:
        sys.exit(missing_reason(args.video))
    levels = [int(level) for level in args.concurrency.split(",")]
    ports, stop = SPAWN.Queue(), SPAWN.Event()
    server = SPAWN.Process(target=serve, args=(video.read_bytes(), ports, stop, 0.0), daemon=True)
    server.start()
    work = Path(tempfile.mkdtemp(prefix="vidlake-bench-fetch-threads-"))
    try:
        urls = video_urls(ports.get(timeout=60), args.videos, 0)
        timed_batch(urls[:32], 4, work / "warm-up")
        results = {level: timed_batch(urls, level, work) for level in levels}
    finally:
        stop.set()
        server.join(10)
        shutil.rmtree(work, ignore_errors=True)
    print(f"\ninput: {video.name} ({video.stat().st_size / 1e6:.2f} MB) from 127.0.0.1 under {args.videos} URLs, "
          f"fetched, hashed, probed and stored by one process")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          f"(1 min, at the end), Python {platform.python_version()}\n")
    print("| downloads in flight | seconds | videos/s | CPU ms/video | CPU vs 1 in flight | switches/video |")
    print("|---:|---:|---:|---:|---:|---:|")
    base = results[levels[0]][1]
    for level, (seconds, cpu, switches) in results.items():
        print(f"| {level} | {seconds:.2f} | {args.videos / seconds:.0f} | {cpu / args.videos * 1e3:.2f} | "
              f"{cpu / base:.2f}x | {switches / args.videos:.0f} |")


if __name__ == "__main__":
    main()

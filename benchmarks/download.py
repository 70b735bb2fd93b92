"""Download throughput: the `vidlake download` job against a plain concurrent fetch loop.

A loopback HTTP server serves one real video (a file a PyPI package ships) under N different
URLs. In the same run, three ways fetch all N:

- plain loop: threads of http.client GETs writing each body to a file (no Spark, no checks);
- udf batch: `udfs.fetch.download_batch` on the same rows (address checks, sha256, probe,
  atomic blob store), no Spark;
- job: `vidlake download` on a lake whose `videos` table holds the N URLs, committing to Delta
  every `--commit-every` videos (by default conf's `download.commit_every`, 5000: one commit for
  2,000 videos; `--commit-every 500` makes it four).

What makes the comparison fair (earlier versions of this script got both wrong):

- The server runs in a process of its own for all three. It used to run in the benchmark's
  process, where it shared one GIL with the plain loop's and the udf's threads but not with the
  job's Spark workers, so the baseline paid for serving and the job did not.
- The plain loop and the udf run in as many processes as the job has Spark task slots
  (`--master local[N]`: N), each with `--concurrency` downloads in flight, as each Spark task
  has. The plain loop used to be one process, so it could use only one core of the N the job
  used. Each side's processes are started (and imports done) before the clock starts.
- "Once Spark has started" is taken to mean warm: before the timed run, the job runs once on
  `--warm-up` videos (by default as many as it then times) in a lake of its own, so the timed
  run has its Python workers and the JVM's compiled code, as every batch but the first few of a
  long run has. A warm-up of 100 left the JVM's JIT compiler busy through the timed run (about
  1 CPU s more, 0.5 s slower on 2 cores). The warm-up's time is printed too.

Each row also gives the CPU seconds its own processes used (the server's apart), read from
/proc: on a shared 2-core machine the wall clock moves with other people's load, the CPU a
way needs much less, and CPU / cores bounds how fast a way can be. The load average is printed
with the table. `--slow-every N` makes every N-th URL a slow host's (it answers after `--slow-s`),
as real hosts are: a batch then waits for its slowest downloads, the plain loop's threads do not.
`--mbps R` sends every body at R megabits/s per connection, as a remote host does: on loopback
at full speed every way is bound by the two cores' CPU; at a network's rate the downloads wait on
the network, as the issue's "I/O bound: many downloads in flight per core" has them.
Run: python benchmarks/download.py [--videos 2000] [--video bikes] [--commit-every N]
[--slow-every N --slow-s S] [--mbps R] [--set KEY=VALUE ...]
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pandas as pd  # noqa: E402
from loopback_server import LoopbackServer, file_responder, slow_responder  # noqa: E402
from process_cpu import cpu_seconds  # noqa: E402

from udfs.sample_videos import missing_reason, packaged_videos  # noqa: E402

PLAIN = "plain loop (http.client, no Spark)"
UDF = "udf download_batch (no Spark)"
JOB = "vidlake download job (Spark warm)"
WARM_UP = "job warm-up (Spark cold)"
SPAWN = multiprocessing.get_context("spawn")
PACED_CHUNK = 64 << 10  # bytes per write of a paced body (--mbps)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--videos", type=int, default=2000, help="URLs to fetch (default 2000)")
    parser.add_argument("--video", default="bikes", help="packaged video served under every URL")
    parser.add_argument("--concurrency", type=int, default=16, help="downloads in flight per process / Spark task")
    parser.add_argument("--commit-every", type=int, help="download.commit_every (default: the conf's)")
    parser.add_argument("--master", default="local[2]", help="Spark master (default local[2])")
    parser.add_argument("--warm-up", type=int, help="videos the untimed warm-up job fetches first (default: as many "
                        "as --videos)")
    parser.add_argument("--slow-every", type=int, default=0, metavar="N",
                        help="every N-th URL is a slow host's, answered after --slow-s (default 0: none)")
    parser.add_argument("--slow-s", type=float, default=2.0, help="how long a slow host takes to answer")
    parser.add_argument("--mbps", type=float, default=0.0, metavar="R",
                        help="send each body at R megabits/s per connection (default 0: as fast as loopback)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a conf override for the job, as `vidlake --set` takes it")
    args = parser.parse_args()
    if args.warm_up is None:
        args.warm_up = args.videos
    return args


def local_cores(master: str) -> int:
    """The task slots of a local[N] master (local[*]: every core); 2 for anything else."""
    inside = master.removeprefix("local[").removesuffix("]")
    if master.startswith("local[") and inside == "*":
        return os.cpu_count() or 1
    return int(inside) if master.startswith("local[") and inside.isdigit() else 2


def serve(data: bytes, ports, stop, slow_s: float, mbps: float = 0.0) -> None:
    """The loopback server, in a process of its own; /slow/ URLs answer after `slow_s` seconds;
    with `mbps`, every body is sent a PACED_CHUNK at a time, as fast as that rate allows."""
    serve_file = slow_responder(data, PACED_CHUNK, PACED_CHUNK * 8 / (mbps * 1e6)) if mbps else file_responder(data)
    with LoopbackServer() as server:
        server.routes["/v/"] = serve_file
        server.routes["/slow/"] = late_responder(serve_file, slow_s)
        ports.put(server.port)
        stop.wait()


def late_responder(serve_file, slow_s: float):
    def respond(handler) -> None:
        time.sleep(slow_s)
        serve_file(handler)

    return respond


def video_urls(port: int, count: int, slow_every: int) -> list[str]:
    """`count` URLs of the served video; with `slow_every` N, every N-th is a slow host's."""
    def folder(index: int) -> str:
        return "slow" if slow_every and index % slow_every == slow_every - 1 else "v"

    return [f"http://127.0.0.1:{port}/{folder(i)}/{i}.mp4" for i in range(count)]


def plain_share(urls: list[str], threads: int, folder: str) -> float:
    """One process's share of the baseline: GET each URL, write the body to a file. Returns its CPU s."""
    started = time.process_time()
    os.makedirs(folder, exist_ok=True)

    def fetch(index_url: tuple[int, str]) -> int:
        index, url = index_url
        host, _, path = url.removeprefix("http://").partition("/")
        connection = http.client.HTTPConnection(host, timeout=60)
        try:
            connection.request("GET", "/" + path)
            response = connection.getresponse()
            with open(f"{folder}/{index}.mp4", "wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
            return response.status
        finally:
            connection.close()

    with ThreadPoolExecutor(threads) as pool:
        statuses = set(pool.map(fetch, enumerate(urls)))
    if statuses != {200}:
        raise RuntimeError(f"plain loop got statuses {sorted(statuses)}")
    return time.process_time() - started


def udf_share(urls: list[str], conf: dict, first_id: int) -> float:
    """One process's share through `download_batch`. Returns its CPU s."""
    from udfs.fetch import download_batch

    started = time.process_time()
    ids = [f"{first_id + i:020x}" for i in range(len(urls))]
    result = download_batch(pd.DataFrame({"video_id": ids, "url": urls}), conf)
    if set(result["status"]) != {"ok"}:
        raise RuntimeError(f"udf batch statuses: {result['status'].value_counts().to_dict()}")
    return time.process_time() - started


def in_processes(pool: ProcessPoolExecutor, processes: int, fn, urls: list[str], share_args) -> tuple[float, float]:
    """Runs `fn(share, *share_args(k))` on process k's share of `urls`; returns (seconds, CPU seconds
    of the processes)."""
    started = time.perf_counter()
    futures = [pool.submit(fn, urls[k::processes], *share_args(k)) for k in range(processes)]
    cpu = sum(f.result() for f in futures)
    return time.perf_counter() - started, cpu


def without_spark(urls: list[str], work: Path, processes: int, concurrency: int, timings: dict) -> None:
    conf = {"blob_root": str(work / "udf-blobs"), "allow_hosts": ["127.0.0.1"], "concurrency": concurrency}
    with ProcessPoolExecutor(processes, mp_context=SPAWN) as pool:
        warm = urls[: processes * 4]
        in_processes(pool, processes, plain_share, warm, lambda k: (concurrency, str(work / f"warm-{k}")))
        in_processes(pool, processes, udf_share, warm, lambda k: (conf, 10**9 + k * len(warm)))
        timings[PLAIN] = in_processes(pool, processes, plain_share, urls,
                                      lambda k: (concurrency, str(work / f"plain-{k}")))
        timings[UDF] = in_processes(pool, processes, udf_share, urls, lambda k: (conf, k * len(urls)))


def write_videos(ctx, source: str, urls: list[str]) -> None:
    from schemas.ids import video_id
    from schemas.tables import VIDEOS

    now = dt.datetime.now(dt.timezone.utc)
    rows = [{"video_id": video_id(source, str(i)), "source": source, "source_video_id": str(i), "url": url,
             "caption": None, "duration_s": None, "clip_hints": None, "extra": None, "ingest_batch": source,
             "ingested_at": now} for i, url in enumerate(urls)]
    ctx.lake.append(ctx.spark.createDataFrame(rows, VIDEOS), "videos")


def timed_job(ctx, expected: int, skip: frozenset) -> tuple[float, float]:
    from jobs.download import run

    cpu = cpu_seconds(os.getpid(), skip)
    started = time.perf_counter()
    run(ctx, argparse.Namespace(limit=None, retry_failed=False))
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(os.getpid(), skip) - cpu
    counts = ctx.lake.read("video_files").groupBy("status").count().collect()
    statuses = {r.status: r["count"] for r in counts}
    if statuses != {"ok": expected}:
        raise RuntimeError(f"job statuses: {statuses}")
    return seconds, cpu


def with_spark(urls: list[str], work: Path, args: argparse.Namespace, server_pid: int, timings: dict) -> None:
    """Starts Spark and writes `videos` (untimed), runs the warm-up job, then times the job."""
    from jobs.config import load_config
    from jobs.context import JobContext, open_context
    from jobs.lake import Lake

    overrides = ["download.allow_hosts=[127.0.0.1]", f"download.concurrency={args.concurrency}"]
    if args.commit_every is not None:
        overrides.append(f"download.commit_every={args.commit_every}")
    overrides += args.set
    cfg = load_config("local", [f"lake.root={work / 'lake'}", f"spark.master={args.master}", *overrides])
    args.commit_every = cfg.get("download.commit_every")
    ctx = open_context(cfg)
    try:
        warm_lake = Lake(ctx.spark, str(work / "warm-up-lake"), cfg.get("lake.engine"))
        warm_ctx = JobContext(cfg, ctx.spark, warm_lake)
        write_videos(warm_ctx, "warm-up", urls[: args.warm_up])
        write_videos(ctx, "bench", urls)
        skip = frozenset({server_pid})
        if args.warm_up:
            timings[WARM_UP] = timed_job(warm_ctx, args.warm_up, skip)
        timings[JOB] = timed_job(ctx, len(urls), skip)
    finally:
        ctx.spark.stop()


def main() -> None:
    args = parse_args()
    video = packaged_videos().get(args.video)
    if video is None:
        sys.exit(missing_reason(args.video))
    data = video.read_bytes()
    work = Path(tempfile.mkdtemp(prefix="vidlake-bench-download-"))
    ports, stop = SPAWN.Queue(), SPAWN.Event()
    server = SPAWN.Process(target=serve, args=(data, ports, stop, args.slow_s, args.mbps), daemon=True)
    server.start()
    try:
        port = ports.get(timeout=60)
        urls = video_urls(port, args.videos, args.slow_every)
        processes = local_cores(args.master)
        timings: dict[str, tuple[float, float]] = {}
        before = cpu_seconds(server.pid)
        without_spark(urls, work, processes, args.concurrency, timings)
        between = cpu_seconds(server.pid)
        with_spark(urls, work, args, server.pid, timings)
        served = (between - before, cpu_seconds(server.pid) - between)
        print_table(args, video, len(data), processes, timings, served)
    finally:
        stop.set()
        server.join(10)
        shutil.rmtree(work, ignore_errors=True)


def print_table(args: argparse.Namespace, video: Path, size: int, processes: int, timings: dict,
                served: tuple[float, float]) -> None:
    baseline = timings[PLAIN][0]
    print(f"\ninput: {video.name} ({size / 1e6:.2f} MB) served from 127.0.0.1 under {args.videos} URLs by a "
          f"server process of its own; {processes} processes / Spark tasks x {args.concurrency} downloads in "
          f"flight; Spark {args.master}, commit every {args.commit_every}, warm-up {args.warm_up} videos"
          f"{'; ' + ', '.join(args.set) if args.set else ''}"
          f"{f'; every {args.slow_every}th URL answers after {args.slow_s:g} s' if args.slow_every else ''}"
          f"{f'; bodies sent at {args.mbps:g} Mbit/s per connection' if args.mbps else ''}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} "
          f"(1 min, at the end), Python {platform.python_version()}")
    print(f"server CPU: {served[0]:.2f} s for the plain loop and the udf together, "
          f"{served[1]:.2f} s for the warm-up and the job together")
    print(f"\n| {'way':<38} | {'videos':>6} | {'seconds':>8} | {'videos/s':>9} | {'MB/s':>7} | {'CPU s':>6} | "
          f"{'time vs plain':>13} |")
    print(f"|{'-' * 40}|{'-' * 8}|{'-' * 10}|{'-' * 11}|{'-' * 9}|{'-' * 8}|{'-' * 15}|")
    for name, (seconds, cpu) in timings.items():
        videos = args.warm_up if name == WARM_UP else args.videos
        rate = videos / seconds
        ratio = f"{seconds / baseline:12.2f}x" if name != WARM_UP else f"{'-':>13}"
        print(f"| {name:<38} | {videos:>6} | {seconds:8.2f} | {rate:9.1f} | {rate * size / 1e6:7.1f} | "
              f"{cpu:6.2f} | {ratio} |")


if __name__ == "__main__":
    main()

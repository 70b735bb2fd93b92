"""Scene splitting speed and accuracy: decode-only (the ceiling), PySceneDetect's own `detect()` with
its defaults, and the vidlake split udf (udfs.split.SceneSplitter, what each Spark task runs).

The script generates 1080p H.264 test videos (libx264, yuv420p, 25 fps, 30 s each) with moving
content and known cuts (hard cuts, a fade through black, a dissolve, a static shot with a moving
object, a flash: tests/media.py), and caches them in --workdir. frames/s counts every frame of every
video; f/cpu-s divides the frames by the CPU seconds of every process of the run (the cost of a frame,
which other processes on a shared machine disturb far less than the wall clock); precision/recall
are against the known cuts at a 2-frame tolerance.

What "N cores" means: `vidlake split` runs one Spark task per core (spark.task.cpus=1), each in its
own Python worker, each decoding its own videos on one thread. So every method runs in the *tasks*
layout: N processes, each pinned to its own core with one decoder thread, the videos dealt out
between them, timed from a common start (after imports) to the last one's end. Decode-only and
PySceneDetect also run in the *threads* layout (one process on all N cores, FFmpeg's frame threads:
how PySceneDetect is used on its own), and each ratio is against the faster of the two layouts, so
the ceiling is never the slow one.

vidlake-job is the Spark job itself, `vidlake split` with the content detector, on `local[N]` in one
process tree pinned to the N cores, timed from the job's start to its Delta commits (its session,
tables and a warm-up job over the same videos in another lake come first, untimed); its CPU is the
whole tree's (JVM and Python workers). It runs the udf of the vidlake row, so its cuts are that
row's. A run has a fixed cost (finding and counting the pending videos, starting the tasks,
committing: about 1 s here), which a run of a few videos cannot spread, so the job splits
--job-videos videos (24): the generated ones in turn, each under a video id of its own, as a long
run would see them (every way reads the same files from the page cache).

Decoder settings: decode-only decodes exactly as the udf's decoder does for the content detector
(udfs.decode.VideoDecoder with conf `split.decode`: threads; skip_loop_filter, which skips H.264
deblocking; skip_nonref, which skips the non-reference frames whose packets are small), converting
nothing, so the ratio to it is the udf's own overhead. decode-every-frame decodes every frame with
the same threads and skip_loop_filter (what skipping frames saves); decode-full decodes every frame
with deblocking, as PySceneDetect (OpenCV) and players do.

Target: vidlake (the udf and the job) >= 0.8x decode-only and >= 2x PySceneDetect's defaults, recall no lower.

    python benchmarks/split.py [--videos 2] [--seconds 30] [--repeats 3] [--workdir DIR] [--methods M1,M2]
                               [--set KEY=VALUE ...]

Use an even number of videos per core count (Spark would also leave a core idle on the last one).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from process_cpu import cpu_seconds  # noqa: E402

METHODS = ("decode-only", "decode-every-frame", "decode-full", "pyscenedetect", "vidlake", "vidlake-job")
# The layouts each method runs in on more than one core (see above); on one core they are the same,
# but for the job, which is always one Spark session (local[N]) on all N cores.
LAYOUTS = {"decode-only": ("tasks", "threads"), "decode-every-frame": ("tasks",), "decode-full": ("tasks",),
           "pyscenedetect": ("tasks", "threads"), "vidlake": ("tasks",), "vidlake-job": ("spark",)}
TOLERANCE = 2
FPS = 25
SIZE = (1920, 1080)


def main() -> None:
    args = parse_args()
    if args.worker:
        run_worker(args.worker, args.threads, json.loads(args.videos_json), args.set)
        return
    videos = generate_videos(Path(args.workdir), args.videos, args.seconds)
    all_cores = len(os.sched_getaffinity(0))
    print_header(videos, args, all_cores)
    for cores in sorted({1, all_cores}):
        print_rows(cores, best_runs(args.methods, args.repeats, cores, videos, args.set, args.job_videos), videos)
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (the machine is shared: compare ratios, "
          "which come from the same run)")


def print_header(videos: list[dict], args: argparse.Namespace, all_cores: int) -> None:
    print(f"input: {len(videos)} generated H.264 videos, {SIZE[0]}x{SIZE[1]}, {FPS} fps, {args.seconds} s each "
          f"({sum(v['frames'] for v in videos)} frames, {sum(len(v['cuts']) for v in videos)} known cuts), "
          f"cached in {args.workdir}")
    print(f"machine: {platform.processor() or platform.machine()}, {all_cores} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start, Python {platform.python_version()}")
    print(f"vidlake: split udf, content detector, conf defaults{' with ' + ', '.join(args.set) if args.set else ''} "
          f"({vidlake_settings(split_conf(args.set))}), materialize=none; "
          f"best of {args.repeats} interleaved runs")
    if "vidlake-job" in args.methods:
        print(f"vidlake-job: {max(args.job_videos, len(videos))} videos, the generated ones in turn, "
              "each under an id of its own")
    print()
    print(f"{'method':<19}{'cores':>6}{'layout':>9}{'frames/s':>11}{'per core':>10}{'x decode':>10}{'x PySD':>8}"
          f"{'f/cpu-s':>10}{'precision':>11}{'recall':>8}")


def print_rows(cores: int, runs: dict[tuple[str, str], Run], videos: list[dict]) -> None:
    """One row per method and layout; the ratios are to the faster layout of decode-only / PySceneDetect."""
    best = {name: max(run.frames / run.seconds for (method, _), run in runs.items() if method == name)
            for name in ("decode-only", "pyscenedetect")}
    for (method, layout), run in runs.items():
        rate = run.frames / run.seconds
        precision, recall = score(run.cuts, videos)
        print(f"{method:<19}{cores:>6}{layout:>9}{rate:>11.1f}{rate / cores:>10.1f}{rate / best['decode-only']:>10.2f}"
              f"{rate / best['pyscenedetect']:>8.2f}{run.frames / run.cpu:>10.1f}{precision:>11}{recall:>8}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=2)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; each method's fastest counts")
    parser.add_argument("--workdir", default="/tmp/vidlake-split-bench")
    parser.add_argument("--job-videos", type=int, default=24, metavar="N",
                        help="videos the vidlake-job row splits: the generated ones in turn, each under an id of its "
                        "own (a run's fixed cost is spread as on a long run); at least --videos")
    parser.add_argument("--methods", type=methods_arg, default=METHODS, metavar="M1,M2",
                        help=f"the methods to run, of {', '.join(METHODS)} (decode-only and pyscenedetect always "
                        "run: the ratios are to them)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a conf override for the udf and decode-only, as `vidlake --set` takes it")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--videos-json", default="[]", help=argparse.SUPPRESS)
    return parser.parse_args()


def methods_arg(text: str) -> tuple[str, ...]:
    chosen = {name.strip() for name in text.split(",") if name.strip()}
    unknown = chosen - set(METHODS)
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown method(s) {', '.join(sorted(unknown))}; choose from {', '.join(METHODS)}"
        )
    chosen |= {"decode-only", "pyscenedetect"}
    return tuple(m for m in METHODS if m in chosen)


def segments_for(seed: int, frames: int) -> list:
    """About 30 s of shots 1.5-6 s long; one fade, one dissolve, one static shot, one flash."""
    from media import Dissolve, Fade, Shot

    rng = random.Random(seed)
    segments, used, shot = [], 0, 0
    while used < frames:
        length = min(rng.randint(40, 150), frames - used)
        if shot == 2 and length > 60:
            segments.append(Shot(length, seed * 100 + shot, flashes=((length // 2, 2),)))
        elif shot == 3:
            segments.append(Shot(length, seed * 100 + shot, pan=(0.0, 0.0), moving_object=True))
        else:
            segments.append(Shot(length, seed * 100 + shot, pan=(rng.uniform(-12, 12), rng.uniform(-6, 6))))
        used, shot = used + length, shot + 1
        transition = {1: Fade(14), 4: Dissolve(12)}.get(shot)
        if transition and frames - used > transition.frames + 40:
            segments.append(transition)
            used += transition.frames
    return segments


def generate_videos(workdir: Path, count: int, seconds: int) -> list[dict]:
    from media import cut_frames, make_video

    workdir.mkdir(parents=True, exist_ok=True)
    videos = []
    for seed in range(1, count + 1):
        segments = segments_for(seed, seconds * FPS)
        path = workdir / f"scenes_{seed}_{seconds}s_{SIZE[1]}p.mp4"
        if not path.exists():
            started = time.time()
            make_video(path.with_suffix(".tmp.mp4"), segments, fps=FPS, size=SIZE)
            path.with_suffix(".tmp.mp4").rename(path)
            print(f"generated {path.name} in {time.time() - started:.0f} s", file=sys.stderr)
        videos.append({"path": str(path), "cuts": cut_frames(segments), "frames": sum(s.frames for s in segments)})
    return videos


@dataclass
class Run:
    """One method's run in one layout: wall seconds, CPU seconds of all its processes, cuts per video."""

    seconds: float
    cpu: float
    cuts: list | None
    frames: int


def best_runs(methods: tuple[str, ...], repeats: int, cores: int, videos: list[dict], overrides: list[str],
              job_videos: int) -> dict[tuple[str, str], Run]:
    """The best run of each method in each of its layouts: `repeats` rounds, interleaved so that a
    change of load hits every method alike; the fastest wall time and the least CPU time count."""
    keys = [(method, layout) for method in methods for layout in layouts(method, cores)]
    job_set = [videos[i % len(videos)] for i in range(max(job_videos, len(videos)))]
    best: dict[tuple[str, str], Run] = {}
    for _ in range(repeats):
        for key in keys:
            inputs = job_set if key[0] == "vidlake-job" else videos
            run = run_layout(*key, cores, inputs, overrides)
            if key in best:
                run = Run(min(run.seconds, best[key].seconds), min(run.cpu, best[key].cpu), run.cuts, run.frames)
            best[key] = run
    return best


def layouts(method: str, cores: int) -> tuple[str, ...]:
    if cores == 1 and "spark" not in LAYOUTS[method]:
        return ("tasks",)
    return LAYOUTS[method]


def run_layout(method: str, layout: str, cores: int, videos: list[dict], overrides: list[str]) -> Run:
    """Runs `method` on `cores` cores: one single-thread process per core (tasks) or one process with
    `cores` threads (threads), each pinned to its cores. Wall time runs from the workers' common start
    (all imported and set up) to the last one's end; cuts are None for decoding only."""
    cpus = sorted(os.sched_getaffinity(0))[:cores]
    groups = [[cpu] for cpu in cpus] if layout == "tasks" else [cpus]
    shares = [list(range(len(videos)))[i :: len(groups)] for i in range(len(groups))]
    workers = [
        start_worker(method, group, [videos[i] for i in share], overrides)
        for group, share in zip(groups, shares, strict=True)
    ]
    for worker in workers:
        if worker.stdout.readline().strip() != "ready":
            raise RuntimeError(f"a {method} worker failed to start")
    for worker in workers:
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outputs = []
    for worker in workers:
        stdout, _ = worker.communicate()
        if worker.returncode != 0:
            raise RuntimeError(f"a {method} worker exited with {worker.returncode}")
        outputs.append(json.loads(stdout.strip().splitlines()[-1]))
    seconds = max(out["end"] for out in outputs) - min(out["start"] for out in outputs)
    cpu = sum(out["cpu"] for out in outputs)
    frames = sum(v["frames"] for v in videos)
    if any(out["cuts"] is None for out in outputs):
        return Run(seconds, cpu, None, frames)
    cuts: list = [None] * len(videos)
    for share, out in zip(shares, outputs, strict=True):
        for index, found in zip(share, out["cuts"], strict=True):
            cuts[index] = found
    return Run(seconds, cpu, cuts, frames)


def start_worker(method: str, cpus: list[int], videos: list[dict], overrides: list[str]) -> subprocess.Popen:
    """A worker process pinned to `cpus`, its thread pools sized to them; it says "ready" once set up."""
    threads = str(len(cpus))
    command = [sys.executable, __file__, "--worker", method, "--threads", threads, "--videos-json", json.dumps(videos),
               *(f"--set={item}" for item in overrides)]
    env = {**os.environ, "OMP_NUM_THREADS": threads, "OPENCV_FFMPEG_THREADS": threads}
    return subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: os.sched_setaffinity(0, cpus))


def run_worker(method: str, threads: int, videos: list[dict], overrides: list[str]) -> None:
    """Sets up `method`, says "ready", waits for "go", runs it and prints its start, end, CPU time, cuts."""
    import cv2

    cv2.setNumThreads(threads)
    if method == "vidlake-job":
        run = vidlake_job(threads, overrides, videos)
    else:
        run = {"decode-only": decode_only, "decode-every-frame": decode_every_frame, "decode-full": decode_full,
               "pyscenedetect": pyscenedetect_defaults, "vidlake": vidlake_udf}[method](threads, split_conf(overrides))
    print("ready", flush=True)
    sys.stdin.readline()
    start, cpu = time.monotonic(), cpu_seconds(os.getpid())
    cuts = run(videos)
    print(json.dumps({"start": start, "end": time.monotonic(), "cpu": cpu_seconds(os.getpid()) - cpu, "cuts": cuts}))


def split_conf(overrides: list[str]) -> dict:
    from jobs.config import load_config

    return load_config("local", overrides).section("split")


def vidlake_settings(conf: dict) -> str:
    decode = conf["decode"]
    return (f"decode threads {decode['threads'] or 'per task core'}, skip_loop_filter {decode['skip_loop_filter']}, "
            f"skip_nonref {decode['skip_nonref']} (large_nonref_ratio {decode['large_nonref_ratio']}), "
            f"{decode['scenedetect_width']} px {'subsampled' if decode['scenedetect_subsample'] else 'scaled'}")


def decode_only(threads: int, conf: dict):
    """The udf's decoder for the content detector (its threads, skip_loop_filter, skip_nonref),
    decoding the frames it decodes and converting none."""
    from udfs.split import conf_decoder

    decode = conf["decode"]

    def run(videos: list[dict]) -> None:
        for video in videos:
            with conf_decoder(video["path"], {}, decode, int(decode["threads"]) or threads, False) as decoder:
                for _ in decoder.batches():
                    pass

    return run


def decode_every_frame(threads: int, conf: dict):
    """Every frame decoded with the udf's decoder's threads and skip_loop_filter, nothing converted."""
    decode = conf["decode"]
    options = {"skip_loop_filter": "all"} if decode["skip_loop_filter"] else {}
    return lambda videos: decode_all(videos, int(decode["threads"]) or threads, options)


def decode_full(threads: int, conf: dict):
    """Every frame decoded with deblocking, as players and PySceneDetect's OpenCV backend decode."""
    return lambda videos: decode_all(videos, threads, {})


def decode_all(videos: list[dict], threads: int, options: dict) -> None:
    import av

    for video in videos:
        with av.open(video["path"]) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = threads
            stream.codec_context.options = options
            for _ in container.decode(stream):
                pass


def pyscenedetect_defaults(threads: int, conf: dict):
    """`scenedetect.detect(path, ContentDetector())`: its default backend (OpenCV) and downscaling."""
    from scenedetect import ContentDetector, detect

    return lambda videos: [[start.frame_num for start, _ in detect(v["path"], ContentDetector())[1:]] for v in videos]


def vidlake_udf(threads: int, conf: dict):
    """The split udf with conf defaults (content detector), set up once as a Spark worker does."""
    from udfs.scenes import cheap_content_detectors
    from udfs.split import SceneSplitter

    cheap_content_detectors()  # imports PySceneDetect before the clock starts, as for the others
    splitter = SceneSplitter(conf, "content")
    splitter.load()
    return lambda videos: [splitter.split_video(f"bench{i}", v["path"]).cuts for i, v in enumerate(videos)]


def vidlake_job(threads: int, overrides: list[str], videos: list[dict]):
    """`vidlake split` (content, conf defaults) on Spark local[threads], over a lake whose video_files
    are the videos; set up before the clock starts: the session, the tables, and a warm-up job over
    the same videos in a lake of its own (Python workers started, the JVM's code compiled, as for
    every task but the first of a long job). It returns no cuts: it runs the udf of the row above."""
    import argparse
    import atexit
    import contextlib
    import shutil
    import tempfile

    from jobs import split as split_job
    from jobs.config import load_config
    from jobs.context import JobContext, open_context
    from jobs.lake import Lake

    work = tempfile.mkdtemp(prefix="vidlake-bench-split-job-")
    atexit.register(shutil.rmtree, work, True)
    cfg = load_config("local", [f"lake.root={work}", f"spark.master=local[{threads}]", *overrides])
    args = argparse.Namespace(detector="content", retry_errors=False)

    def lake_of(name: str, uris: list[str]) -> JobContext:
        lake = Lake(context.spark, f"{work}/{name}", cfg.get("lake.engine"))
        rows = [(f"{name}{i}", "ok", uri) for i, uri in enumerate(uris)]
        lake.append(context.spark.createDataFrame(rows, "video_id string, status string, uri string"), "video_files")
        return JobContext(cfg, context.spark, lake)

    with contextlib.redirect_stdout(sys.stderr):  # the job's summary lines; stdout is the worker's protocol
        context = open_context(cfg)
        context.spark.sparkContext.setLogLevel("ERROR")
        split_job.run(lake_of("warm", [v["path"] for v in videos]), args)
        timed = lake_of("bench", [v["path"] for v in videos])

    def run(_videos: list[dict]) -> None:
        with contextlib.redirect_stdout(sys.stderr):
            split_job.run(timed, args)

    return run


def score(found: list[list[int]] | None, videos: list[dict]) -> tuple[str, str]:
    if found is None:
        return "-", "-"
    hits = found_total = truth_total = 0
    for cuts, video in zip(found, videos, strict=True):
        unmatched = list(video["cuts"])
        for cut in cuts:
            near = [t for t in unmatched if abs(t - cut) <= TOLERANCE]
            if near:
                unmatched.remove(min(near, key=lambda t: abs(t - cut)))
                hits += 1
        found_total, truth_total = found_total + len(cuts), truth_total + len(video["cuts"])
    return f"{hits / max(1, found_total):.3f}", f"{hits / max(1, truth_total):.3f}"


if __name__ == "__main__":
    main()

"""Scene splitting speed and accuracy: decode-only (the ceiling), PySceneDetect's own `detect()` with
its defaults, and the vidlake split udf (udfs.split.SceneSplitter, what each Spark task runs).

The script generates 1080p H.264 test videos (libx264, yuv420p, 25 fps, 30 s each) with moving
content and known cuts (hard cuts, a fade through black, a dissolve, a static shot with a moving
object, a flash: tests/media.py), and caches them in --workdir. Each method runs in its own process
pinned to 1 core ("per core", with one decoder thread) and to all cores; frames/s counts every
frame of every video; precision/recall are against the known cuts at a 2-frame tolerance.

Target: vidlake >= 0.8x decode-only and >= 2x PySceneDetect's defaults, recall no lower.

    python benchmarks/split.py [--videos 3] [--seconds 30] [--repeats 1] [--workdir DIR]
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

METHODS = ("decode-only", "pyscenedetect", "vidlake")
TOLERANCE = 2
FPS = 25
SIZE = (1920, 1080)


def main() -> None:
    args = parse_args()
    if args.worker:
        print(json.dumps(run_worker(args.worker, args.cores, json.loads(args.videos_json))))
        return
    videos = generate_videos(Path(args.workdir), args.videos, args.seconds)
    total_frames = sum(v["frames"] for v in videos)
    all_cores = len(os.sched_getaffinity(0))
    print(f"input: {len(videos)} generated H.264 videos, {SIZE[0]}x{SIZE[1]}, {FPS} fps, {args.seconds} s each "
          f"({total_frames} frames, {sum(len(v['cuts']) for v in videos)} known cuts), cached in {args.workdir}")
    print(f"machine: {platform.processor() or platform.machine()}, {all_cores} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start, Python {platform.python_version()}")
    print("vidlake: split udf, content detector at 256 px wide, conf defaults, materialize=none\n")
    print(f"{'method':<16}{'cores':>6}{'frames/s':>11}{'per core':>10}{'x decode':>10}{'x PySD':>8}"
          f"{'precision':>11}{'recall':>8}")
    for cores in sorted({1, all_cores}):
        results = {m: best_of(args.repeats, m, cores, videos) for m in METHODS}
        for method, result in results.items():
            rate = total_frames / result["seconds"]
            decode_rate = total_frames / results["decode-only"]["seconds"]
            pysd_rate = total_frames / results["pyscenedetect"]["seconds"]
            precision, recall = score(result.get("cuts"), videos)
            print(f"{method:<16}{cores:>6}{rate:>11.1f}{rate / cores:>10.1f}{rate / decode_rate:>10.2f}"
                  f"{rate / pysd_rate:>8.2f}{precision:>11}{recall:>8}")
    print(f"\nload average {os.getloadavg()[0]:.1f} at the end (the machine is shared: compare ratios, "
          "which come from the same run)")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; the fastest counts")
    parser.add_argument("--workdir", default="/tmp/vidlake-split-bench")
    parser.add_argument("--worker", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--cores", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--videos-json", default="[]", help=argparse.SUPPRESS)
    return parser.parse_args()


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


def best_of(repeats: int, method: str, cores: int, videos: list[dict]) -> dict:
    runs = [run_in_process(method, cores, videos) for _ in range(repeats)]
    return min(runs, key=lambda r: r["seconds"])


def run_in_process(method: str, cores: int, videos: list[dict]) -> dict:
    """Runs one method in a fresh process pinned to `cores` cores (so thread pools see only them)."""
    command = [sys.executable, __file__, "--worker", method, "--cores", str(cores), "--videos-json", json.dumps(videos)]
    env = {**os.environ, "OMP_NUM_THREADS": str(cores), "OPENCV_FFMPEG_THREADS": str(cores)}
    allowed = sorted(os.sched_getaffinity(0))[:cores]
    result = subprocess.run(command, capture_output=True, text=True, env=env, check=True,
                            preexec_fn=lambda: os.sched_setaffinity(0, allowed))
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_worker(method: str, cores: int, videos: list[dict]) -> dict:
    import cv2

    cv2.setNumThreads(cores)
    runner = {"decode-only": decode_only, "pyscenedetect": pyscenedetect_defaults, "vidlake": vidlake_udf}[method]
    started = time.perf_counter()
    cuts = runner(videos, cores)
    return {"seconds": time.perf_counter() - started, "cuts": cuts}


def decode_only(videos: list[dict], cores: int) -> None:
    """Every frame decoded with FFmpeg's threads, nothing converted: the ceiling."""
    import av

    for video in videos:
        with av.open(video["path"]) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            stream.thread_count = cores
            for _ in container.decode(stream):
                pass


def pyscenedetect_defaults(videos: list[dict], cores: int) -> list[list[int]]:
    """`scenedetect.detect(path, ContentDetector())`: its default backend (OpenCV) and downscaling."""
    from scenedetect import ContentDetector, detect

    return [[start.frame_num for start, _ in detect(v["path"], ContentDetector())[1:]] for v in videos]


def vidlake_udf(videos: list[dict], cores: int) -> list[list[int]]:
    """The split udf with conf defaults (content detector), one decoder thread per core."""
    from jobs.config import load_config
    from udfs.split import SceneSplitter

    conf = load_config("local", [f"split.decode.threads={cores}"]).section("split")
    splitter = SceneSplitter(conf, "content")
    splitter.load()
    return [splitter.split_video(f"bench{i}", v["path"]).cuts for i, v in enumerate(videos)]


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

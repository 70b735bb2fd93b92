"""A small lake written row by row through `Lake.append`, for the curation, report and notebook tests.

Each clip is a real H.264 file (tests/media.py) so exports and frame grids have something to
read. The scores are chosen so that each condition of the default `curate.where` removes a known
set of clips: `PASSING` lists the clips that pass all of them.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from media import Shot, make_video

from schemas.ids import clip_id, video_id
from schemas.tables import CAPTIONS, CLIPS, SCORES, VIDEO_FILES, VIDEOS

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
CLIP_FRAMES = 12
FPS = 24.0
SIZE = (96, 54)


@dataclass(frozen=True)
class FakeClip:
    """One clip's scores; None leaves the score unset (not computed)."""

    name: str
    aesthetic: float | None
    pwatermark: float | None
    ocr_area_ratio: float | None
    motion: float | None
    dense_caption: str | None = None


CLIPS_SPEC = [
    FakeClip("good_a", 5.5, 0.10, 0.000, 3.0, "A red kite drifts over a green field."),
    FakeClip("good_b", 6.1, 0.05, 0.010, 12.0),
    FakeClip("ugly", 3.2, 0.10, 0.000, 3.0, "A blurry grey wall."),
    FakeClip("watermarked", 5.0, 0.90, 0.000, 3.0),
    FakeClip("texty", 5.0, 0.10, 0.200, 3.0),
    FakeClip("static", 5.0, 0.10, 0.000, 0.1),
    FakeClip("shaky", 5.0, 0.10, 0.000, 45.0),
    FakeClip("unscored", None, None, None, None),
    FakeClip("lost", 5.0, 0.10, 0.000, 0.2),  # its clip file is deleted after the lake is written
]
PASSING = {"good_a", "good_b"}
# How many clips each condition of the default filter removes on its own.
REMOVED_ALONE = {
    "aesthetic >= 4.5": 2,  # ugly, unscored
    "pwatermark < 0.3": 2,  # watermarked, unscored
    "ocr_area_ratio < 0.02": 2,  # texty, unscored
    "motion BETWEEN 0.5 AND 20": 4,  # static, shaky, unscored, lost
}


def curated_context(spark, root: Path, engine: str):
    """A JobContext on a lake built by build_lake under `root`, and the ids build_lake returns."""
    from jobs.config import load_config
    from jobs.context import JobContext
    from jobs.lake import Lake

    cfg = load_config("local", [f"lake.root={root / 'lake'}", "spark.master=local[2]", f"lake.engine={engine}"])
    lake = Lake(spark, cfg.get("lake.root"), engine)
    return JobContext(cfg, spark, lake), build_lake(spark, lake, root / "files")


def build_lake(spark, lake, root: Path) -> dict[str, str]:
    """Writes videos, video_files, clips, scores and captions; returns clip name -> clip_id."""
    root.mkdir(parents=True, exist_ok=True)
    source_path = root / "source.mp4"
    make_video(source_path, [Shot(CLIP_FRAMES * len(CLIPS_SPEC), seed=7)], fps=FPS, size=SIZE)
    vid = video_id("generic", "film")
    lake.append(spark.createDataFrame([_video_row(vid, str(source_path))], VIDEOS), "videos")
    lake.append(spark.createDataFrame([_video_file_row(vid, str(source_path))], VIDEO_FILES), "video_files")
    ids, clips, scores, captions = {}, [], [], []
    for index, spec in enumerate(CLIPS_SPEC):
        start = index * CLIP_FRAMES
        cid = clip_id(vid, start, start + CLIP_FRAMES)
        ids[spec.name] = cid
        clip_path = root / f"{spec.name}.mp4"
        make_video(clip_path, [Shot(CLIP_FRAMES, seed=index + 1)], fps=FPS, size=SIZE)
        clips.append(_clip_row(cid, vid, index, start, str(clip_path)))
        if spec.aesthetic is not None:
            scores.append(_score_row(cid, spec))
        captions.append(_caption_row(cid, "source", "short", f"source caption of {spec.name}"))
        if spec.dense_caption:
            captions.append(_caption_row(cid, "florence2", "dense", spec.dense_caption))
    lake.append(spark.createDataFrame(clips, CLIPS), "clips")
    lake.append(spark.createDataFrame(scores, SCORES), "scores")
    lake.append(spark.createDataFrame(captions, CAPTIONS), "captions")
    (root / "lost.mp4").unlink()
    return ids


def _video_row(vid: str, path: str) -> dict:
    return {"video_id": vid, "source": "generic", "source_video_id": "film", "url": path,
            "caption": "a film", "duration_s": CLIP_FRAMES * len(CLIPS_SPEC) / FPS, "clip_hints": None,
            "extra": {}, "ingest_batch": "test", "ingested_at": NOW}


def _video_file_row(vid: str, path: str) -> dict:
    return {"video_id": vid, "status": "ok", "error": None, "url": path, "uri": path, "bytes": 1, "sha256": None,
            "container": "mp4", "codec": "h264", "width": SIZE[0], "height": SIZE[1], "fps": FPS,
            "num_frames": CLIP_FRAMES * len(CLIPS_SPEC), "duration_s": None, "has_audio": False, "attempts": 1,
            "fetched_at": NOW}


def _clip_row(cid: str, vid: str, index: int, start: int, path: str) -> dict:
    return {"clip_id": cid, "video_id": vid, "clip_index": index, "start_s": start / FPS,
            "end_s": (start + CLIP_FRAMES) / FPS, "start_frame": start, "end_frame": start + CLIP_FRAMES,
            "num_frames": CLIP_FRAMES, "fps": FPS, "width": SIZE[0], "height": SIZE[1],
            "aspect_ratio": SIZE[1] / SIZE[0], "resolution": "240p", "detector": "content",
            "detector_params": "{}", "uri": path, "created_at": NOW}


def _score_row(cid: str, spec: FakeClip) -> dict:
    return {"clip_id": cid, "aesthetic": spec.aesthetic, "aesthetic_frames": [spec.aesthetic],
            "pwatermark": spec.pwatermark, "ocr_area_ratio": spec.ocr_area_ratio, "motion": spec.motion,
            "nsfw": 0.01, "brightness": 120.0, "sharpness": 50.0, "frames_sampled": 3,
            "scorer_versions": {"aesthetic": "test"}, "errors": {}, "scored_at": NOW}


def _caption_row(cid: str, model: str, kind: str, text: str) -> dict:
    return {"clip_id": cid, "model": model, "kind": kind, "prompt": None, "caption": text,
            "words": len(text.split()), "quality": "ok", "match": 0.3, "model_id": model, "model_revision": None,
            "created_at": NOW}

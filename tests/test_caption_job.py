"""The caption job on real Spark (local[2]) and real Delta tables, with random-weight Florence-2 and CLIP."""
from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import pytest
from media import Shot, make_video
from score_models import save_tiny_clip
from stage_process import kill_after_first_commit, start_stage, summary_rows

from jobs import caption
from jobs.cli import run_stage
from jobs.config import load_config
from jobs.context import JobContext
from schemas.ids import clip_id, video_id
from udfs.captioners.random_init import save_random_florence2
from udfs.errors import VidlakeError

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
FPS = 25


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("caption-job-checkpoints")
    return {"florence2": save_random_florence2(root / "florence2"), "clip": save_tiny_clip(root / "clip")}


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("caption-job-media")
    make_video(root / "street.mp4", [Shot(50, seed=11), Shot(50, seed=12, moving_object=True)], size=(128, 72))
    (root / "gone.mp4").write_bytes(b"truncated download")
    return {"street": str(root / "street.mp4"), "gone": str(root / "gone.mp4")}


def job_overrides(lake_root: str, checkpoints: dict[str, Path], *extra: str) -> list[str]:
    return [
        f"lake.root={lake_root}", "spark.master=local[2]",
        f"models.florence2.path={checkpoints['florence2']}", f"models.clip.path={checkpoints['clip']}",
        "caption.model=florence2", "caption.florence2.frame_size=64", "caption.florence2.generation.num_beams=1",
        "caption.florence2.generation.max_new_tokens=6", "caption.florence2.generation.min_new_tokens=6",
        "caption.decode_workers=2", *extra,
    ]


def job_context(spark, lake, checkpoints, *extra: str) -> JobContext:
    cfg = load_config("local", job_overrides(lake.root, checkpoints, *extra))
    return JobContext(cfg, spark, lake)


def args(**values) -> argparse.Namespace:
    return argparse.Namespace(**{"model": None, "kinds": None, "retry_errors": False, **values})


def write_lake(spark, lake, media: dict[str, str], street_spans: int = 0) -> list[str]:
    """A Panda-70M video with a clip hint, its file, three clips of it, and a clip of a broken file;
    with `street_spans`, that many clips of the street video instead."""
    street, gone = video_id("panda70m", "street"), video_id("panda70m", "gone")
    hints = [(0.0, 2.0, "The video shows a street with a red car.", 0.5)]
    videos = [
        (street, "panda70m", "street", media["street"], "A street.", 4.0, hints, None, "b1", NOW),
        (gone, "panda70m", "gone", media["gone"], "A broken video.", 4.0, None, None, "b1", NOW),
    ]
    lake.append(spark.createDataFrame(videos, lake.read("videos").schema), "videos")
    files = [(street, "ok", None, None, media["street"], None, None, None, None, 128, 72, 25.0, 100, 4.0,
              False, 1, NOW)]
    lake.append(spark.createDataFrame(files, lake.read("video_files").schema), "video_files")
    spans = [(street, 0, 0, 50), (street, 1, 50, 100), (street, 2, 10, 40), (gone, 0, 0, 50)]
    if street_spans:
        spans = [(street, index, 10 * index, 10 * index + 20) for index in range(street_spans)]
    clips = [
        (clip_id(vid, s, e), vid, index, s / FPS, e / FPS, s, e, e - s, 25.0, 128, 72, 72 / 128, "240p",
         "test", None, media["street"] if vid == street else media["gone"], NOW)
        for vid, index, s, e in spans
    ]
    lake.append(spark.createDataFrame(clips, lake.read("clips").schema), "clips")
    return [c[0] for c in clips]


def captions(lake) -> list:
    return lake.read("captions").orderBy("clip_id", "model", "kind").collect()


def test_caption_job_captions_every_clip_and_kind_once(spark, lake, checkpoints, media, capsys):
    clip_ids = write_lake(spark, lake, media)
    ctx = job_context(spark, lake, checkpoints)

    assert caption.run(ctx, args(kinds="short,dense")) == 0
    rows = captions(lake)

    assert sorted((r.clip_id, r.kind) for r in rows) == sorted((c, k) for c in clip_ids for k in ("short", "dense"))
    by_key = {(r.clip_id, r.kind): r for r in rows}
    good = by_key[(clip_ids[0], "dense")]
    assert good.model == "florence2" and good.prompt == "<MORE_DETAILED_CAPTION>"
    assert good.caption and good.words > 0 and good.quality in ("ok", "degenerate")
    assert -1 <= good.match <= 1
    assert good.model_id == str(checkpoints["florence2"]) and good.model_revision.startswith("local-")
    broken = by_key[(clip_ids[3], "short")]
    assert broken.quality == "error" and broken.caption is None and "gone.mp4" in broken.error
    assert "caption: 8 rows" in capsys.readouterr().out

    assert caption.run(ctx, args(kinds="short,dense")) == 0  # nothing pending: no work, no new rows
    assert "caption: 0 rows" in capsys.readouterr().out
    assert len(captions(lake)) == 8

    retry = caption.pending_work(ctx, "florence2", ["short", "dense"], retry_errors=True).collect()
    assert sorted((r.clip_id, r.kind) for r in retry) == [(clip_ids[3], "dense"), (clip_ids[3], "short")]


def test_a_caption_run_killed_after_its_first_batch_resumes_with_the_rest_only(spark, lake, checkpoints, media,
                                                                             tmp_path, capsys):
    clip_ids = write_lake(spark, lake, media, street_spans=8)
    overrides = job_overrides(lake.root, checkpoints, "caption.commit_every=2", f"lake.engine={lake.engine_name}",
                              "spark.conf.spark.ui.enabled='false'")
    argv = ["caption", "--kinds", "short", *[arg for item in overrides for arg in ("--set", item)]]
    job = start_stage(argv, tmp_path / "caption.log", tmp_path)
    kill_after_first_commit(job, tmp_path / "caption.log", "caption")
    log = (tmp_path / "caption.log").read_text()
    assert job.returncode == -9, log[-3000:]
    committed = {r.clip_id: r for r in captions(lake)}
    assert 0 < len(committed) < len(clip_ids), log[-3000:]  # killed with batches left

    capsys.readouterr()
    ctx = job_context(spark, lake, checkpoints)
    assert caption.run(ctx, args(kinds="short")) == 0
    assert summary_rows(capsys.readouterr().out, "caption") == len(clip_ids) - len(committed)  # nothing redone
    rows = captions(lake)
    assert sorted(r.clip_id for r in rows) == sorted(clip_ids)  # each (clip, kind) once
    by_id = {r.clip_id: r for r in rows}
    assert all(by_id[key].created_at == row.created_at for key, row in committed.items())  # not recomputed

    from jobs.lake import Lake

    uninterrupted = Lake(spark, str(tmp_path / "uninterrupted"), lake.engine_name)
    write_lake(spark, uninterrupted, media, street_spans=8)
    assert caption.run(job_context(spark, uninterrupted, checkpoints), args(kinds="short")) == 0
    expected = {r.clip_id: r for r in captions(uninterrupted)}
    columns = ("model", "kind", "prompt", "caption", "words", "quality", "error", "model_id")
    assert {k: [getattr(r, c) for c in columns] for k, r in by_id.items()} == {
        k: [getattr(r, c) for c in columns] for k, r in expected.items()}
    assert all(abs(by_id[k].match - r.match) < 1e-3 for k, r in expected.items())


def test_source_captions_come_from_the_clip_hint_or_the_video(spark, lake, checkpoints, media):
    clip_ids = write_lake(spark, lake, media)
    ctx = job_context(spark, lake, checkpoints, "caption.match.enabled=false")  # match: see test_captioners

    assert caption.run(ctx, args(model="source")) == 0
    rows = {r.clip_id: r for r in captions(lake)}

    assert {r.model for r in rows.values()} == {"source"} and {r.kind for r in rows.values()} == {"short"}
    assert rows[clip_ids[0]].caption == "A street with a red car."  # the hint over 0-2 s, cleaned
    assert rows[clip_ids[2]].caption == "A street with a red car."  # 0.4-1.6 s: inside the hint
    assert rows[clip_ids[1]].caption == "A street."  # 2-4 s: no hint there, the video's caption
    assert rows[clip_ids[0]].model_id == "panda70m"
    assert rows[clip_ids[3]].caption == "A broken video."  # no frames needed for the source's caption


def test_missing_weights_stop_the_job_before_any_captioning(spark, lake, checkpoints, media, tmp_path):
    write_lake(spark, lake, media)
    ctx = job_context(spark, lake, checkpoints, f"models.florence2.path={tmp_path / 'no-such-model'}")

    with pytest.raises(VidlakeError, match="florence2.*no-such-model.*models.florence2.path"):
        caption.run(ctx, args())
    assert not lake.exists("captions")


def test_an_unknown_kind_is_a_one_line_error_from_the_cli(spark, lake, checkpoints, media, capsys):
    write_lake(spark, lake, media)  # the caption stage reads a lake that must exist
    overrides = job_overrides(lake.root, checkpoints)
    argv = ["caption", "--model", "florence2", "--kinds", "short,camera"]
    for item in overrides:
        argv += ["--set", item]

    assert run_stage(argv) == 2
    assert "florence2 cannot write caption kind(s) camera" in capsys.readouterr().err

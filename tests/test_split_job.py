"""`vidlake split` on real Spark (local[2]) and real Delta tables, over real video files."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import av
import pytest
from media import make_video, packaged_video, standard_segments

from jobs import split as split_job
from schemas.ids import clip_id
from udfs.errors import VidlakeError

ROOT = Path(__file__).resolve().parent.parent


def add_video_files(lake, spark, files: dict[str, tuple[str, str]]) -> None:
    """video_files rows: video_id -> (status, uri)."""
    rows = [(video_id, status, uri) for video_id, (status, uri) in files.items()]
    lake.append(spark.createDataFrame(rows, "video_id string, status string, uri string"), "video_files")


def add_videos(lake, spark, hints: dict[str, list[tuple[float, float]] | None]) -> None:
    now = datetime.now(timezone.utc)
    rows = [
        (video_id, "panda70m", video_id, f"https://example.invalid/{video_id}",
         None if spans is None else [(start, end, None, None) for start, end in spans], "test", now)
        for video_id, spans in hints.items()
    ]
    schema = ("video_id string, source string, source_video_id string, url string, "
              "clip_hints array<struct<start_s:double,end_s:double,caption:string,score:double>>, "
              "ingest_batch string, ingested_at timestamp")
    lake.append(spark.createDataFrame(rows, schema), "videos")


def split(ctx, detector: str | None = None, retry_errors: bool = False) -> int:
    return split_job.run(ctx, argparse.Namespace(detector=detector, retry_errors=retry_errors))


def frame_count(path: str) -> int:
    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("split_job") / "synthetic.mp4"
    make_video(path, standard_segments(shot_frames=60), fps=25, size=(192, 108))
    return str(path)


def test_split_writes_clips_and_errors_and_a_rerun_does_nothing(ctx, spark, synthetic, tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))
    bikes = str(packaged_video("bikes"))
    add_video_files(ctx.lake, spark, {
        "synthetic": ("ok", synthetic),
        "bikes": ("ok", bikes),
        "broken": ("ok", str(broken)),
        "unfetched": ("http_error", None),
    })
    ctx.cfg.set("split.clips.min_clip_s", 1.0)
    assert split(ctx) == 0

    clips = ctx.lake.read("clips").orderBy("video_id", "start_frame").toPandas()
    errors = ctx.lake.read("split_errors").toPandas()
    assert set(clips["video_id"]) == {"synthetic", "bikes"}
    assert list(errors["video_id"]) == ["broken"] and errors["reason"].iloc[0]
    assert "unfetched" not in set(clips["video_id"]) | set(errors["video_id"])
    for _, group in clips.groupby("video_id"):
        assert list(group["clip_index"]) == list(range(len(group)))
        assert (group["start_frame"].to_numpy()[1:] >= group["end_frame"].to_numpy()[:-1]).all()
        assert (group["end_s"] - group["start_s"]).min() >= 1.0 - 1e-9
        assert (group["end_s"] - group["start_s"]).max() <= 10.0 + 1e-9
    assert all(row.clip_id == clip_id(row.video_id, row.start_frame, row.end_frame) for row in clips.itertuples())
    assert (clips["detector"] == "content").all() and clips["detector_params"].str.contains("threshold").all()
    assert set(clips["uri"]) == {synthetic, bikes}

    assert split(ctx) == 0
    assert ctx.lake.read("clips").count() == len(clips)
    assert ctx.lake.read("split_errors").count() == 1
    assert len(ctx.lake.history("clips")) == 1


def test_a_job_stopped_after_its_first_commit_resumes_without_duplicates(ctx, spark, synthetic, monkeypatch):
    bikes, carphone = str(packaged_video("bikes")), str(packaged_video("carphone_pristine"))
    add_video_files(ctx.lake, spark, {"synthetic": ("ok", synthetic), "bikes": ("ok", bikes),
                                      "carphone": ("ok", carphone)})
    ctx.cfg.set("split.clips.min_clip_s", 1.0)
    ctx.cfg.set("split.commit_every", 1)
    real_batch, batches_run = split_job.split_batch, []

    def stop_after_one(*args, **kwargs):
        if batches_run:
            raise KeyboardInterrupt("stopped after the first commit")
        batches_run.append(1)
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(split_job, "split_batch", stop_after_one)
    with pytest.raises(KeyboardInterrupt):
        split(ctx)
    first = ctx.lake.read("clips").toPandas()  # the first batch's videos (a hash of their ids picks them)
    assert 0 < first["video_id"].nunique() < 3 and len(ctx.lake.history("clips")) == 1

    monkeypatch.setattr(split_job, "split_batch", real_batch)
    assert split(ctx) == 0
    clips = ctx.lake.read("clips").toPandas()
    assert set(clips["video_id"]) == {"synthetic", "bikes", "carphone"}
    assert clips["clip_id"].is_unique
    kept = clips[clips["video_id"].isin(first["video_id"])]
    assert sorted(kept["clip_id"]) == sorted(first["clip_id"])


def test_a_commit_size_that_is_not_positive_is_a_clear_error(ctx):
    with pytest.raises(VidlakeError, match="'split.commit_every' must be at least 1, got 0"):
        ctx.cfg.set("split.commit_every", 0)


def test_hints_detector_uses_the_spans_the_source_shipped(ctx, spark):
    bikes, carphone = str(packaged_video("bikes")), str(packaged_video("carphone_pristine"))
    add_video_files(ctx.lake, spark, {"bikes": ("ok", bikes), "carphone": ("ok", carphone)})
    add_videos(ctx.lake, spark, {"bikes": [(1.2, 3.6), (5.48, 8.0), (12.0, 14.0)], "carphone": None})
    assert split(ctx, detector="hints") == 0

    clips = ctx.lake.read("clips").orderBy("start_frame").toPandas()
    assert list(zip(clips["start_frame"], clips["end_frame"], strict=True)) == [(30, 90), (137, 200)]
    assert (clips["detector"] == "hints").all()
    errors = ctx.lake.read("split_errors").orderBy("video_id").toPandas()
    assert list(errors["video_id"]) == ["bikes", "carphone"]
    assert "starts after the video ends" in errors["reason"].iloc[0]  # the 12-14 s hint of a 10 s video
    assert "no clip hints" in errors["reason"].iloc[1]

    # Another detector still splits the video that had no hints.
    assert split(ctx, detector="adaptive") == 0
    assert set(ctx.lake.read("clips").toPandas()["video_id"]) == {"bikes", "carphone"}


def test_transnetv2_splits_through_the_gpu_stage_on_a_machine_without_one(ctx, spark):
    bikes = str(packaged_video("bikes"))
    add_video_files(ctx.lake, spark, {"bikes": ("ok", bikes)})
    ctx.cfg.set("split.clips.min_clip_s", 0.5)  # TransNetV2 cuts bikes into six short scenes
    assert split(ctx, detector="transnetv2") == 0

    clips = ctx.lake.read("clips").orderBy("start_frame").toPandas()
    assert len(clips) >= 1 and (clips["detector"] == "transnetv2").all()
    assert clips["end_frame"].max() <= frame_count(bikes)
    assert not ctx.lake.exists("split_errors")


def test_spark_submit_entry_point_materializes_clips(lake, spark):
    carphone = str(packaged_video("carphone_pristine"))
    add_video_files(lake, spark, {"carphone": ("ok", carphone)})
    command = [sys.executable, str(ROOT / "jobs" / "split.py"), "--lake", lake.root,
               "--set", "spark.master=local[1]", "--set", "split.materialize=reencode",
               "--set", "split.reencode.max_short_side=72"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # spark-submit gets jobs/ udfs/ schemas/ as --py-files
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[vidlake] split: 1 rows" in result.stdout
    clip_files = sorted((Path(lake.root) / "blobs" / "clips" / "carphone").glob("*.mp4"))
    assert len(clip_files) == 1 and frame_count(str(clip_files[0])) == 120
    assert lake.read("clips").first().uri == str(clip_files[0].relative_to(Path(lake.root) / "blobs"))


def test_videos_are_split_in_whole_waves_of_the_task_slots():
    assert split_job.split_partitions(2, videos_per_task=4, parallelism=8) == 2  # not one task on one core
    assert split_job.split_partitions(12, videos_per_task=4, parallelism=2) == 4  # 2 waves of 3 videos a task
    assert split_job.split_partitions(20, videos_per_task=4, parallelism=8) == 8
    assert split_job.split_partitions(1000, videos_per_task=4, parallelism=8) == 256  # 32 waves of ~4
    assert split_job.split_partitions(0, videos_per_task=4, parallelism=8) == 1

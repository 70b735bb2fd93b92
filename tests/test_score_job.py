"""The score job on real Spark: local[2] without a resource profile, and local-cluster with two fake GPUs."""
from __future__ import annotations

import re
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from media import Shot, make_video
from score_models import models_conf
from stage_process import env, kill_after_first_commit, start_stage, summary_rows

from jobs.config import parse_override
from jobs.lake import Lake
from schemas.ids import clip_id

ROOT = Path(__file__).resolve().parent.parent
FPS = 25


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("score_job_videos")
    panning, static = folder / "panning.mp4", folder / "static.mp4"
    make_video(panning, [Shot(75, seed=11, pan=(5.0, 2.0))], fps=FPS, size=(320, 180))
    make_video(static, [Shot(75, seed=11, pan=(0.0, 0.0))], fps=FPS, size=(320, 180))
    return {"panning": str(panning), "static": str(static)}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return models_conf(tmp_path_factory.getbasetemp() / "score_models")  # shared by this run's test modules


def clip_rows(videos: dict[str, str], missing_uri: str) -> list[dict]:
    """Two real clips and one whose file is gone (it must get an error row, not be dropped)."""
    rows = []
    for index, (name, uri) in enumerate([*videos.items(), ("missing", missing_uri)]):
        video = f"video{index}"
        rows.append(dict(
            clip_id=clip_id(video, 0, 75), video_id=video, clip_index=0, start_s=0.0, end_s=3.0, start_frame=0,
            end_frame=75, num_frames=75, fps=float(FPS), width=320, height=180, aspect_ratio=180 / 320,
            resolution="240p", detector="test", detector_params=None, uri=uri,
            created_at=datetime.now(timezone.utc).replace(tzinfo=None), name=name,
        ))
    return rows


def write_clips(spark, lake, rows: list[dict]) -> dict[str, str]:
    from schemas.tables import CLIPS

    names = {row["clip_id"]: row.pop("name") for row in rows}
    lake.append(spark.createDataFrame(rows, CLIPS), "clips")
    return names


def score_conf_overrides(models: dict) -> list[str]:
    return [f"models.{name}.path={entry['path'] if entry['path'] else 'null'}" for name, entry in models.items()]


def test_score_on_local_runs_without_a_profile_and_scores_only_what_is_pending(ctx, videos, models, tmp_path):
    from jobs import score

    for override in score_conf_overrides(models) + ["score.frames.n=2", "score.motion.pairs=2"]:
        key, value = parse_override(override)
        ctx.cfg.set(key, value)
    names = write_clips(ctx.spark, ctx.lake, clip_rows(videos, str(tmp_path / "gone.mp4")))
    assert score.run(ctx, _args("luma,motion")) == 0
    scores = {r.clip_id: r for r in ctx.lake.read("scores").collect()}
    by_name = {names[key]: row for key, row in scores.items()}
    assert set(by_name) == {"panning", "static", "missing"}
    assert by_name["static"].motion < 0.05 and by_name["panning"].motion > 20 * max(by_name["static"].motion, 0.01)
    assert 0 < by_name["static"].brightness < 255 and by_name["static"].sharpness > 0
    assert by_name["missing"].motion is None and "does not exist" in by_name["missing"].errors["motion"]
    assert set(by_name["panning"].scorer_versions) == {"luma", "motion"} and by_name["panning"].errors is None
    assert by_name["panning"].aesthetic is None

    # A new scorer later: only its columns are computed; the earlier ones and their versions stay.
    assert score.run(ctx, _args("luma,motion,aesthetic")) == 0
    after = {names[r.clip_id]: r for r in ctx.lake.read("scores").collect()}
    assert len(after) == 3
    assert after["panning"].motion == by_name["panning"].motion
    assert after["panning"].scored_at > by_name["panning"].scored_at
    assert len(after["panning"].aesthetic_frames) == 2 and after["panning"].aesthetic is not None
    assert set(after["panning"].scorer_versions) == {"luma", "motion", "aesthetic"}
    assert set(after["missing"].errors) == {"luma", "motion", "aesthetic"}

    # Nothing pending: a re-run scores nothing and rewrites nothing.
    versions = len(ctx.lake.history("scores"))
    assert score.run(ctx, _args("luma,motion,aesthetic")) == 0
    assert len(ctx.lake.history("scores")) == versions


def test_missing_weights_stop_the_job_before_anything_is_scored(ctx, videos, tmp_path):
    from jobs import score
    from udfs.weights import MissingWeightsError

    write_clips(ctx.spark, ctx.lake, clip_rows(videos, str(tmp_path / "gone.mp4")))
    ctx.cfg.set("models.aesthetic.path", str(tmp_path / "no-such-head.pth"))
    with pytest.raises(MissingWeightsError, match=r"models\.aesthetic\.path") as error:
        score.run(ctx, _args("luma,aesthetic"))
    assert "no-such-head.pth" in str(error.value) and "improved-aesthetic-predictor" in str(error.value)
    assert not ctx.lake.exists("scores")


def test_score_on_local_cluster_with_fake_gpus_uses_the_profile(spark, cfg, videos, tmp_path):
    """The console entry point in its own process: local-cluster needs its own SparkContext."""
    script = ROOT / "tests" / "fake_gpus.sh"
    spark_confs = {
        "spark.worker.resource.gpu.amount": 2, "spark.worker.resource.gpu.discoveryScript": script,
        "spark.executor.resource.gpu.amount": 2, "spark.executor.resource.gpu.discoveryScript": script,
        "spark.executor.memory": "768m", "spark.ui.enabled": "false",
    }
    lake = Lake(spark, str(tmp_path / "lake"), cfg.get("lake.engine"), cfg.get("lake.max_rows_per_file"))
    write_clips(spark, lake, clip_rows(videos, str(tmp_path / "gone.mp4")))
    overrides = ["spark.master=local-cluster[1,2,1024]", "score.gpus_per_task=0.5", "score.resource_profile=always",
                 "score.frames.n=2", "score.motion.pairs=2",
                 *[f"spark.conf.{key}={value}" for key, value in spark_confs.items()]]
    command = [sys.executable, "-c", "from jobs.cli import main; main()", "score", "--lake", lake.root,
               "--scorers", "luma,motion", *[arg for item in overrides for arg in ("--set", item)]]
    result = subprocess.run(command, cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resource profile" in result.stderr
    summary = next(line for line in result.stdout.splitlines() if line.startswith("[vidlake] score:"))
    assert "3 rows" in summary and "1 failed" in summary
    assert "spark gpu 0" in summary or "spark gpu 1" in summary, summary


def many_clips(videos: dict[str, str], count: int) -> list[dict]:
    """`count` real clips, overlapping spans of the two test videos."""
    rows = []
    for index in range(count):
        name = "panning" if index % 2 else "static"
        video, start = f"video-{name}", 5 * (index // 2)
        rows.append(dict(
            clip_id=clip_id(video, start, start + 25), video_id=video, clip_index=index // 2, start_s=start / FPS,
            end_s=(start + 25) / FPS, start_frame=start, end_frame=start + 25, num_frames=25, fps=float(FPS),
            width=320, height=180, aspect_ratio=180 / 320, resolution="240p", detector="test", detector_params=None,
            uri=videos[name], created_at=datetime.now(timezone.utc).replace(tzinfo=None), name=f"{name}{index}",
        ))
    return rows


def test_a_score_run_killed_after_its_first_batch_resumes_with_the_rest_only(ctx, videos, tmp_path, capsys):
    from jobs import score

    rows = many_clips(videos, 12)
    write_clips(ctx.spark, ctx.lake, [dict(r) for r in rows])
    argv = ["score", "--lake", ctx.lake.root, "--scorers", "luma", "--set", "score.commit_every=2",
            "--set", f"lake.engine={ctx.lake.engine_name}", "--set", "spark.master=local[2]",
            "--set", "spark.conf.spark.ui.enabled='false'"]
    job = start_stage(argv, tmp_path / "score.log", tmp_path)
    kill_after_first_commit(job, tmp_path / "score.log", "score")
    log = (tmp_path / "score.log").read_text()
    assert job.returncode == -signal.SIGKILL, log[-3000:]
    committed = {r.clip_id: r for r in ctx.lake.read("scores").collect()}
    assert 0 < len(committed) < len(rows), log[-3000:]  # killed with batches left
    assert re.search(r"score batch \d/6 \(luma\) committed: \d+/12 rows .* rows/s, 0 failed, ETA", log), log[-3000:]

    capsys.readouterr()
    assert score.run(ctx, _args("luma")) == 0
    assert summary_rows(capsys.readouterr().out, "score") == len(rows) - len(committed)  # nothing scored twice
    after = ctx.lake.read("scores").collect()
    assert sorted(r.clip_id for r in after) == sorted(r["clip_id"] for r in rows)  # each clip once
    by_id = {r.clip_id: r for r in after}
    assert all(by_id[key].scored_at == row.scored_at for key, row in committed.items())  # not recomputed

    uninterrupted = Lake(ctx.spark, str(tmp_path / "uninterrupted"), ctx.lake.engine_name)
    write_clips(ctx.spark, uninterrupted, [dict(r) for r in rows])
    from jobs.context import JobContext

    ctx.cfg.set("lake.root", uninterrupted.root)
    assert score.run(JobContext(ctx.cfg, ctx.spark, uninterrupted), _args("luma")) == 0
    expected = {r.clip_id: r for r in uninterrupted.read("scores").collect()}
    columns = ("brightness", "sharpness", "frames_sampled", "scorer_versions", "errors")
    assert {k: [getattr(r, c) for c in columns] for k, r in by_id.items()} == {
        k: [getattr(r, c) for c in columns] for k, r in expected.items()}


def _args(scorers: str):
    import argparse

    return argparse.Namespace(scorers=scorers, retry_errors=False)

"""spark-submit.sh submits a stage to a real local standalone cluster (local-cluster) with GPU resources
from conf (fake GPU addresses from tests/fake_gpus.sh), and the stage's resource profile runs; with
--delta-packages the stage writes through Delta's JVM writer."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from datetime import datetime, timezone
from pathlib import Path

from loopback_server import LoopbackServer, file_responder
from media import Shot, make_video

from jobs.cli import run_stage
from jobs.config import load_config
from jobs.delta_packages import delta_coordinates, ivy_cache_holds, ivy_dir
from jobs.lake import Lake
from jobs.submit_conf import gpu_confs
from schemas.ids import clip_id
from schemas.tables import CLIPS

ROOT = Path(__file__).resolve().parent.parent
FAKE_GPUS = ROOT / "tests" / "fake_gpus.sh"


def _clip_rows(video: Path) -> list[dict]:
    now = datetime.now(timezone.utc).replace(tzinfo=None)
    return [dict(clip_id=clip_id("submitted", start, start + 25), video_id="submitted", clip_index=index,
                 start_s=start / 25, end_s=(start + 25) / 25, start_frame=start, end_frame=start + 25, num_frames=25,
                 fps=25.0, width=96, height=54, aspect_ratio=54 / 96, resolution="240p", detector="test",
                 detector_params=None, uri=str(video), created_at=now)
            for index, start in enumerate((0, 25))]


def test_score_stage_submitted_to_local_cluster_runs_under_its_resource_profile(spark, lake, tmp_path):
    video = tmp_path / "clip.mp4"
    make_video(video, [Shot(50, seed=3)], fps=25, size=(96, 54))
    lake.append(spark.createDataFrame(_clip_rows(video), CLIPS), "clips")
    overrides = ["score.resource_profile=always", "score.gpus_per_task=0.5", "score.executor_gpus=2",
                 f"score.gpu_discovery_script={FAKE_GPUS}", "score.frames.n=2"]
    submit_args = (f"--master local-cluster[1,1,1024] --conf spark.worker.resource.gpu.amount=2 "
                   f"--conf spark.worker.resource.gpu.discoveryScript={FAKE_GPUS} --conf spark.executor.memory=768m "
                   f"--conf spark.ui.enabled=false")
    command = [str(ROOT / "spark-submit.sh"), "score", "--conf", "local", "--lake", lake.root, "--scorers", "luma",
               *[arg for item in overrides for arg in ("--set", item)]]
    env = {**os.environ, "VIDLAKE_SUBMIT_ARGS": submit_args, "PYTHON": sys.executable}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    # spark-submit's PythonRunner merges the driver's stderr into its stdout
    assert "resource profile 1: 0.5 GPU" in result.stdout + result.stderr
    summary = next(line for line in result.stdout.splitlines()
                   if line.startswith("[vidlake] score:") and " rows in " in line)
    assert "2 rows" in summary and "spark gpu" in summary, summary
    assert {row.clip_id for row in lake.read("scores").collect()} == {r["clip_id"] for r in _clip_rows(video)}
    with zipfile.ZipFile(ROOT / "build" / "vidlake-pyfiles.zip") as archive:
        names = set(archive.namelist())
    assert {"jobs/score.py", "udfs/scorers/luma.py", "schemas/tables.py", "conf/defaults/score.yaml"} <= names


def test_gpu_confs_come_from_the_stage_conf():
    cfg = load_config("cluster", ["caption.gpus_per_task=1.0", "caption.executor_gpus=4"])
    assert gpu_confs(cfg, "caption") == {
        "spark.executor.resource.gpu.amount": "4",
        "spark.executor.resource.gpu.discoveryScript": str(ROOT / "scripts" / "discover_gpus.sh"),
        "spark.task.resource.gpu.amount": "1.0",
    }
    assert gpu_confs(cfg, "download") == {}
    assert gpu_confs(load_config("cluster", ["split.detector=transnetv2"]), "split")[
        "spark.task.resource.gpu.amount"] == "0.25"


def test_an_unknown_stage_is_refused_with_the_list(tmp_path):
    result = subprocess.run([str(ROOT / "spark-submit.sh"), "scroe"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable}, timeout=120)
    assert result.returncode == 2 and "unknown stage 'scroe'" in result.stderr and "score" in result.stderr


def test_split_submitted_with_delta_packages_to_local_cluster_commits_through_delta_spark(spark, tmp_path):
    """`spark-submit.sh --delta-packages split` on a standalone local cluster (two workers): spark-submit
    resolves Delta's jars, the session sees them on its classpath (no packages of its own), and the
    clips table's commits are Delta's JVM writer's, whatever engine ingested and downloaded the lake."""
    with LoopbackServer() as server:
        for name, seed in (("a.mp4", 1), ("b.mp4", 4)):
            make_video(tmp_path / name, [Shot(30, seed=seed), Shot(30, seed=seed + 1)], fps=25, size=(96, 54))
            server.routes[f"/{name}"] = file_responder((tmp_path / name).read_bytes())
        sources = tmp_path / "sources.csv"
        sources.write_text("url,caption\n" + "".join(f"{server.url('/' + n)},a clip\n" for n in ("a.mp4", "b.mp4")))
        common = ["--lake", str(tmp_path / "lake"), "--set", "download.allow_hosts=[127.0.0.1]"]
        assert run_stage(["ingest", "--format", "generic", "--input", str(sources), *common]) == 0
        assert run_stage(["download", *common]) == 0
    submit_args = ("--master local-cluster[2,1,1024] --conf spark.executor.memory=768m --conf spark.ui.enabled=false")
    env = {**os.environ, "VIDLAKE_SUBMIT_ARGS": submit_args, "PYTHON": sys.executable}
    command = [str(ROOT / "spark-submit.sh"), "--delta-packages", "split", "--conf", "local", *common]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr  # spark-submit's PythonRunner merges the driver's stderr into stdout
    assert result.returncode == 0, output[-3000:]
    assert "[vidlake] lake engine: delta-spark (Delta's classes on the classpath of the running Spark)" in output
    log = sorted((tmp_path / "lake" / "clips" / "_delta_log").glob("*.json"))
    assert log, "split wrote no clips commit"
    delta_release = delta_coordinates().rsplit(":", 1)[1]
    for commit in log:
        actions = [json.loads(line) for line in commit.read_text().splitlines()]
        info = next(action["commitInfo"] for action in actions if "commitInfo" in action)
        assert info["engineInfo"].startswith("Apache-Spark/") and f"Delta-Lake/{delta_release}" in info["engineInfo"]
    # every downloaded video has its clips, or a split_errors row saying why it has none
    lake = Lake(spark, str(tmp_path / "lake"))
    split = {r.video_id for r in lake.read("clips").select("video_id").union(
        lake.read("split_errors").select("video_id")).collect()}
    assert split == {r.video_id for r in lake.read("video_files").where("status = 'ok'").collect()}
    assert lake.row_count("clips") > 0
    # what spark-submit just resolved is what lake.delta_packages=auto reads as the jars in Ivy's cache
    assert ivy_cache_holds(ivy_dir({}), delta_coordinates())

"""The exports read back as trainers read them, on a lake split by the real split stage with the
default `split.materialize: none` (every clip a frame range of its source video), and curate's
checks of its outputs, on real Spark."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from media import Shot, make_video

from jobs import curate
from jobs import split as split_job
from jobs.cli import run_stage
from jobs.config import load_config
from jobs.context import JobContext
from jobs.lake import Lake
from udfs.errors import VidlakeError

ROOT = Path(__file__).resolve().parent.parent
# video name -> (shots of 60 frames, size, caption); `gone`'s file is deleted after the split.
VIDEOS = {
    "captioned": (3, (192, 108), "a kite over a field"),
    "uncaptioned": (2, (160, 90), None),
    "gone": (1, (192, 108), "a video deleted after the split"),
}
FPS = 25


@pytest.fixture(scope="module")
def split_lake(spark, engine, tmp_path_factory):
    """(lake root, source files by video name): videos split by `vidlake split` with its defaults."""
    root = tmp_path_factory.mktemp("export")
    ctx = context(spark, engine, root / "lake")
    assert ctx.cfg.get("split.materialize") == "none"
    files = {}
    for seed, (name, (shots, size, _)) in enumerate(VIDEOS.items()):
        files[name] = root / f"{name}.mp4"
        make_video(files[name], [Shot(60, seed=seed * 10 + i) for i in range(shots)], fps=FPS, size=size)
    now = datetime.now(timezone.utc)
    ctx.lake.append(ctx.spark.createDataFrame(
        [(name, "generic", name, str(files[name]), caption, "test", now) for name, (_, _, caption) in VIDEOS.items()],
        "video_id string, source string, source_video_id string, url string, caption string, "
        "ingest_batch string, ingested_at timestamp"), "videos")
    ctx.lake.append(ctx.spark.createDataFrame(
        [(name, "ok", str(path)) for name, path in files.items()], "video_id string, status string, uri string"),
        "video_files")
    assert split_job.run(ctx, argparse.Namespace(detector=None, retry_errors=False)) == 0
    files["gone"].unlink()
    return root / "lake", files


def context(spark, engine: str, lake_root: Path, *settings: str) -> JobContext:
    cfg = load_config("local", [f"lake.root={lake_root}", "spark.master=local[2]", "split.clips.min_clip_s=1.0",
                                f"lake.engine={engine}", *settings])
    return JobContext(cfg, spark, Lake(spark, cfg.get("lake.root"), engine))


def curate_args(out, export="opensora-csv", where="num_frames > 0", overwrite=False) -> argparse.Namespace:
    return argparse.Namespace(where=where, sql=None, caption_kind=None, export=export, out=str(out), limit=None,
                              overwrite=overwrite)


def decoded(path: str) -> tuple[list[np.ndarray], float, tuple[int, int]]:
    """Every frame of `path` (gray), its frame rate and (width, height): what Open-Sora's
    `read_video` hands `TemporalRandomCrop`, which samples its window anywhere in those frames."""
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="gray").astype(np.int16) for frame in container.decode(stream)]
        return frames, float(stream.average_rate), (stream.width, stream.height)


def nearest_source_frame(frame: np.ndarray, source: list[np.ndarray], around: int) -> int:
    """The frame of `source` within 3 of `around` that `frame` looks most like."""
    candidates = range(max(0, around - 3), min(len(source), around + 4))
    return min(candidates, key=lambda i: np.abs(source[i] - frame).mean())


def test_opensora_csv_of_unmaterialized_clips_reads_back_as_open_sora_reads_it(spark, engine, split_lake, tmp_path):
    lake_root, files = split_lake
    ctx = context(spark, engine, lake_root)
    clips = ctx.lake.read("clips").where("video_id = 'captioned'").toPandas()
    assert len(clips) == 3 and (clips["uri"] == str(files["captioned"])).all()  # frame ranges of the source
    out = tmp_path / "train.csv"
    assert curate.run(ctx, curate_args(out, where="video_id = 'captioned'")) == 0

    table = pd.read_csv(out)
    assert sorted(table["id"]) == sorted(clips["clip_id"])
    assert "start_frame" not in table.columns  # frames of the source are named so: source_start_frame
    source, _, _ = decoded(str(files["captioned"]))
    for row in table.itertuples():
        assert Path(row.path).parent.parent == tmp_path / "train_clips"
        frames, fps, size = decoded(row.path)
        assert len(frames) == row.num_frames == row.source_end_frame - row.source_start_frame
        assert size == (row.width, row.height) and fps == pytest.approx(row.fps)
        assert row.resolution == row.width * row.height and row.aspect_ratio == pytest.approx(row.height / row.width)
        assert isinstance(row.text, str) and row.text.strip()
        # exactly that clip: its first and last frames are the source's frames at its ends
        assert nearest_source_frame(frames[0], source, row.source_start_frame) == row.source_start_frame
        assert nearest_source_frame(frames[-1], source, row.source_end_frame - 1) == row.source_end_frame - 1


def test_clips_without_caption_are_skipped_and_counted_or_refuse_the_export(spark, engine, split_lake, tmp_path,
                                                                            capsys):
    lake_root, _ = split_lake
    where = "video_id IN ('captioned', 'uncaptioned')"
    out = tmp_path / "skip.csv"
    assert curate.run(context(spark, engine, lake_root), curate_args(out, where=where)) == 0
    table = pd.read_csv(out, keep_default_na=False)
    assert set(table["video_id"]) == {"captioned"} and (table["text"].str.strip() != "").all()
    assert "2 clips left out: no caption (curate.export.missing_caption=skip)" in capsys.readouterr().err

    refused = tmp_path / "fail.csv"
    with pytest.raises(VidlakeError) as error:
        refusing = context(spark, engine, lake_root, "curate.export.missing_caption=fail")
        curate.run(refusing, curate_args(refused, where=where))
    assert str(error.value).startswith("2 selected clips have no caption") and "\n" not in str(error.value)
    assert not refused.exists() and not (tmp_path / "fail_clips").exists()


def test_webdataset_leaves_out_uncaptioned_clips_too(spark, engine, split_lake, tmp_path):
    lake_root, _ = split_lake
    ctx = context(spark, engine, lake_root, "curate.export.missing_caption=fail")
    with pytest.raises(VidlakeError, match="2 selected clips have no caption"):
        curate.run(ctx, curate_args(tmp_path / "shards", export="webdataset", where="video_id = 'uncaptioned'"))
    assert not (tmp_path / "shards").exists()


def test_a_clip_that_cannot_be_cut_is_listed_and_fails_the_export(spark, engine, split_lake, tmp_path, capsys):
    lake_root, _ = split_lake
    out = tmp_path / "train.csv"
    where = "video_id IN ('captioned', 'gone')"
    assert curate.run(context(spark, engine, lake_root), curate_args(out, where=where)) == 1
    assert set(pd.read_csv(out)["video_id"]) == {"captioned"}
    errors = [json.loads(line) for line in (tmp_path / "train_clips" / "errors.jsonl").read_text().splitlines()]
    gone = Lake(spark, str(lake_root), engine).read("clips").where("video_id = 'gone'").collect()
    assert [e["clip_id"] for e in errors] == [gone[0].clip_id]
    assert errors[0]["reason"].startswith("cannot cut the clip from")
    assert "1 clips not exported" in capsys.readouterr().err


def run_curate_cli(lake_root: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """This checkout's `vidlake curate` in a process of its own."""
    command = [sys.executable, "-c", "from jobs.cli import main; main()", "curate", "--lake", str(lake_root),
               "--set", "spark.master=local[1]", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_a_folder_as_the_csv_is_one_line_from_the_command(split_lake, tmp_path):
    lake_root, _ = split_lake
    (tmp_path / "folder").mkdir()
    result = run_curate_cli(lake_root, "--export", "opensora-csv", "--out", "folder", "--overwrite", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("vidlake: error: --out folder is a folder;")
    assert "Traceback" not in result.stderr and "Py4J" not in result.stderr


def jobs_run(spark) -> list[int]:
    return sorted(spark.sparkContext.statusTracker().getJobIdsForGroup(None))


@pytest.mark.parametrize("export, out, flags, message", [
    ("opensora-csv", "folder", ["--overwrite"], "--out {out} is a folder; one file is written here: name it"),
    ("opensora-csv", "file.txt/x.csv", [], "--out {out} cannot be written: {tmp}/file.txt is a file"),
    ("opensora-csv", "file.txt", [], "--out {out} exists; remove it or pass --overwrite"),
    ("opensora-csv", "new.csv", [], "curate.export.clip_dir {tmp}/new_clips exists and is not empty"),
    ("parquet", "file.txt/x.parquet", ["--overwrite"], "--out {out} cannot be written: {tmp}/file.txt is a file"),
    ("parquet", "folder", [], "--out {out} exists and is not empty; remove it or pass --overwrite"),
    ("webdataset", "file.txt", ["--overwrite"], "--out {out} is a file; a folder is written here"),
    ("webdataset", "folder", [], "--out {out} exists and is not empty; remove it or pass --overwrite"),
])
def test_outputs_are_checked_before_any_query_runs(spark, engine, split_lake, tmp_path, capsys, export, out, flags,
                                                    message):
    lake_root, _ = split_lake
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "old.csv").write_text("kept\n")
    (tmp_path / "file.txt").write_text("kept\n")
    (tmp_path / "new_clips").mkdir()
    (tmp_path / "new_clips" / "old.mp4").write_bytes(b"kept")
    before, listing = jobs_run(spark), sorted(tmp_path.rglob("*"))
    target = str(tmp_path / out)
    code = run_stage(["curate", "--lake", str(lake_root), "--set", "spark.master=local[2]", "--export", export,
                      "--out", target, *flags])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("vidlake: error: " + message.format(out=target, tmp=tmp_path))
    assert not any("Traceback" in line or "Py4J" in line for line in err)
    assert jobs_run(spark) == before  # no Spark job ran
    assert sorted(tmp_path.rglob("*")) == listing


def test_no_export_writes_into_the_lake(spark, engine, split_lake, tmp_path, capsys):
    lake_root, _ = split_lake
    listing = sorted(lake_root.rglob("*"))
    common = ["curate", "--lake", str(lake_root), "--set", "spark.master=local[2]", "--overwrite"]
    assert run_stage([*common, "--export", "webdataset", "--out", str(lake_root)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(
        f"vidlake: error: --out {lake_root} overlaps lake.root ({lake_root}); write the export to a place of its own")
    assert run_stage([*common, "--export", "opensora-csv", "--out", str(tmp_path / "train.csv"),
                      "--set", f"curate.export.clip_dir={lake_root.parent}"]) == 2
    assert f"curate.export.clip_dir {lake_root.parent} overlaps lake.root" in capsys.readouterr().err
    assert sorted(lake_root.rglob("*")) == listing


def test_sql_out_naming_a_folder_is_one_line(spark, engine, split_lake, tmp_path, capsys):
    lake_root, _ = split_lake
    folder = tmp_path / "result.csv"
    folder.mkdir()
    code = run_stage(["sql", "SELECT clip_id FROM clips", "--lake", str(lake_root), "--set", "spark.master=local[2]",
                      "--out", str(folder), "--overwrite"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"vidlake: error: --out {folder} is a folder; one file is written here: name it, e.g. {folder}/out.csv")

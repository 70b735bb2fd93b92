"""The lake's files on disk, as a user meets them: a damaged Delta log, `vidlake check`, a --lake
that is not there, and a lake copied elsewhere with its blobs. Real stages (ingest, download from
local paths, split with clips stream-copied to files of their own) on real Spark build the lake."""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import pandas as pd
import pytest
from media import Shot, make_video

from jobs.blobs import blob_root, stored_uri
from jobs.cli import run_stage
from jobs.config import load_config
from jobs.lake import Lake
from jobs.views import register_clip_view

ROOT = Path(__file__).resolve().parent.parent
SETTINGS = ["spark.master=local[2]", "ingest.allow_local_paths=true", "split.materialize=copy", "score.frames.n=2"]


def settings(lake: Path, *more: str) -> list[str]:
    return ["--lake", str(lake), *[arg for item in (*SETTINGS, *more) for arg in ("--set", item)]]


@pytest.fixture(scope="module")
def built(engine, tmp_path_factory) -> Path:
    """A lake of three ingested videos, two downloaded (a commit each) and split into clip files;
    read-only: tests copy it (copy_lake) before they change anything."""
    work = tmp_path_factory.mktemp("lake_files")
    sources = work / "sources.csv"
    with sources.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption"])
        for name, seeds in (("first", (1, 2, 3)), ("second", (4, 5)), ("third", (6, 7))):
            path = work / f"{name}.mp4"
            make_video(path, [Shot(150, seed=s) for s in seeds], fps=25, size=(160, 90), gop=25)
            writer.writerow([str(path), f"the {name} video"])
    lake = work / "lake"
    assert run_stage(["ingest", "--format", "generic", "--input", str(sources), *settings(lake)]) == 0
    assert run_stage(["download", "--limit", "1", *settings(lake)]) == 0
    assert run_stage(["download", "--limit", "1", *settings(lake)]) == 0
    assert run_stage(["split", *settings(lake)]) == 0
    return lake


def copy_lake(built: Path, where: Path) -> Path:
    """The lake copied as a user would, `cp -a`, blobs and all."""
    subprocess.run(["cp", "-a", str(built), str(where)], check=True)
    return where


def lake_of(spark, root: Path, engine: str) -> tuple:
    cfg = load_config("local", [f"lake.root={root}", *SETTINGS, f"lake.engine={engine}"])
    return cfg, Lake(spark, str(root), cfg.get("lake.engine"))


def last_commit(lake: Path, table: str) -> Path:
    return max((lake / table / "_delta_log").glob("*.json"))


def vidlake_process(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from jobs.cli import main; main()", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vidlake: error:")]


@pytest.mark.parametrize("cut", ["half", "empty"])
def test_a_truncated_commit_is_one_line_naming_table_and_commit_wherever_the_table_is_read(
        spark, built, tmp_path, capsys, cut):
    lake = copy_lake(built, tmp_path / "lake")
    commit = last_commit(lake, "video_files")
    assert commit.name != "00000000000000000000.json"  # an earlier commit holds rows a reader would still find
    data = commit.read_bytes()
    commit.write_bytes(data[: len(data) // 2] if cut == "half" else b"")
    expected = f"table video_files is damaged: commit {commit.name}"

    for stage in (["status"], ["split"], ["score", "--scorers", "luma"], ["sql", "SELECT count(*) FROM clip_view"]):
        capsys.readouterr()
        assert run_stage([*stage, *settings(lake)]) == 2, stage
        captured = capsys.readouterr()
        assert expected in captured.err, (stage, captured.err)
        assert "videos fetched ok" not in captured.out  # no counts of a table with a commit's rows missing

    if cut == "half":  # as a user runs it: one line, no Python or Rust traceback
        result = vidlake_process("status", *settings(lake))
        assert result.returncode == 2, result.stderr[-2000:]
        assert [line for line in error_lines(result.stderr) if expected in line], result.stderr[-2000:]
        assert "Traceback" not in result.stderr and "panicked" not in result.stderr
        assert "stack backtrace" not in result.stderr and "<unknown>" not in result.stderr


def test_check_finds_a_clean_lake_clean(built, tmp_path, capsys):
    lake = copy_lake(built, tmp_path / "lake")
    capsys.readouterr()
    assert run_stage(["check", "--hashes", *settings(lake)]) == 0
    out = capsys.readouterr().out
    assert "check: the lake is whole" in out
    assert "video_files: 2 blobs present, their sha256 as recorded" in out
    assert "clip files present" in out


def test_check_names_every_damaged_table_file_blob_and_clip_file(spark, engine, built, tmp_path, capsys):
    lake = copy_lake(built, tmp_path / "lake")
    cfg, reader = lake_of(spark, lake, engine)
    root = blob_root(cfg, str(lake))
    blob = reader.read("video_files").where("status = 'ok'").first()
    clip = reader.read("clips").orderBy("clip_id").first()
    data_file = next((lake / "videos").rglob("*.parquet"))
    data_file.unlink()
    clip_path = Path(root) / clip.uri
    clip_path.unlink()

    capsys.readouterr()
    assert run_stage(["check", *settings(lake)]) == 1
    out = capsys.readouterr().out
    assert f"videos: data file {data_file.relative_to(lake / 'videos')} of version" in out and "is missing" in out
    assert f"clips: clip file of clip {clip.clip_id} is missing: {clip_path}" in out
    assert f"blob of video {blob.video_id}" not in out  # the blob is whole
    assert run_stage(["status", *settings(lake)]) == 2  # and a stage that reads the table says so in one line
    assert f"table videos is damaged: data file {data_file.name} of version" in capsys.readouterr().err

    blob_path = Path(root) / blob.uri
    data = bytearray(blob_path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only a hash finds it
    blob_path.write_bytes(bytes(data))
    assert run_stage(["check", *settings(lake)]) == 1
    assert f"blob of video {blob.video_id}" not in capsys.readouterr().out
    assert run_stage(["check", "--hashes", *settings(lake)]) == 1
    out = capsys.readouterr().out
    assert f"video_files: blob of video {blob.video_id} does not match its recorded sha256" in out

    blob_path.unlink()
    assert run_stage(["check", *settings(lake)]) == 1
    assert f"video_files: blob of video {blob.video_id} is missing: {blob_path}" in capsys.readouterr().out


def test_check_names_a_truncated_commit_and_goes_on_to_the_other_tables(built, tmp_path, capsys):
    lake = copy_lake(built, tmp_path / "lake")
    commit = last_commit(lake, "clips")
    commit.write_bytes(commit.read_bytes()[:100])
    capsys.readouterr()
    assert run_stage(["check", *settings(lake)]) == 1
    out = capsys.readouterr().out
    assert f"clips: commit {commit.name} is not valid JSON (truncated?)" in out
    assert "video_files: 2 blobs present" in out
    assert "check: 1 problem(s) in clips (1)" in out


@pytest.mark.parametrize("stage", [["status"], ["check"], ["sql", "SELECT 1"], ["split"],
                                   ["curate", "--export", "parquet", "--out", "x.parquet"],
                                   ["run", "--stages", "download,split"]])
def test_a_stage_that_reads_the_lake_says_a_missing_lake_does_not_exist(tmp_path, capsys, stage):
    missing = tmp_path / "no" / "such" / "lake"
    assert run_stage([*stage, *settings(missing)]) == 2
    assert f"lake {missing} does not exist" in capsys.readouterr().err
    assert not missing.exists()

    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_stage([*stage, *settings(empty)]) == 2
    assert f"{empty} holds no lake" in capsys.readouterr().err


def test_ingest_still_starts_a_lake_on_a_new_path(tmp_path):
    sources = tmp_path / "sources.csv"
    sources.write_text("path,caption\n/videos/a.mp4,a video\n")
    lake = tmp_path / "new" / "lake"
    assert run_stage(["ingest", "--format", "generic", "--input", str(sources), *settings(lake)]) == 0
    assert run_stage(["status", *settings(lake)]) == 0


def test_a_lake_copied_elsewhere_reads_its_own_blobs(spark, engine, built, tmp_path, capsys):
    original = copy_lake(built, tmp_path / "original")
    cfg, reader = lake_of(spark, original, engine)
    stored = reader.read("video_files").where("status = 'ok'").first().uri
    assert not os.path.isabs(stored) and stored.endswith(".mp4")  # relative to the blob root
    assert all(not os.path.isabs(row.uri) for row in reader.read("clips").collect())

    copy = copy_lake(original, tmp_path / "copy")
    shutil.rmtree(original)
    assert run_stage(["download", *settings(copy)]) == 0  # the third video, into the copy's blobs
    assert run_stage(["split", *settings(copy)]) == 0  # reads the copy's blob of it
    assert run_stage(["score", "--scorers", "luma", *settings(copy)]) == 0  # every clip file, the copy's
    out = tmp_path / "train.csv"
    assert run_stage(["curate", "--where", "num_frames > 0", "--export", "opensora-csv", "--out", str(out),
                      *settings(copy)]) == 0

    cfg, reader = lake_of(spark, copy, engine)
    scores = reader.read("scores").toPandas()
    clips = reader.read("clips").toPandas()
    assert len(clips) >= 3 and set(scores["clip_id"]) == set(clips["clip_id"])
    assert scores["errors"].isna().all() and scores["brightness"].notna().all()
    view = register_clip_view(reader, cfg).toPandas()
    for column in ("uri", "video_uri"):
        assert view[column].map(lambda uri: uri.startswith(f"{copy}/blobs/")).all(), view[column]
    table = pd.read_csv(out)
    assert len(table) == len(clips)
    for row in table.itertuples():
        assert row.path.startswith(f"{copy}/blobs/clips/")
        with av.open(row.path) as container:
            assert sum(1 for _ in container.decode(video=0)) == row.num_frames


def test_uris_outside_the_blob_root_and_old_absolute_rows_stay_absolute(spark, engine, built, tmp_path):
    assert stored_uri("/elsewhere/clips/a.mp4", "/lake/blobs") == "/elsewhere/clips/a.mp4"
    assert stored_uri("/lake/blobs/ab/ab12.mp4", "/lake/blobs") == "ab/ab12.mp4"
    assert stored_uri("s3://bucket/lake/blobs/ab/ab12.mp4", "s3a://bucket/lake/blobs") == "ab/ab12.mp4"

    lake = copy_lake(built, tmp_path / "lake")
    cfg, reader = lake_of(spark, lake, engine)
    root = blob_root(cfg, str(lake))
    files = reader.read("video_files")
    absolute = files.selectExpr("video_id", "status", f"concat('{root}/', uri) AS uri")  # as rows were written before
    reader.overwrite(absolute, "video_files")
    view = register_clip_view(reader, cfg).toPandas()
    assert view["video_uri"].map(lambda uri: uri.startswith(f"{root}/") and Path(uri).is_file()).all()


def test_check_of_a_table_whose_data_file_is_gone_reports_it_and_checks_no_blobs_of_it(built, tmp_path, capsys):
    lake = copy_lake(built, tmp_path / "lake")
    gone = next((lake / "video_files").glob("*.parquet"))
    gone.unlink()
    capsys.readouterr()
    assert run_stage(["check", *settings(lake)]) == 1
    out = capsys.readouterr().out
    assert f"video_files: data file {gone.name} of version 1 is missing" in out
    assert "video_files: blobs not checked: the table cannot be read" in out
    assert "clips: clip files not checked" in out

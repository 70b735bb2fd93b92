"""`vidlake optimize` and `vidlake vacuum` on a lake made of many small commits, as batched stages
leave it: the same rows and query results after each, fewer files, and no file a snapshot needs
deleted (on the shared session's engine; VIDLAKE_TEST_ENGINE=delta-spark runs them on delta-spark)."""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
from test_lake import video_rows

from jobs import check
from jobs.cli import run_stage
from jobs.lake import Lake, LakeError, TableFiles, data_files_in_folder
from schemas.ids import clip_id, video_id
from schemas.tables import CLIPS, VIDEOS, table

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
MB = 1024 * 1024
SOURCES = ("webvid10m", "my set/with=odd#chars %a")
QUERIES = (
    "SELECT c.clip_id, c.video_id, c.start_frame, s.aesthetic, s.pwatermark, s.scorer_versions "
    "FROM clips c JOIN scores s USING (clip_id) ORDER BY c.clip_id",
    "SELECT v.source, count(*) AS clips, round(avg(s.aesthetic), 9) AS aesthetic FROM videos v "
    "JOIN clips c USING (video_id) LEFT JOIN scores s USING (clip_id) GROUP BY v.source ORDER BY v.source",
    "SELECT * FROM videos ORDER BY video_id",
)


def clip_batch(commit: int, per_commit: int = 3) -> pa.RecordBatch:
    """`per_commit` clips of the commit's video (videos alternate between the two sources)."""
    video = video_id(SOURCES[commit % 2], str(commit // 2))
    rows = [dict(clip_id=clip_id(video, 10 * i, 10 * i + 10), video_id=video, clip_index=i, start_s=i / 2.5,
                 end_s=(i + 1) / 2.5, start_frame=10 * i, end_frame=10 * i + 10, num_frames=10, fps=25.0,
                 width=160, height=90, aspect_ratio=0.5625, resolution="240p", detector="content",
                 detector_params="{}", uri=f"videos/{video}.mp4", created_at=NOW)
            for i in range(per_commit)]
    return pa.RecordBatch.from_pylist(rows, schema=pa.schema([f.with_nullable(True) for f in _arrow(CLIPS)]))


def _arrow(schema) -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC")


def build_small_commits(spark, lake: Lake, clip_commits: int) -> None:
    """`clip_commits` commits of clips through the stages' own path (tasks' files, one commit each),
    a scores append per clip commit, an upsert that rewrites some scores, and videos appended a
    video at a time into the partition of its source."""
    for commit in range(clip_commits):
        files = lake.table_files("clips")
        lake.commit_files("clips", files, files.write([clip_batch(commit)]))
        ids = clip_batch(commit).column("clip_id").to_pylist()
        scores = [(c, 4.0 + commit / 10 + i / 100, 0.1, {"aesthetic": "laion-v2"}) for i, c in enumerate(ids)]
        lake.append(spark.createDataFrame(scores, "clip_id string, aesthetic double, pwatermark double, "
                                          "scorer_versions map<string,string>"), "scores")
    lake.upsert(spark.createDataFrame([(clip_batch(0).column("clip_id")[0].as_py(), 9.5)],
                                      "clip_id string, aesthetic double"), "scores")
    for commit in range(clip_commits):
        rows = video_rows(SOURCES[commit % 2], range(commit // 2, commit // 2 + 1))
        lake.append(spark.createDataFrame(rows, VIDEOS), "videos")


def results(lake: Lake) -> list:
    return [[tuple(row) for row in lake.sql(query).collect()] for query in QUERIES]


def counts(lake: Lake) -> dict[str, int]:
    return {name: lake.row_count(name) for name in ("clips", "scores", "videos")}


def file_names(paths) -> set[str]:
    """Data files by name (their folder's partition escaping differs between engines and the log)."""
    return {path.rsplit("/", 1)[-1] for path in paths}


def last_commit_adds(lake: Lake, name: str) -> list[dict]:
    log = Path(lake.path(name)) / "_delta_log"
    newest = max(log.glob("*.json"))
    return [action["add"] for action in map(json.loads, newest.read_text().splitlines()) if "add" in action]


def plant_orphan(lake: Lake) -> str:
    """A parquet file written into the clips folder and never committed, as a killed task leaves it."""
    [written] = TableFiles(lake.path("clips"), table("clips"), 1000).write([clip_batch(99)])
    return written["path"]


def test_optimize_then_vacuum_keep_every_row_and_remove_only_what_no_snapshot_needs(spark, lake, ctx):
    build_small_commits(spark, lake, clip_commits=6)
    rows_before, results_before = counts(lake), results(lake)
    files_before = {name: file_names(p for p, _ in lake.snapshot_files(name)[1]) for name in ("clips", "videos")}

    compacted = {name: lake.optimize(name, 256 * MB) for name in ("clips", "scores", "videos")}

    assert compacted["clips"].files_before == 6 and compacted["clips"].files_after == 1
    assert compacted["scores"].files_after == 1 < compacted["scores"].files_before
    assert compacted["videos"].files_after == len(SOURCES) < compacted["videos"].files_before
    assert counts(lake) == rows_before and results(lake) == results_before
    for name in ("clips", "videos"):
        adds = last_commit_adds(lake, name)
        # row_count answers from the log: each new file records its rows, partitioned as the table is
        assert sum(json.loads(add["stats"])["numRecords"] for add in adds) == rows_before[name]
        assert all(set(add["partitionValues"]) == set(table(name).partition_by) for add in adds)
    assert {add["partitionValues"]["source"] for add in last_commit_adds(lake, "videos")} == set(SOURCES)

    orphan = plant_orphan(lake)
    kept = lake.vacuum("clips", 168)
    assert kept.files_removed == 0, "files removed or written within the retention stay"
    assert orphan in data_files_in_folder(lake.path("clips"))
    with pytest.raises(LakeError, match="under Delta's check of 168 hours.*--force"):
        lake.vacuum("clips", 0)

    vacuumed = {name: lake.vacuum(name, 0, force=True) for name in ("clips", "scores", "videos")}

    assert vacuumed["clips"].files_removed == 6 + 1 and vacuumed["clips"].bytes_removed > 0
    for name in ("clips", "scores", "videos"):
        left = file_names(data_files_in_folder(lake.path(name)))
        assert left == file_names(p for p, _ in lake.snapshot_files(name)[1]), name
    assert not files_before["clips"] & file_names(data_files_in_folder(lake.path("clips")))
    assert orphan not in data_files_in_folder(lake.path("clips"))
    assert (Path(lake.path("clips")) / "_delta_log").is_dir()
    assert counts(lake) == rows_before and results(lake) == results_before
    assert check.run(ctx, argparse.Namespace(hashes=True)) == 0


def test_zorder_keeps_the_rows_and_refuses_columns_it_cannot_cluster_by(spark, lake):
    build_small_commits(spark, lake, clip_commits=4)
    before = results(lake)

    done = lake.optimize("clips", 256 * MB, zorder_by=["video_id", "start_frame"])

    assert done.files_before == 4 and done.files_after == 1
    assert results(lake) == before
    with pytest.raises(LakeError, match="'clips' has no column\\(s\\) aesthetic to z-order by"):
        lake.optimize("clips", 256 * MB, zorder_by=["aesthetic"])
    with pytest.raises(LakeError, match="source is a partition column of 'videos'"):
        lake.optimize("videos", 256 * MB, zorder_by=["source"])
    with pytest.raises(LakeError, match="extra of 'videos' holds lists, maps or structs"):
        lake.optimize("videos", 256 * MB, zorder_by=["video_id", "extra"])


def in_process(lake: Lake, *args: str) -> list[str]:
    return [*args, "--lake", lake.root, "--set", "spark.master=local[2]", "--set", f"lake.engine={lake.engine_name}"]


@pytest.mark.parametrize(("args", "message"), [
    (("optimize", "--table", "clip"), "no lake table named 'clip'; the tables are videos,"),
    (("optimize", "--zorder-by", "video_id"), "--zorder-by needs --table"),
    (("optimize", "--table", "clips", "--zorder-by", "nope"), "'clips' has no column(s) nope to z-order by"),
    (("vacuum", "--retain-hours", "1"), "a vacuum retention of 1 hours is under Delta's check of 168 hours"),
    (("vacuum", "--retain-hours", "-1", "--force"), "--retain-hours must be 0 or more"),
])
def test_a_mistake_is_one_line_and_exit_status_2(spark, lake, capsys, args, message):
    files = lake.table_files("clips")
    lake.commit_files("clips", files, files.write([clip_batch(0)]))
    capsys.readouterr()

    assert run_stage(in_process(lake, *args)) == 2

    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"vidlake: error: {err[0].split('error: ', 1)[1]}"] and message in err[0]


def run_vidlake(*args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", "from jobs.cli import main; main()", *args]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def test_the_commands_print_each_table_and_exit_0(spark, tmp_path):
    lake = Lake(spark, str(tmp_path / "lake"), "delta-rs")
    for commit in range(5):
        files = lake.table_files("clips")
        lake.commit_files("clips", files, files.write([clip_batch(commit)]))
    settings = ["--lake", lake.root, "--set", "spark.master=local[1]", "--set", "lake.engine=delta-rs"]

    optimized = run_vidlake("optimize", *settings)
    vacuumed = run_vidlake("vacuum", "--table", "clips", "--retain-hours", "0", "--force", *settings)

    assert optimized.returncode == 0, optimized.stderr
    lines = optimized.stdout.splitlines()
    assert "clips: 5 data files before, 1 after (5 rewritten into 1)" in lines
    assert "videos: not written yet" in lines and lines[-1] == "optimize: 5 data files before, 1 after"
    assert vacuumed.returncode == 0, vacuumed.stderr
    lines = vacuumed.stdout.splitlines()
    assert lines[0].endswith("(Delta engine: delta-rs); retaining 0 hours")
    assert lines[1].startswith("clips: 5 data files removed (") and lines[1].endswith(" bytes)")
    assert lines[-1].startswith("vacuum: 5 data files removed (")
    assert lake.row_count("clips") == 15 and lake.read("clips").count() == 15

"""One lake, either engine: the delta-rs and delta-spark engines over the same root, in the shared
Spark session (which has Delta's jars), each reading, appending to, upserting into, deleting from
and time-travelling what the other wrote."""
from __future__ import annotations

import logging
import shutil

import deltalake
import pytest
from media import make_video, packaged_video, standard_segments
from pyspark.sql import functions as F

from jobs import lake as lake_module
from jobs.cli import run_stage
from jobs.lake import WRITTEN_FILES, Lake, LakeError, _parquet_writer
from jobs.session import delta_jars_present

ENGINES = ("delta-rs", "delta-spark")


@pytest.fixture
def lakes(spark, tmp_path) -> dict[str, Lake]:
    assert delta_jars_present(spark), "the shared session needs Delta's jars (tests/conftest.py)"
    root = str(tmp_path / "lake")
    return {engine: Lake(spark, root, engine) for engine in ENGINES}


def stage(engine: str, root, *argv: str) -> int:
    """A CLI stage in this process, on the shared session, with the lake on `engine`."""
    settings = [f"lake.engine={engine}", "ingest.allow_local_paths=true", "split.clips.min_clip_s=1.0",
                "spark.master=local[2]"]
    return run_stage([*argv, "--lake", str(root), *[arg for item in settings for arg in ("--set", item)]])


def keys(lake: Lake, name: str, version: int | None = None) -> list[str]:
    return sorted(r[0] for r in lake.read(name, version).select(lake_module.table(name).keys[0]).collect())


def test_a_pipeline_switching_engines_between_stages_keeps_one_lake(spark, lakes, tmp_path):
    rs, ds = lakes["delta-rs"], lakes["delta-spark"]
    videos = tmp_path / "videos"
    videos.mkdir()
    make_video(videos / "synthetic.mp4", standard_segments(shot_frames=40), fps=25, size=(160, 90))
    shutil.copy(packaged_video("bikes"), videos / "bikes.mp4")
    (tmp_path / "first.csv").write_text(f"url,caption\n{videos}/synthetic.mp4,cuts\n")
    (tmp_path / "second.csv").write_text(f"url,caption\n{videos}/bikes.mp4,bikes\n")

    # delta-rs starts the lake; delta-spark fetches, splits (creating clips) and ingests more videos
    # into delta-rs's table; delta-rs fetches and splits those into delta-spark's clips table.
    assert stage("delta-rs", rs.root, "ingest", "--format", "generic", "--input", str(tmp_path / "first.csv")) == 0
    assert stage("delta-spark", rs.root, "download") == 0
    assert stage("delta-spark", rs.root, "split") == 0
    assert stage("delta-spark", rs.root, "ingest", "--format", "generic", "--input", str(tmp_path / "second.csv")) == 0
    assert stage("delta-rs", rs.root, "download") == 0
    assert stage("delta-rs", rs.root, "split") == 0

    for name in ("videos", "video_files", "clips"):
        assert keys(rs, name) == keys(ds, name), name
        assert rs.row_count(name) == ds.row_count(name) == len(keys(rs, name)), name
    clips = ds.read("clips").groupBy("video_id").count().collect()
    assert len(clips) == 2 and all(row["count"] >= 1 for row in clips)
    before_edits = keys(rs, "clips")
    version = ds.history("clips")[0]["version"]
    assert version == rs.history("clips")[0]["version"] == 1

    # delta-spark upserts into and delta-rs deletes from the table both wrote; each time-travels it.
    # The upserted clip is one of the synthetic video's, which the delete keeps.
    bikes_clips = [r.clip_id for r in rs.read("clips").join(
        rs.read("videos").where(F.col("caption") == "bikes").select("video_id"), "video_id").collect()]
    first_clip = min(set(before_edits) - set(bikes_clips))
    ds.upsert(spark.createDataFrame([(first_clip, 9)], "clip_id string, clip_index int"), "clips")
    assert rs.read("clips").where(F.col("clip_id") == first_clip).first()["clip_index"] == 9
    rs.delete("clips", F.col("clip_id").isin(bikes_clips))
    assert keys(ds, "clips") == sorted(set(before_edits) - set(bikes_clips))
    rs.upsert(spark.createDataFrame([(first_clip, 0)], "clip_id string, clip_index int"), "clips")
    for lake in (rs, ds):
        assert keys(lake, "clips", version) == before_edits
        assert lake.read("clips", version + 1).where(F.col("clip_id") == first_clip).first()["clip_index"] == 9
        assert keys(lake, "clips", version + 2) == keys(lake, "clips")
    assert ds.read("clips").where(F.col("clip_id") == first_clip).first()["clip_index"] == 0

    # what each engine wrote stays within what the other reads: no reader features, plain protocols
    for name in ("videos", "video_files", "clips"):
        table = deltalake.DeltaTable(rs.path(name))
        protocol = table.protocol()
        assert protocol.min_reader_version == 1 and not protocol.reader_features, (name, protocol)
        assert protocol.min_writer_version <= 2 and not protocol.writer_features, (name, protocol)
        assert table.metadata().configuration == {}, name


def make_table_with(spark, ds: Lake, name: str, feature: str, value: str) -> None:
    """`name` created by delta-spark with a table property (the session's default for new tables:
    spark.databricks.delta.properties.defaults.*), then written through the lake."""
    default = "spark.databricks.delta.properties.defaults." + feature.removeprefix("delta.")
    spark.conf.set(default, value)
    try:
        ds.append(spark.createDataFrame([(f"c{i}", float(i)) for i in range(6)], "clip_id string, motion double")
                  .coalesce(1), name)
    finally:
        spark.conf.unset(default)


@pytest.mark.parametrize(("feature", "value", "reader_feature"), [
    ("delta.enableDeletionVectors", "true", "deletionVectors"),
    ("delta.columnMapping.mode", "name", "columnMapping"),
])
def test_delta_rs_refuses_a_table_delta_spark_wrote_with_a_reader_feature(spark, lakes, capsys, feature, value,
                                                                          reader_feature):
    rs, ds = lakes["delta-rs"], lakes["delta-spark"]
    make_table_with(spark, ds, "scores", feature, value)
    ds.delete("scores", F.col("motion") > 4.5)  # with deletion vectors on: a vector, the file kept
    assert keys(ds, "scores") == [f"c{i}" for i in range(5)]
    if reader_feature == "deletionVectors":
        assert int(ds.history("scores")[0]["operationMetrics"]["numDeletionVectorsAdded"]) == 1

    with pytest.raises(LakeError, match=rf"uses Delta reader feature\(s\) {reader_feature}, which the delta-rs"):
        rs.read("scores")
    capsys.readouterr()
    assert stage("delta-rs", rs.root, "sql", "SELECT count(*) FROM scores") == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("vidlake: error: ") and reader_feature in line


def commit_task_files(spark, lake: Lake, name: str, rows: list[tuple]) -> list[dict]:
    files = lake.table_files(name)
    rows_df = lake_module.conform(spark.createDataFrame(rows, "clip_id string, motion double"), lake_module.table(name))
    written = [r.asDict() for r in rows_df
               .mapInArrow(_parquet_writer(files), WRITTEN_FILES).collect()]
    lake.commit_files(name, files, written)
    return written


def test_delta_spark_rewrites_task_files_into_a_table_that_maps_column_names(spark, lakes):
    """A column-mapped table's files hold physical column names, which the tasks do not write: their
    files are rewritten by Delta's writer instead of committed as they are."""
    ds = lakes["delta-spark"]
    make_table_with(spark, ds, "scores", "delta.columnMapping.mode", "name")
    written = commit_task_files(spark, ds, "scores", [("c9", 9.0)])
    assert sorted((r.clip_id, r.motion) for r in ds.read("scores").where(F.col("clip_id") == "c9").collect()) == [
        ("c9", 9.0)]
    assert not {f["path"] for f in written} & {path for path, _ in ds.snapshot_files("scores")[1]}


def test_without_deltas_transaction_api_delta_spark_rewrites_task_files_and_says_so(spark, lakes, monkeypatch,
                                                                                   caplog):
    """As on Databricks, whose Delta is not org.apache.spark.sql.delta."""
    monkeypatch.setattr(lake_module, "DELTA_LOG_CLASS", "com.databricks.sql.transaction.tahoe.DeltaLog")
    ds = Lake(spark, lakes["delta-spark"].root, "delta-spark")
    with caplog.at_level(logging.WARNING, logger="vidlake"):
        commit_task_files(spark, ds, "scores", [("c1", 1.0)])
        commit_task_files(spark, ds, "scores", [("c2", 2.0)])
    assert keys(ds, "scores") == ["c1", "c2"]
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "com.databricks.sql.transaction.tahoe.DeltaLog" in caplog.records[0].message

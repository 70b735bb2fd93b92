"""The lake on real Spark and real Delta tables: what a user reads back is what was written."""
from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import deltalake
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyspark.sql import functions as F

from jobs.lake import Lake, LakeError
from schemas.ids import video_id
from schemas.tables import VIDEOS

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def video_rows(source: str, ids: range, caption: str = "a dog, \"running\" on the beach") -> list[dict]:
    return [
        dict(
            video_id=video_id(source, str(i)), source=source, source_video_id=str(i), url=f"https://e.org/{i}.mp4",
            caption=caption, duration_s=float(i), ingest_batch="b1", ingested_at=NOW,
            clip_hints=[dict(start_s=0.5, end_s=2.0, caption="hint", score=0.4)], extra={"page_dir": "x"},
        )
        for i in ids
    ]


def test_append_reads_back_in_spark_and_in_plain_deltalake(spark, lake):
    rows = video_rows("webvid10m", range(6)) + video_rows("my set/with=odd#chars", range(3))
    lake.append(spark.createDataFrame(rows, VIDEOS), "videos")

    back = {r.video_id: r for r in lake.read("videos").collect()}
    assert len(back) == 9
    first = back[video_id("my set/with=odd#chars", "0")]
    assert first.source == "my set/with=odd#chars"
    assert first.clip_hints[0].caption == "hint" and first.extra == {"page_dir": "x"}
    assert first.ingested_at.replace(tzinfo=dt.timezone.utc) == NOW or first.ingested_at == NOW.replace(tzinfo=None)

    table = deltalake.DeltaTable(lake.path("videos"))
    assert table.metadata().partition_columns == ["source"]
    arrow = pa.table(table.to_pyarrow_table())
    assert arrow.num_rows == 9
    assert set(arrow.column_names) == set(VIDEOS.fieldNames())
    assert sorted(set(arrow.column("source").to_pylist())) == ["my set/with=odd#chars", "webvid10m"]
    assert arrow.schema.field("ingested_at").type == pa.timestamp("us", tz="UTC")


def test_missing_table_reads_as_empty_with_its_schema(lake):
    clips = lake.read("clips")
    assert clips.count() == 0
    assert "clip_id" in clips.columns and not lake.exists("clips")


def test_upsert_updates_only_the_given_columns_and_never_duplicates(spark, lake):
    lake.append(spark.createDataFrame([("c1", 5.0, 0.1), ("c2", 4.0, 0.2)], "clip_id string, aesthetic double, "
                                      "pwatermark double"), "scores")
    motion = spark.createDataFrame([("c1", 3.5), ("c3", 7.0)], "clip_id string, motion double")
    lake.upsert(motion, "scores")
    lake.upsert(motion, "scores")

    rows = {r.clip_id: r for r in lake.read("scores").collect()}
    assert sorted(rows) == ["c1", "c2", "c3"]
    assert (rows["c1"].aesthetic, rows["c1"].pwatermark, rows["c1"].motion) == (5.0, 0.1, 3.5)
    assert rows["c2"].motion is None and rows["c2"].aesthetic == 4.0
    assert rows["c3"].motion == 7.0 and rows["c3"].aesthetic is None
    assert pa.table(deltalake.DeltaTable(lake.path("scores")).to_pyarrow_table()).num_rows == 3


def test_upsert_of_new_keys_needs_the_required_columns(spark, lake):
    lake.append(spark.createDataFrame(video_rows("webvid10m", range(2)), VIDEOS), "videos")
    recaption = spark.createDataFrame([(video_id("webvid10m", "1"), "new words")], "video_id string, caption string")
    lake.upsert(recaption, "videos")
    assert lake.read("videos").filter(F.col("caption") == "new words").count() == 1

    unknown = spark.createDataFrame([(video_id("webvid10m", "99"), "x")], "video_id string, caption string")
    with pytest.raises(LakeError, match="source"):
        lake.upsert(unknown, "videos")


def test_pending_is_what_the_table_does_not_have_yet(spark, lake):
    lake.append(spark.createDataFrame([("c1",), ("c2",)], "clip_id string"), "scores")
    todo = spark.createDataFrame([("c1",), ("c2",), ("c3",)], "clip_id string")
    assert [r.clip_id for r in lake.pending(todo, "scores").collect()] == ["c3"]


def test_delete_removes_only_the_matching_rows_in_one_commit(spark, lake):
    rows = video_rows("webvid10m", range(4)) + video_rows("panda70m", range(2))
    rows[1]["caption"] = None  # the condition is null on this row: it stays
    lake.append(spark.createDataFrame(rows, VIDEOS), "videos")
    lake.delete("videos", (F.col("source") == "webvid10m") & (F.col("caption") != "gone") & (F.col("duration_s") >= 2))
    assert sorted((r.source, r.source_video_id) for r in lake.read("videos").collect()) == [
        ("panda70m", "0"), ("panda70m", "1"), ("webvid10m", "0"), ("webvid10m", "1")]
    assert deltalake.DeltaTable(lake.path("videos")).version() == 1
    lake.delete("videos", F.col("source") == "nobody")  # nothing matches: no commit
    assert deltalake.DeltaTable(lake.path("videos")).version() == 1


def test_row_count_follows_appends_upserts_and_overwrites(spark, lake):
    assert lake.row_count("scores") == 0  # no table yet
    lake.append(spark.createDataFrame([("c1", 1.0), ("c2", 2.0)], "clip_id string, motion double"), "scores")
    lake.upsert(spark.createDataFrame([("c2", 5.0), ("c3", 3.0)], "clip_id string, motion double"), "scores")
    assert lake.row_count("scores") == lake.read("scores").count() == 3
    lake.overwrite(spark.createDataFrame([("c9", 9.0)], "clip_id string, motion double"), "scores")
    assert lake.row_count("scores") == 1


def test_row_count_counts_the_rows_of_files_the_log_has_no_statistics_for(spark, engine, tmp_path):
    """A table another writer committed without file statistics is counted, not taken as empty."""
    from deltalake import Schema
    from deltalake.transaction import AddAction, create_table_with_add_actions

    lake = Lake(spark, str(tmp_path / "lake"), engine)
    rows = pa.table({"clip_id": ["c1", "c2", "c3"]})
    path = Path(lake.path("scores"))
    path.mkdir(parents=True)
    pq.write_table(rows, path / "part-0.parquet")
    add = AddAction(path="part-0.parquet", size=(path / "part-0.parquet").stat().st_size, partition_values={},
                    modification_time=int(time.time() * 1000), data_change=True, stats=None)
    create_table_with_add_actions(str(path), Schema.from_arrow(rows.schema), [add], mode="error")
    assert lake.row_count("scores") == 3


def test_versions_history_and_overwrite(spark, lake):
    lake.append(spark.createDataFrame([("c1", 1.0)], "clip_id string, motion double"), "scores")
    lake.append(spark.createDataFrame([("c2", 2.0)], "clip_id string, motion double"), "scores")
    lake.overwrite(spark.createDataFrame([("c9", 9.0)], "clip_id string, motion double"), "scores")

    assert [r.clip_id for r in lake.read("scores").collect()] == ["c9"]
    assert sorted(r.clip_id for r in lake.read("scores", version=1).collect()) == ["c1", "c2"]
    history = lake.history("scores")
    assert [h["version"] for h in history] == [2, 1, 0]


def test_every_table_is_a_sql_view(spark, lake):
    lake.append(spark.createDataFrame([("c1", 4.7), ("c2", 6.1)], "clip_id string, aesthetic double"), "scores")
    result = lake.sql("SELECT clip_id FROM scores WHERE aesthetic > 5 ORDER BY clip_id").collect()
    assert [r.clip_id for r in result] == ["c2"]
    assert lake.sql("SELECT count(*) AS n FROM clips").first().n == 0


def test_writes_reject_columns_the_table_does_not_have(spark, lake):
    with pytest.raises(LakeError, match="aesthetik"):
        lake.append(spark.createDataFrame([("c1", 1.0)], "clip_id string, aesthetik double"), "scores")


def test_unknown_table_is_a_clear_error(lake):
    with pytest.raises(KeyError, match="no lake table named 'clipz'"):
        lake.read("clipz")


def test_a_lake_root_that_is_a_file_is_a_clear_error(spark, tmp_path):
    not_a_folder = tmp_path / "lake"
    not_a_folder.write_text("oops")
    with pytest.raises(LakeError, match="not a folder"):
        Lake(spark, str(not_a_folder))


def test_large_writes_roll_files_at_the_row_limit(spark, engine, tmp_path):
    lake = Lake(spark, str(tmp_path / "lake"), engine, max_rows_per_file=1000)
    df = spark.range(5000).select(F.concat(F.lit("c"), F.col("id").cast("string")).alias("clip_id"))
    lake.append(df.repartition(1), "scores")
    table = deltalake.DeltaTable(lake.path("scores"))
    assert len(table.file_uris()) == 5
    assert lake.read("scores").count() == 5000


def test_executors_reach_a_databricks_lake_through_the_dbfs_mount():
    from pyarrow import fs

    from jobs.lake import arrow_filesystem

    filesystem, path = arrow_filesystem("dbfs:/mnt/lake/_staging/b1")
    assert isinstance(filesystem, fs.LocalFileSystem) and path == "/dbfs/mnt/lake/_staging/b1"


def committed_engine(table_path: str, version: int) -> str:
    """The engineInfo of a commit, read from the Delta log file itself."""
    lines = (Path(table_path) / "_delta_log" / f"{version:020d}.json").read_text().splitlines()
    return next(json.loads(line)["commitInfo"] for line in lines if '"commitInfo"' in line)["engineInfo"]


def test_files_the_tasks_write_are_committed_as_they_are_in_one_commit_each(spark, lake):
    """table_files/commit_files (what ingest and split use): the table's snapshot holds exactly the
    parquet files Spark's tasks wrote, in the table's folder, nothing is staged or copied, and each
    commit is one WRITE by the lake's own engine."""
    from jobs.lake import WRITTEN_FILES, _parquet_writer

    def write_and_commit(rows: list[dict]) -> list[dict]:
        files = lake.table_files("videos")
        written = [r.asDict() for r in spark.createDataFrame(rows, VIDEOS).repartition(2)
                   .mapInArrow(_parquet_writer(files), WRITTEN_FILES).collect()]
        lake.commit_files("videos", files, written)
        return written

    first = write_and_commit(video_rows("webvid10m", range(4)) + video_rows("odd: set%20 #1", range(2)))
    second = write_and_commit(video_rows("webvid10m", range(4, 7)))

    version, snapshot = lake.snapshot_files("videos")
    assert version == 1
    assert sorted(path for path, _ in snapshot) == sorted(f["path"] for f in first + second)
    table_dir = Path(lake.path("videos"))
    assert all((table_dir / f["path"]).is_file() for f in first + second)
    assert sorted(p.name for p in Path(lake.root).iterdir()) == ["videos"]  # no _staging left beside it
    assert lake.read("videos").count() == 9 == lake.row_count("videos")
    assert lake.read("videos").where(F.col("source") == "odd: set%20 #1").count() == 2
    assert deltalake.DeltaTable(str(table_dir)).to_pyarrow_table().num_rows == 9
    assert lake.history("videos")[0]["operation"] == "WRITE"
    expected_engine = "Delta-Lake/" if lake.engine_name == "delta-spark" else "delta-rs"
    assert all(expected_engine in committed_engine(str(table_dir), v) for v in (0, 1))

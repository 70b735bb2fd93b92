"""The delta-spark engine on Delta's own jars, resolved from Maven for the installed pyspark and
delta-spark, as a user of embedded Spark or `spark-submit --packages` gets them.

The shared test session has Delta's jars (tests/conftest.py), so the engine runs in it; spark-submit.sh's
check runs as a process of its own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import deltalake
import pytest
from pyspark.sql import functions as F

from jobs.cli import run_stage
from jobs.delta_packages import DeltaVersionError, check_jvm_delta, delta_coordinates
from jobs.lake import Lake

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(("spark_version", "delta_version", "coordinates"), [
    ("4.0.1", "4.0.1", "io.delta:delta-spark_2.13:4.0.1"),
    ("4.0.1", "4.3.1", "io.delta:delta-spark_4.0_2.13:4.3.1"),
    ("4.1.2", "4.1.0", "io.delta:delta-spark_4.1_2.13:4.1.0"),
    ("4.2.0", "4.4.0", "io.delta:delta-spark_4.2_2.13:4.4.0"),
])
def test_coordinates_name_the_delta_release_built_for_that_spark(spark_version, delta_version, coordinates):
    assert delta_coordinates(spark_version, delta_version) == coordinates


def test_the_installed_pyspark_and_delta_spark_have_published_jars():
    """The pair pip installs from pyproject's ranges is one whose jars exist (the Maven resolution
    below fetches exactly these coordinates)."""
    coordinates = delta_coordinates()
    spark_minor = ".".join(metadata.version("pyspark").split(".")[:2])
    assert coordinates.endswith(f"_{spark_minor}_2.13:{metadata.version('delta-spark')}") or (
        spark_minor == "4.0" and coordinates.startswith("io.delta:delta-spark_2.13:"))


@pytest.mark.parametrize(("spark_version", "delta_version", "needed"), [
    ("4.2.0", "4.3.1", "4.4"), ("4.1.0", "4.0.1", "4.1"), ("4.2.0", "4.0.0", "4.4"), ("4.0.1", "3.3.2", "4.0"),
])
def test_a_pairing_no_delta_release_builds_is_refused_with_the_version_to_install(spark_version, delta_version,
                                                                                  needed):
    with pytest.raises(DeltaVersionError, match=rf"has no jars for Spark .*delta-spark>={needed},<5"):
        delta_coordinates(spark_version, delta_version)


def test_jars_of_another_delta_release_than_the_python_package_are_refused():
    check_jvm_delta("4.4.0", "4.4.1")
    with pytest.raises(DeltaVersionError, match="jars on Spark's classpath are 4.3.1 but the delta-spark Python"):
        check_jvm_delta("4.3.1", "4.4.0")


def test_spark_submit_sh_prints_the_mismatch_before_spark_starts(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "VIDLAKE_DELTA_VERSION": "3.3.2",
           "VIDLAKE_SUBMIT_ARGS": "--master local[1]"}
    result = subprocess.run([str(ROOT / "spark-submit.sh"), "--delta-packages", "status", "--lake", str(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("vidlake: error: delta-spark 3.3.2 has no jars for Spark"), line


def test_stages_on_the_delta_spark_engine_write_with_deltas_own_writer(spark, tmp_path, capsys):
    source = tmp_path / "videos.csv"
    source.write_text("url,caption\nhttp://127.0.0.1:9/a.mp4,a cat\nhttp://127.0.0.1:9/b.mp4,a dog\n")
    lake_root = tmp_path / "lake"
    settings = [f"lake.root={lake_root}", "lake.engine=delta-spark", "spark.master=local[2]"]
    assert run_stage(["ingest", "--format", "generic", "--input", str(source),
                      *[arg for item in settings for arg in ("--set", item)]]) == 0
    lake = Lake(spark, str(lake_root), "delta-spark")
    lake.append(spark.createDataFrame([("c1", 1.0)], "clip_id string, motion double"), "scores")
    lake.upsert(spark.createDataFrame([("c1", 2.0), ("c2", 3.0)], "clip_id string, motion double"), "scores")
    assert sorted((r.clip_id, r.motion) for r in lake.read("scores").collect()) == [("c1", 2.0), ("c2", 3.0)]
    lake.delete("scores", F.col("motion") > 2.5)
    assert [r.clip_id for r in lake.read("scores").collect()] == ["c1"]
    assert [h["operation"] for h in lake.history("scores")] == ["DELETE", "MERGE", "WRITE"]
    for table in ("videos", "scores"):
        first_commit = (lake_root / table / "_delta_log" / "00000000000000000000.json").read_text().splitlines()
        commit_info = next(json.loads(line)["commitInfo"] for line in first_commit if '"commitInfo"' in line)
        assert commit_info["engineInfo"].startswith("Apache-Spark/") and "Delta-Lake/" in commit_info["engineInfo"]
    videos = deltalake.DeltaTable(str(lake_root / "videos")).to_pyarrow_table()
    assert sorted(videos.column("caption").to_pylist()) == ["a cat", "a dog"]

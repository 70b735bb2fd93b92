"""The delta-spark engine on Delta's own jars, resolved from Maven for the installed pyspark and
delta-spark, as a user of embedded Spark or `spark-submit --packages` gets them.

The Spark session of the other tests has no Delta classes (it runs the delta-rs engine), and a JVM
cannot gain them once started, so the delta-spark runs are real processes of their own.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import deltalake
import pytest

from jobs.delta_packages import DeltaVersionError, check_jvm_delta, delta_coordinates

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


STAGES_ON_DELTA_SPARK = textwrap.dedent("""
    import sys
    from pyspark.sql import functions as F
    from jobs.cli import run_stage
    from jobs.context import open_context
    from jobs.config import load_config

    lake_root, source = sys.argv[1], sys.argv[2]
    overrides = [f"lake.root={lake_root}", "lake.engine=delta-spark", "spark.master=local[2]"]
    status = run_stage(["ingest", "--format", "generic", "--input", source,
                        *[arg for item in overrides for arg in ("--set", item)]])
    assert status == 0, status
    ctx = open_context(load_config("local", overrides))
    assert ctx.lake.engine_name == "delta-spark"
    spark, lake = ctx.spark, ctx.lake
    lake.append(spark.createDataFrame([("c1", 1.0)], "clip_id string, motion double"), "scores")
    lake.upsert(spark.createDataFrame([("c1", 2.0), ("c2", 3.0)], "clip_id string, motion double"), "scores")
    print("SCORES", sorted((r.clip_id, r.motion) for r in lake.read("scores").collect()))
    lake.delete("scores", F.col("motion") > 2.5)
    print("AFTER DELETE", [r.clip_id for r in lake.read("scores").collect()])
    print("OPERATIONS", [h["operation"] for h in lake.history("scores")])
""")


def test_stages_on_the_delta_spark_engine_write_with_deltas_own_writer(tmp_path):
    source = tmp_path / "videos.csv"
    source.write_text("url,caption\nhttp://127.0.0.1:9/a.mp4,a cat\nhttp://127.0.0.1:9/b.mp4,a dog\n")
    lake_root = tmp_path / "lake"
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", STAGES_ON_DELTA_SPARK, str(lake_root), str(source)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "SCORES [('c1', 2.0), ('c2', 3.0)]" in result.stdout
    assert "AFTER DELETE ['c1']" in result.stdout
    assert "OPERATIONS ['DELETE', 'MERGE', 'WRITE']" in result.stdout
    for table in ("videos", "scores"):
        first_commit = (lake_root / table / "_delta_log" / "00000000000000000000.json").read_text().splitlines()
        commit_info = next(json.loads(line)["commitInfo"] for line in first_commit if '"commitInfo"' in line)
        assert commit_info["engineInfo"].startswith("Apache-Spark/") and "Delta-Lake/" in commit_info["engineInfo"]
    videos = deltalake.DeltaTable(str(lake_root / "videos")).to_pyarrow_table()
    assert sorted(videos.column("caption").to_pylist()) == ["a cat", "a dog"]

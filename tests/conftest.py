"""Shared fixtures: one real local Spark session for the whole run, and a fresh lake per test."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
# The Delta engine of the shared session's lakes: auto (delta-rs, as this session has no Delta jars),
# or delta-spark, which resolves Delta's jars from Maven for a second pass of the suite.
TEST_ENGINE = os.environ.get("VIDLAKE_TEST_ENGINE", "auto")


@pytest.fixture(scope="session")
def spark():
    from jobs.config import load_config
    from jobs.session import build_spark

    cfg = load_config("local", ["spark.master=local[2]", "spark.conf.spark.sql.shuffle.partitions=4",
                                f"lake.engine={TEST_ENGINE}"])
    session = build_spark(cfg)
    yield session
    session.stop()


@pytest.fixture
def cfg(tmp_path):
    """The local profile with the lake in this test's temporary folder."""
    from jobs.config import load_config

    return load_config("local", [f"lake.root={tmp_path / 'lake'}", "spark.master=local[2]"])


@pytest.fixture
def lake(spark, cfg):
    from jobs.lake import Lake

    return Lake(spark, cfg.get("lake.root"), cfg.get("lake.engine"), cfg.get("lake.max_rows_per_file"))


@pytest.fixture
def ctx(spark, cfg, lake):
    from jobs.context import JobContext

    return JobContext(cfg, spark, lake)

"""What every stage runs with: the configuration, the Spark session and the lake."""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import SparkSession

from jobs.config import Config
from jobs.lake import Lake
from jobs.session import build_spark


@dataclass
class JobContext:
    cfg: Config
    spark: SparkSession
    lake: Lake


def open_context(cfg: Config, lake_must_exist: bool = False) -> JobContext:
    """The Spark session and the lake of a configuration; with `lake_must_exist`, a lake root
    holding none of the lake's tables is a one-line error (a stage that only reads the lake)."""
    spark = build_spark(cfg)
    lake = Lake(spark, cfg.get("lake.root"), cfg.get("lake.engine"), cfg.get("lake.max_rows_per_file"),
                must_exist=lake_must_exist, commit_retries=cfg.get("lake.commit_retries"))
    return JobContext(cfg, spark, lake)

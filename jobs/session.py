"""The one place a Spark session is built from a profile."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from pyspark.sql import SparkSession

from jobs.config import Config
from jobs.delta_packages import DeltaVersionError, check_jvm_delta, delta_coordinates
from jobs.object_store import object_store_conf

log = logging.getLogger("vidlake")

PROJECT_ROOT = Path(__file__).resolve().parent.parent

# Confs every vidlake session needs, whatever the profile says: timestamps written as Delta
# expects them, partition values read back as the strings they were written as, and no SQL on raw
# file paths (``text.`/etc/passwd` ``): the SQL that `vidlake sql` and `curate` run reads the lake's
# views and catalog tables only (jobs/sql_guard.py); vidlake registers its views from DataFrames.
REQUIRED_CONF = {
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.sources.partitionColumnTypeInference.enabled": "false",
    "spark.sql.runSQLOnFiles": "false",
}


def build_spark(cfg: Config) -> SparkSession:
    """The session of the profile: the active one where a platform made it (Databricks,
    spark-submit's own), else a new one with the profile's master and confs."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    _put_project_on_worker_path()
    builder = SparkSession.builder.appName(cfg.get("spark.app_name"))
    master = cfg.get("spark.master")
    if master:
        builder = builder.master(master)
    confs = {**cfg.get("spark.conf"), **REQUIRED_CONF}
    confs.update(_delta_spark_conf(cfg, confs.get("spark.jars.packages", "")))
    confs.update(object_store_conf(cfg, confs.get("spark.jars.packages", "")))
    for key, value in confs.items():
        builder = builder.config(key, str(value))
    with listening_on_loopback() if str(master).startswith("local") else contextlib.nullcontext():
        spark = builder.getOrCreate()
    for key, value in REQUIRED_CONF.items():
        spark.conf.set(key, value)
    spark.sparkContext.setLogLevel("WARN")
    if cfg.get("lake.engine") in ("auto", "delta-spark"):
        check_delta_jars(spark, required=cfg.get("lake.engine") == "delta-spark")
    return spark


@contextlib.contextmanager
def listening_on_loopback() -> Iterator[None]:
    """While embedded Spark's JVM starts, SPARK_LOCAL_IP=127.0.0.1: its ports (RPC, block manager,
    UI) open on loopback only, not on the address the hostname resolves to, which other hosts can
    reach. The JVM keeps the variable it started with, so it is unset again after, and a later
    session of a cluster master in this process is not bound to loopback. A SPARK_LOCAL_IP the
    user set wins."""
    if "SPARK_LOCAL_IP" in os.environ:
        yield
        return
    os.environ["SPARK_LOCAL_IP"] = "127.0.0.1"
    try:
        yield
    finally:
        os.environ.pop("SPARK_LOCAL_IP", None)


def _delta_spark_conf(cfg: Config, packages: str) -> dict:
    """Delta's SQL extension and catalog, and its jars from Maven (the release that matches the
    installed pyspark and delta-spark), when the profile asks for the delta-spark engine. They cannot
    be set on a guess: naming absent classes would stop the session from starting. The packages only
    take effect where this process starts Spark; spark-submit and platforms bring their own."""
    if cfg.get("lake.engine") != "delta-spark":
        return {}
    confs = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    }
    if "io.delta:" not in packages:
        confs["spark.jars.packages"] = ",".join(filter(None, [str(packages), delta_coordinates()]))
    return confs


def _put_project_on_worker_path() -> None:
    """Local Python workers inherit this environment: let them import jobs/udfs/schemas from a
    checkout that is not pip-installed. (On a cluster, spark-submit's --py-files does this.)"""
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(PROJECT_ROOT) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(PROJECT_ROOT), *filter(None, paths)])


def check_delta_jars(spark: SparkSession, required: bool) -> None:
    """Delta's JVM classes, where present, are the delta-spark Python package's release; where the
    delta-spark engine is `required`, they must be present. Databricks runs its own Delta build,
    which its runtime keeps in step with its Python side: nothing to check there."""
    if not delta_jars_present(spark):
        if required:
            raise DeltaVersionError(
                "lake.engine is delta-spark but Delta's classes are not on Spark's classpath; submit with "
                f"--packages {delta_coordinates()} (spark-submit.sh --delta-packages)"
            )
        return
    if "DATABRICKS_RUNTIME_VERSION" not in os.environ:
        check_jvm_delta(spark.sparkContext._jvm.io.delta.package.VERSION())


def delta_jars_present(spark: SparkSession) -> bool:
    """True when Delta's JVM classes are on the driver's classpath (delta-spark installed as a
    package or built into the platform)."""
    try:
        jvm = spark.sparkContext._jvm
        jvm.java.lang.Class.forName(
            "io.delta.tables.DeltaTable", True, jvm.Thread.currentThread().getContextClassLoader()
        )
        return True
    except Exception:  # noqa: BLE001 - py4j raises its own error type for ClassNotFoundException
        return False

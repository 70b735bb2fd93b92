"""The one place a Spark session is built from a profile."""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from pyspark.errors import PySparkRuntimeError
from pyspark.sql import SparkSession

from jobs.config import Config
from jobs.delta_packages import DeltaVersionError, JarsChoice, check_jvm_delta, choose_delta_jars, delta_coordinates
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

# How the Delta jars of this process's Spark were settled ("choice", a JarsChoice) for its JVM
# ("jvm"), and the engine line last logged ("logged"), so each run logs it once.
_JARS_CHOICE: dict = {}


def build_spark(cfg: Config) -> SparkSession:
    """The session of the profile: the active one where a platform made it (Databricks,
    spark-submit's own), else a new one with the profile's master and confs. Where the lake engine
    may be delta-spark, Delta's jars are settled before the JVM starts (choose_delta_jars); both
    choices, the jars' and the engine's, are logged once."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    _put_project_on_worker_path()
    engine = cfg.get("lake.engine")
    confs = {**cfg.get("spark.conf"), **REQUIRED_CONF}
    jars = _jars_choice(cfg, confs)
    with_delta = {**confs, **_delta_spark_conf(engine, jars, confs)}
    try:
        spark = _start(cfg, {**with_delta, **object_store_conf(cfg, with_delta.get("spark.jars.packages", ""))})
    except PySparkRuntimeError as err:
        if not (jars.resolve and err.getCondition() == "JAVA_GATEWAY_EXITED"):
            raise
        if engine == "delta-spark":
            raise DeltaVersionError(f"lake.engine is delta-spark but Spark could not resolve {delta_coordinates()} "
                                    "(Ivy's report is above); set spark.jars.repositories to a reachable "
                                    "Maven repository") from None
        jars = JarsChoice(False, f"Spark could not resolve {delta_coordinates()} when it started")
        spark = _start(cfg, {**confs, **object_store_conf(cfg, confs.get("spark.jars.packages", ""))})
    _JARS_CHOICE.update(choice=jars, jvm=spark.sparkContext._jvm)
    if engine in ("auto", "delta-spark"):
        check_delta_jars(spark, required=engine == "delta-spark")
    _log_engine_once(spark, engine)
    return spark


def _start(cfg: Config, confs: dict) -> SparkSession:
    builder = SparkSession.builder.appName(cfg.get("spark.app_name"))
    master = cfg.get("spark.master")
    if master:
        builder = builder.master(master)
    for key, value in confs.items():
        builder = builder.config(key, str(value))
    with listening_on_loopback() if str(master).startswith("local") else contextlib.nullcontext():
        spark = builder.getOrCreate()
    for key, value in REQUIRED_CONF.items():
        spark.conf.set(key, value)
    spark.sparkContext.setLogLevel("WARN")
    return spark


def _jars_choice(cfg: Config, confs: dict) -> JarsChoice:
    """Whether this process names Delta's jars in spark.jars.packages, and why. A JVM this process did
    not start (spark-submit's, a platform's, an active session's) has its classpath already: only
    what is on it counts."""
    engine = cfg.get("lake.engine")
    if engine == "delta-rs":
        return JarsChoice(False, "lake.engine is delta-rs")
    jvm = _running_jvm()
    if jvm is not None and _JARS_CHOICE.get("jvm") is jvm:
        return _JARS_CHOICE["choice"]  # this process started it, for the reason recorded then
    if jvm is not None:
        if _delta_class_loadable(jvm):
            return JarsChoice(False, "Delta's classes on the classpath of the running Spark", present=True)
        return JarsChoice(False, "the running Spark (spark-submit, a platform) has no Delta classes on its classpath")
    if "io.delta:" in str(confs.get("spark.jars.packages", "")):
        return JarsChoice(True, "Delta's jars named in spark.jars.packages")
    setting = cfg.get("lake.delta_packages")
    if engine == "delta-spark" and setting == "auto":
        setting = True
    return choose_delta_jars(setting, confs, cfg.get("lake.maven_repository"), cfg.get("lake.maven_timeout_s"))


def _running_jvm():
    """The JVM that runs already: the one this process launched for an earlier session (PySpark
    keeps it until the process ends, stopped sessions included), or the one spark-submit or a
    platform launched and told PySpark about (PYSPARK_GATEWAY_PORT); None when building the session
    launches one, with the classpath given now."""
    from pyspark import SparkContext

    if SparkContext._gateway is None and "PYSPARK_GATEWAY_PORT" not in os.environ:
        return None
    SparkContext._ensure_initialized()
    return SparkContext._jvm


def _log_engine_once(spark: SparkSession, engine: str) -> None:
    line = "lake engine: {} ({})".format(*lake_engine(spark, engine))
    if _JARS_CHOICE.get("logged") != line:
        log.info(line)
        _JARS_CHOICE["logged"] = line


def lake_engine(spark: SparkSession, engine: str) -> tuple[str, str]:
    """The engine a lake of the lake.engine setting `engine` runs on in this session, and why
    (the phrase `vidlake status` and the log line show)."""
    if engine == "delta-rs":
        return "delta-rs", "lake.engine is delta-rs"
    present = delta_jars_present(spark)
    jars = _JARS_CHOICE.get("choice")
    if jars is None or (jars.resolve or jars.present) != present:
        why = "Delta's classes on Spark's classpath" if present else "Delta's classes are not on Spark's classpath"
    else:
        why = jars.reason
    if engine == "delta-spark":
        return "delta-spark", f"lake.engine is delta-spark; {why}"
    return ("delta-spark" if present else "delta-rs"), why


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


def _delta_spark_conf(engine: str, jars: JarsChoice, confs: dict) -> dict:
    """Delta's SQL extension and catalog, and its jars from Maven (the release that matches the
    installed pyspark and delta-spark), where the session will have Delta's classes: the delta-spark
    engine asked for, or jars about to be resolved, or already on the running JVM's classpath. They
    cannot be set on a guess: naming absent classes would stop the session from starting."""
    if engine == "delta-rs" or not (engine == "delta-spark" or jars.resolve or jars.present):
        return {}
    delta = {
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
    }
    packages = str(confs.get("spark.jars.packages", ""))
    if jars.resolve and "io.delta:" not in packages:
        delta["spark.jars.packages"] = ",".join(filter(None, [packages, delta_coordinates()]))
    return delta


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
    return _delta_class_loadable(spark.sparkContext._jvm)


def _delta_class_loadable(jvm) -> bool:
    try:
        jvm.java.lang.Class.forName(
            "io.delta.tables.DeltaTable", True, jvm.Thread.currentThread().getContextClassLoader()
        )
        return True
    except Exception:  # noqa: BLE001 - py4j raises its own error type for ClassNotFoundException
        return False

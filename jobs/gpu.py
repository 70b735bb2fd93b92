"""Stage-level GPU scheduling: a Spark ResourceProfile from a stage's conf, applied to mapInPandas.

A stage's conf section (score, caption) holds:
  resource_profile: auto | always | never
  gpus_per_task (fractions share a GPU), cpus_per_task,
  executor_gpus, executor_cores, executor_memory, gpu_discovery_script.

With dynamic allocation on, the profile asks for executors of its own (executor GPUs, cores and
the discovery script) as well as per-task amounts. Without it, Spark can only apply task amounts to
the executors it already has (a TaskResourceProfile: the executors must have been started with
GPUs, spark.executor.resource.gpu.*). `local[*]` refuses task profiles ("TaskResourceProfiles are
only supported for Standalone, Yarn and Kubernetes cluster"), so there `auto` runs without one
and says so once; each task then uses cuda:0 if torch sees it, else the CPU (udfs.device).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from pyspark.resource import ExecutorResourceRequests, ResourceProfile, ResourceProfileBuilder, TaskResourceRequests
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

from udfs.errors import VidlakeError

log = logging.getLogger("vidlake")

PROFILE_SETTINGS = ("auto", "always", "never")
_ANNOUNCED: set[str] = set()


def profiles_supported(spark: SparkSession) -> bool:
    """False for local mode (`local`, `local[N]`, `local[*]`), which refuses task resource profiles."""
    master = spark.sparkContext.master
    return not (master == "local" or master.startswith("local["))


def build_profile(stage_conf: Mapping[str, Any], dynamic_allocation: bool) -> ResourceProfile:
    """The stage's ResourceProfile: task GPUs and CPUs, plus executor resources under dynamic allocation."""
    gpus = float(stage_conf["gpus_per_task"])
    if not 0 < gpus <= 1 and not (gpus > 1 and gpus.is_integer()):
        raise VidlakeError(f"gpus_per_task must be a fraction in (0, 1] or a whole number, got {gpus}")
    tasks = TaskResourceRequests().cpus(int(stage_conf["cpus_per_task"])).resource("gpu", gpus)
    builder = ResourceProfileBuilder().require(tasks)
    if dynamic_allocation:
        executors = ExecutorResourceRequests().cores(int(stage_conf["executor_cores"]))
        executors.resource("gpu", int(stage_conf["executor_gpus"]), stage_conf["gpu_discovery_script"] or "")
        if stage_conf.get("executor_memory"):
            executors.memory(str(stage_conf["executor_memory"]))
        builder = builder.require(executors)
    return builder.build


def stage_profile(spark: SparkSession, stage_conf: Mapping[str, Any], stage: str) -> ResourceProfile | None:
    """The profile to run a GPU stage with, or None where conf or the cluster manager says none."""
    setting = str(stage_conf["resource_profile"])
    if setting not in PROFILE_SETTINGS:
        raise VidlakeError(f"{stage}.resource_profile must be one of {', '.join(PROFILE_SETTINGS)}, got {setting!r}")
    if setting == "never":
        return None
    if not profiles_supported(spark):
        if setting == "always":
            raise VidlakeError(
                f"{stage}.resource_profile is always but master {spark.sparkContext.master} refuses task resource "
                "profiles (only Standalone, YARN and Kubernetes accept them); set it to auto or never"
            )
        _announce(stage, f"{stage}: master {spark.sparkContext.master} takes no task resource profile; "
                         "running without one (each task uses cuda:0 if torch sees a GPU, else the CPU)")
        return None
    dynamic = spark.conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true"
    profile = build_profile(stage_conf, dynamic)
    _announce(stage, f"{stage}: resource profile {profile.id}: {stage_conf['gpus_per_task']} GPU and "
                     f"{stage_conf['cpus_per_task']} CPU per task" + (" (own executors)" if dynamic else ""))
    return profile


def gpu_map(
    df: DataFrame,
    fn: Callable[[Iterator[Any]], Iterator[Any]],
    schema: StructType | str,
    stage_conf: Mapping[str, Any],
    spark: SparkSession,
    stage: str = "gpu stage",
    arrow: bool = False,
) -> DataFrame:
    """`df.mapInPandas(fn, schema)` (`mapInArrow` when `arrow`) with the stage's resource profile
    where the cluster takes one.

    Inside `fn`, `udfs.device.task_device()` gives the GPU Spark assigned to the task."""
    profile = stage_profile(spark, stage_conf, stage)
    apply = df.mapInArrow if arrow else df.mapInPandas
    if profile is None:
        return apply(fn, schema)
    return apply(fn, schema, profile=profile)


def _announce(stage: str, message: str) -> None:
    if message not in _ANNOUNCED:
        _ANNOUNCED.add(message)
        log.info(message)

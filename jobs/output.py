"""Query results to the user: SQL errors as one line, and a DataFrame as one CSV/parquet/JSON file.

Single files are written by Spark (one task), then moved into place through Hadoop's FileSystem,
so the rows never pass through the driver and any Spark-writable URL works as a destination.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TypeVar

from pyspark.errors import PySparkException
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StructType

from udfs.errors import VidlakeError

FORMATS = {".csv": "csv", ".parquet": "parquet", ".json": "json", ".jsonl": "json"}

T = TypeVar("T")


class QueryError(VidlakeError):
    """SQL that Spark rejected, or that vidlake does not run."""


def spark_error_line(err: Exception) -> str:
    """Spark's own message, first line only (the error class and what is wrong)."""
    lines = [line.strip() for line in str(err).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(err).__name__


def reported(action: Callable[[], T], what: str) -> T:
    """Runs `action`; Spark analysis, parse or execution errors become a one-line QueryError."""
    _quiet_query_error_logs()
    try:
        return action()
    except PySparkException as err:
        raise QueryError(f"{what}: {spark_error_line(err)}") from None


def _quiet_query_error_logs() -> None:
    """PySpark logs every rejected query with its JVM stack trace before raising; the one-line
    error is what the user should see."""
    from pyspark.logger import PySparkLogger

    for name in ("SQLQueryContextLogger", "DataFrameQueryContextLogger"):
        PySparkLogger.getLogger(name).setLevel(logging.CRITICAL)


def output_format(path: str) -> str:
    for suffix, fmt in FORMATS.items():
        if path.lower().endswith(suffix):
            return fmt
    raise VidlakeError(f"--out {path!r}: name a file ending in {', '.join(FORMATS)}")


def flat_for_csv(df: DataFrame) -> DataFrame:
    """Arrays, maps and structs as JSON text: CSV has no nested types."""
    nested = (ArrayType, MapType, StructType)
    return df.select(
        *[F.to_json(F.col(f"`{f.name}`")).alias(f.name) if isinstance(f.dataType, nested) else F.col(f"`{f.name}`")
          for f in df.schema.fields]
    )


def write_single_file(df: DataFrame, path: str, fmt: str, overwrite: bool = False) -> None:
    """`df` as one file at `path` (csv with a header, parquet, or JSON lines)."""
    spark = df.sparkSession
    jvm = spark.sparkContext._jvm
    hadoop_conf = spark.sparkContext._jsc.hadoopConfiguration()
    target = jvm.org.apache.hadoop.fs.Path(path)
    fs = target.getFileSystem(hadoop_conf)
    if fs.exists(target) and not overwrite:
        raise VidlakeError(f"{path} exists; remove it or pass --overwrite")
    staging = jvm.org.apache.hadoop.fs.Path(f"{path}.{uuid.uuid4().hex[:8]}.parts")
    writer = df.coalesce(1).write.mode("error")
    if fmt == "csv":
        writer = flat_for_csv(df).coalesce(1).write.mode("error").option("header", True).option("escape", '"')
    reported(lambda: writer.format(fmt).save(staging.toString()), f"writing {path}")
    try:
        parts = [s.getPath() for s in fs.listStatus(staging) if s.getPath().getName().startswith("part-")]
        if len(parts) != 1:
            raise VidlakeError(f"writing {path}: expected one part file from Spark, found {len(parts)}")
        parent = target.getParent()
        if parent is not None:
            fs.mkdirs(parent)
        if fs.exists(target):
            fs.delete(target, False)
        if not fs.rename(parts[0], target):
            raise VidlakeError(f"writing {path}: could not move {parts[0].toString()} into place")
    finally:
        fs.delete(staging, True)

"""Query results to the user: SQL errors as one line, and a DataFrame as one CSV/parquet/JSON file.

Single files are written by Spark (one task), then moved into place through Hadoop's FileSystem,
so the rows never pass through the driver and any Spark-writable URL works as a destination.
`check_output` looks at a destination through the same FileSystem before any query runs for it.
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import TypeVar

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import ArrayType, MapType, StructType

from udfs.errors import VidlakeError

OUTPUT_KINDS = ("file", "folder")
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


def check_output(spark: SparkSession, path: str, kind: str, overwrite: bool, option: str = "--out") -> None:
    """Refuses, as one line naming `option`, a destination that cannot or must not be written: `kind`
    "file" (one file: not a folder, not there yet unless `overwrite`) or "folder" (not a file, absent
    or empty unless `overwrite`); either way no existing parent of it may be a file."""
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"output kind {kind!r}; choose one of {', '.join(OUTPUT_KINDS)}")
    try:
        fs, target = _filesystem(spark, path)
        if fs.exists(target):
            _check_existing(fs, target, path, kind, overwrite, option)
            return
        blocker = _file_above(fs, target)
    except Py4JJavaError as err:
        raise VidlakeError(f"{option} {path}: {_java_message(err)}") from None
    if blocker is not None:
        raise VidlakeError(f"{option} {path} cannot be written: {blocker} is a file, not a folder")


def _filesystem(spark: SparkSession, path: str):
    """Hadoop's FileSystem for `path` and the path qualified (a relative one made absolute)."""
    jvm = spark.sparkContext._jvm
    target = jvm.org.apache.hadoop.fs.Path(path)
    fs = target.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    return fs, fs.makeQualified(target)


def _check_existing(fs, target, path: str, kind: str, overwrite: bool, option: str) -> None:
    is_folder = fs.getFileStatus(target).isDirectory()
    if kind == "file" and is_folder:
        raise VidlakeError(f"{option} {path} is a folder; one file is written here: name it, "
                           f"e.g. {path.rstrip('/')}/out{_suggested_suffix(path)}")
    if kind == "folder" and not is_folder:
        raise VidlakeError(f"{option} {path} is a file; a folder is written here: name a new or empty one")
    if overwrite:
        return
    if kind == "file":
        raise VidlakeError(f"{option} {path} exists; remove it or pass --overwrite")
    if len(fs.listStatus(target)):
        raise VidlakeError(f"{option} {path} exists and is not empty; remove it or pass --overwrite")


def _suggested_suffix(path: str) -> str:
    return next((suffix for suffix in FORMATS if path.lower().endswith(suffix)), ".csv")


def _file_above(fs, target) -> str | None:
    """The nearest existing parent of `target` when it is a file (nothing can be written under it)."""
    parent = target.getParent()
    while parent is not None and not fs.exists(parent):
        parent = parent.getParent()
    if parent is None or fs.getFileStatus(parent).isDirectory():
        return None
    uri = parent.toUri()
    return uri.getPath() if uri.getScheme() == "file" else parent.toString()


def _java_message(err: Py4JJavaError) -> str:
    message = err.java_exception.getMessage() or err.java_exception.toString()
    return spark_error_line(Exception(message))


def write_single_file(df: DataFrame, path: str, fmt: str, overwrite: bool = False) -> None:
    """`df` as one file at `path` (csv with a header, parquet, or JSON lines)."""
    spark = df.sparkSession
    check_output(spark, path, "file", overwrite)
    fs, target = _filesystem(spark, path)
    staging = spark.sparkContext._jvm.org.apache.hadoop.fs.Path(f"{target.toString()}.{uuid.uuid4().hex[:8]}.parts")
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

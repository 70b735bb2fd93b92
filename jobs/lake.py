"""The lake: every Delta table vidlake reads and writes, behind one small API.

    lake.read("clips"), lake.append(df, "clips"), lake.upsert(df, "scores"), lake.pending(df, "clips"),
    lake.sql("SELECT ... FROM clips"), lake.history("clips")

Two engines do the Delta work. `delta-spark` is used when Delta's JVM classes are on Spark's
classpath (a cluster started with `--packages` of `python -m jobs.delta_packages`, Databricks).
`delta-rs` is used everywhere else: Spark's executors write the parquet files (mapInArrow, one
file per task and partition value), the driver collects their add actions (one small row per
file) and commits them as one Delta transaction with the `deltalake` package; reads go through
`spark.read.parquet` over the snapshot's file list. Both produce ordinary Delta tables, and either
reads, appends to and time-travels what the other wrote. A job whose tasks write a table's files
themselves (ingest, split: table_files/commit_files) has them committed as they are on both
engines; delta-spark adds them through Delta's JVM transaction API.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
from pyspark.errors import AnalysisException, PySparkException
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import to_arrow_schema
from pyspark.sql.types import ArrayType, AtomicType, DataType, LongType, MapType, StringType, StructField, StructType

from jobs.output import spark_error_line
from schemas.tables import Table, table
from udfs.errors import VidlakeError

log = logging.getLogger("vidlake")

ENGINES = ("auto", "delta-rs", "delta-spark")

# One row per parquet file a write task produced: what the driver needs for the add action.
WRITTEN_FILES = StructType(
    [
        StructField("path", StringType(), False),
        StructField("size", LongType(), False),
        StructField("num_records", LongType(), False),
        StructField("partition_values", MapType(StringType(), StringType()), False),
    ]
)

# Reader features that change which rows or columns a parquet file holds; reading such a table's
# files directly would return wrong rows, so the delta-rs engine refuses them.
UNSUPPORTED_READER_FEATURES = ("deletionVectors", "columnMapping")


# Open-source Delta's transaction log class: with it, the delta-spark engine commits the files its
# tasks write; Databricks ships Delta under com.databricks.* instead.
DELTA_LOG_CLASS = "org.apache.spark.sql.delta.DeltaLog"

# Delta log file names: a commit, and a checkpoint (single file or one part of several).
COMMIT_FILE = re.compile(r"^(\d{20})\.json$")
CHECKPOINT_FILE = re.compile(r"^(\d{20})\.checkpoint(?:\.\d{10}\.\d{10})?\.parquet$")
# Commit files read at once when checking a log (an object store answers each read slowly).
LOG_READS_AT_ONCE = 16
# The last bytes of a commit read to find its last line (a longer last line reads the whole file).
COMMIT_TAIL_BYTES = 64 * 1024
# (path, size, modification time) of the log files found sound in this process.
_SOUND_LOG_FILES: set[tuple] = set()
# The shortest vacuum retention both engines accept unforced (Delta's
# delta.deletedFileRetentionDuration default): a file removed or written (not yet committed) less
# long ago may still be read by an older snapshot's reader or committed by a running job.
DELTA_RETENTION_CHECK_HOURS = 168


class LakeError(VidlakeError):
    """A lake operation that cannot be done as asked, with the reason."""


class CommitConflict(LakeError):
    """Another writer committed to the table, after this operation read it, a change that the
    operation's result would contradict; redoing the operation from the new snapshot may succeed."""


class DamagedTableError(LakeError):
    """A table whose Delta log cannot be read as it is (a truncated, empty or missing commit), or
    whose snapshot names a data file that is gone."""


@dataclass(frozen=True)
class Compaction:
    """What `Lake.optimize` did to one table: its data files before and after, and how many the
    engine rewrote (removed) into how many new ones (added)."""

    files_before: int
    files_after: int
    files_removed: int
    files_added: int


@dataclass(frozen=True)
class Vacuumed:
    """What `Lake.vacuum` removed from one table's folder: data files and their bytes."""

    files_removed: int
    bytes_removed: int


class Lake:
    """The Delta tables under one root (a local folder or an object-store URL)."""

    def __init__(self, spark: SparkSession, root: str, engine: str = "auto", max_rows_per_file: int = 1_000_000,
                 must_exist: bool = False, commit_retries: int = 10):
        """`must_exist`: the lake is one to read, not to create, so a root that holds none of its
        tables is an error (check_exists), not an empty lake. `commit_retries`: how often a commit
        is tried again after another writer's commit got in first (lake.commit_retries)."""
        if engine not in ENGINES:
            raise LakeError(f"unknown lake engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.spark = spark
        self.root = _normalise_root(root, must_exist)
        if engine == "auto":
            from jobs.session import delta_jars_present

            engine = "delta-spark" if delta_jars_present(spark) else "delta-rs"
        self.engine_name = engine
        engine_class = DeltaSparkEngine if engine == "delta-spark" else DeltaRsEngine
        self._engine = engine_class(spark, max_rows_per_file, commit_retries)
        if must_exist:
            self.check_exists()

    def check_exists(self) -> None:
        """A one-line error unless the root holds at least one of the lake's tables: a stage that
        reads a lake would otherwise report a mistyped --lake as an empty lake."""
        if any(self.exists(name) for name in _table_names()):
            return
        if _is_local(self.root) and not Path(self.root).exists():
            raise LakeError(f"lake {self.root} does not exist; check --lake (or lake.root)")
        raise LakeError(f"{self.root} holds no lake: none of its tables ({', '.join(_table_names())}) is there; "
                        "check --lake (or lake.root), or run `vidlake ingest` first")

    def path(self, name: str) -> str:
        return f"{self.root}/{table(name).name}"

    def exists(self, name: str) -> bool:
        return self._engine.exists(self.path(name))

    def read(self, name: str, version: int | None = None, timestamp: datetime | None = None) -> DataFrame:
        """The table (at `version`, or as it was at `timestamp`: the last commit at or before it, as
        Delta's time travel means it); an empty frame with its schema if it does not exist yet."""
        contract = table(name)
        if not self.exists(name):
            if version is not None or timestamp is not None:
                at = f"version {version}" if version is not None else f"a snapshot at {timestamp}"
                raise LakeError(f"table {name!r} does not exist in {self.root}, so it has no {at}")
            return self.spark.createDataFrame([], contract.schema)
        if timestamp is not None:
            if version is not None:
                raise LakeError(f"read {name!r} at a version or at a timestamp, not both")
            return self._engine.read(self.path(name), contract, None, timestamp=_utc(timestamp))
        return self._engine.read(self.path(name), contract, version)

    def append(self, df: DataFrame, name: str) -> None:
        contract = table(name)
        self._engine.write(conform(df, contract), self.path(name), contract, "append")

    def overwrite(self, df: DataFrame, name: str) -> None:
        contract = table(name)
        self._engine.write(conform(df, contract), self.path(name), contract, "overwrite")

    def row_count(self, name: str) -> int:
        """The table's rows, from the Delta log's file statistics where every file has them (no
        Spark job), else counted; 0 when the table does not exist yet."""
        if not self.exists(name):
            return 0
        return self._engine.row_count(self.path(name), table(name))

    def table_files(self, name: str) -> TableFiles:
        """A writer of the table's parquet files, for a job whose executors write rows themselves
        (outside a Spark write); `commit_files` then adds what it wrote in one transaction."""
        return self._engine.table_files(self.path(name), table(name))

    def commit_files(self, name: str, files: TableFiles, written: list[dict]) -> None:
        self._engine.commit_files(files, written, self.path(name), table(name))

    def upsert(self, df: DataFrame, name: str, keys: tuple | list | None = None) -> None:
        """MERGE on `keys` (the table's keys by default): a matched row gets the columns `df`
        carries updated and keeps the others; an unmatched row is inserted. A re-run never
        duplicates a row."""
        contract = table(name)
        keys = tuple(keys or contract.keys)
        source = conform(df, contract, partial=True, required=keys).dropDuplicates(list(keys))
        if not self.exists(name):
            self._engine.write(conform(source, contract), self.path(name), contract, "append")
            return
        self._engine.upsert(source, self.path(name), contract, keys)

    def delete(self, name: str, condition: Column) -> None:
        """Removes the rows where `condition` holds (rows where it is null stay), in one commit;
        nothing where none matches or the table does not exist."""
        if self.exists(name):
            self._engine.delete(self.path(name), table(name), condition)

    def pending(self, df: DataFrame, name: str, keys: tuple | list | None = None) -> DataFrame:
        """The rows of `df` whose keys have no row in the table yet: the work a stage has left."""
        keys = list(keys or table(name).keys)
        if not self.exists(name):
            return df
        done = self.read(name).select(*keys).distinct()
        return df.join(done, on=keys, how="left_anti")

    def log_problems(self, name: str) -> list[str]:
        """What is wrong with the table's Delta log, every commit file of it parsed (log_problems)."""
        return log_problems(self.path(name), every_commit=True)

    def snapshot_files(self, name: str) -> tuple[int, list[tuple[str, int | None]]]:
        """The table's current version and the data files its snapshot names: each file's path
        relative to the table's folder and the size the log records (None where it records none)."""
        return self._engine.snapshot_files(self.path(name))

    def history(self, name: str) -> list[dict]:
        """The table's commits, newest first: version, timestamp, operation and its parameters."""
        if not self.exists(name):
            raise LakeError(f"table {name!r} does not exist in {self.root}")
        return self._engine.history(self.path(name))

    def optimize(self, name: str, target_file_bytes: int, zorder_by: tuple | list = ()) -> Compaction:
        """Compacts the table's files smaller than `target_file_bytes` into files of about that size
        (with `zorder_by`, rewrites them clustered on those columns), in one commit that changes no
        row: readers of older versions still see their files until a vacuum."""
        contract = table(name)
        _check_zorder_columns(contract, tuple(zorder_by))
        self._check_written(name)
        path = self.path(name)
        before = len(self._engine.snapshot_files(path)[1])
        removed, added = self._engine.optimize(path, tuple(zorder_by), target_file_bytes)
        return Compaction(before, len(self._engine.snapshot_files(path)[1]), removed, added)

    def vacuum(self, name: str, retain_hours: int, force: bool = False) -> Vacuumed:
        """Deletes the table's data files that no snapshot of the last `retain_hours` needs: files
        later commits removed, and files never committed (a killed task's), once older than that.
        The log and the current snapshot's files are never touched. A retention under Delta's check
        needs `force`: a job writing the table now could lose files it has not committed yet."""
        if retain_hours < DELTA_RETENTION_CHECK_HOURS and not force:
            raise LakeError(f"a vacuum retention of {retain_hours} hours is under Delta's check of "
                            f"{DELTA_RETENTION_CHECK_HOURS} hours: it deletes files that a running job has "
                            "written but not committed yet; pass --force when no job writes the lake")
        self._check_written(name)
        path = self.path(name)
        before = data_files_in_folder(path)
        self._engine.vacuum(path, retain_hours, enforce_retention=not force)
        gone = before.keys() - data_files_in_folder(path).keys()
        return Vacuumed(len(gone), sum(before[f] for f in gone))

    def _check_written(self, name: str) -> None:
        if not self.exists(name):
            raise LakeError(f"table {name!r} does not exist in {self.root}")

    def register_views(self) -> None:
        """Every lake table as a temporary view of its name, empty where not written yet."""
        for name in _table_names():
            self.read(name).createOrReplaceTempView(name)

    def sql(self, query: str) -> DataFrame:
        self.register_views()
        return self.spark.sql(query)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _utc(moment: datetime) -> datetime:
    """`moment` as an aware UTC datetime; a naive one is taken to be UTC already."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _table_names() -> list[str]:
    from schemas.tables import TABLES

    return list(TABLES)


def conform(df: DataFrame, contract: Table, partial: bool = False, required: tuple = ()) -> DataFrame:
    """`df` cast to the table's column types and order; missing nullable columns become null.

    With `partial`, only the columns `df` has are kept (for upserts), and `required` must be among
    them. Columns the table does not have are an error naming them: a misspelt column never
    disappears silently."""
    fields = {f.name: f for f in contract.schema.fields}
    unknown = [c for c in df.columns if c not in fields]
    if unknown:
        raise LakeError(f"table {contract.name!r} has no column(s) {', '.join(unknown)}")
    missing_required = [k for k in required if k not in df.columns]
    if missing_required:
        raise LakeError(f"writing {contract.name!r} needs the key column(s) {', '.join(missing_required)}")
    columns: list[Column] = []
    for name, field in fields.items():
        if name in df.columns:
            columns.append(F.col(name).cast(field.dataType).alias(name))
        elif partial:
            continue
        elif field.nullable:
            columns.append(F.lit(None).cast(field.dataType).alias(name))
        else:
            raise LakeError(f"table {contract.name!r} needs column {name!r}, which the rows to write lack")
    return df.select(*columns)


def _check_zorder_columns(contract: Table, columns: tuple) -> None:
    """Z-order columns must be plain data columns of the table (a partition column already
    clusters; the engines z-order by values they keep statistics of)."""
    names = contract.schema.fieldNames()
    unknown = [c for c in columns if c not in names]
    if unknown:
        raise LakeError(f"table {contract.name!r} has no column(s) {', '.join(unknown)} to z-order by; "
                        f"its columns are {', '.join(names)}")
    partition = [c for c in columns if c in contract.partition_by]
    if partition:
        raise LakeError(f"{', '.join(partition)} is a partition column of {contract.name!r}, so its files are "
                        "already apart by it; z-order by data columns")
    nested = [f.name for f in contract.schema.fields if f.name in columns and not isinstance(f.dataType, AtomicType)]
    if nested:
        raise LakeError(f"{', '.join(nested)} of {contract.name!r} holds lists, maps or structs, which Delta keeps "
                        "no min/max statistics of to cluster by; z-order by plain columns")


def data_files_in_folder(path: str) -> dict[str, int]:
    """Every data file under a table's folder, committed or not, by relative path, with its size.
    Delta keeps its log and the engines their checksums and staging under names starting with `_`
    or `.`, which are not data files."""
    filesystem, root = arrow_filesystem(path)
    infos = filesystem.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    files = {}
    for info in infos:
        relative = info.path[len(root):].lstrip("/")
        if info.type == pafs.FileType.File and not any(part.startswith(("_", ".")) for part in relative.split("/")):
            files[relative] = info.size
    return files


@contextlib.contextmanager
def session_confs(spark: SparkSession, confs: dict[str, str]) -> Iterator[None]:
    """The session's SQL confs set to `confs` while the block runs, then back as they were."""
    previous = {key: spark.conf.get(key, None) for key in confs}
    for key, value in confs.items():
        spark.conf.set(key, value)
    try:
        yield
    finally:
        for key, value in previous.items():
            if value is None:
                spark.conf.unset(key)
            else:
                spark.conf.set(key, value)


def _is_local(root: str) -> bool:
    return "://" not in root and not root.startswith("dbfs:")


def _normalise_root(root: str, must_exist: bool = False) -> str:
    """Object-store URLs as given; a local root as an absolute path, checked to be usable."""
    root = root.rstrip("/")
    if not _is_local(root):
        return root
    path = Path(root).expanduser().resolve()
    if must_exist and not path.exists():
        raise LakeError(f"lake {path} does not exist; check --lake (or lake.root)")
    if path.exists() and not path.is_dir():
        raise LakeError(f"lake root {path} is not a folder")
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LakeError(f"lake root {path} cannot be written: no write permission on {existing}")
    return str(path)


class DeltaSparkEngine:
    """Delta through its JVM implementation (delta-spark); used when its classes are present."""

    def __init__(self, spark: SparkSession, max_rows_per_file: int, commit_retries: int = 10):
        self.spark = spark
        self.max_rows_per_file = max_rows_per_file
        self.commit_retries = commit_retries
        self._transaction_api: bool | None = None  # whether DELTA_LOG_CLASS is there, once asked

    def exists(self, path: str) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, path)

    def read(self, path: str, contract: Table, version: int | None, timestamp: datetime | None = None) -> DataFrame:
        check_log(path)
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if timestamp is not None:
            reader = reader.option("timestampAsOf", timestamp.isoformat())
        if version is None and timestamp is None:
            return reader.load(path)
        try:
            return reader.load(path)
        except AnalysisException as err:
            at = f"version {version}" if version is not None else f"timestamp {timestamp.isoformat()}"
            raise LakeError(f"table {table_name_of(path)} cannot be read at {at}: {spark_error_line(err)}") from None

    def table_files(self, path: str, contract: Table) -> TableFiles:
        """The tasks write into the table's folder and commit_files adds their files with Delta's
        transaction API. Where that API is absent, or the table maps column names or has CHECK
        constraints (its files must hold physical names, its rows pass Delta's checks), they write
        beside the table and commit_files rewrites them with Delta's writer."""
        if self._commits_files_itself(path):
            return TableFiles(path, contract, self.max_rows_per_file)
        staging = f"{path.rsplit('/', 1)[0]}/_staging/files-{uuid.uuid4().hex}"
        return TableFiles(staging, contract, self.max_rows_per_file)

    def _commits_files_itself(self, path: str) -> bool:
        if self._transaction_api is None:
            self._transaction_api = delta_transaction_api_present(self.spark)
            if not self._transaction_api:
                log.warning("Delta's transaction API (%s) is not on the classpath (Databricks ships its own Delta); "
                            "files that jobs write are rewritten by Delta's writer", DELTA_LOG_CLASS)
        if not self._transaction_api:
            return False
        if not self.exists(path):
            return True
        configuration = _scala_map_as_dict(self.spark, self._transaction(path).metadata().configuration())
        return (configuration.get("delta.columnMapping.mode", "none") == "none"
                and not any(key.startswith("delta.constraints.") for key in configuration))

    def _transaction(self, path: str):
        """An OptimisticTransaction on the table's latest snapshot (path-based: no catalog table)."""
        jvm = self.spark.sparkContext._jvm
        delta_log = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(self.spark._jsparkSession, _spark_path(path))
        return delta_log.startTransaction(jvm.scala.Option.empty(), jvm.scala.Option.empty())

    def row_count(self, path: str, contract: Table) -> int:
        """Delta answers a bare count from its log's statistics."""
        return self.read(path, contract, None).count()

    def commit_files(self, files: TableFiles, written: list[dict], path: str, contract: Table) -> None:
        if files.directory == path:
            if written:
                self._commit_added_files(path, contract, written)
            return
        if written:
            rows = self.spark.read.option("basePath", files.directory).parquet(files.directory)
            self.write(conform(rows, contract), path, contract, "append")
        delete_path(self.spark, files.directory)

    def _commit_added_files(self, path: str, contract: Table, written: list[dict]) -> None:
        """One Delta transaction adding the files the tasks wrote, recorded as the WRITE (Append)
        that df.write records. A new table gets the metadata df.write would give it (its schema,
        nullable, and partitioning), and Delta adds the protocol and the session's default table
        properties to that first commit as it does for df.write.

        This relies on Delta's internal Scala API, the same in Delta 4.0 to 4.4:
        org.apache.spark.sql.delta.DeltaLog.forTable(SparkSession, String),
        DeltaLog.startTransaction(Option[CatalogTable], Option[Snapshot]) and the
        OptimisticTransaction's updateMetadata(Metadata, Boolean) and commit(Seq[Action], Operation).
        Actions are built from their JSON with Action.fromJson, as they stand in the log."""
        jvm = self.spark.sparkContext._jvm
        check_log(path)
        transaction = self._transaction(path)
        if transaction.readVersion() < 0:
            transaction.updateMetadata(_delta_action(jvm, {"metaData": _new_table_metadata(contract)}), False)
        else:
            _check_table_layout(self.spark, transaction.metadata(), contract, path)
        now = int(time.time() * 1000)
        adds = [
            _delta_action(jvm, {"add": {
                "path": quote(f["path"], safe="/="),  # the log holds URI-encoded relative paths
                "size": f["size"],
                "partitionValues": dict(f["partition_values"]),
                "modificationTime": now,
                "dataChange": True,
                "stats": json.dumps({"numRecords": f["num_records"]}, separators=(",", ":")),
            }})
            for f in written
        ]
        transaction.commit(_scala_list(jvm, adds), _write_operation(self.spark, contract.partition_by))

    def write(self, df: DataFrame, path: str, contract: Table, mode: str) -> None:
        check_log(path)
        writer = df.write.format("delta").mode(mode).option("maxRecordsPerFile", self.max_rows_per_file)
        if contract.partition_by:
            writer = writer.partitionBy(*contract.partition_by)
        writer.save(path)

    def upsert(self, source: DataFrame, path: str, contract: Table, keys: tuple) -> None:
        from delta.tables import DeltaTable

        check_log(path)
        if not _has_required_columns(source, contract):
            # MERGE would insert a new key's row with nulls where the table requires values
            _insertable(source.join(self.read(path, contract, None).select(*keys), list(keys), "left_anti"), contract)
        condition = " AND ".join(f"t.`{k}` = s.`{k}`" for k in keys)
        columns = {c: f"s.`{c}`" for c in source.columns}

        def merge() -> None:
            (
                DeltaTable.forPath(self.spark, path)
                .alias("t")
                .merge(source.alias("s"), condition)
                .whenMatchedUpdate(set=columns)
                .whenNotMatchedInsert(values=columns)
                .execute()
            )

        # Delta detects a conflicting concurrent commit itself and commits nothing; MERGE reads the
        # new snapshot when run again. The files of the failed attempt are left for VACUUM.
        retry_conflicts("upsert", path, self.commit_retries, merge)

    def delete(self, path: str, contract: Table, condition: Column) -> None:
        from delta.tables import DeltaTable

        check_log(path)
        retry_conflicts("delete", path, self.commit_retries,
                        lambda: DeltaTable.forPath(self.spark, path).delete(condition))

    def snapshot_files(self, path: str) -> tuple[int, list[tuple[str, int | None]]]:
        """Delta's JVM names the snapshot's files by their paths as they are on disk (not URI-encoded);
        their sizes are not asked for."""
        from delta.tables import DeltaTable

        check_log(path)
        version = DeltaTable.forPath(self.spark, path).history(1).collect()[0].version
        root = urlsplit(_spark_path(path)).path.rstrip("/")
        files = self.spark.read.format("delta").load(path).inputFiles()
        return version, [(urlsplit(uri).path[len(root) + 1:], None) for uri in files]

    def history(self, path: str) -> list[dict]:
        from delta.tables import DeltaTable

        check_log(path)
        rows = DeltaTable.forPath(self.spark, path).history().collect()
        return [row.asDict(recursive=True) for row in rows]

    def optimize(self, path: str, zorder_by: tuple, target_file_bytes: int) -> tuple[int, int]:
        """Delta's OPTIMIZE: files under the target size are candidates (minFileSize) and are
        binned into files of up to it (maxFileSize). Returns (files removed, files added)."""
        from delta.tables import DeltaTable

        check_log(path)
        size = str(target_file_bytes)
        confs = {"spark.databricks.delta.optimize.maxFileSize": size,
                 "spark.databricks.delta.optimize.minFileSize": size}
        with session_confs(self.spark, confs):
            builder = DeltaTable.forPath(self.spark, path).optimize()
            result = builder.executeZOrderBy(*zorder_by) if zorder_by else builder.executeCompaction()
            metrics = result.collect()[0].metrics
        return metrics.numFilesRemoved, metrics.numFilesAdded

    def vacuum(self, path: str, retain_hours: int, enforce_retention: bool) -> None:
        """Delta's VACUUM, which also deletes files the log never named once older than the
        retention; its retention check is Spark's session conf, switched off only for this call."""
        from delta.tables import DeltaTable

        check_log(path)
        confs = {} if enforce_retention else {"spark.databricks.delta.retentionDurationCheck.enabled": "false"}
        with session_confs(self.spark, confs):
            try:
                DeltaTable.forPath(self.spark, path).vacuum(float(retain_hours))
            except Exception as err:  # noqa: BLE001 - py4j's IllegalArgumentException wrapper
                if "DELTA_VACUUM_RETENTION_PERIOD_TOO_SHORT" not in str(err):
                    raise
                raise LakeError(f"table {table_name_of(path)}: {spark_error_line(err)}; its "
                                "delta.deletedFileRetentionDuration is longer; pass --force") from None


def delta_transaction_api_present(spark: SparkSession) -> bool:
    """Whether open-source Delta's transaction classes are on the driver's classpath."""
    try:
        _jvm_class(spark, DELTA_LOG_CLASS)
        return True
    except Exception:  # noqa: BLE001 - py4j raises its own error type for ClassNotFoundException
        return False


def _jvm_class(spark: SparkSession, name: str):
    """A JVM class by name, from the loader that holds the jars of spark.jars.packages."""
    jvm = spark.sparkContext._jvm
    return jvm.java.lang.Class.forName(name, True, jvm.Thread.currentThread().getContextClassLoader())


def _delta_action(jvm, action: dict):
    """A Delta action object from its log JSON (Action.fromJson: no constructor whose arguments
    change between Delta releases)."""
    return jvm.org.apache.spark.sql.delta.actions.Action.fromJson(json.dumps(action))


def _scala_list(jvm, items: Iterable):
    java_list = jvm.java.util.ArrayList()
    for item in items:
        java_list.add(item)
    return jvm.scala.jdk.javaapi.CollectionConverters.asScala(java_list).toList()


def _scala_map_as_dict(spark: SparkSession, scala_map) -> dict:
    return dict(spark.sparkContext._jvm.scala.jdk.javaapi.CollectionConverters.asJava(scala_map))


def _scala_seq_as_list(spark: SparkSession, seq) -> list:
    return list(spark.sparkContext._jvm.scala.jdk.javaapi.CollectionConverters.asJava(seq))


def _write_operation(spark: SparkSession, partition_by: tuple):
    """DeltaOperations.Write(SaveMode.Append, Some(partitionBy)), the operation df.write records,
    with every later parameter at its default. The case class has 4 parameters in Delta 4.0 and 9
    in 4.4, so its companion's apply is found by reflection and given apply$default$N for each."""
    jvm, gateway = spark.sparkContext._jvm, spark.sparkContext._gateway
    companion = _jvm_class(spark, "org.apache.spark.sql.delta.DeltaOperations$Write$").getField("MODULE$").get(None)
    apply = next(m for m in companion.getClass().getMethods()
                 if m.getName() == "apply" and m.getParameterTypes()[0].getName() == "org.apache.spark.sql.SaveMode")
    arguments = gateway.new_array(jvm.java.lang.Object, apply.getParameterCount())
    arguments[0] = jvm.org.apache.spark.sql.SaveMode.Append
    arguments[1] = jvm.scala.Some(_scala_list(jvm, partition_by))
    for position in range(2, apply.getParameterCount()):
        arguments[position] = getattr(companion, f"apply$default${position + 1}")()
    return apply.invoke(companion, arguments)


def _new_table_metadata(contract: Table) -> dict:
    """The metaData action df.write gives a new table: its schema made nullable, as Delta does."""
    return {
        "id": str(uuid.uuid4()),
        "format": {"provider": "parquet", "options": {}},
        "schemaString": _nullable(contract.schema).json(),
        "partitionColumns": list(contract.partition_by),
        "configuration": {},
        "createdTime": int(time.time() * 1000),
    }


def _check_table_layout(spark: SparkSession, metadata, contract: Table, path: str) -> None:
    """A LakeError unless the table's columns (names, types) and partitioning are the contract's:
    files written to the contract would be committed to a table that reads them otherwise (df.write
    refuses such a write the same way)."""
    schema = StructType.fromJson(json.loads(metadata.schemaString()))
    found = [(f.name, f.dataType.simpleString()) for f in schema.fields]
    expected = [(f.name, f.dataType.simpleString()) for f in contract.schema.fields]
    partitioned = _scala_seq_as_list(spark, metadata.partitionColumns())
    if found != expected or partitioned != list(contract.partition_by):
        differ = sorted(set(found) ^ set(expected)) or [("partitioned by", ",".join(partitioned) or "nothing")]
        raise LakeError(f"table {table_name_of(path)} does not have vidlake's {contract.name} layout "
                        f"({', '.join(f'{name} {kind}' for name, kind in differ)}); it cannot take these rows")


def _nullable(data_type: DataType) -> DataType:
    """`data_type` with every field, element and value nullable (Spark's asNullable)."""
    if isinstance(data_type, StructType):
        return StructType([StructField(f.name, _nullable(f.dataType), True, f.metadata) for f in data_type.fields])
    if isinstance(data_type, ArrayType):
        return ArrayType(_nullable(data_type.elementType), True)
    if isinstance(data_type, MapType):
        return MapType(_nullable(data_type.keyType), _nullable(data_type.valueType), True)
    return data_type


class DeltaRsEngine:
    """Delta through delta-rs: executors write parquet, the driver commits the transaction."""

    def __init__(self, spark: SparkSession, max_rows_per_file: int, commit_retries: int = 10):
        self.spark = spark
        self.max_rows_per_file = max_rows_per_file
        self.commit_retries = commit_retries

    def exists(self, path: str) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(path)

    def read(self, path: str, contract: Table, version: int | None, timestamp: datetime | None = None) -> DataFrame:
        snapshot = self._open(path, version) if timestamp is None else self._open_at(path, timestamp)
        files = [_spark_path(uri) for uri in snapshot.file_uris()]
        if not files:
            return self.spark.createDataFrame([], contract.schema)
        reader = self.spark.read.schema(contract.schema).option("basePath", _spark_path(path))
        try:
            df = reader.parquet(*files)
        except AnalysisException as err:
            if err.getCondition() != "PATH_NOT_FOUND":
                raise
            gone = re.search(r"Path does not exist: (\S+?)\.?(?:\s|$)", str(err))
            name = _file_key(gone.group(1)) if gone else spark_error_line(err)
            raise DamagedTableError(f"table {table_name_of(path)} is damaged: data file {name} of version "
                                    f"{snapshot.version()} is missing; run `vidlake check`") from None
        return df.select(*contract.schema.fieldNames())

    def _open(self, path: str, version: int | None = None):
        snapshot = open_delta_table(path, version)
        features = set(snapshot.protocol().reader_features or ())
        # Reader version 2 (no feature list) turns column mapping on by the table property alone.
        if snapshot.metadata().configuration.get("delta.columnMapping.mode", "none") != "none":
            features.add("columnMapping")
        blocked = features.intersection(UNSUPPORTED_READER_FEATURES)
        if blocked:
            raise LakeError(
                f"{path} uses Delta reader feature(s) {', '.join(sorted(blocked))}, which the delta-rs "
                "engine cannot read through Spark's parquet reader; run with lake.engine=delta-spark"
            )
        return snapshot

    def _open_at(self, path: str, timestamp: datetime):
        """The snapshot of the last commit at or before `timestamp`, as delta-spark picks it (a
        commit's time is its log file's modification time in milliseconds), and within its bounds:
        delta-rs's own load_as_version gives version 0 for a moment before the first commit and the
        newest version for one after the newest commit, which a later commit could still change."""
        name, iso = table_name_of(path), timestamp.isoformat()
        wanted = (timestamp - _EPOCH) // timedelta(milliseconds=1)
        commits = _commit_times(path)
        (first, first_ms), (newest, newest_ms) = commits[0], commits[-1]
        if wanted < first_ms:
            raise LakeError(f"table {name} cannot be read at timestamp {iso}: it is before the earliest commit "
                            f"the log holds (version {first} at {_iso_ms(first_ms)})")
        if wanted > newest_ms:
            raise LakeError(f"table {name} cannot be read at timestamp {iso}: it is after the newest commit "
                            f"(version {newest} at {_iso_ms(newest_ms)}); use VERSION AS OF {newest}")
        return self._open(path, max(version for version, ms in commits if ms <= wanted))

    def write(self, df: DataFrame, path: str, contract: Table, mode: str) -> None:
        self._commit(path, contract, mode, adds=self._write_files(df, path, contract), removes=[])

    def table_files(self, path: str, contract: Table) -> TableFiles:
        return TableFiles(path, contract, self.max_rows_per_file)

    def row_count(self, path: str, contract: Table) -> int:
        actions = self._open(path).get_add_actions(flatten=True)
        counts = pa.table(actions).column("num_records")
        if counts.null_count:
            return self.read(path, contract, None).count()
        return int(pc.sum(counts).as_py() or 0)

    def commit_files(self, files: TableFiles, written: list[dict], path: str, contract: Table) -> None:
        self._commit(path, contract, "append", adds=written, removes=[])

    def upsert(self, source: DataFrame, path: str, contract: Table, keys: tuple) -> None:
        """Copy-on-write MERGE: the files holding a matched key are rewritten with the updates,
        new keys are added, and one transaction swaps them in; redone from the new snapshot when
        another writer's commit conflicts with it (retry_conflicts)."""
        retry_conflicts("upsert", path, self.commit_retries, lambda: self._upsert_once(source, path, contract, keys))

    def _upsert_once(self, source: DataFrame, path: str, contract: Table, keys: tuple) -> None:
        snapshot = self._open(path)
        target = self.read(path, contract, snapshot.version()).withColumn("_file", F.input_file_name())
        source_keys = source.select(*keys)
        touched_names = [
            row._file for row in target.join(source_keys, list(keys), "left_semi").select("_file").distinct().collect()
        ]
        inserts = _insertable(source.join(target.select(*keys), list(keys), "left_anti"), contract)
        if not touched_names:
            if inserts is not None:
                adds = self._write_files(inserts, path, contract)
                self._commit(path, contract, "append", adds, [], "upsert", read_version=snapshot.version())
            return
        touched = self.spark.createDataFrame([(n,) for n in touched_names], "_file string")
        in_touched = target.join(F.broadcast(touched), "_file", "left_semi").drop("_file")
        kept = in_touched.join(source_keys, list(keys), "left_anti")
        updated = _apply_updates(in_touched, source, keys)
        rewritten = conform(kept, contract).unionByName(conform(updated, contract))
        if inserts is not None:
            rewritten = rewritten.unionByName(inserts)
        adds = self._write_files(rewritten, path, contract)
        removes = _remove_actions(snapshot, touched_names)
        self._commit(path, contract, "append", adds, removes, "upsert", read_version=snapshot.version())

    def delete(self, path: str, contract: Table, condition: Column) -> None:
        """Copy-on-write DELETE: the files holding a matching row are rewritten without those rows,
        in one transaction; redone from the new snapshot when another writer's commit conflicts."""
        retry_conflicts("delete", path, self.commit_retries, lambda: self._delete_once(path, contract, condition))

    def _delete_once(self, path: str, contract: Table, condition: Column) -> None:
        snapshot = self._open(path)
        target = self.read(path, contract, snapshot.version()).withColumn("_file", F.input_file_name())
        matches = F.coalesce(condition, F.lit(False))
        touched_names = [row._file for row in target.where(matches).select("_file").distinct().collect()]
        if not touched_names:
            return
        touched = self.spark.createDataFrame([(n,) for n in touched_names], "_file string")
        kept = target.join(F.broadcast(touched), "_file", "left_semi").where(~matches).drop("_file")
        adds = self._write_files(conform(kept, contract), path, contract)
        removes = _remove_actions(snapshot, touched_names)
        self._commit(path, contract, "append", adds, removes, "delete", read_version=snapshot.version())

    def history(self, path: str) -> list[dict]:
        return open_delta_table(path).history()

    def optimize(self, path: str, zorder_by: tuple, target_file_bytes: int) -> tuple[int, int]:
        """delta-rs's compaction (or z-order), run in this process: it writes the new files in the
        table's partition folders with full statistics (numRecords included, so row_count still
        reads the log) and commits them against the version it read. Returns (removed, added)."""
        from deltalake.transaction import CommitProperties

        optimizer = self._open(path).optimize
        properties = CommitProperties(custom_metadata={"vidlake.operation": "optimize"})
        if zorder_by:
            metrics = optimizer.z_order(list(zorder_by), target_size=target_file_bytes, commit_properties=properties)
        else:
            metrics = optimizer.compact(target_size=target_file_bytes, commit_properties=properties)
        return metrics["numFilesRemoved"], metrics["numFilesAdded"]

    def vacuum(self, path: str, retain_hours: int, enforce_retention: bool) -> None:
        """A full vacuum: besides the files later commits removed, it deletes those the log never
        named (a plain one only looks at removed files), each once older than the retention."""
        from deltalake.exceptions import DeltaError

        try:
            self._open(path).vacuum(retain_hours, dry_run=False, enforce_retention_duration=enforce_retention,
                                    full=True)
        except DeltaError as err:
            raise LakeError(f"table {table_name_of(path)} cannot be vacuumed: {spark_error_line(err)}") from None

    def snapshot_files(self, path: str) -> tuple[int, list[tuple[str, int | None]]]:
        """From the add actions, whose paths are URL-encoded relative paths."""
        snapshot = open_delta_table(path)
        actions = pa.table(snapshot.get_add_actions(flatten=True)).select(["path", "size_bytes"]).to_pylist()
        return snapshot.version(), [(unquote(a["path"]), a["size_bytes"]) for a in actions]

    def _write_files(self, df: DataFrame, path: str, contract: Table) -> list[dict]:
        write = _parquet_writer(TableFiles(path, contract, self.max_rows_per_file))
        return [row.asDict() for row in df.mapInArrow(write, WRITTEN_FILES).collect()]

    def _commit(
        self, path: str, contract: Table, mode: str, adds: list[dict], removes: list, operation: str | None = None,
        read_version: int | None = None,
    ) -> None:
        """One transaction of `adds` and `removes`. A rewrite (upsert, delete) gives the
        `read_version` it computed them from: the commits other writers made since are checked
        against it (rewrite_conflict) and a conflict is a CommitConflict. A blind write (append,
        overwrite) conflicts with nothing. Either way the commit is made against the newest
        version this process has checked, and only as the version after it: delta-rs's own
        resolution of a lost race is not used, as it lets a rewrite remove a file that a
        compaction already replaced (deltalake 1.6.6), which duplicates its rows. A commit that
        does not happen leaves no file of it in the table's folder."""
        from deltalake import Schema
        from deltalake.transaction import AddAction, CommitProperties, create_table_with_add_actions

        now = int(time.time() * 1000)
        actions = [
            AddAction(
                path=f["path"],
                size=f["size"],
                partition_values=dict(f["partition_values"]),
                modification_time=now,
                data_change=True,
                stats=json.dumps({"numRecords": f["num_records"]}),
            )
            for f in adds
        ]
        schema = Schema.from_arrow(_arrow_schema(contract.schema))
        partition_by = list(contract.partition_by) or None
        metadata = {"vidlake.operation": operation or mode, "isBlindAppend": read_version is None and mode == "append"}
        if read_version is not None:
            metadata["readVersion"] = read_version
        if not (actions or removes or mode == "overwrite"):
            return
        if read_version is None and not self.exists(path):
            try:
                create_table_with_add_actions(path, schema, actions, mode="error", partition_by=partition_by,
                                              commit_properties=CommitProperties(custom_metadata=metadata))
                return
            except Exception:  # noqa: BLE001 - delta-rs raises a generic error when another writer created it first
                if not self.exists(path):
                    _discard_files(path, adds)
                    raise
        checked = read_version
        for race in range(self.commit_retries + 1):
            latest = open_delta_table(path)
            if checked is not None and latest.version() > checked:
                try:
                    _check_rewrite_conflicts(path, checked, latest.version(), removes, operation or mode)
                except CommitConflict:
                    _discard_files(path, adds)
                    raise
                checked = latest.version()
            properties = CommitProperties(custom_metadata=metadata, max_commit_retries=0)
            try:
                latest.create_write_transaction(actions + removes, mode, schema, partition_by,
                                                commit_properties=properties)
                return
            except Exception:  # noqa: BLE001 - CommitFailedError, or another error of the same lost race
                if open_delta_table(path).version() == latest.version():
                    _discard_files(path, adds)
                    raise
            log.info("lake: table %s: another writer committed version %d first; committing after it (%d of %d)",
                     table_name_of(path), latest.version() + 1, race + 1, self.commit_retries)
        _discard_files(path, adds)
        raise LakeError(f"{operation or mode} of table {table_name_of(path)} gave up: other writers committed first "
                        f"{self.commit_retries + 1} times (lake.commit_retries={self.commit_retries})")


def retry_conflicts(what: str, path: str, retries: int, attempt: Callable[[], None]) -> None:
    """`attempt` (an operation that reads the table and commits what it computed from it), redone
    from the new snapshot up to `retries` times while another writer's commit conflicts with it;
    then a one-line LakeError naming the table and that commit."""
    for retry in range(retries + 1):
        try:
            attempt()
            return
        except Exception as err:  # noqa: BLE001 - only commit conflicts are retried, the rest re-raised
            conflict = commit_conflict(err)
            if conflict is None:
                raise
            if retry == retries:
                raise LakeError(f"{what} of table {table_name_of(path)} gave up after {retries} retries "
                                f"(lake.commit_retries): {conflict}") from None
            log.warning("lake: %s of table %s conflicted: %s; redoing it from the new snapshot (retry %d of %d)",
                        what, table_name_of(path), conflict, retry + 1, retries)


def commit_conflict(err: Exception) -> str | None:
    """What another writer's commit did that conflicts with this one, as one line: for the
    delta-rs engine's CommitConflict, and for delta-spark's ConcurrentModification family (its
    message names the conflicting commit's version and operation); None for any other error."""
    if isinstance(err, CommitConflict):
        return str(err)
    # delta-spark's Python package converts them to its delta.exceptions classes (siblings, with no
    # common base); a Delta error class names them where the conversion is not installed.
    condition = err.getCondition() if isinstance(err, PySparkException) else None
    if not (type(err).__module__.startswith("delta.exceptions") or (condition or "").startswith("DELTA_CONCURRENT")):
        return None
    text = str(err)
    version = re.search(r'"version"\s*:\s*(\d+)', text)
    operation = re.search(r'"operation"\s*:\s*"([^"]+)"', text)
    other = "a concurrent commit"
    if version or operation:
        other += " (" + ", ".join(filter(None, [version and f"version {version.group(1)}",
                                                  operation and operation.group(1)])) + ")"
    return f"{other}: {spark_error_line(err)}"


def _check_rewrite_conflicts(path: str, read_version: int, latest: int, removes: list, operation: str) -> None:
    """A CommitConflict naming the first commit after `read_version` (up to `latest`) that a
    rewrite of the table as it was at `read_version` contradicts: one that changed the schema or
    protocol, removed a file the rewrite removes (a compaction's too), removed rows the rewrite
    read, or added rows it did not read other than by a blind append (under which an upsert of
    the same new key would insert it twice; Delta's WriteSerializable lets blind appends through)."""
    rewritten = {_file_key(r.path) for r in removes}
    for version in range(read_version + 1, latest + 1):
        actions = _commit_actions(path, version)
        info = next((a["commitInfo"] for a in actions if "commitInfo" in a), {})
        blind = bool(info.get("isBlindAppend"))
        reason = None
        for action in actions:
            if "metaData" in action or "protocol" in action:
                reason = "changed the table's schema or protocol"
            elif "remove" in action and _file_key(action["remove"]["path"]) in rewritten:
                reason = f"removed a file this {operation} rewrites"
            elif "remove" in action and action["remove"].get("dataChange", True):
                reason = f"removed rows this {operation} read"
            elif "add" in action and action["add"].get("dataChange", True) and not blind:
                reason = f"added rows this {operation} did not read"
            if reason:
                raise CommitConflict(f"version {version} ({info.get('operation', 'an unknown operation')} by "
                                     f"{info.get('engineInfo', 'another writer')}) {reason}")


def _commit_actions(path: str, version: int) -> list[dict]:
    """The actions of one commit of the table's log; a commit already cleaned up is a conflict, as
    what it did cannot be checked."""
    filesystem, root = arrow_filesystem(path)
    try:
        with filesystem.open_input_file(f"{root}/_delta_log/{_commit_name(version)}") as handle:
            return [json.loads(line) for line in handle.read().split(b"\n") if line.strip()]
    except FileNotFoundError:
        raise CommitConflict(f"version {version}'s commit file is gone from the log, so it cannot be checked") from None


def _discard_files(path: str, adds: list[dict]) -> None:
    """Delete the data files of a commit that did not happen: no snapshot names them, and they
    would otherwise wait for a vacuum."""
    filesystem, root = arrow_filesystem(path)
    for f in adds:
        try:
            filesystem.delete_file(f"{root}/{f['path']}")
        except OSError as err:
            log.warning("lake: table %s: could not delete %s of a commit that did not happen (%s); vacuum removes it",
                        table_name_of(path), f["path"], spark_error_line(err))


def _commit_times(path: str) -> list[tuple[int, int]]:
    """(version, milliseconds since 1970) of each commit file of a table's log, oldest first."""
    filesystem, root = arrow_filesystem(path)
    selector = pafs.FileSelector(f"{root}/_delta_log", allow_not_found=True)
    commits = sorted((int(m.group(1)), info.mtime_ns // 1_000_000)
                     for info in filesystem.get_file_info(selector) if (m := COMMIT_FILE.match(info.base_name)))
    return commits


def _iso_ms(epoch_ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=epoch_ms)).isoformat()


def table_name_of(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


def open_delta_table(path: str, version: int | None = None):
    """delta-rs's DeltaTable of `path` once its log is checked (check_log); an error delta-rs
    still raises is one line naming the table."""
    from deltalake import DeltaTable
    from deltalake.exceptions import DeltaError

    check_log(path)
    try:
        return DeltaTable(path, version=version)
    except DeltaError as err:
        at = "" if version is None else f" at version {version}"
        raise LakeError(f"table {table_name_of(path)} cannot be read{at}: {spark_error_line(err)}") from None


def check_log(path: str) -> None:
    """A DamagedTableError naming the table and the file when the log a reader of the table's
    current snapshot reads is damaged (log_problems). delta-rs itself stops with a Rust error and
    backtrace on a truncated commit, and reads an empty one as a commit of nothing: its rows would
    silently be missing."""
    problems = log_problems(path)
    if problems:
        raise DamagedTableError(f"table {table_name_of(path)} is damaged: {problems[0]}; run `vidlake check`")


def log_problems(path: str, every_commit: bool = False) -> list[str]:
    """What is wrong with a table's Delta log, one line each (none: nothing found).

    A reader of the current snapshot reads the newest checkpoint and the commits after it: each of
    those commits must be there, not empty, and end in a whole JSON line (a truncated commit ends
    inside one); the checkpoint's parquet footer must read. That is at most a checkpoint interval
    of commits (delta-rs checkpoints every 100), a read of each one's last bytes, and a file found
    sound is not read again in this process while its size and time stay the same. With
    `every_commit`, every commit file the log still holds is parsed whole."""
    filesystem, root = arrow_filesystem(path)
    selector = pafs.FileSelector(f"{root}/_delta_log", allow_not_found=True)
    files = {info.base_name: info for info in filesystem.get_file_info(selector) if info.type == pafs.FileType.File}
    commits = {int(m.group(1)): info for name, info in files.items() if (m := COMMIT_FILE.match(name))}
    checkpoints: dict[int, list] = {}
    for name, info in files.items():
        if m := CHECKPOINT_FILE.match(name):
            checkpoints.setdefault(int(m.group(1)), []).append(info)
    if not commits and not checkpoints:
        return []
    checkpoint = max(checkpoints, default=-1)
    latest = max(commits, default=checkpoint)
    problems = [f"commit {_commit_name(v)} is missing (the log goes on to {_commit_name(latest)})"
                for v in range(checkpoint + 1, latest + 1) if v not in commits]
    to_read = [info for v, info in sorted(commits.items()) if every_commit or v > checkpoint]
    to_read += checkpoints.get(checkpoint, [])
    if not every_commit:
        to_read = [info for info in to_read if _file_stamp(info) not in _SOUND_LOG_FILES]

    def problem_of(info) -> str | None:
        return _log_file_problem(filesystem, info, whole=every_commit)

    with ThreadPoolExecutor(max_workers=max(1, min(LOG_READS_AT_ONCE, len(to_read)))) as pool:
        found = list(pool.map(problem_of, to_read))
    for info, problem in zip(to_read, found, strict=True):
        if problem is None:
            _SOUND_LOG_FILES.add(_file_stamp(info))
        else:
            problems.append(problem)
    return problems


def _file_stamp(info) -> tuple:
    return info.path, info.size, info.mtime_ns


def _commit_name(version: int) -> str:
    return f"{version:020d}.json"


def _log_file_problem(filesystem, info, whole: bool) -> str | None:
    """Why one commit or checkpoint file cannot be read, or None; a commit is parsed `whole`, or
    only its last line."""
    kind = "commit" if COMMIT_FILE.match(info.base_name) else "checkpoint"
    if not info.size:
        return f"{kind} {info.base_name} is empty (0 bytes; truncated?)"
    try:
        if kind == "checkpoint":
            from pyarrow import parquet as pq

            pq.read_metadata(info.path, filesystem=filesystem)
            return None
        lines = _commit_lines(filesystem, info, whole)
    except (OSError, pa.ArrowInvalid) as err:
        return f"{kind} {info.base_name} cannot be read ({spark_error_line(err)}; truncated?)"
    try:
        if lines and all(isinstance(json.loads(line), dict) for line in lines):
            return None
    except ValueError:
        pass
    return f"{kind} {info.base_name} is not valid JSON (truncated?)"


def _commit_lines(filesystem, info, whole: bool) -> list[bytes]:
    """A commit's non-empty lines: all of them, or only the last one."""
    with filesystem.open_input_file(info.path) as handle:
        if not whole and info.size > COMMIT_TAIL_BYTES:
            handle.seek(info.size - COMMIT_TAIL_BYTES)
            tail = handle.read().rstrip(b"\n")
            if b"\n" in tail:
                return [tail.rsplit(b"\n", 1)[1]]
            handle.seek(0)
        lines = [line for line in handle.read().split(b"\n") if line.strip()]
    return lines if whole else lines[-1:]


def arrow_filesystem(uri: str) -> tuple:
    """pyarrow's file system and path for a lake location that Spark names: a local path, an
    object-store URL (s3a:// as s3://), or Databricks' dbfs:/ through its /dbfs mount."""
    from pyarrow import fs

    if uri.startswith("dbfs:"):
        uri = "/dbfs/" + uri[len("dbfs:"):].lstrip("/")
    elif uri.startswith("s3a://"):
        uri = "s3://" + uri[len("s3a://"):]
    if uri.startswith("s3://"):
        # A file smaller than one upload part (a commit's worth of rows, a staged block) is sent
        # as one PUT when it is closed, not as a multipart upload of three requests.
        uri += "?allow_delayed_open=true"
    return fs.FileSystem.from_uri(uri)


def delete_path(spark: SparkSession, path: str) -> None:
    """Remove a file or folder (recursively) on any file system Spark can reach."""
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path(path)
    hadoop_path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).delete(hadoop_path, True)


def _has_required_columns(df: DataFrame, contract: Table) -> bool:
    """Whether `df` has every column the table requires, so that its rows can be inserted whole."""
    try:
        conform(df, contract)
    except LakeError:
        return False
    return True


def _insertable(new_rows: DataFrame, contract: Table) -> DataFrame | None:
    """New keys of an upsert as full rows; None when there are none. Rows that lack a column the
    table requires are an error only if there is such a row to insert."""
    try:
        return conform(new_rows, contract)
    except LakeError as err:
        if new_rows.isEmpty():
            return None
        raise LakeError(f"upsert inserts new keys into {contract.name!r}, but {err}") from None


def _apply_updates(in_touched: DataFrame, source: DataFrame, keys: tuple) -> DataFrame:
    """Matched target rows with the source's non-key columns replacing theirs."""
    updated_columns = [c for c in source.columns if c not in keys]
    return in_touched.drop(*updated_columns).join(source, list(keys), "inner")


def _remove_actions(snapshot, touched_names: list[str]) -> list:
    """Remove actions for the snapshot files Spark read as `touched_names` (full URIs)."""
    from deltalake.transaction import RemoveAction

    touched = {_file_key(n) for n in touched_names}
    actions = pa.table(snapshot.get_add_actions(flatten=False)).to_pylist()
    now = int(time.time() * 1000)
    removes = []
    for add in actions:
        if _file_key(add["path"]) in touched:
            removes.append(
                RemoveAction(
                    path=add["path"],
                    data_change=True,
                    deletion_timestamp=now,
                    size=add["size_bytes"],
                    partition_values=add.get("partition"),
                )
            )
    if len(removes) != len(touched):
        raise LakeError(f"{snapshot.table_uri}: could not match the files to rewrite to the table's snapshot")
    return removes


def _file_key(path: str) -> str:
    """A data file's name, the same whether Spark names it by URI or the log by relative path:
    names carry a random UUID, so the name alone identifies the file within its table."""
    return unquote(path).rsplit("/", 1)[-1]


def _spark_path(uri: str) -> str:
    return "s3a://" + uri[len("s3://") :] if uri.startswith("s3://") else uri


def _arrow_schema(schema: StructType) -> pa.Schema:
    return to_arrow_schema(schema, timezone="UTC")


# Characters Hive (and so Spark and Delta) escape in partition directory names.
_PATH_UNSAFE = set('"#%\'*/:=?\\\x7f{[]^') | {chr(c) for c in range(0x20)}


def _escape_partition_value(value: str | None) -> str:
    if value is None:
        return "__HIVE_DEFAULT_PARTITION__"
    return "".join(f"%{ord(c):02X}" if c in _PATH_UNSAFE else c for c in value)


class TableFiles:
    """Writes rows as parquet files in a table's layout under `directory` (partition columns in the
    folder names, not the files) and returns one WRITTEN_FILES dict per file. Picklable: executors
    use it inside mapInArrow, and so can any job that writes a table's files itself."""

    def __init__(self, directory: str, contract: Table, max_rows_per_file: int):
        self.directory = directory
        self.partition_by = list(contract.partition_by)
        fields = [f for f in contract.schema.fields if f.name not in self.partition_by]
        self.file_schema = pa.schema([f.with_nullable(True) for f in _arrow_schema(StructType(fields))])
        self.dictionary_columns = _dictionary_columns(self.file_schema, contract.distinct)
        self.max_rows_per_file = max_rows_per_file

    def write(self, batches: Iterable[pa.RecordBatch]) -> list[dict]:
        from pyarrow import parquet as pq

        filesystem, root = arrow_filesystem(self.directory)
        open_files: dict[tuple, list] = {}
        finished: list[dict] = []

        def close(key: tuple) -> None:
            writer, relative, rows = open_files.pop(key)
            writer.close()
            size = filesystem.get_file_info(f"{root}/{relative}").size
            finished.append({"path": relative, "size": size, "num_records": rows, "partition_values": dict(key)})

        def open_file(key: tuple) -> list:
            directory = "/".join(f"{quote(k)}={_escape_partition_value(v)}" for k, v in key)
            relative = (f"{directory}/" if directory else "") + f"part-{uuid.uuid4().hex}.snappy.parquet"
            filesystem.create_dir(f"{root}/{relative}".rsplit("/", 1)[0], recursive=True)
            writer = pq.ParquetWriter(f"{root}/{relative}", self.file_schema, filesystem=filesystem,
                                      use_dictionary=self.dictionary_columns)
            open_files[key] = [writer, relative, 0]
            return open_files[key]

        for batch in batches:
            for key, part in _split_by_partition(batch, self.partition_by):
                rows = pa.Table.from_batches([part]).select(self.file_schema.names).cast(self.file_schema)
                while rows.num_rows:
                    entry = open_files.get(key) or open_file(key)
                    chunk = rows.slice(0, self.max_rows_per_file - entry[2])
                    entry[0].write_table(chunk)
                    entry[2] += chunk.num_rows
                    rows = rows.slice(chunk.num_rows)
                    if entry[2] >= self.max_rows_per_file:
                        close(key)
        for key in list(open_files):
            close(key)
        return finished


def _dictionary_columns(schema: pa.Schema, distinct: tuple) -> list[str]:
    """Parquet's leaf column paths (`clip_hints.list.element.start_s`) of the columns not in
    `distinct`: what ParquetWriter's use_dictionary names."""
    import io

    from pyarrow import parquet as pq

    empty = io.BytesIO()
    pq.write_table(schema.empty_table(), empty)
    leaves = pq.ParquetFile(io.BytesIO(empty.getvalue())).schema
    paths = [leaves.column(i).path for i in range(len(leaves))]
    return [path for path in paths if path.split(".", 1)[0] not in distinct]


def _parquet_writer(files: TableFiles):
    """The mapInArrow function that writes one task's rows with `files` and yields one
    WRITTEN_FILES row per file."""

    def write(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        finished = files.write(batches)
        if finished:
            yield pa.RecordBatch.from_pylist(finished, schema=_arrow_schema(WRITTEN_FILES))

    return write


def _split_by_partition(batch: pa.RecordBatch, partition_by: list[str]) -> Iterator[tuple[tuple, pa.RecordBatch]]:
    """(partition key, rows) pairs of one batch; the key is a tuple of (column, value as text)."""
    if not partition_by:
        yield (), batch
        return
    import pyarrow.compute as pc

    table_ = pa.Table.from_batches([batch])
    keys = table_.select(partition_by).group_by(partition_by).aggregate([]).to_pylist()
    for key in keys:
        mask = None
        for column, value in key.items():
            cond = pc.is_null(table_[column]) if value is None else pc.equal(table_[column], value)
            mask = cond if mask is None else pc.and_(mask, cond)
        part = table_.filter(mask).combine_chunks().to_batches()
        if part:
            yield tuple((c, None if v is None else str(v)) for c, v in key.items()), part[0]

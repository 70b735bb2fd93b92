"""`vidlake catalog --database NAME [--print]`: the lake's tables by name in a Spark catalog.

    CREATE DATABASE IF NOT EXISTS `vidlake`
    CREATE TABLE IF NOT EXISTS `vidlake`.`clips` USING DELTA LOCATION '/data/lake/clips'

One statement per table the lake holds, run in the session's catalog (delta-spark: Delta's catalog
reads the table at that location), so `spark-sql`, a notebook or a Databricks SQL warehouse query
`vidlake.clips`, with time travel, as any Delta table. The tables stay where they are: the catalog
only names them. `--print` prints the statements instead (any engine), to paste into a SQL
warehouse. A notebook calls `register_lake_tables(spark, lake, "vidlake")` on its own session.

Embedded local Spark's catalog lives in memory: its registrations end with the session. They last
where the session has a metastore (Hive's, Unity Catalog, AWS Glue).
"""
from __future__ import annotations

import argparse
import re
import sys

from pyspark.sql import SparkSession

from jobs.context import JobContext
from jobs.lake import Lake, LakeError
from jobs.output import reported
from jobs.sql_guard import quoted
from schemas.tables import TABLES

# A database, or catalog.database (Unity Catalog's `main.vidlake`).
DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Register every lake table in the Spark session's catalog as DATABASE.<table> (CREATE TABLE IF NOT EXISTS "
        "... USING DELTA LOCATION ...; needs the delta-spark engine). Registrations last only where the session "
        "has a metastore (Hive, Unity Catalog, Glue); embedded local Spark's catalog is in memory."
    )
    parser.add_argument("--database", required=True,
                        help="the database to register the tables in (created if missing): NAME or CATALOG.NAME")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the SQL statements instead of running them (e.g. to paste into a Databricks "
                             "SQL warehouse); works on either engine")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    if args.print_only:
        for statement in catalog_statements(ctx.lake, args.database):
            print(statement + ";")
        return 0
    for name in register_lake_tables(ctx.spark, ctx.lake, args.database):
        print(f"[vidlake] catalog: {args.database}.{name} -> {ctx.lake.path(name)}")
    return 0


def catalog_statements(lake: Lake, database: str) -> list[str]:
    """CREATE DATABASE and one CREATE TABLE ... USING DELTA LOCATION per table the lake holds."""
    if not DATABASE_NAME.match(database):
        raise LakeError(f"--database {database!r}: give NAME or CATALOG.NAME (letters, digits, '_')")
    schema = ".".join(quoted(part) for part in database.split("."))
    statements = [f"CREATE DATABASE IF NOT EXISTS {schema}"]
    for name in lake_tables(lake):
        location = lake.path(name).replace("\\", "\\\\").replace("'", "\\'")
        statements.append(f"CREATE TABLE IF NOT EXISTS {schema}.{quoted(name)} USING DELTA LOCATION '{location}'")
    return statements


def lake_tables(lake: Lake) -> list[str]:
    """The tables the lake holds (written at least once)."""
    return [name for name in TABLES if lake.exists(name)]


def register_lake_tables(spark: SparkSession, lake: Lake, database: str) -> list[str]:
    """Runs catalog_statements in `spark`'s catalog; returns the tables registered. A table of that
    name already in the database is left as it is (IF NOT EXISTS)."""
    if lake.engine_name != "delta-spark":
        raise LakeError("registering tables in the catalog needs the delta-spark engine (Delta's catalog reads "
                        "them): --set lake.engine=delta-spark, or --print the statements to run elsewhere")
    for statement in catalog_statements(lake, database):
        reported(lambda s=statement: spark.sql(s), "catalog")
    return lake_tables(lake)


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("catalog"))

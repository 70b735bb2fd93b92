"""The lake's tables by name for Spark SQL users: `vidlake catalog` registers them in the session's
catalog, and the README's `spark-sql ... delta.\\`$PWD/lake/clips\\`` line reads a lake as it stands."""
from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

from jobs.catalog import catalog_statements
from jobs.cli import run_stage

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)


def write_clips(spark, lake, count: int) -> None:
    rows = [dict(clip_id=f"c{i}", video_id="v1", clip_index=i, start_s=float(i), end_s=i + 1.0, start_frame=i * 24,
                 end_frame=i * 24 + 24, num_frames=24, detector="content", created_at=NOW) for i in range(count)]
    lake.append(spark.createDataFrame(rows), "clips")


def vidlake(lake, capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = run_stage([*args, "--lake", lake.root, "--set", "spark.master=local[2]"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_catalog_registers_every_lake_table_by_name_on_delta_spark(spark, lake, capsys):
    """On delta-spark `NAME.clips` is then the lake's table (time travel included); on delta-rs the
    command says in one line that it needs delta-spark, and --print still gives the statements."""
    write_clips(spark, lake, 3)
    lake.append(spark.createDataFrame([("c1", 1.0)], "clip_id string, motion double"), "scores")
    lake.append(spark.createDataFrame([("c2", 2.0)], "clip_id string, motion double"), "scores")
    database = f"vidlake_{uuid.uuid4().hex[:8]}"
    code, out, err = vidlake(lake, capsys, "catalog", "--database", database, "--print")
    assert code == 0, err
    assert out.splitlines() == [
        f"CREATE DATABASE IF NOT EXISTS `{database}`;",
        f"CREATE TABLE IF NOT EXISTS `{database}`.`clips` USING DELTA LOCATION '{lake.path('clips')}';",
        f"CREATE TABLE IF NOT EXISTS `{database}`.`scores` USING DELTA LOCATION '{lake.path('scores')}';",
    ]
    assert not spark.catalog.databaseExists(database)  # --print only prints
    code, out, err = vidlake(lake, capsys, "catalog", "--database", database)
    if lake.engine_name != "delta-spark":
        assert code == 2 and err.count("\n") == 1 and "needs the delta-spark engine" in err, err
        return
    try:
        assert code == 0, err
        assert spark.sql(f"SELECT count(*) FROM {database}.clips").first()[0] == lake.row_count("clips") == 3
        assert spark.sql(f"SELECT count(*) FROM {database}.scores VERSION AS OF 0").first()[0] == 1
        assert vidlake(lake, capsys, "catalog", "--database", database)[0] == 0  # again: IF NOT EXISTS
        code, out, _ = vidlake(lake, capsys, "sql", f"SELECT count(*) AS n FROM {database}.scores")
        assert code == 0 and out.split() == ["n", "2"]
    finally:
        spark.sql(f"DROP DATABASE IF EXISTS {database} CASCADE")  # the tables' files stay: they are external


def test_a_database_name_that_is_not_an_identifier_is_one_line(lake, capsys, spark):
    write_clips(spark, lake, 1)
    code, _, err = vidlake(lake, capsys, "catalog", "--database", "x; DROP TABLE y", "--print")
    assert code == 2 and err.count("\n") == 1 and "give NAME or CATALOG.NAME" in err
    assert catalog_statements(lake, "main.vidlake")[0] == "CREATE DATABASE IF NOT EXISTS `main`.`vidlake`"


def readme_spark_sql_line() -> str:
    [line] = [line for line in (ROOT / "README.md").read_text().splitlines() if line.startswith("spark-sql ")]
    return line


def test_the_readmes_spark_sql_line_reads_the_lake_by_path(spark, lake, tmp_path):
    """The README's line, run as it is by bash in the folder holding ./lake, with pyspark's own
    spark-sql script and Delta's jars resolved by --packages (Ivy's cache)."""
    assert Path(lake.root) == tmp_path / "lake"
    write_clips(spark, lake, 4)
    line = readme_spark_sql_line()
    assert "$(python -m jobs.delta_packages)" in line and "delta.\\`$PWD/lake/clips\\`" in line
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable,
           "SPARK_LOCAL_IP": "127.0.0.1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["bash", "-c", line], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"^c0\t0\t0\.0\t1\.0$", result.stdout, re.MULTILINE), result.stdout[-2000:]
    assert len([row for row in result.stdout.splitlines() if re.match(r"^c\d\t", row)]) == 4

"""`vidlake sql`, `curate --sql`, `curate --where` and `report --where` are read-only: every hostile
statement is refused with a one-line reason and leaves the lake as it was; queries still run.

Each case goes through the CLI's own code path (jobs.cli.run_stage, in this process, on the test
session) over a real lake (tests/curated_lake.py).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from curated_lake import PASSING, curated_context

from jobs.cli import run_stage
from jobs.filters import conditions
from jobs.output import QueryError
from jobs.report import funnel_counts
from jobs.views import register_clip_view
from schemas.tables import TABLES


@pytest.fixture(scope="module")
def built(spark, engine, tmp_path_factory):
    ctx, ids = curated_context(spark, tmp_path_factory.mktemp("sqlguard"), engine)
    return ctx, ids, {name: ctx.lake.row_count(name) for name in TABLES}


def vidlake(ctx, capsys, *args: str) -> tuple[int, str, str]:
    """`vidlake ARGS --lake <the lake>`: exit status, stdout, stderr."""
    capsys.readouterr()
    code = run_stage([*args, "--lake", ctx.lake.root, "--set", "spark.master=local[2]"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def through(path: str, text: str, ctx, tmp_path: Path, capsys) -> tuple[int, str, str]:
    """`text` given to `vidlake sql`, or to curate as --where or as an --sql file."""
    if path == "sql":
        return vidlake(ctx, capsys, "sql", text)
    out = str(tmp_path / "selected.parquet")
    if path == "curate --where":
        return vidlake(ctx, capsys, "curate", "--where", text, "--export", "parquet", "--out", out)
    query = tmp_path / "select.sql"
    query.write_text(text, encoding="utf-8")
    return vidlake(ctx, capsys, "curate", "--sql", str(query), "--export", "parquet", "--out", out)


HOSTILE = [
    ("sql", "FROM clips INSERT OVERWRITE DIRECTORY '{lake}/video_files' USING parquet SELECT clip_id",
     "INSERT ... DIRECTORY (a write)"),
    ("curate --sql", "FROM clips INSERT OVERWRITE DIRECTORY '{lake}/video_files' USING parquet SELECT clip_id",
     "INSERT ... DIRECTORY (a write)"),
    ("sql", "/* /* */ SELECT */ CREATE TABLE t USING parquet LOCATION '{tmp}/elsewhere' AS SELECT 1",
     "CREATE TABLE ... AS SELECT (a write)"),
    ("sql", "SELECT reflect('java.lang.System', 'load', '{tmp}/lib.so')", "the function reflect reaches Java"),
    ("sql", "SELECT java_method('java.lang.System', 'exit', 3)", "the function java_method reaches Java"),
    ("curate --where", "java_method('java.lang.System', 'exit', 3) = 3", "the function java_method reaches Java"),
    ("sql", "SELECT system.builtin.java_method('java.lang.System', 'exit', 3)", "the function java_method"),
    ("sql", "SELECT IDENTIFIER('java' || '_method')('java.lang.System', 'exit', 3)", "IDENTIFIER(...)"),
    ("curate --where", "exists(array(1), x -> try_reflect('java.lang.System', 'exit', 3) IS NULL)",
     "the function try_reflect reaches Java"),
    ("sql", "SELECT * FROM clips LATERAL VIEW java_method('java.lang.System', 'exit', 3) e AS v",
     "the function java_method"),
    ("sql", "SELECT * FROM text.`/etc/passwd`", "files are not read by path here (text.`/etc/passwd`)"),
    ("curate --where", "EXISTS (SELECT * FROM text.`/etc/passwd`)", "files are not read by path here"),
    ("sql", "SELECT * FROM parquet.`{lake}/clips`", "files are not read by path here (parquet.`"),
    ("curate --sql", "SELECT clip_id FROM json.`{tmp}`", "files are not read by path here (json.`"),
    ("curate --where", "EXISTS (SELECT 1 FROM scores VERSION AS OF 0)", "time travel (VERSION/TIMESTAMP AS OF)"),
    ("curate --where", "1=1) UNION ALL SELECT * FROM clip_view WHERE (1=1", "PARSE_SYNTAX_ERROR"),
    ("curate --where", "EXISTS (SELECT TRANSFORM(clip_id) USING 'touch {tmp}/ran' FROM clips)",
     "TRANSFORM ... USING (runs a program)"),
    ("sql", "SELECT TRANSFORM(clip_id) USING 'touch {tmp}/ran' FROM clips", "TRANSFORM ... USING (runs a program)"),
    ("sql", "SELECT 1; DROP TABLE clips", "PARSE_SYNTAX_ERROR"),
    ("sql", "BEGIN SELECT 1; DROP TABLE clips; END", "a SQL script"),
    ("sql", "SET spark.sql.runSQLOnFiles=true", "holds SET"),
    ("sql", "DROP TABLE clips", "holds DropTable"),
    ("sql", "EXECUTE IMMEDIATE 'DROP TABLE clips'", "UnresolvedExecuteImmediate"),
    ("sql", "CACHE TABLE clips", "CacheTable"),
    ("sql", "EXPLAIN CREATE TABLE t AS SELECT 1", "CREATE TABLE ... AS SELECT (a write)"),
    ("curate --sql", "DESCRIBE clips", "DescribeRelation"),
    ("sql", "SELECT * FROM python_worker_logs()", "the table function python_worker_logs"),
]


@pytest.mark.parametrize("path, statement, reason", HOSTILE)
def test_a_hostile_statement_is_refused_in_one_line_and_the_lake_is_unharmed(
        built, tmp_path, capsys, spark, path, statement, reason):
    ctx, _, rows_before = built
    text = statement.format(lake=ctx.lake.root, tmp=tmp_path)
    code, out, err = through(path, text, ctx, tmp_path, capsys)
    assert code == 2, out
    assert err.startswith("vidlake: error: ") and err.count("\n") == 1, err
    assert reason in err and "root:" not in out + err
    assert spark.range(3).count() == 3  # the JVM is alive
    assert (Path(ctx.lake.path("video_files")) / "_delta_log").is_dir()
    assert {name: ctx.lake.row_count(name) for name in TABLES} == rows_before
    assert not any((tmp_path / name).exists() for name in ("elsewhere", "ran", "selected.parquet"))


def test_the_reports_funnel_refuses_a_hostile_filter(built, spark):
    """`vidlake report --where` evaluates each condition of the filter on its own (jobs/report.py)."""
    ctx, _, _ = built
    where = "aesthetic > 1 AND java_method('java.lang.System', 'exit', 3) = 3"
    with pytest.raises(QueryError, match="the function java_method reaches Java"):
        funnel_counts(register_clip_view(ctx.lake, ctx.cfg), conditions(where))
    assert spark.range(3).count() == 3


QUERIES = [
    ("SELECT count(*) AS n FROM scores WHERE aesthetic > 5.2", " 2"),
    ("WITH top AS (SELECT clip_id, aesthetic FROM scores WHERE aesthetic > 6) "
     "SELECT c.clip_id FROM top JOIN clips c USING (clip_id)", "{good_b}"),
    ("SELECT clip_id, rank() OVER (ORDER BY motion DESC) AS r FROM scores QUALIFY r = 1", "{shaky}"),
    ("SELECT count(*) AS n FROM clip_view WHERE clip_id IN (SELECT clip_id FROM scores WHERE motion > 40)", " 1"),
    ("SELECT source, count(*) AS clips FROM clip_view GROUP BY source", "generic"),
    ("SELECT s FROM VALUES (1, 'one'), (2, 'two') AS t(n, s) WHERE n = 2", "two"),
    ("SELECT clip_id FROM clips c WHERE EXISTS (SELECT 1 FROM captions k WHERE k.clip_id = c.clip_id "
     "AND k.model = 'florence2') ORDER BY clip_id LIMIT 1", "{good_a}"),
    ("SHOW TABLES", "clip_view"),
    ("DESCRIBE clip_view", "aesthetic"),
    ("EXPLAIN SELECT * FROM clips", "Physical Plan"),
]


@pytest.mark.parametrize("query, shown", QUERIES)
def test_queries_and_metadata_statements_still_run(built, capsys, query, shown):
    ctx, ids, _ = built
    code, out, err = vidlake(ctx, capsys, "sql", query)
    assert code == 0, err
    assert shown.format(**ids) in out


QUERY_SHAPES = [
    "SELECT clip_id, rank() OVER (PARTITION BY video_id ORDER BY clip_id) AS r FROM clips QUALIFY r = 1",
    "FROM clips |> WHERE clip_index > 0 |> EXTEND clip_index + 1 AS n |> AGGREGATE count(*) AS c GROUP BY n",
    "FROM clips |> ORDER BY clip_id |> LIMIT 1 |> UNION ALL (SELECT * FROM clips) |> TABLESAMPLE (50 PERCENT)",
    "SELECT video_id, count(*) FROM clips GROUP BY GROUPING SETS ((video_id), ()) ORDER BY ALL LIMIT ALL",
    "SELECT video_id, count(*) FILTER (WHERE fps > 24) FROM clips GROUP BY ROLLUP(video_id) HAVING count(*) > 1",
    "SELECT /*+ REPARTITION(2), BROADCAST(scores) */ * FROM clips JOIN scores USING (clip_id) SORT BY clip_id",
    "SELECT * FROM (SELECT clip_id, detector FROM clips) PIVOT (count(*) FOR detector IN ('content'))",
    "SELECT * FROM (SELECT 1 a, 2 b) UNPIVOT (v FOR k IN (a, b))",
    "SELECT * FROM clips LATERAL VIEW OUTER explode(array(1, 2)) e AS v",
    "SELECT * FROM clips c, LATERAL (SELECT c.clip_index + 1 AS next_index)",
    "SELECT * FROM range(3) CROSS JOIN inline(array(struct(1, 'a'))) CROSS JOIN stack(2, 1, 2)",
    "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r",
    "SELECT * FROM clips a FULL OUTER JOIN clips b USING (clip_id) LEFT ANTI JOIN scores s USING (clip_id)",
    "(SELECT clip_id FROM clips) INTERSECT (SELECT clip_id FROM scores) EXCEPT SELECT clip_id FROM captions",
    "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY aesthetic), max_by(clip_id, motion) FROM scores",
    "SELECT transform(aesthetic_frames, x -> x * 2), named_struct('a', 1).a, '2'::int FROM scores",
    "SELECT (SELECT max(clip_id) FROM clips) AS m, xpath_string('<a>b</a>', 'a'), from_json('{}', 'a INT')",
    "SELECT * FROM clips TABLESAMPLE (3 ROWS) WINDOW w AS (ORDER BY clip_id) OFFSET 1",
    "TABLE clips",
    "VALUES (1, 'one'), (upper('two'), 2)",
]


@pytest.mark.parametrize("query", QUERY_SHAPES)
def test_every_shape_of_query_passes_the_guard(spark, query):
    from jobs.sql_guard import check_statement

    check_statement(spark, query, "sql")


WHERES = [
    ("true", "all"),
    ("aesthetic >= 4.5 AND pwatermark < 0.3 AND ocr_area_ratio < 0.02 AND motion BETWEEN 0.5 AND 20", PASSING),
    ("EXISTS (SELECT 1 FROM captions k WHERE k.clip_id = clip_view.clip_id AND k.model = 'florence2')",
     {"good_a", "ugly"}),
]


@pytest.mark.parametrize("where, names", WHERES)
def test_where_is_one_condition_applied_to_clip_view(built, tmp_path, capsys, where, names):
    ctx, ids, _ = built
    out = tmp_path / "selected.parquet"
    code, _, err = vidlake(ctx, capsys, "curate", "--where", where, "--export", "parquet", "--out", str(out))
    assert code == 0, err
    by_id = {clip: name for name, clip in ids.items()}
    assert {by_id[c] for c in pd.read_parquet(out)["clip_id"]} == (set(ids) if names == "all" else names)


def test_the_guard_refuses_to_run_in_a_session_that_reads_raw_file_paths(spark):
    from jobs.sql_guard import FILE_QUERIES_CONF, check_statement

    spark.conf.set(FILE_QUERIES_CONF, "true")
    try:
        with pytest.raises(QueryError, match="runs SQL on raw file paths"):
            check_statement(spark, "SELECT 1", "sql")
    finally:
        spark.conf.set(FILE_QUERIES_CONF, "false")


# delta.`path` reads a lake table through Delta's own reader: on delta-spark, and for the lake's own
# tables only (a path outside the lake, or inside it but not a table, is refused before Spark sees it).
DELTA_PATHS_REFUSED = [
    ("sql", "SELECT * FROM delta.`/etc`", "is outside the lake"),
    ("sql", "SELECT * FROM delta.`{lake}/../elsewhere` VERSION AS OF 0", "is outside the lake"),
    ("sql", "SELECT * FROM delta.`{lake}/blobs`", "is in the lake but not one of its tables"),
    ("curate --sql", "SELECT clip_id FROM delta.`{lake}/clips/_delta_log`", "is in the lake but not one of its tables"),
]


@pytest.mark.parametrize("path, statement, reason", DELTA_PATHS_REFUSED)
def test_delta_path_outside_the_lakes_tables_is_refused_in_one_line(built, tmp_path, capsys, path, statement,
                                                                    reason):
    ctx, _, rows_before = built
    code, out, err = through(path, statement.format(lake=ctx.lake.root), ctx, tmp_path, capsys)
    assert code == 2, out
    assert err.startswith("vidlake: error: ") and err.count("\n") == 1, err
    expected = reason if ctx.lake.engine_name == "delta-spark" else "needs the delta-spark engine"
    assert expected in err
    assert {name: ctx.lake.row_count(name) for name in TABLES} == rows_before


def test_a_lake_table_reads_by_its_delta_path_on_delta_spark(built, capsys, monkeypatch):
    """Absolute, and relative to the current folder, as `spark-sql` users write it; delta-rs says
    in one line that this needs the delta-spark engine."""
    ctx, ids, _ = built
    lake = Path(ctx.lake.root)
    monkeypatch.chdir(lake.parent)
    query = (f"SELECT c.clip_id FROM delta.`{lake}/clips` c JOIN delta.`./{lake.name}/scores` s "
             "USING (clip_id) WHERE s.aesthetic > 6")
    code, out, err = vidlake(ctx, capsys, "sql", query)
    if ctx.lake.engine_name == "delta-spark":
        assert code == 0, err
        assert ids["good_b"] in out and ids["good_a"] not in out
    else:
        assert code == 2
        assert err.count("\n") == 1 and "needs the delta-spark engine (--set lake.engine=delta-spark)" in err


def test_curate_sql_reads_a_table_at_a_version(built, tmp_path, capsys):
    ctx, ids, _ = built
    query = tmp_path / "select.sql"
    query.write_text("SELECT clip_id FROM scores VERSION AS OF 0 WHERE aesthetic > 6", encoding="utf-8")
    out = tmp_path / "selected.parquet"
    code, _, err = vidlake(ctx, capsys, "curate", "--sql", str(query), "--export", "parquet", "--out", str(out))
    assert code == 0, err
    assert list(pd.read_parquet(out)["clip_id"]) == [ids["good_b"]]


def _commit_micros(lake, name: str, version: int) -> int:
    """When a commit was made, as Delta's time travel dates it: its log file's modification time."""
    return Path(lake.path(name), "_delta_log", f"{version:020d}.json").stat().st_mtime_ns // 1000


def test_time_travel_reads_each_snapshot_on_the_lakes_engine(ctx, capsys):
    """VERSION AS OF / TIMESTAMP AS OF, two snapshots of one table in one query, the table's name
    still qualifying its columns; a version or moment the table does not have is one line."""
    spark, lake = ctx.spark, ctx.lake
    for clip, motion in (("c1", 1.0), ("c2", 2.0)):
        lake.append(spark.createDataFrame([(clip, motion)], "clip_id string, motion double"), "scores")
    first = _commit_micros(lake, "scores", 0)
    answers = {
        "SELECT scores.clip_id FROM scores VERSION AS OF 0": ["c1"],
        "SELECT clip_id FROM scores ORDER BY clip_id": ["c1", "c2"],
        "SELECT clip_id FROM scores EXCEPT SELECT s.clip_id FROM scores FOR VERSION AS OF 0 AS s": ["c2"],
        f"SELECT clip_id FROM scores TIMESTAMP AS OF timestamp_micros({first})": ["c1"],
        f"SELECT clip_id FROM scores TIMESTAMP AS OF timestamp_micros({first}) + INTERVAL 1 MILLISECOND": ["c1"],
        "SELECT count(*) AS n FROM clips c JOIN scores VERSION AS OF 1 USING (clip_id)": ["0"],
    }
    for query, rows in answers.items():
        code, out, err = vidlake(ctx, capsys, "sql", query)
        assert code == 0, (query, err)
        assert out.split()[1:] == rows, (query, out)
    for query, reason in [
        ("SELECT * FROM scores VERSION AS OF 5", "table scores cannot be read at version 5"),
        ("SELECT * FROM scores TIMESTAMP AS OF '2000-01-01 00:00:00'", "cannot be read at timestamp 2000-01-01"),
        (f"SELECT * FROM scores TIMESTAMP AS OF timestamp_micros({first}) + INTERVAL 1 DAY", "cannot be read at"),
        ("SELECT * FROM clips VERSION AS OF 0", "table 'clips' does not exist"),
    ]:
        code, out, err = vidlake(ctx, capsys, "sql", query)
        assert code == 2, (query, out)
        assert err.startswith("vidlake: error: ") and err.count("\n") == 1 and reason in err, (query, err)

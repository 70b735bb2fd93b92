"""Two writers on one lake, as two real processes, on both engines: concurrent upserts of the same
keys lose no update, and a compaction while a stage commits its files loses none of them.

Each engine's pair of processes (four local[1] Spark sessions in all, started at once) runs both
races and reports; the tests read the lake they leave. The races are made to happen, not hoped
for: an upsert's source column is a UDF that waits, after the upsert has read the table and
before it commits, until the other process's upsert has read it too; the committer waits after
each commit until the compactor has compacted since.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import deltalake
import pytest

ROOT = Path(__file__).resolve().parent.parent
ENGINES = ("delta-rs", "delta-spark")
KEYS = 20
UPSERTS = 2
BATCHES = 3
CLIPS_PER_BATCH = 3

WRITER = textwrap.dedent("""
    import datetime, json, logging, sys, time
    from pathlib import Path

    import pyarrow as pa
    from pyspark.sql import functions as F

    from jobs.config import load_config
    from jobs.context import open_context
    from schemas.tables import table

    role, engine, lake_root, meet = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    keys, upserts, batches, per_batch = (int(a) for a in sys.argv[5:9])
    other = "b" if role == "a" else "a"
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    overrides = [f"lake.root={lake_root}", f"lake.engine={engine}", "spark.master=local[1]",
                 "spark.conf.spark.sql.shuffle.partitions=1"]
    ctx = open_context(load_config("local", overrides))
    spark, lake = ctx.spark, ctx.lake
    assert lake.engine_name == engine, lake.engine_name

    def wait_for(path, seconds=300):
        deadline = time.time() + seconds
        while not path.exists():
            if time.time() > deadline:
                sys.exit(f"{role}: gave up waiting for {path.name}")
            time.sleep(0.05)

    if role == "a":  # one file of every key, which both upserts rewrite
        lake.append(spark.range(keys).select(F.concat(F.lit("c"), F.col("id").cast("string")).alias("clip_id")),
                    "scores")
    (meet / f"ready-{role}").touch()
    wait_for(meet / f"ready-{other}")

    column = "motion" if role == "a" else "brightness"
    for i in range(upserts):
        @F.udf("double")
        def met_partner(value, i=i):
            # runs after this upsert read the table, before it commits
            (meet / f"upsert-{role}-{i}").touch()
            wait_for(meet / f"upsert-{other}-{i}")
            return value
        source = spark.range(keys).select(F.concat(F.lit("c"), F.col("id").cast("string")).alias("clip_id"),
                                          met_partner(F.lit(float(i))).alias(column))
        lake.upsert(source, "scores")
    print("UPSERTS DONE", flush=True)

    clips_path = lake.path("clips")
    if role == "a":  # a stage's table_files/commit_files loop
        now = datetime.datetime(2026, 1, 1)
        for batch in range(batches):
            rows = [dict(dict.fromkeys(table("clips").schema.fieldNames()), clip_id=f"v{batch}-{n}",
                         video_id=f"v{batch}", clip_index=n, start_s=float(n), end_s=n + 1.0, start_frame=24 * n,
                         end_frame=24 * (n + 1), num_frames=24, detector="content", created_at=now)
                    for n in range(per_batch)]
            files = lake.table_files("clips")
            lake.commit_files("clips", files, files.write([pa.RecordBatch.from_pylist(rows)]))
            (meet / f"committed-{batch}").touch()
            if batch:
                wait_for(meet / f"compacted-after-{batch}")
        (meet / "commits-done").touch()
    else:  # compacts while a commits, with the engine's own compaction
        wait_for(meet / "committed-0")
        compactions = failed = 0
        while not (meet / "commits-done").exists():
            committed = len(list(meet.glob("committed-*")))
            try:
                if engine == "delta-rs":
                    import deltalake
                    deltalake.DeltaTable(clips_path).optimize.compact()
                else:
                    from delta.tables import DeltaTable
                    DeltaTable.forPath(spark, clips_path).optimize().executeCompaction()
                compactions += 1
            except Exception as err:  # a compaction that loses a race is retried by the next one
                failed += 1
                print("COMPACTION FAILED", type(err).__name__, str(err).splitlines()[0], flush=True)
            (meet / f"compacted-after-{committed - 1}").touch()
        print("COMPACTIONS", json.dumps({"done": compactions, "failed": failed}), flush=True)
""")


@pytest.fixture(scope="module")
def races(tmp_path_factory) -> dict:
    """Per engine: its lake and its two processes' exit status and output, once both have run."""
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYTHONPATH": str(ROOT)}
    counts = [str(n) for n in (KEYS, UPSERTS, BATCHES, CLIPS_PER_BATCH)]
    started = {}
    for engine in ENGINES:
        work = tmp_path_factory.mktemp(engine)
        meet = work / "meet"
        meet.mkdir()
        for role in ("a", "b"):
            log = open(work / f"{role}.log", "w+")  # noqa: SIM115 - read after the process ends
            process = subprocess.Popen(
                [sys.executable, "-c", WRITER, role, engine, str(work / "lake"), str(meet), *counts],
                cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
            started[engine, role] = (work, process, log)
    results: dict = {engine: {"lake": started[engine, "a"][0] / "lake"} for engine in ENGINES}
    for (engine, role), (_, process, log) in started.items():
        try:
            status = process.wait(timeout=600)
        except subprocess.TimeoutExpired:
            process.kill()
            status = process.wait()
        log.seek(0)
        results[engine][role] = (status, log.read())
        log.close()
    return results


def _finished(result: tuple[int, str]) -> str:
    status, output = result
    assert status == 0, output[-4000:]
    return output


@pytest.mark.parametrize("engine", ENGINES)
def test_two_processes_upserting_the_same_keys_lose_no_update(races, engine):
    """Both upserts read the table before either commits, so the second to commit conflicts every
    time and is redone from the table the first left: every key once, with both columns."""
    outputs = [_finished(races[engine][role]) for role in ("a", "b")]
    redone = sum(output.count("redoing it from the new snapshot") for output in outputs)
    assert redone >= UPSERTS, outputs
    scores = deltalake.DeltaTable(str(races[engine]["lake"] / "scores")).to_pyarrow_table().to_pylist()
    assert sorted(row["clip_id"] for row in scores) == sorted(f"c{n}" for n in range(KEYS))
    assert {(row["motion"], row["brightness"]) for row in scores} == {(UPSERTS - 1.0, UPSERTS - 1.0)}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_compaction_while_a_stage_commits_its_files_loses_none_of_them(races, engine):
    _finished(races[engine]["a"])
    compactor = _finished(races[engine]["b"])
    compactions = json.loads(compactor.split("COMPACTIONS ", 1)[1].splitlines()[0])
    assert compactions["done"] >= BATCHES - 1, compactor
    table = deltalake.DeltaTable(str(races[engine]["lake"] / "clips"))
    clips = table.to_pyarrow_table().column("clip_id").to_pylist()
    assert sorted(clips) == sorted(f"v{b}-{n}" for b in range(BATCHES) for n in range(CLIPS_PER_BATCH))
    operations = [entry["operation"] for entry in reversed(table.history())]
    first_optimize = operations.index("OPTIMIZE")
    assert "WRITE" in operations[first_optimize + 1:], operations  # a commit came after a compaction

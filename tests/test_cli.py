"""The `vidlake` console script as a user runs it: real process, real exit status."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

VIDLAKE = shutil.which("vidlake")


def run_vidlake(*args: str, cwd) -> subprocess.CompletedProcess:
    command = [VIDLAKE, *args] if VIDLAKE else [sys.executable, "-c", "from jobs.cli import main; main()", *args]
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_bad_configuration_is_one_line_and_exit_status_2(tmp_path):
    result = run_vidlake("status", "--set", "lake.rooot=x", cwd=tmp_path)
    assert result.returncode == 2
    assert "unknown configuration key 'lake.rooot'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_stage_is_a_usage_error(tmp_path):
    result = run_vidlake("transmogrify", cwd=tmp_path)
    assert result.returncode == 2
    assert "invalid choice" in result.stderr


@pytest.mark.parametrize("stage", ["ingest", "download", "split", "score", "caption", "curate", "sql", "check",
                                   "catalog"])
def test_every_stage_has_help(stage, tmp_path):
    result = run_vidlake(stage, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "--lake" in result.stdout and "--set" in result.stdout


def _raise_in_task(error: Exception):
    def fail(batches):
        for _ in batches:
            raise error
        yield from ()

    return fail


def test_a_vidlake_error_inside_a_spark_task_is_one_line_other_errors_keep_their_traceback(spark):
    from pyspark.errors import PythonException

    from jobs.cli import task_error
    from udfs.fetch_store import SpoolError

    full = SpoolError("cannot write a downloaded body to /spool/a.part: No space left on device")
    with pytest.raises(PythonException) as failed:
        spark.range(1).mapInPandas(_raise_in_task(full), "id long").collect()
    assert task_error(failed.value) == str(full)
    with pytest.raises(PythonException) as failed:
        spark.range(1).mapInPandas(_raise_in_task(ValueError("a bug")), "id long").collect()
    assert task_error(failed.value) is None

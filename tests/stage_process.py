"""A stage as a real process on this checkout, and its SIGKILL once it has committed a batch."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def env() -> dict[str, str]:
    """The environment of a stage process: this checkout (and tests/) first on the path."""
    import pyspark

    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]),
            "SPARK_HOME": os.environ.get("SPARK_HOME") or str(Path(pyspark.__file__).parent)}


def start_stage(argv: list[str], log_path: Path, cwd: Path) -> subprocess.Popen:
    """The stage as a real process (`vidlake <argv>` on this checkout), in a session of its own."""
    command = [sys.executable, "-c", "from jobs.cli import main; main()", *argv]
    with open(log_path, "wb") as log:
        return subprocess.Popen(command, cwd=cwd, env=env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def kill_after_first_commit(job: subprocess.Popen, log_path: Path, stage: str, timeout_s: float = 240) -> None:
    """SIGKILL the job's process group (its driver and Spark's JVM) once its progress line says a
    batch with rows is committed (a batch, cut by a hash of the keys, can be empty)."""
    committed = re.compile(rf"\[vidlake\] {stage} batch \d+/\d+.* committed: [1-9]")
    deadline = time.monotonic() + timeout_s
    try:
        while not committed.search(log_path.read_text()) and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        try:
            os.killpg(job.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        job.wait()


def summary_rows(output: str, stage: str) -> int:
    """The rows the stage's summary line says the run did."""
    return int(re.search(rf"\[vidlake\] {stage}: (\d+) rows", output).group(1))

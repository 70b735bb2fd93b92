"""Shared fixtures: one real local Spark session for the whole run, and a fresh lake per test.

A test that takes the `engine` fixture (through `cfg`, `lake` or `ctx`, or a module's own lake
fixture) runs on the delta-rs engine, and the tests of the lake's own modules (BOTH_ENGINES) run on
delta-spark too: the lake API, maintenance, SQL and the catalog, and the
end-to-end pipeline, which runs every stage. Every stage module on both engines is more than CI's
20 minutes; VIDLAKE_TEST_ENGINE=delta-spark runs every engine test on delta-spark (and
VIDLAKE_TEST_ENGINE=delta-rs the lake modules on delta-rs only). The one session has Delta's jars
(resolved from Maven through Spark's Ivy cache), so both engines work in it; the `vidlake`
processes a test starts get its engine through VIDLAKE_CONF (a profile file per engine).
"""
from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
ENGINES = ("delta-rs", "delta-spark")
BOTH_ENGINES = {"test_lake", "test_engines", "test_maintenance", "test_sql_guard",
                "test_catalog", "test_end_to_end", "test_delta_spark"}
ONE_ENGINE = os.environ.get("VIDLAKE_TEST_ENGINE")
_PASSED_PER_ENGINE: Counter = Counter()


@pytest.fixture(scope="session")
def spark():
    from jobs.config import load_config
    from jobs.session import build_spark

    cfg = load_config("local", ["spark.master=local[2]", "spark.conf.spark.sql.shuffle.partitions=4",
                                "lake.engine=delta-spark"])
    session = build_spark(cfg)
    yield session
    session.stop()


def pytest_generate_tests(metafunc):
    """The engines a test that takes `engine` runs on (see the module docstring)."""
    if "engine" not in metafunc.fixturenames or any(
            "engine" in marker.args[0] for marker in metafunc.definition.iter_markers("parametrize")):
        return
    if ONE_ENGINE:
        engines = [ONE_ENGINE]
    elif metafunc.module.__name__ in BOTH_ENGINES:
        engines = list(ENGINES)
    else:
        engines = ["delta-rs"]
    metafunc.parametrize("engine", engines, indirect=True, scope="session")


@pytest.fixture(scope="session")
def engine(request, tmp_path_factory) -> str:
    """The Delta engine of this run of the test; its `vidlake` processes use it too."""
    profile = tmp_path_factory.mktemp("profiles") / f"{request.param}.yaml"
    local = yaml.safe_load((ROOT / "conf" / "local.yaml").read_text())
    local["lake"]["engine"] = request.param
    profile.write_text(yaml.safe_dump(local))
    previous = os.environ.get("VIDLAKE_CONF")
    os.environ["VIDLAKE_CONF"] = str(profile)
    yield request.param
    if previous is None:
        os.environ.pop("VIDLAKE_CONF", None)
    else:
        os.environ["VIDLAKE_CONF"] = previous


@pytest.fixture(autouse=True)
def _no_engine_profile_without_engine(request, monkeypatch):
    """A test that does not take `engine` starts its processes on the default profile, whatever
    engine the tests before it ran on."""
    if "engine" not in request.fixturenames:
        monkeypatch.delenv("VIDLAKE_CONF", raising=False)


@pytest.fixture
def cfg(tmp_path, engine):
    """The local profile with the lake in this test's temporary folder, on this run's engine."""
    from jobs.config import load_config

    return load_config("local", [f"lake.root={tmp_path / 'lake'}", "spark.master=local[2]",
                                 f"lake.engine={engine}"])


@pytest.fixture
def lake(spark, cfg):
    from jobs.lake import Lake

    return Lake(spark, cfg.get("lake.root"), cfg.get("lake.engine"), cfg.get("lake.max_rows_per_file"))


@pytest.fixture
def ctx(spark, cfg, lake):
    from jobs.context import JobContext

    return JobContext(cfg, spark, lake)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    engine = getattr(item, "callspec", None) and item.callspec.params.get("engine")
    if report.when == "call" and report.passed:
        _PASSED_PER_ENGINE[engine or "engine-independent"] += 1
    return report


def pytest_terminal_summary(terminalreporter):
    if not _PASSED_PER_ENGINE:
        return
    counts = ", ".join(f"{name} {_PASSED_PER_ENGINE[name]}" for name in (*ENGINES, "engine-independent"))
    terminalreporter.write_line(f"tests passed per Delta engine: {counts}")

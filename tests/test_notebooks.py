"""The notebooks run headless (jobs/notebook_runner.py) against a lake the test builds, and the report
builds with only files it wrote."""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from curated_lake import PASSING, REMOVED_ALONE, curated_context

from jobs.notebook_runner import NotebookError, parse_notebook, run_notebook
from jobs.output import QueryError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


@pytest.fixture(scope="module")
def built(spark, engine, tmp_path_factory):
    return curated_context(spark, tmp_path_factory.mktemp("notebooks"), engine)


def test_every_notebook_is_databricks_source_with_sql_cells():
    notebooks = sorted(NOTEBOOKS.glob("*.py"))
    assert len(notebooks) >= 3
    for path in notebooks:
        text = path.read_text()
        assert text.splitlines()[0] == "# Databricks notebook source"
        kinds = [cell.kind for cell in parse_notebook(text)]
        assert "sql" in kinds and "md" in kinds and "python" in kinds, path.name


def test_explore_notebook_runs_its_sql_against_the_lake(built, capsys):
    ctx, ids = built
    run_notebook(NOTEBOOKS / "explore_tables.py", ctx.spark, ctx.lake, ctx.cfg)
    printed = capsys.readouterr().out
    assert f"{len(ids)} clips: {len(ids) - 1} with an aesthetic score" in printed
    assert re.search(r"clips\s+" + str(len(ids)), printed)


def test_tune_notebook_funnel_matches_the_lake(built):
    ctx, _ = built
    namespace = run_notebook(NOTEBOOKS / "tune_thresholds.py", ctx.spark, ctx.lake, ctx.cfg)
    assert {sql: removed for sql, removed, _ in namespace["funnel"]} == REMOVED_ALONE
    assert namespace["kept"] == len(PASSING)
    narrowed = run_notebook(NOTEBOOKS / "tune_thresholds.py", ctx.spark, ctx.lake, ctx.cfg,
                            widgets={"where": "aesthetic >= 6"})
    assert narrowed["kept"] == 1


def test_look_notebook_shows_the_best_and_worst_clips_frames(built):
    ctx, ids = built
    namespace = run_notebook(NOTEBOOKS / "look_at_clips.py", ctx.spark, ctx.lake, ctx.cfg,
                             widgets={"score": "motion", "clips": "2"})
    assert [row.clip_id for row in namespace["best"]] == [ids["shaky"], ids["good_b"]]
    assert [row.clip_id for row in namespace["worst"]] == [ids["static"], ids["lost"]]  # lost: its file is gone
    assert namespace["best_figure"] is not None


def test_a_failing_cell_names_the_notebook_and_cell(built, tmp_path):
    ctx, _ = built
    bad = tmp_path / "bad.py"
    bad.write_text("# Databricks notebook source\nx = 1\n\n# COMMAND ----------\n\n# MAGIC %sql\n"
                   "# MAGIC SELECT nope FROM clips\n")
    with pytest.raises(QueryError, match="bad.py cell 2.*nope"):
        run_notebook(bad, ctx.spark, ctx.lake, ctx.cfg)
    bad.write_text("# Databricks notebook source\nraise ValueError('boom')\n")
    with pytest.raises(NotebookError, match="bad.py cell 1 failed: ValueError: boom"):
        run_notebook(bad, ctx.spark, ctx.lake, ctx.cfg)


class _References(HTMLParser):
    def __init__(self):
        super().__init__()
        self.references: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.references += [value for name, value in attrs if name in ("src", "href") and value]


def test_report_references_only_files_it_wrote(built, tmp_path):
    from jobs.report import build_report

    ctx, ids = built
    out = tmp_path / "report"
    page = build_report(ctx, out)
    text = page.read_text()
    parser = _References()
    parser.feed(text)
    assert parser.references, "the report has no images"
    for reference in parser.references:
        assert "://" not in reference and not reference.startswith("/"), reference
        assert (out / reference).is_file(), reference
    assert "http" not in text.lower()
    assert f"thumb_{ids['good_b']}.png" in parser.references
    for condition, removed in REMOVED_ALONE.items():
        assert f"<code>{html.escape(condition)}</code></td><td>{removed}</td>" in text
    assert "cannot decode" in text or "does not exist" in text  # the clip whose file is gone


def test_report_on_an_empty_lake_says_not_computed(ctx, tmp_path):
    from jobs.report import build_report

    text = build_report(ctx, tmp_path / "report").read_text()
    assert "not computed yet" in text

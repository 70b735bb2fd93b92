"""Runs a Databricks-source notebook (`notebooks/*.py`) headless against the lake of a profile.

    python -m jobs.notebook_runner notebooks/explore_lake.py [--conf local] [--lake DIR] [--set k=v]

The notebook's cells are split at `# COMMAND ----------`. A `# MAGIC %sql` cell runs through
`spark.sql` (its result is shown like `display`), a `# MAGIC %md` cell is skipped, any other cell
is Python, exec'd in one namespace that holds `spark`, `lake`, `cfg`, `display` and
`dbutils.widgets` (text widgets with their defaults, overridable with --widget name=value). On
Databricks the same notebook gets the platform's own `spark`, `display` and `dbutils`.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from udfs.errors import VidlakeError

HEADER = "# Databricks notebook source"
CELL_SEPARATOR = re.compile(r"^# COMMAND -{10,}\s*$", re.M)
MAGIC = re.compile(r"^# MAGIC ?", re.M)


@dataclass(frozen=True)
class Cell:
    kind: str  # python, sql, md, other magic (%sh, %pip ...)
    source: str


def parse_notebook(text: str) -> list[Cell]:
    """The cells of a Databricks-source notebook; a file without the header is refused."""
    if not text.startswith(HEADER):
        raise VidlakeError(f"not a Databricks-source notebook: the first line must be {HEADER!r}")
    cells = []
    for chunk in CELL_SEPARATOR.split(text[len(HEADER):]):
        body = chunk.strip("\n")
        if not body.strip():
            continue
        if body.lstrip().startswith("# MAGIC"):
            magic = MAGIC.sub("", body).strip()
            command, _, rest = magic.partition("\n")
            name = command.split()[0] if command.split() else ""
            inline = command[len(name):].strip()
            source = "\n".join(part for part in (inline, rest) if part)
            cells.append(Cell({"%sql": "sql", "%md": "md", "%python": "python"}.get(name, name), source))
        else:
            cells.append(Cell("python", body))
    return cells


class Widgets:
    """`dbutils.widgets` for text widgets: `text(name, default)` then `get(name)`."""

    def __init__(self, values: Mapping[str, str]):
        self.given = dict(values)
        self.values: dict[str, str] = {}

    def text(self, name: str, default: str, label: str | None = None) -> None:
        self.values[name] = self.given.get(name, default)

    def get(self, name: str) -> str:
        if name not in self.values:
            raise VidlakeError(f"notebook widget {name!r} was read before dbutils.widgets.text defined it")
        return self.values[name]


@dataclass
class LocalDbutils:
    widgets: Widgets


def display(df, rows: int = 20) -> None:
    """What Databricks' display does for a DataFrame, as text."""
    if hasattr(df, "limit") and hasattr(df, "toPandas"):
        print(df.limit(rows).toPandas().to_string(index=False, max_colwidth=60))
    else:
        print(df)


def run_notebook(path: Path, spark, lake, cfg, widgets: Mapping[str, str] | None = None) -> dict:
    """Runs every cell in order; returns the notebook's namespace. A failing cell raises with its number."""
    from jobs.output import reported

    namespace = {"spark": spark, "lake": lake, "cfg": cfg, "display": display,
                 "dbutils": LocalDbutils(Widgets(widgets or {})), "__name__": "__notebook__"}
    for number, cell in enumerate(parse_notebook(path.read_text(encoding="utf-8")), start=1):
        if cell.kind == "md":
            continue
        if cell.kind == "sql":
            query = cell.source.strip().rstrip(";")
            display(reported(lambda q=query: spark.sql(q), f"{path.name} cell {number}"))
        elif cell.kind == "python":
            try:
                exec(compile(cell.source, f"{path.name}[cell {number}]", "exec"), namespace)  # noqa: S102
            except VidlakeError:
                raise
            except Exception as err:
                raise NotebookError(f"{path.name} cell {number} failed: {type(err).__name__}: {err}") from err
        else:
            raise VidlakeError(f"{path.name} cell {number}: magic {cell.kind} cannot run outside Databricks")
    return namespace


class NotebookError(VidlakeError):
    """A notebook cell raised."""


def main(argv: list[str] | None = None) -> int:
    from jobs.config import load_config
    from jobs.context import open_context

    parser = argparse.ArgumentParser(prog="python -m jobs.notebook_runner", description=__doc__.split("\n")[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--conf", default="local")
    parser.add_argument("--lake")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--widget", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    overrides = args.overrides + ([f"lake.root={args.lake}"] if args.lake else [])
    try:
        ctx = open_context(load_config(args.conf, overrides))
        widgets = dict(item.split("=", 1) for item in args.widget)
        run_notebook(args.notebook, ctx.spark, ctx.lake, ctx.cfg, widgets)
    except VidlakeError as err:
        print(f"vidlake: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

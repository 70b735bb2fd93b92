"""The `vidlake` command: `vidlake <stage> [--conf PROFILE|FILE] [--lake DIR] [--set key=value ...]`.

Each stage is a module of jobs/ with `add_arguments(parser)` and `run(ctx, args) -> int`;
`spark-submit jobs/<stage>.py ARGS` reaches the same code through `main_for`.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import re
import sys
from collections.abc import Sequence

from udfs.errors import VidlakeError

STAGES = {
    "ingest": ("jobs.ingest", "read source tables into `videos` (and `ingest_errors`)"),
    "download": ("jobs.download", "fetch and probe the videos into `video_files`"),
    "split": ("jobs.split", "cut videos into scene clips (`clips`)"),
    "score": ("jobs.score", "score clips: aesthetics, watermark, OCR, motion, NSFW, luma (`scores`)"),
    "caption": ("jobs.caption", "caption clips with vision-language models (`captions`)"),
    "run": ("jobs.pipeline", "run ingest, download, split, score and caption in order"),
    "demo": ("jobs.demo", "the whole pipeline on bundled sample videos, in ./lake"),
    "status": ("jobs.status", "rows done, pending and failed per stage"),
    "sql": ("jobs.sql", "run Spark SQL over the lake's tables"),
    "catalog": ("jobs.catalog", "register the lake's tables in the Spark catalog as DATABASE.<table>"),
    "curate": ("jobs.curate", "filter clips with SQL and export a training set"),
    "report": ("jobs.report", "an HTML report of the lake's clips and scores"),
    "check": ("jobs.check", "check the lake is whole: table logs and files, video blobs, clip files"),
    "optimize": ("jobs.optimize", "compact the lake's small data files (optionally z-ordered)"),
    "vacuum": ("jobs.vacuum", "delete data files no snapshot within the retention needs, orphans included"),
}
# The stages that may start a lake on a new root; every other one reads a lake that must exist.
LAKE_CREATING_STAGES = ("ingest", "run", "demo")


def _common_arguments() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--conf", default=os.environ.get("VIDLAKE_CONF", "local"),
                        help="profile name under conf/ (local, cluster, databricks) or a YAML file")
    common.add_argument("--lake", help="lake root (a folder or an object-store URL); sets lake.root")
    common.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a configuration key; the value is parsed as YAML (repeatable)")
    return common


def build_parser(stage: str | None) -> argparse.ArgumentParser:
    """The parser of one stage (its module is imported only when that stage is asked for)."""
    parser = argparse.ArgumentParser(prog="vidlake", description="Video training-set ETL on Spark and Delta Lake.")
    subparsers = parser.add_subparsers(dest="stage", metavar="STAGE", required=True)
    common = _common_arguments()
    for name, (_module_name, summary) in STAGES.items():
        sub = subparsers.add_parser(name, help=summary, description=summary, parents=[common])
        if name == stage:
            _stage_module(name).add_arguments(sub)
    return parser


def _stage_module(stage: str):
    module_name = STAGES[stage][0]
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name == module_name:
            raise VidlakeError(f"stage {stage!r} is not available in this build ({module_name} is missing)") from None
        raise


def run_stage(argv: Sequence[str]) -> int:
    """Parse, build the context, run the stage; user errors become one line and exit status 2."""
    from jobs.config import load_config

    stage = next((a for a in argv if not a.startswith("-")), None)
    try:
        parser = build_parser(stage if stage in STAGES else None)
        args = parser.parse_args(list(argv))
        overrides = list(args.overrides) + ([f"lake.root={args.lake}"] if args.lake else [])
        cfg = load_config(args.conf, overrides)
        ctx = _open_context(cfg, lake_must_exist=args.stage not in LAKE_CREATING_STAGES)
        return _stage_module(args.stage).run(ctx, args)
    except VidlakeError as err:
        print(f"vidlake: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        reason = task_error(err)
        if reason is None:
            raise
        print(f"vidlake: error: a Spark task failed: {reason}", file=sys.stderr)
        return 2


TRACEBACK_LAST_LINE = re.compile(r"^((?:jobs|udfs|schemas)\.[\w.]+)\.(\w+): (.+)$", re.MULTILINE)


def task_error(err: BaseException) -> str | None:
    """The message of a VidlakeError raised inside a Spark task (a full spool disk, say), from the
    executor's traceback that Spark's error carries; None for any other error, which keeps its
    traceback."""
    for module_name, class_name, message in reversed(TRACEBACK_LAST_LINE.findall(str(err))):
        try:
            raised = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError):
            continue
        if isinstance(raised, type) and issubclass(raised, VidlakeError):
            return message
    return None


def _open_context(cfg, lake_must_exist: bool):
    from jobs.context import open_context

    return open_context(cfg, lake_must_exist)


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point.

    Exits through os._exit after flushing: a process that read Delta through delta-rs/Arrow can
    abort during interpreter teardown (exit 134; delta-rs #2184), which would report a finished
    job as crashed. The job's own status is the truth."""
    _log_to_stderr()
    code = run_stage(sys.argv[1:] if argv is None else argv)
    _stop_spark()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _log_to_stderr() -> None:
    """vidlake's own logger writes INFO lines to stderr, whatever handlers the root logger has
    (under spark-submit PySpark has set it up already, so basicConfig would do nothing)."""
    logger = logging.getLogger("vidlake")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[vidlake] %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main_for(stage: str) -> int:
    """Entry point of `spark-submit jobs/<stage>.py ARGS`: the same as `vidlake <stage> ARGS`."""
    main([stage, *sys.argv[1:]])
    return 0


def _stop_spark() -> None:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is not None:
        spark.stop()

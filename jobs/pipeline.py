"""`vidlake run --format F --input PATH...`: ingest, download, split, score and caption, in order.

Each stage is the stage's own `run(ctx, args)` with its own arguments (`--download-args
"--limit 100"`, ...), so each is resumable exactly as when run alone: a re-run does only what is
not done yet. Models are checked before a stage starts: a scorer or captioner whose weights are not
on the machine is reported as skipped, with what is missing and how to provide it, and the
pipeline goes on with the ones that can run; a captioner whose only missing piece is CLIP (the
`match` score) runs without `match`. A stage that fails stops the pipeline.
"""
from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from jobs.context import JobContext
from udfs.errors import VidlakeError
from udfs.weights import MissingWeightsError

STAGES = ("ingest", "download", "split", "score", "caption")


@dataclass
class Outcome:
    stage: str
    status: str  # ran, skipped, failed
    seconds: float
    detail: str = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", dest="source_format", help="source table format, as for vidlake ingest")
    parser.add_argument("--input", dest="inputs", nargs="+", action="extend", metavar="PATH",
                        help="source table file(s), as for vidlake ingest")
    parser.add_argument("--stages", help=f"stages to run (default: pipeline.stages: {','.join(STAGES)})")
    parser.add_argument("--scorers", help="scorers for the score stage (default: score.scorers)")
    parser.add_argument("--caption-models", help="captioners to run, in order (default: pipeline.caption_models)")
    for stage in STAGES:
        parser.add_argument(f"--{stage}-args", default="", metavar="ARGS",
                            help=f"more arguments for the {stage} stage, as one quoted string")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    stages = parse_stages(args.stages or ctx.cfg.get("pipeline.stages"))
    if "ingest" in stages and not (args.source_format and args.inputs):
        raise VidlakeError("the ingest stage needs --format and --input (or leave it out with --stages)")
    if "ingest" not in stages:
        ctx.lake.check_exists()  # only ingest starts a lake; the other stages read one
    outcomes: list[Outcome] = []
    for stage in stages:
        outcomes.extend(STAGE_RUNNERS[stage](ctx, args))
        if outcomes[-1].status == "failed":
            break
    print(format_outcomes(outcomes))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def parse_stages(value: str | Sequence[str]) -> list[str]:
    names = [s.strip() for s in value.split(",")] if isinstance(value, str) else list(value)
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise VidlakeError(f"unknown stage(s) {', '.join(unknown) or '(none)'}; stages: {', '.join(STAGES)}")
    return sorted(dict.fromkeys(names), key=STAGES.index)


def run_stage(ctx: JobContext, stage: str, argv: list[str], label: str | None = None) -> Outcome:
    """The stage's own parser and `run`; missing weights make it skipped, other errors failed."""
    label = label or stage
    module = importlib.import_module(f"jobs.{stage}")
    parser = argparse.ArgumentParser(prog=f"vidlake {stage}")
    module.add_arguments(parser)
    try:
        stage_args = parser.parse_args(argv)
    except SystemExit:
        return Outcome(label, "failed", 0.0, f"bad arguments for {stage}: {shlex.join(argv)}")
    print(f"[vidlake] run: {label}: {stage} {shlex.join(argv)}".rstrip(), file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        code = module.run(ctx, stage_args)
    except MissingWeightsError as err:
        return Outcome(label, "skipped", time.monotonic() - started, str(err))
    except VidlakeError as err:
        return Outcome(label, "failed", time.monotonic() - started, str(err))
    status = "ran" if code == 0 else "failed"
    return Outcome(label, status, time.monotonic() - started, "" if code == 0 else f"exit status {code}")


def _extra(args: argparse.Namespace, stage: str) -> list[str]:
    return shlex.split(getattr(args, f"{stage}_args") or "")


def run_ingest(ctx: JobContext, args: argparse.Namespace) -> list[Outcome]:
    argv = ["--format", args.source_format, "--input", *args.inputs, *_extra(args, "ingest")]
    return [run_stage(ctx, "ingest", argv)]


def run_download(ctx: JobContext, args: argparse.Namespace) -> list[Outcome]:
    return [run_stage(ctx, "download", _extra(args, "download"))]


def run_split(ctx: JobContext, args: argparse.Namespace) -> list[Outcome]:
    return [run_stage(ctx, "split", _extra(args, "split"))]


def run_score(ctx: JobContext, args: argparse.Namespace) -> list[Outcome]:
    """The scorers whose weights are here, in one run; each missing one reported as skipped."""
    from udfs.scorers.runner import check_weights, parse_scorers

    score_conf, models = ctx.cfg.section("score"), ctx.cfg.section("models")
    names = parse_scorers(args.scorers or score_conf["scorers"])
    usable, skipped = [], []
    for name in names:
        try:
            check_weights([name], score_conf, models)
            usable.append(name)
        except MissingWeightsError as err:
            skipped.append(Outcome(f"score:{name}", "skipped", 0.0, _weights_reason(str(err))))
    if not usable:
        return skipped
    ran = run_stage(ctx, "score", ["--scorers", ",".join(usable), *_extra(args, "score")],
                    label=f"score:{','.join(usable)}")
    return [ran, *skipped]


def run_caption(ctx: JobContext, args: argparse.Namespace) -> list[Outcome]:
    """Each captioner in turn; one whose weights are missing is skipped, and a missing CLIP only
    turns the `match` score off (reported once)."""
    from udfs.captioners import CAPTIONER_NAMES, check_weights, clip_source
    from udfs.weights import resolve

    models = args.caption_models or ctx.cfg.get("pipeline.caption_models")
    names = [m.strip() for m in models.split(",")] if isinstance(models, str) else list(models)
    unknown = [m for m in names if m not in CAPTIONER_NAMES]
    if unknown:
        raise VidlakeError(f"unknown captioner(s) {', '.join(unknown)}; captioners: {', '.join(CAPTIONER_NAMES)}")
    outcomes = []
    caption_conf = ctx.cfg.section("caption")
    if caption_conf["match"]["enabled"]:
        try:
            resolve(clip_source(ctx.cfg.section("models")), caption_conf["allow_download"])
        except MissingWeightsError as err:
            ctx.cfg.set("caption.match.enabled", False)
            outcomes.append(Outcome("caption:match", "skipped", 0.0, _weights_reason(str(err))))
    for name in names:
        try:
            check_weights(name, ctx.cfg.section("caption"), ctx.cfg.section("models"))
        except MissingWeightsError as err:
            outcomes.append(Outcome(f"caption:{name}", "skipped", 0.0, _weights_reason(str(err))))
            continue
        outcomes.append(run_stage(ctx, "caption", ["--model", name, *_extra(args, "caption")], f"caption:{name}"))
        if outcomes[-1].status == "failed":
            break
    return outcomes


def _weights_reason(message: str) -> str:
    return "weights missing: " + message.removeprefix("nothing was scored; weights are missing:\n")


def format_outcomes(outcomes: list[Outcome]) -> str:
    width = max([len(o.stage) for o in outcomes] + [5])
    lines = ["[vidlake] run: summary"]
    for o in outcomes:
        detail = f"  {o.detail}" if o.detail else ""
        lines.append(f"  {o.stage.ljust(width)}  {o.status:<7}  {o.seconds:6.1f} s{detail}")
    return "\n".join(lines)


STAGE_RUNNERS = {"ingest": run_ingest, "download": run_download, "split": run_split, "score": run_score,
                 "caption": run_caption}


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("run"))

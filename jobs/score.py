"""vidlake score: per-clip quality scores (`clips` -> `scores`), on the GPU where Spark gives one.

A clip is pending for a scorer when it has no `scores` row or that scorer is missing from the row's
`scorer_versions` (with --retry-errors: also when the row records an error for it). Clips are
grouped by the set of scorers they are pending for, so adding a scorer later runs only that scorer;
each group is scored in batches of `score.commit_every` clips (jobs.runtime), one Delta commit
each, so a killed run keeps every batch it committed and its re-run scores only the rest. A
batch's tasks score under the stage's resource profile (jobs.gpu) and write their rows' files
themselves: appended where the clips have no row yet, else upserted on clip_id with only the
columns of the scorers that ran, the maps merged with the row's earlier ones. Every selected
scorer's weights are checked before anything is scored.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from jobs.context import JobContext
from jobs.gpu import gpu_map
from jobs.progress import StageLog
from jobs.runtime import Batch, BatchOutput, TaskOutcome, run_batches, run_writing_tasks, table_writing_task
from jobs.views import clip_spans
from udfs.scorers.runner import CLIP_COLUMNS, check_weights, output_columns, parse_scorers

STAGE = "score"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scorers", help="comma-separated scorers (default: score.scorers): "
                        "aesthetic,watermark,ocr,motion,nsfw,luma")
    parser.add_argument("--retry-errors", action="store_true",
                        help="also re-score clips whose earlier run recorded an error for a scorer")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    score_conf = ctx.cfg.section("score")
    models = ctx.cfg.section("models")
    names = parse_scorers(args.scorers or score_conf["scorers"])
    retry = bool(args.retry_errors or score_conf["retry_errors"])
    log = StageLog(STAGE)
    check_weights(names, score_conf, models)
    work = pending_work(ctx, names, retry)
    groups = scorer_groups(work)
    if not groups:
        log.done(0, 0, scorers=",".join(names), note="nothing pending")
        return 0
    ctx.spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(int(score_conf["arrow_batch_rows"])))
    total = TaskOutcome()
    for group in groups:
        clips = work.where((F.col("todo") == F.array(*[F.lit(n) for n in group.scorers]))
                           & (F.col("_scored") == F.lit(group.replace))).select(*CLIP_COLUMNS)

        def score_batch(rows: DataFrame, batch: Batch, group: ScorerGroup = group) -> TaskOutcome:
            return score_clips(ctx, rows, batch.rows, group, score_conf, models)

        for outcome in run_batches(ctx.spark, log, clips, group.clips, int(score_conf["commit_every"]), ["clip_id"],
                                   score_batch, what=",".join(group.scorers)):
            total.add_up(outcome)
    log.done(total.rows, total.failed, scorers=",".join(names), groups=len(groups),
             devices=",".join(sorted(total.devices)))
    return 0


def pending_work(ctx: JobContext, names: Sequence[str], retry_errors: bool) -> DataFrame:
    """Every clip with `todo`: the selected scorers it still needs (an empty array when none), and
    `_scored`: whether it has a `scores` row already (its scores are then merged into that row)."""
    clips = clip_spans(ctx.lake, ctx.cfg).select(*CLIP_COLUMNS)
    scores = ctx.lake.read("scores").select("clip_id", "scorer_versions", "errors", F.lit(True).alias("_scored"))
    joined = clips.join(scores, "clip_id", "left").withColumn("_scored", F.coalesce("_scored", F.lit(False)))
    todo = F.filter(F.array(*[F.lit(n) for n in names]), lambda name: _pending_for(name, retry_errors))
    return joined.withColumn("todo", todo)


def _pending_for(name: Column, retry_errors: bool) -> Column:
    versions = F.col("scorer_versions")
    missing = versions.isNull() | ~F.array_contains(F.map_keys(versions), name)
    if not retry_errors:
        return missing
    errors = F.col("errors")
    return missing | (errors.isNotNull() & F.array_contains(F.map_keys(errors), name))


@dataclass(frozen=True)
class ScorerGroup:
    """Clips pending for the same scorers: `replace` when they have a `scores` row already."""

    scorers: tuple[str, ...]
    replace: bool
    clips: int


def scorer_groups(work: DataFrame) -> list[ScorerGroup]:
    """The distinct sets of pending scorers (a handful at most) and their clip counts, biggest set
    first, new clips before clips with a row; one query finds and counts them."""
    counted = work.where(F.size("todo") > 0).groupBy("todo", "_scored").count().collect()
    groups = [ScorerGroup(tuple(row.todo), bool(row._scored), int(row["count"])) for row in counted]
    return sorted(groups, key=lambda g: (-len(g.scorers), g.scorers, g.replace))


def score_clips(ctx: JobContext, clips: DataFrame, count: int, group: ScorerGroup, score_conf: Mapping[str, Any],
                models: Mapping[str, Any]) -> TaskOutcome:
    """Scores about `count` clips with the group's scorers and commits their rows in one transaction.

    The tasks write the rows' parquet files themselves (BatchOutput): new clips' files are added to
    `scores` as they are; clips that have a row already are staged and upserted, their maps merged
    with the row's earlier ones, so no clip is scored twice whatever the upsert reads. A device
    reads `cuda:1 (spark gpu 1)` where Spark assigned the task a GPU, `cpu (spark gpu 0)` where it
    assigned one that torch cannot see (fake addresses on a test cluster)."""
    names = list(group.scorers)
    partitions = max(1, math.ceil(count / int(score_conf["clips_per_task"])))
    output = BatchOutput(ctx.lake, "scores", group.replace, int(ctx.cfg.get("lake.max_rows_per_file")))
    columns = output_columns(names)
    task = table_writing_task(output.files, partition_scorer(score_conf, models, names), columns,
                              failed=lambda frame: int(frame["errors"].notna().sum()))

    def on_gpus(df: DataFrame, fn, schema) -> DataFrame:
        return gpu_map(df, fn, schema, score_conf, ctx.spark, STAGE, arrow=True)

    outcome = run_writing_tasks(clips.repartition(partitions), task, on_gpus)
    output.commit(outcome, merge=lambda staged: merge_maps(ctx, staged.select(*columns), names))
    return outcome


def merge_maps(ctx: JobContext, scored: DataFrame, names: Sequence[str]) -> DataFrame:
    """`scorer_versions` and `errors` of the earlier row, with the entries of the scorers that ran replaced."""
    earlier = ctx.lake.read("scores").select(
        "clip_id", F.col("scorer_versions").alias("_old_versions"), F.col("errors").alias("_old_errors")
    )
    ran = F.array(*[F.lit(n) for n in names])

    def merged(old: str, new: str) -> Column:
        kept = F.map_filter(F.coalesce(F.col(old), F.create_map().cast("map<string,string>")),
                            lambda key, _value: ~F.array_contains(ran, key))
        combined = F.map_concat(kept, F.coalesce(F.col(new), F.create_map().cast("map<string,string>")))
        return F.when(F.size(combined) > 0, combined)

    joined = scored.join(earlier, "clip_id", "left")
    return (
        joined.withColumn("scorer_versions", merged("_old_versions", "scorer_versions"))
        .withColumn("errors", merged("_old_errors", "errors"))
        .drop("_old_versions", "_old_errors")
    )


def partition_scorer(score_conf: Mapping[str, Any], models: Mapping[str, Any], names: Sequence[str]):
    """The mapInPandas function: one ClipScorer per Python worker (models load once), on the task's device."""
    conf, model_conf, scorer_names = dict(score_conf), dict(models), list(names)
    conf_key = json.dumps([conf, model_conf, scorer_names], sort_keys=True, default=str)

    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from udfs.device import cached_model, task_device, task_gpu_addresses
        from udfs.scorers.runner import ClipScorer

        device = task_device(prefer_gpu=bool(conf["use_gpu"]))
        assigned = task_gpu_addresses()
        label = f"{device} (spark gpu {','.join(assigned)})" if assigned else device
        scorer = cached_model(("clip-scorer", conf_key, device),
                              lambda: ClipScorer(conf, model_conf, scorer_names, device))
        for scored in scorer.score_stream(batches):
            yield scored.assign(_device=label)

    return score_partition


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for(STAGE))

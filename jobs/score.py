"""vidlake score: per-clip quality scores (`clips` -> `scores`), on the GPU where Spark gives one.

A clip is pending for a scorer when it has no `scores` row or that scorer is missing from the row's
`scorer_versions` (with --retry-errors: also when the row records an error for it). Clips are
grouped by the set of scorers they are pending for, so adding a scorer later runs only that scorer;
each group is scored by mapInPandas under the stage's resource profile (jobs.gpu) and upserted on
clip_id with only the columns of the scorers that ran, the maps merged with the row's earlier ones.
Every selected scorer's weights are checked before anything is scored.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructType

from jobs.context import JobContext
from jobs.gpu import gpu_map
from jobs.progress import StageLog
from jobs.views import clip_spans
from schemas.tables import SCORES
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
    rows = failed = 0
    devices: set[str] = set()
    for group in groups:
        clips = work.where(F.col("todo") == F.array(*[F.lit(n) for n in group])).select(*CLIP_COLUMNS)
        scored, bad, used = score_group(ctx, clips, group, score_conf, models)
        rows, failed, devices = rows + scored, failed + bad, devices | used
    log.done(rows, failed, scorers=",".join(names), groups=len(groups), devices=",".join(sorted(devices)))
    return 0


def pending_work(ctx: JobContext, names: Sequence[str], retry_errors: bool) -> DataFrame:
    """Every clip with `todo`: the selected scorers it still needs (an empty array when none)."""
    clips = clip_spans(ctx.lake, ctx.cfg).select(*CLIP_COLUMNS)
    scores = ctx.lake.read("scores").select("clip_id", "scorer_versions", "errors")
    joined = clips.join(scores, "clip_id", "left")
    todo = F.filter(F.array(*[F.lit(n) for n in names]), lambda name: _pending_for(name, retry_errors))
    return joined.withColumn("todo", todo)


def _pending_for(name: Column, retry_errors: bool) -> Column:
    versions = F.col("scorer_versions")
    missing = versions.isNull() | ~F.array_contains(F.map_keys(versions), name)
    if not retry_errors:
        return missing
    errors = F.col("errors")
    return missing | (errors.isNotNull() & F.array_contains(F.map_keys(errors), name))


def scorer_groups(work: DataFrame) -> list[list[str]]:
    """The distinct sets of pending scorers (a handful at most), biggest first."""
    sets = [list(row.todo) for row in work.where(F.size("todo") > 0).select("todo").distinct().collect()]
    return sorted(sets, key=lambda s: (-len(s), s))


def score_group(
    ctx: JobContext, clips: DataFrame, names: list[str], score_conf: Mapping[str, Any], models: Mapping[str, Any]
) -> tuple[int, int, set[str]]:
    """Score `clips` with `names`, upsert the rows; (rows written, rows with an error, devices the tasks used).

    A device reads `cuda:1 (spark gpu 1)` where Spark assigned the task a GPU, `cpu (spark gpu 0)` where
    it assigned one that torch cannot see (fake addresses on a test cluster)."""
    count = clips.count()
    partitions = max(1, math.ceil(count / int(score_conf["clips_per_task"])))
    schema = output_schema(names)
    scored = gpu_map(
        clips.repartition(partitions), partition_scorer(score_conf, models, names), schema, score_conf,
        ctx.spark, STAGE,
    )
    # Scoring is the expensive part: run it exactly once, whatever the upsert reads the rows for.
    scored = scored.localCheckpoint(eager=True)
    devices = {row._device for row in scored.select("_device").distinct().collect()}
    ctx.lake.upsert(merge_maps(ctx, scored.drop("_device"), names), "scores")
    failed = scored.where(F.col("errors").isNotNull()).count()
    scored.unpersist()
    return count, failed, devices


def output_schema(names: Sequence[str]) -> StructType:
    """The `scores` fields a run of these scorers writes, as schemas.tables defines them."""
    fields = {field.name: field for field in SCORES.fields}
    return StructType([fields[column] for column in output_columns(names)]).add("_device", StringType(), False)


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

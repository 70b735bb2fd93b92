# Databricks notebook source
# MAGIC %md
# MAGIC # Explore the vidlake tables
# MAGIC
# MAGIC Every lake table is a temporary view of its name (`videos`, `ingest_errors`, `video_files`, `clips`,
# MAGIC `split_errors`, `scores`, `captions`), plus `clip_view`: one row per clip with its scores and its
# MAGIC chosen caption (jobs/views.py). On Databricks the lake is the `databricks` profile's `lake.root`;
# MAGIC locally, `python -m jobs.notebook_runner notebooks/explore_tables.py --lake ./lake`.

# COMMAND ----------

import os
import sys

if "lake" not in globals():  # on Databricks: this repo's code and its databricks profile
    sys.path.insert(0, os.path.abspath(".."))
    from jobs.config import load_config
    from jobs.lake import Lake

    cfg = load_config("databricks")
    lake = Lake(spark, cfg.get("lake.root"), cfg.get("lake.engine"))

from jobs.views import register_clip_view  # noqa: E402

dbutils.widgets.text("caption_kind", cfg.get("curate.caption_kind"))
clip_view = register_clip_view(lake, cfg, dbutils.widgets.get("caption_kind"))

# COMMAND ----------

# MAGIC %md
# MAGIC ## How far each stage got

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT 'videos' AS table_name, count(*) AS row_count FROM videos
# MAGIC UNION ALL SELECT 'video_files', count(*) FROM video_files
# MAGIC UNION ALL SELECT 'clips', count(*) FROM clips
# MAGIC UNION ALL SELECT 'scores', count(*) FROM scores
# MAGIC UNION ALL SELECT 'captions', count(*) FROM captions

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT status, count(*) AS videos, first(error) AS example_error
# MAGIC FROM video_files GROUP BY status ORDER BY videos DESC

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT severity, reason, count(*) AS source_rows FROM ingest_errors GROUP BY severity, reason ORDER BY source_rows DESC

# COMMAND ----------

# MAGIC %md
# MAGIC ## The clips: sources, lengths, resolutions

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT source, count(*) AS clips, round(sum(duration_s) / 3600, 3) AS hours,
# MAGIC        round(avg(duration_s), 2) AS mean_clip_s, count(DISTINCT video_id) AS videos
# MAGIC FROM clip_view GROUP BY source ORDER BY clips DESC

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT resolution, round(aspect_ratio, 2) AS aspect_ratio, count(*) AS clips
# MAGIC FROM clips GROUP BY resolution, round(aspect_ratio, 2) ORDER BY clips DESC

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT model, kind, quality, count(*) AS captions, round(avg(words), 1) AS mean_words
# MAGIC FROM captions GROUP BY model, kind, quality ORDER BY model, kind

# COMMAND ----------

summary = clip_view.selectExpr("count(*) AS clips", "count(aesthetic) AS with_aesthetic", "count(motion) AS with_motion",
                               "count(text) AS with_caption").first()
print(f"{summary.clips} clips: {summary.with_aesthetic} with an aesthetic score, {summary.with_motion} with motion, "
      f"{summary.with_caption} with a caption")

# Databricks notebook source
# MAGIC %md
# MAGIC # Tune the curation thresholds with SQL
# MAGIC
# MAGIC Look at each score's quantiles, then try a filter and see how many clips (and hours) each
# MAGIC condition removes. The filter that reads well goes into `curate.where` (conf) or straight to
# MAGIC `vidlake curate --where "..."`.

# COMMAND ----------

import os
import sys

if "lake" not in globals():  # on Databricks: this repo's code and its databricks profile
    sys.path.insert(0, os.path.abspath(".."))
    from jobs.config import load_config
    from jobs.lake import Lake

    cfg = load_config("databricks")
    lake = Lake(spark, cfg.get("lake.root"), cfg.get("lake.engine"))

from jobs.filters import conditions  # noqa: E402
from jobs.report import funnel_counts  # noqa: E402
from jobs.views import register_clip_view  # noqa: E402

dbutils.widgets.text("where", cfg.get("curate.where"))
clip_view = register_clip_view(lake, cfg)

# COMMAND ----------

# MAGIC %md
# MAGIC ## Score quantiles (5 %, 25 %, 50 %, 75 %, 95 %)

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT 'aesthetic' AS score, count(aesthetic) AS clips, percentile_approx(aesthetic, array(0.05, 0.25, 0.5, 0.75, 0.95)) AS quantiles FROM clip_view
# MAGIC UNION ALL SELECT 'pwatermark', count(pwatermark), percentile_approx(pwatermark, array(0.05, 0.25, 0.5, 0.75, 0.95)) FROM clip_view
# MAGIC UNION ALL SELECT 'ocr_area_ratio', count(ocr_area_ratio), percentile_approx(ocr_area_ratio, array(0.05, 0.25, 0.5, 0.75, 0.95)) FROM clip_view
# MAGIC UNION ALL SELECT 'motion', count(motion), percentile_approx(motion, array(0.05, 0.25, 0.5, 0.75, 0.95)) FROM clip_view
# MAGIC UNION ALL SELECT 'nsfw', count(nsfw), percentile_approx(nsfw, array(0.05, 0.25, 0.5, 0.75, 0.95)) FROM clip_view

# COMMAND ----------

# MAGIC %md
# MAGIC ## What a filter keeps: clips and hours, per source

# COMMAND ----------

# MAGIC %sql
# MAGIC SELECT source,
# MAGIC        count(*) AS clips,
# MAGIC        count_if(coalesce(aesthetic >= 4.5 AND motion BETWEEN 0.5 AND 20, false)) AS kept,
# MAGIC        round(sum(CASE WHEN coalesce(aesthetic >= 4.5 AND motion BETWEEN 0.5 AND 20, false) THEN duration_s ELSE 0 END) / 3600, 3) AS kept_hours
# MAGIC FROM clip_view GROUP BY source ORDER BY clips DESC

# COMMAND ----------

# MAGIC %md
# MAGIC ## The funnel of the `where` widget: each condition in turn

# COMMAND ----------

where = dbutils.widgets.get("where")
total = clip_view.count()
funnel = funnel_counts(clip_view, conditions(where))
print(f"{total} clips; filter: {where}")
for sql, removed, left in funnel:
    print(f"  {sql:<40} removes {removed:>8} on its own, {left:>8} left")
kept = funnel[-1][2] if funnel else total

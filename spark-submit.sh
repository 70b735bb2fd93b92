#!/usr/bin/env bash
# Submit one vidlake stage to a Spark cluster.
#
#   ./spark-submit.sh [--delta-packages] STAGE [vidlake arguments...]
#
#   VIDLAKE_SUBMIT_ARGS="--master yarn --deploy-mode client --num-executors 8" \
#     ./spark-submit.sh score --conf cluster --lake s3://bucket/vidlake/lake
#
# What it does:
#   - packs jobs/ udfs/ schemas/ conf/ into build/vidlake-pyfiles.zip for --py-files;
#   - passes the conf profile: --conf PROFILE among the stage's arguments, else $VIDLAKE_CONF, else
#     `cluster`; spark.master is left to spark-submit (--set spark.master=null);
#   - for GPU stages (score, caption; split with transnetv2) sets spark.executor.resource.gpu.amount,
#     spark.executor.resource.gpu.discoveryScript and spark.task.resource.gpu.amount from the
#     stage's conf (python -m jobs.submit_conf); VIDLAKE_GPU=0 leaves them out;
#   - with --delta-packages or VIDLAKE_DELTA_PACKAGES=1 adds --packages with Delta's jars for the
#     installed pyspark and delta-spark (python -m jobs.delta_packages; $VIDLAKE_DELTA_VERSION names
#     another Delta release), and a pairing no Delta release builds stops here with the reason;
#   - runs spark-submit (from PATH, else $SPARK_HOME/bin, else the one pyspark bundles) on
#     jobs/<stage module>.py with the remaining arguments.
# VIDLAKE_SUBMIT_ARGS holds any other spark-submit options (master, deploy mode, executors, confs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || python=python

usage() { sed -n '2,21p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

delta_packages="${VIDLAKE_DELTA_PACKAGES:-0}"
while [[ $# -gt 0 && "$1" == --* ]]; do
  case "$1" in
    --delta-packages) delta_packages=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "spark-submit.sh: unknown option $1 (options go before STAGE; stage arguments after it)" >&2; exit 2 ;;
  esac
done
if [[ $# -lt 1 ]]; then usage >&2; exit 2; fi
stage="$1"; shift

export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
module="$("$python" -c "import sys; from jobs.cli import STAGES; print(STAGES[sys.argv[1]][0])" "$stage" 2>/dev/null)" || {
  echo "spark-submit.sh: unknown stage '$stage'; stages: $("$python" -c 'from jobs.cli import STAGES; print(", ".join(STAGES))')" >&2
  exit 2
}
script="$here/${module//.//}.py"

# The profile: the stage's own --conf wins, then VIDLAKE_CONF, then cluster.
profile="${VIDLAKE_CONF:-cluster}"
stage_args=("$@")
has_conf=0
overrides=()
for ((i = 0; i < ${#stage_args[@]}; i++)); do
  case "${stage_args[$i]}" in
    --conf) has_conf=1; profile="${stage_args[$((i + 1))]:-$profile}" ;;
    --conf=*) has_conf=1; profile="${stage_args[$i]#--conf=}" ;;
    --set) overrides+=(--set "${stage_args[$((i + 1))]:-}") ;;
  esac
done
if [[ $has_conf -eq 0 ]]; then stage_args=(--conf "$profile" "${stage_args[@]}"); fi
stage_args+=(--set "spark.master=null")

mkdir -p "$here/build"
zip="$here/build/vidlake-pyfiles.zip"
"$python" - "$here" "$zip" <<'PY'
import sys, zipfile
from pathlib import Path
root, target = Path(sys.argv[1]), sys.argv[2]
with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
    for package in ("jobs", "udfs", "schemas", "conf"):
        for path in sorted((root / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                archive.write(path, path.relative_to(root).as_posix())
PY

submit_args=(--py-files "$zip")
if [[ "${VIDLAKE_GPU:-1}" != 0 ]]; then
  while IFS= read -r pair; do
    [[ -n "$pair" ]] && submit_args+=(--conf "$pair")
  done < <("$python" -m jobs.submit_conf "$stage" --conf "$profile" "${overrides[@]}")
fi
if [[ "$delta_packages" == 1 ]]; then
  delta_version=()
  [[ -n "${VIDLAKE_DELTA_VERSION:-}" ]] && delta_version=(--delta-version "$VIDLAKE_DELTA_VERSION")
  coordinates="$("$python" -m jobs.delta_packages "${delta_version[@]}")" || exit 2
  submit_args+=(--packages "$coordinates")
fi
export PYSPARK_PYTHON="${PYSPARK_PYTHON:-$(command -v "$python")}"
# In client mode the driver runs here: it imports vidlake from this checkout, ahead of the zip that
# spark-submit puts first on its path, so the configuration loader reads conf/ from disk.
driver="$here/build/driver-python"
printf '#!/bin/sh\nPYTHONPATH="%s${PYTHONPATH:+:$PYTHONPATH}" exec "%s" "$@"\n' "$here" "$PYSPARK_PYTHON" >"$driver"
chmod +x "$driver"
export PYSPARK_DRIVER_PYTHON="$driver"

if command -v spark-submit >/dev/null 2>&1; then
  submit=spark-submit
elif [[ -n "${SPARK_HOME:-}" && -x "$SPARK_HOME/bin/spark-submit" ]]; then
  submit="$SPARK_HOME/bin/spark-submit"
else
  export SPARK_HOME="$("$python" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))')"
  submit="$SPARK_HOME/bin/spark-submit"
fi

# shellcheck disable=SC2086  # VIDLAKE_SUBMIT_ARGS is a list of options, split on spaces on purpose
exec "$submit" ${VIDLAKE_SUBMIT_ARGS:-} "${submit_args[@]}" "$script" "${stage_args[@]}"

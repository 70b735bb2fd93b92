#!/usr/bin/env bash
# Spark GPU discovery script: prints the GPUs of this machine as Spark expects them,
#   {"name": "gpu", "addresses": ["0", "1", ...]}
# Point spark.executor.resource.gpu.discoveryScript (and spark.worker.resource.gpu.discoveryScript
# on standalone) at it, or score.gpu_discovery_script in vidlake's conf. Needs nvidia-smi.
set -euo pipefail
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "discover_gpus.sh: nvidia-smi not found; this machine has no NVIDIA driver" >&2
  exit 1
fi
addresses=$(nvidia-smi --query-gpu=index --format=csv,noheader | sed -e 's/[[:space:]]//g' -e '/^$/d' \
  | sed -e 's/.*/"&"/' | paste -sd, -)
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"

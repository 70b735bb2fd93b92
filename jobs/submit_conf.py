"""The `--conf` pairs spark-submit.sh passes for a stage, read from vidlake's configuration.

    python -m jobs.submit_conf STAGE [--conf PROFILE] [--set key=value ...]   # one `key=value` per line

A GPU stage (score, caption; split with the transnetv2 detector) gets its executors' GPUs and
discovery script and its per-task GPU amount from its conf section (`<stage>.executor_gpus`,
`<stage>.gpus_per_task`, `<stage>.gpu_discovery_script`; split: the same keys under `split.gpu`);
the discovery script defaults to scripts/discover_gpus.sh. Other stages get no GPU confs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.config import Config, load_config
from udfs.errors import VidlakeError

DEFAULT_DISCOVERY_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "discover_gpus.sh"


def gpu_confs(cfg: Config, stage: str) -> dict[str, str]:
    """Spark's GPU resource confs for the stage ({} for a CPU stage)."""
    if stage in ("score", "caption"):
        section = cfg.section(stage)
    elif stage == "split" and cfg.get("split.detector") == "transnetv2":
        section = cfg.section("split.gpu")
    else:
        return {}
    executor_gpus, task_gpus = section["executor_gpus"], section["gpus_per_task"]
    script = section["gpu_discovery_script"]
    script = str(script or DEFAULT_DISCOVERY_SCRIPT)
    return {
        "spark.executor.resource.gpu.amount": str(executor_gpus),
        "spark.executor.resource.gpu.discoveryScript": script,
        "spark.task.resource.gpu.amount": str(task_gpus),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.submit_conf")
    parser.add_argument("stage")
    parser.add_argument("--conf", default="cluster")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args, _ = parser.parse_known_args(argv)
    try:
        confs = gpu_confs(load_config(args.conf, args.overrides), args.stage)
    except VidlakeError as err:
        print(f"vidlake: error: {err}", file=sys.stderr)
        return 2
    for key, value in confs.items():
        print(f"{key}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

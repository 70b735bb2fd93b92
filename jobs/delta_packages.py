"""The Maven coordinates of Delta's JVM jars that match the installed pyspark and delta-spark.

    python -m jobs.delta_packages [--delta-version V]   # io.delta:delta-spark_4.2_2.13:4.4.0

The delta-spark Python package calls Delta's JVM classes, so the jars must be the same Delta
release as the package, built for the Spark that runs them: Delta 4.0 publishes
`delta-spark_2.13` for Spark 4.0 only; Delta 4.1 and later publish one artifact per Spark minor
version (`delta-spark_4.1_2.13`), as delta-spark's own `configure_spark_with_delta_pip` names them.
A pairing that no Delta release builds is an error here, before Spark starts, instead of a
`NoSuchMethodError` in the middle of a job.
"""
from __future__ import annotations

import argparse
import sys
from importlib import metadata

from udfs.errors import VidlakeError

SCALA_VERSION = "2.13"
# Spark minor version -> the first Delta minor version whose jars are built for it (Maven Central's
# io.delta artifacts: delta-spark_2.13 4.0.x for Spark 4.0, delta-spark_4.1_2.13 from 4.1.0,
# delta-spark_4.2_2.13 from 4.4.0).
FIRST_DELTA_FOR_SPARK = {"4.0": (4, 0), "4.1": (4, 1), "4.2": (4, 4)}


class DeltaVersionError(VidlakeError):
    """Installed pyspark and delta-spark versions for which no Delta jars exist."""


def installed_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        raise DeltaVersionError(f"the {package} package is not installed (pip install {package})") from None


def delta_coordinates(spark_version: str | None = None, delta_version: str | None = None) -> str:
    """`io.delta:<artifact>:<version>` for these versions (default: the installed packages')."""
    spark_version = spark_version or installed_version("pyspark")
    delta_version = delta_version or installed_version("delta-spark")
    spark_minor = ".".join(spark_version.split(".")[:2])
    delta_minor = _minor(delta_version)
    if spark_minor not in FIRST_DELTA_FOR_SPARK:
        known = ", ".join(FIRST_DELTA_FOR_SPARK)
        raise DeltaVersionError(f"pyspark {spark_version}: vidlake knows Delta jars for Spark {known} only")
    first = FIRST_DELTA_FOR_SPARK[spark_minor]
    if delta_minor < first or (delta_minor == (4, 0) and spark_minor != "4.0"):
        raise DeltaVersionError(
            f"delta-spark {delta_version} has no jars for Spark {spark_minor} (pyspark {spark_version}); "
            f"install delta-spark {first[0]}.{first[1]} or newer: pip install 'delta-spark>={first[0]}.{first[1]},<5'"
        )
    artifact = f"delta-spark_{SCALA_VERSION}" if delta_minor == (4, 0) else f"delta-spark_{spark_minor}_{SCALA_VERSION}"
    return f"io.delta:{artifact}:{delta_version}"


def check_jvm_delta(jvm_delta_version: str, python_delta_version: str | None = None) -> None:
    """Delta's JVM classes (already on the classpath: Databricks, a user's own --packages) must be the
    release the delta-spark Python package was built against, at least to the minor version."""
    python_delta_version = python_delta_version or installed_version("delta-spark")
    if _minor(jvm_delta_version) != _minor(python_delta_version):
        raise DeltaVersionError(
            f"Delta's jars on Spark's classpath are {jvm_delta_version} but the delta-spark Python package is "
            f"{python_delta_version}; install delta-spark=={jvm_delta_version} or submit with "
            f"--packages {delta_coordinates(delta_version=python_delta_version)}"
        )


def _minor(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int("".join(ch for ch in minor if ch.isdigit()) or 0)


def main(argv: list[str] | None = None) -> int:
    """Prints the coordinates spark-submit.sh --delta-packages passes to --packages; --delta-version
    (spark-submit.sh: $VIDLAKE_DELTA_VERSION) names another Delta release than the installed one."""
    parser = argparse.ArgumentParser(prog="python -m jobs.delta_packages")
    parser.add_argument("--delta-version", help="the Delta release (default: the installed delta-spark's)")
    args = parser.parse_args(argv)
    try:
        print(delta_coordinates(delta_version=args.delta_version))
    except VidlakeError as err:
        print(f"vidlake: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

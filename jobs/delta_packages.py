"""The Maven coordinates of Delta's JVM jars that match the installed pyspark and delta-spark.

    python -m jobs.delta_packages [--delta-version V]   # io.delta:delta-spark_4.2_2.13:4.4.0

The delta-spark Python package calls Delta's JVM classes, so the jars must be the same Delta
release as the package, built for the Spark that runs them: Delta 4.0 publishes
`delta-spark_2.13` for Spark 4.0 only; Delta 4.1 and later publish one artifact per Spark minor
version (`delta-spark_4.1_2.13`), as delta-spark's own `configure_spark_with_delta_pip` names them.
A pairing that no Delta release builds is an error here, before Spark starts, instead of a
`NoSuchMethodError` in the middle of a job.

`choose_delta_jars` decides, before an embedded session starts, whether to ask Spark for those jars
(`lake.delta_packages`): with `auto`, only when Spark can get them, from Ivy's cache or from a Maven
repository that answers within `lake.maven_timeout_s`, so an offline machine starts on delta-rs at
once instead of waiting for Ivy to give up.
"""
from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from xml.etree import ElementTree

from udfs.errors import VidlakeError

SCALA_VERSION = "2.13"
# Spark minor version -> the first Delta minor version whose jars are built for it (Maven Central's
# io.delta artifacts: delta-spark_2.13 4.0.x for Spark 4.0, delta-spark_4.1_2.13 from 4.1.0,
# delta-spark_4.2_2.13 from 4.4.0).
FIRST_DELTA_FOR_SPARK = {"4.0": (4, 0), "4.1": (4, 1), "4.2": (4, 4)}


# Spark's own default repository (its Ivy "central" resolver), which lake.maven_repository names.
MAVEN_CENTRAL = "https://repo1.maven.org/maven2/"
# Spark 4's Ivy folder when spark.jars.ivy is not set (Spark 3 used ~/.ivy2; Ivy 2.5.2 changed the
# cache layout, so Spark 4 keeps its own).
DEFAULT_IVY_DIR = Path("~/.ivy2.5.2")
# The configurations of a module whose dependencies Spark fetches with it (not provided, test or
# optional ones).
FETCHED_CONFS = frozenset({"compile", "runtime", "default", "master"})


class DeltaVersionError(VidlakeError):
    """Installed pyspark and delta-spark versions for which no Delta jars exist."""


@dataclass(frozen=True)
class JarsChoice:
    """Whether this process names Delta's jars in spark.jars.packages, and why (a phrase for the log
    line and `vidlake status`: "Delta 4.4.0 jars from the Ivy cache (/root/.ivy2.5.2)"); `present`:
    Delta's classes are on the classpath of a JVM that was running already."""

    resolve: bool
    reason: str
    present: bool = False


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


def choose_delta_jars(setting: str | bool, spark_conf: Mapping[str, str], repository: str,
                      timeout_s: float) -> JarsChoice:
    """The lake.delta_packages decision for a session this process starts. true: resolve; false:
    never; auto: resolve when Ivy's cache holds the jars and everything they need, else when the
    Maven repository (each of spark.jars.repositories if set, else `repository`) serves them within
    `timeout_s`; otherwise not, with the reason."""
    if not (isinstance(setting, bool) or setting == "auto"):
        raise VidlakeError(f"lake.delta_packages must be auto, true or false, got {setting!r}")
    if setting is False:
        return JarsChoice(False, "lake.delta_packages is false")
    coordinates = delta_coordinates()
    release = f"Delta {coordinates.rsplit(':', 1)[1]} jars"
    if setting is True:
        return JarsChoice(True, f"lake.delta_packages is true: {release} resolved by Spark")
    ivy = ivy_dir(spark_conf)
    if ivy_cache_holds(ivy, coordinates):
        return JarsChoice(True, f"{release} from the Ivy cache ({ivy})")
    listed = [r.strip() for r in str(spark_conf.get("spark.jars.repositories", "")).split(",") if r.strip()]
    failures = []
    for url in listed or [repository]:
        failure = repository_failure(url, coordinates, timeout_s)
        if failure is None:
            return JarsChoice(True, f"{release} from {repository_name(url)}")
        failures.append(failure)
    return JarsChoice(False, "; ".join(failures))


def ivy_dir(spark_conf: Mapping[str, str]) -> Path:
    """The Ivy folder Spark resolves packages into: spark.jars.ivy, else Spark 4's default."""
    return Path(str(spark_conf.get("spark.jars.ivy") or DEFAULT_IVY_DIR)).expanduser()


def ivy_cache_holds(ivy: Path, coordinates: str) -> bool:
    """True when Ivy's cache under `ivy` holds the module of `coordinates` and every module it needs
    at run time (their ivy-<rev>.xml and published jars), so Spark resolves them without a repository.
    Spark's own modules and scala-library are skipped (Spark excludes them: they are its classpath),
    and so is what a dependency's <exclude> rules leave out below it. A dependency whose revision is
    not cached counts as the cached revision of that module, which Ivy's conflict manager picked
    instead (an evicted revision's files are never fetched)."""
    org, name, rev = coordinates.split(":")
    pending: list[tuple[str, str, str, frozenset]] = [(org, name, rev, frozenset())]
    seen = set()
    while pending:
        org, name, rev, excluded = pending.pop()
        folder = ivy / "cache" / org / name
        descriptor = folder / f"ivy-{rev}.xml"
        if not descriptor.is_file() and seen:  # a dependency, not the module asked for
            descriptor = max(folder.glob("ivy-*.xml"), default=descriptor)
            rev = descriptor.name[len("ivy-"):-len(".xml")]
        if (org, name, rev, excluded) in seen:
            continue
        seen.add((org, name, rev, excluded))
        try:
            module = ElementTree.parse(descriptor).getroot()
        except (OSError, ElementTree.ParseError):
            return False
        for artifact in module.iterfind("publications/artifact"):
            kind, ext = artifact.get("type", "jar"), artifact.get("ext", "jar")
            published = folder / f"{kind}s" / f"{artifact.get('name', name)}-{rev}.{ext}"
            if kind in ("jar", "bundle") and not published.is_file():
                return False
        for dependency in module.iterfind("dependencies/dependency"):
            org, name = dependency.get("org", ""), dependency.get("name", "")
            if _fetched(dependency.get("conf")) and not _excluded(org, name, excluded):
                rules = {(rule.get("org", "*"), rule.get("module", "*")) for rule in dependency.iter("exclude")}
                pending.append((org, name, dependency.get("rev", ""), excluded | rules))
    return True


def _fetched(conf: str | None) -> bool:
    """Whether a dependency's conf mapping ("compile->compile(*),master(*);runtime->runtime(*)")
    puts it on the run-time classpath."""
    if not conf:
        return True
    return any(set(part.split("->")[0].split(",")) & FETCHED_CONFS for part in conf.split(";"))


def _excluded(org: str, name: str, rules: frozenset) -> bool:
    if org == "org.apache.spark" or name == "scala-library":
        return True
    return any(rule_org in ("*", org) and rule_name in ("*", name) for rule_org, rule_name in rules)


def repository_failure(repository: str, coordinates: str, timeout_s: float) -> str | None:
    """None when the Maven repository serves the POM of `coordinates` within `timeout_s`, else why
    not. No proxy from the environment: Spark's Ivy runs in the JVM, which does not read it."""
    org, name, rev = coordinates.split(":")
    url = f"{repository.rstrip('/')}/{org.replace('.', '/')}/{name}/{rev}/{name}-{rev}.pom"
    where = repository_name(repository)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout_s):
            return None
    except urllib.error.HTTPError as err:
        return f"{where} has no {coordinates} (HTTP {err.code})"
    except TimeoutError:
        return f"{where} not reachable in {timeout_s:g} s"
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        if isinstance(reason, TimeoutError):
            return f"{where} not reachable in {timeout_s:g} s"
        return f"{where} not reachable ({getattr(reason, 'strerror', None) or reason})"


def repository_name(url: str) -> str:
    return "Maven Central" if url.rstrip("/") == MAVEN_CENTRAL.rstrip("/") else url


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

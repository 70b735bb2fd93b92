"""How every client of a lake on S3 (or an S3-compatible store) finds it: one set of settings.

    python -m jobs.object_store     # org.apache.hadoop:hadoop-aws:3.5.0, for spark-submit --packages

Four clients read and write a lake and its blobs at s3://: Spark's S3A connector (hadoop-aws) for
Spark's own reads and writes and the delta-spark engine; delta-rs for the delta-rs engine's
commits; pyarrow's S3FileSystem for the parquet files tasks write and the Delta log checks; and
fsspec's s3fs for the video blobs and clip files. The last three read the standard AWS variables
(AWS_ENDPOINT_URL, AWS_REGION, ...), so `storage.s3.*` (or those variables, where the keys are
null) is exported as those variables to the driver and, through spark.executorEnv, to the Python
workers, and set as spark.hadoop.fs.s3a.* for S3A. s3:// is bound to S3A as well, so a lake
named s3:// is the same lake to every client.

Credentials are not configuration and vidlake never reads, copies or logs them: each client takes
them from AWS's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, a
profile, an instance or pod role).

Concurrent commits: delta-rs 1.x writes each commit file with S3's conditional PUT (If-None-Match:
*), which AWS S3 has honoured since 2024, so two writers never overwrite each other's commit and
no locking provider is needed. AWS_S3_ALLOW_UNSAFE_RENAME is not set: it would let a second writer
overwrite a commit. delta-spark's default S3 log store is safe for the writers of one Spark driver.
"""
from __future__ import annotations

import glob
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from jobs.config import Config, ConfigError

log = logging.getLogger("vidlake")

S3_SCHEMES = ("s3", "s3a", "s3n")
S3A_FILESYSTEM = "org.apache.hadoop.fs.s3a.S3AFileSystem"
# The region S3A and the SDKs sign for when an endpoint is set and no region is: S3-compatible
# servers accept any, and naming one keeps the SDKs from looking it up on the network.
ENDPOINT_DEFAULT_REGION = "us-east-1"


class ObjectStoreError(ConfigError):
    """Object-store settings vidlake cannot use."""


@dataclass(frozen=True)
class S3Settings:
    """Where the S3 store is: endpoint (None: AWS's own), region (None: the SDKs' default) and
    whether the bucket goes in the path (http://host/bucket/key) rather than the host name."""

    endpoint: str | None
    region: str | None
    path_style: bool


def on_s3(uri: str | None) -> bool:
    return isinstance(uri, str) and urlsplit(uri).scheme.lower() in S3_SCHEMES


def s3_settings(cfg: Config, environ: dict | None = None) -> S3Settings:
    """`storage.s3.*`, each null key taken from the standard AWS variable."""
    environ = os.environ if environ is None else environ
    endpoint = cfg.get("storage.s3.endpoint") or environ.get("AWS_ENDPOINT_URL_S3") or environ.get("AWS_ENDPOINT_URL")
    if endpoint and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ObjectStoreError(f"storage.s3.endpoint {endpoint!r} is not an http:// or https:// URL")
    region = cfg.get("storage.s3.region") or environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION")
    if endpoint and not region:
        region = ENDPOINT_DEFAULT_REGION
    path_style = cfg.get("storage.s3.path_style")
    if path_style is None:
        path_style = bool(endpoint)
    return S3Settings(endpoint or None, region or None, bool(path_style))


def client_environment(settings: S3Settings) -> dict[str, str]:
    """The AWS variables that delta-rs, pyarrow and s3fs (botocore) read for these settings."""
    env: dict[str, str] = {}
    if settings.endpoint:
        env["AWS_ENDPOINT_URL"] = settings.endpoint
        # delta-rs refuses a plain-http endpoint unless told it is meant
        env["AWS_ALLOW_HTTP"] = str(settings.endpoint.startswith("http://")).lower()
    if settings.region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = settings.region  # the SDKs differ in which they read
    env["AWS_VIRTUAL_HOSTED_STYLE_REQUEST"] = str(not settings.path_style).lower()  # delta-rs
    if settings.path_style:
        env["FSSPEC_S3"] = json.dumps({"config_kwargs": {"s3": {"addressing_style": "path"}}})  # s3fs
    return env


def s3a_conf(settings: S3Settings) -> dict[str, str]:
    """Spark's S3A confs for these settings, with s3:// bound to S3A (Apache Hadoop binds nothing to it)."""
    conf = {
        "spark.hadoop.fs.s3.impl": S3A_FILESYSTEM,
        "spark.hadoop.fs.s3a.path.style.access": str(settings.path_style).lower(),
    }
    if settings.endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = settings.endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(settings.endpoint.startswith("https://")).lower()
    if settings.region:
        conf["spark.hadoop.fs.s3a.endpoint.region"] = settings.region
    return conf


def uses_s3(cfg: Config) -> bool:
    """Whether the lake, the blobs or the clip files are on S3."""
    return any(on_s3(cfg.get(key)) for key in ("lake.root", "download.blob_root", "split.clip_root"))


def object_store_conf(cfg: Config, packages: str) -> dict[str, str]:
    """The Spark confs of a session whose lake or blobs are on S3 (none otherwise): S3A's settings,
    hadoop-aws in spark.jars.packages (`storage.s3.hadoop_aws`), and the clients' AWS variables for
    the Python workers. Exports those variables to this process too, for the driver's delta-rs,
    pyarrow and s3fs (the settings took each variable the user set where its key is null)."""
    wanted = cfg.get("storage.s3.hadoop_aws")
    if wanted not in (None, True, False):
        raise ObjectStoreError(f"storage.s3.hadoop_aws is {wanted!r}; use null (auto), true or false")
    if not uses_s3(cfg) and wanted is not True:
        return {}
    settings = s3_settings(cfg)
    environment = client_environment(settings)
    os.environ.update(environment)
    conf = s3a_conf(settings)
    conf.update({f"spark.executorEnv.{key}": value for key, value in environment.items()})
    if wanted is not False and "org.apache.hadoop:hadoop-aws:" not in packages:
        conf["spark.jars.packages"] = ",".join(filter(None, [packages, hadoop_aws_coordinates()]))
    where = settings.endpoint and _without_userinfo(settings.endpoint)
    log.info("object store: S3 at %s%s, region %s; credentials from the AWS environment or its chain",
             where or "AWS's endpoints", " (path-style)" if settings.path_style else "", settings.region or "default")
    return conf


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def hadoop_aws_coordinates() -> str:
    """hadoop-aws of the Hadoop release Spark runs (its jars/hadoop-client-api-X.jar): S3A only
    works with the Hadoop classes it was built with."""
    import pyspark

    folders = [Path(pyspark.__file__).parent / "jars"]
    if os.environ.get("SPARK_HOME"):
        folders.append(Path(os.environ["SPARK_HOME"]) / "jars")
    for folder in folders:
        jars = sorted(glob.glob(str(folder / "hadoop-client-api-*.jar")))
        if jars:
            version = Path(jars[-1]).name[len("hadoop-client-api-"):-len(".jar")]
            return f"org.apache.hadoop:hadoop-aws:{version}"
    raise ObjectStoreError(
        f"cannot tell which Hadoop Spark runs (no hadoop-client-api jar in {', '.join(map(str, folders))}); "
        "put hadoop-aws of that release on the classpath yourself and set storage.s3.hadoop_aws=false")


def main() -> int:
    """Prints the coordinates to pass to spark-submit --packages for an S3 lake."""
    try:
        print(hadoop_aws_coordinates())
    except ObjectStoreError as err:
        print(f"vidlake: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

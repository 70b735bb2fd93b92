"""A lake and its blobs on S3: ingest, download and split write them to an S3-compatible server on
127.0.0.1 (moto's server mode), on both Delta engines, with the endpoint and credentials given as
a cluster user gives them: the standard AWS variables, or `storage.s3.endpoint`.

Each engine runs in a process of its own (a JVM cannot gain Delta's or hadoop-aws's classes once
started); the two run at once. Nothing leaves loopback: the credentials are set, so no SDK asks an
instance-metadata service for them, and that service is switched off besides.
"""
from __future__ import annotations

import csv
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import boto3
import deltalake
import pytest
from loopback_server import LoopbackServer, file_responder
from media import Shot, make_video
from moto.server import ThreadedMotoServer

from jobs.config import load_config
from jobs.object_store import client_environment, s3_settings

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "vidlake-test"
ACCESS_KEY = "AKIAVIDLAKETEST"
SECRET_KEY = "vidlake-test-secret-0f9e8d7c"

PIPELINE = textwrap.dedent("""
    import logging
    import sys
    from jobs.cli import run_stage
    from jobs.config import load_config
    from jobs.context import open_context

    logging.basicConfig(level=logging.INFO)
    lake_root, sources, *settings = sys.argv[1:]
    common = ["--lake", lake_root, *[arg for item in settings for arg in ("--set", item)]]
    for stage in (["ingest", "--format", "generic", "--input", sources], ["download"], ["split"]):
        status = run_stage([*stage, *common])
        assert status == 0, (stage, status)
    lake = open_context(load_config("local", [f"lake.root={lake_root}", *settings])).lake
    print("ENGINE", lake.engine_name)
    for table in ("videos", "video_files", "clips"):
        print("ROWS", table, lake.row_count(table))
    print("OK", sorted(r.status for r in lake.read("video_files").collect()))
    print("SPLIT ERRORS", [r.asDict() for r in lake.read("split_errors").collect()])
""")


@pytest.fixture
def s3_server():
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY)
    client.create_bucket(Bucket=BUCKET)
    yield endpoint, client
    server.stop()


def aws_environment(tmp_path: Path) -> dict:
    """This process's environment without any AWS setting of the machine's, with test credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FSSPEC_"))}
    env.update(AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, AWS_EC2_METADATA_DISABLED="true",
               AWS_CONFIG_FILE=str(tmp_path / "no-aws-config"), AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"),
               PYSPARK_PYTHON=sys.executable, PYTHONPATH=str(ROOT))
    return env


def objects(client, prefix: str) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_a_pipeline_writes_its_lake_and_blobs_to_s3_on_both_engines(s3_server, tmp_path):
    endpoint, client = s3_server
    videos = {}
    for seed in (1, 2):
        path = tmp_path / f"v{seed}.mp4"
        make_video(path, [Shot(60, seed=seed), Shot(60, seed=seed + 10)], fps=25, size=(160, 96))
        videos[path.name] = path.read_bytes()
    common = ["download.allow_hosts=[127.0.0.1]", "split.materialize=reencode", "split.clips.min_clip_s=1.0",
              "spark.master=local[1]",
              "spark.conf.spark.sql.shuffle.partitions=2"]
    runs = {
        # a cluster user's environment variables name the endpoint
        "delta-spark": ({"AWS_ENDPOINT_URL": endpoint}, ["lake.engine=delta-spark"]),
        # the configuration names it
        "delta-rs": ({}, ["lake.engine=delta-rs", f"storage.s3.endpoint={endpoint}"]),
    }
    with LoopbackServer() as server:
        for name, data in videos.items():
            server.routes[f"/videos/{name}"] = file_responder(data)
        sources = tmp_path / "sources.csv"
        with sources.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["url", "caption"])
            writer.writerows([(server.url(f"/videos/{name}"), f"video {name}") for name in videos])
        processes = {}
        for engine, (env, settings) in runs.items():
            processes[engine] = subprocess.Popen(
                [sys.executable, "-c", PIPELINE, f"s3://{BUCKET}/{engine}/lake", str(sources), *settings, *common],
                cwd=tmp_path, env={**aws_environment(tmp_path), **env}, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True)
        outputs = {engine: process.communicate(timeout=1200)[0] for engine, process in processes.items()}

    for engine, output in outputs.items():
        assert processes[engine].returncode == 0, output[-5000:]
        assert f"ENGINE {engine}" in output
        assert "ROWS videos 2" in output and "ROWS video_files 2" in output and "ROWS clips 4" in output, output[-3000:]
        assert "OK ['ok', 'ok']" in output
        assert "object store: S3 at " + endpoint in output, output[-3000:]
        assert SECRET_KEY not in output and ACCESS_KEY not in output

        keys = objects(client, f"{engine}/lake/")
        for table in ("videos", "video_files", "clips"):
            assert f"{engine}/lake/{table}/_delta_log/00000000000000000000.json" in keys
            assert any(k.startswith(f"{engine}/lake/{table}/") and k.endswith(".parquet") for k in keys), table
        blobs = [k for k in keys if k.startswith(f"{engine}/lake/blobs/") and k.endswith(".mp4")]
        assert len([k for k in blobs if "/clips/" not in k]) == 2  # the downloaded videos
        assert len([k for k in blobs if "/clips/" in k]) == 4  # split's clip files

        # the tables are ordinary Delta tables on S3 to a reader of their own
        options = {"AWS_ENDPOINT_URL": endpoint, "AWS_ALLOW_HTTP": "true", "AWS_REGION": "us-east-1",
                   "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        clips = deltalake.DeltaTable(f"s3://{BUCKET}/{engine}/lake/clips", storage_options=options)
        assert clips.to_pyarrow_table().num_rows == 4
        commit = client.get_object(Bucket=BUCKET, Key=f"{engine}/lake/clips/_delta_log/00000000000000000000.json")
        engine_info = commit["Body"].read().decode()
        assert ("Delta-Lake/" in engine_info) == (engine == "delta-spark")


def test_the_settings_come_from_conf_else_the_standard_aws_variables():
    cfg = load_config("local", ["storage.s3.endpoint=http://127.0.0.1:9000"])
    settings = s3_settings(cfg, environ={"AWS_ENDPOINT_URL": "http://elsewhere:1", "AWS_REGION": "eu-west-1"})
    assert (settings.endpoint, settings.region, settings.path_style) == ("http://127.0.0.1:9000", "eu-west-1", True)
    env = client_environment(settings)
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:9000" and env["AWS_ALLOW_HTTP"] == "true"
    assert not any("SECRET" in key or "ACCESS_KEY" in key for key in env)
    on_aws = s3_settings(load_config("local", []), environ={})
    assert (on_aws.endpoint, on_aws.region, on_aws.path_style) == (None, None, False)

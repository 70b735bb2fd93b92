"""The embedded Spark session: reachable from this machine only, and given Delta's jars where Spark
can get them (lake.delta_packages), else on delta-rs with the reason."""
from __future__ import annotations

import ipaddress
import os
import socket
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from loopback_server import LoopbackServer, file_responder

from jobs.config import ConfigError, load_config
from jobs.delta_packages import JarsChoice, choose_delta_jars, delta_coordinates
from udfs.errors import VidlakeError

ROOT = Path(__file__).resolve().parent.parent


def test_embedded_spark_listens_on_loopback_only(spark):
    hosts = {spark.conf.get("spark.driver.host"), urlsplit(spark.sparkContext.uiWebUrl).hostname}
    for host in hosts:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        assert addresses and all(ipaddress.ip_address(address).is_loopback for address in addresses), (host, addresses)


def test_loopback_only_is_set_while_the_jvm_starts_and_a_users_choice_wins(monkeypatch):
    from jobs.session import listening_on_loopback

    monkeypatch.delenv("SPARK_LOCAL_IP", raising=False)
    with listening_on_loopback():
        assert os.environ["SPARK_LOCAL_IP"] == "127.0.0.1"
    assert "SPARK_LOCAL_IP" not in os.environ  # a later cluster session in this process is not bound to loopback
    monkeypatch.setenv("SPARK_LOCAL_IP", "10.1.2.3")
    with listening_on_loopback():
        assert os.environ["SPARK_LOCAL_IP"] == "10.1.2.3"
    assert os.environ["SPARK_LOCAL_IP"] == "10.1.2.3"


# --- lake.delta_packages: whether a session this process starts asks Spark for Delta's jars -------------

DELTA = delta_coordinates()
DELTA_ORG, DELTA_NAME, DELTA_REV = DELTA.split(":")
POM = f"/maven2/{DELTA_ORG.replace('.', '/')}/{DELTA_NAME}/{DELTA_REV}/{DELTA_NAME}-{DELTA_REV}.pom"


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/maven2/"


def _ivy_module(cache: Path, org: str, name: str, rev: str, dependencies: str = "", jar: bool = True) -> None:
    """One module as Spark's Ivy leaves it in its cache: ivy-<rev>.xml and the published jar."""
    folder = cache / org / name
    (folder / "jars").mkdir(parents=True)
    (folder / f"ivy-{rev}.xml").write_text(
        f'<?xml version="1.0" encoding="UTF-8"?>\n<ivy-module version="2.0" xmlns:m="http://ant.apache.org/ivy/maven">'
        f'<info organisation="{org}" module="{name}" revision="{rev}" status="release"/>'
        f'<publications><artifact name="{name}" type="jar" ext="jar" conf="master"/></publications>'
        f"<dependencies>{dependencies}</dependencies></ivy-module>")
    if jar:
        (folder / "jars" / f"{name}-{rev}.jar").write_bytes(b"PK\x05\x06" + bytes(18))


RUNTIME = 'conf="compile->compile(*),master(*);runtime->runtime(*)"'
PROVIDED = 'conf="provided->compile(*),provided(*),runtime(*),master(*)"'


def ivy_folder_with_delta(root: Path) -> Path:
    """An Ivy folder (spark.jars.ivy) whose cache holds Delta's module as delta-spark's descriptor
    shapes it: compile dependencies (one of them evicted by a newer revision, one with <exclude>
    rules), provided and test ones that Spark does not fetch, and scala-library, which it excludes."""
    cache = root / "ivy" / "cache"
    _ivy_module(cache, DELTA_ORG, DELTA_NAME, DELTA_REV, f"""
        <dependency org="org.scala-lang" name="scala-library" rev="2.13.17" {RUNTIME}/>
        <dependency org="io.delta" name="delta-storage" rev="{DELTA_REV}" {RUNTIME}>
          <exclude org="com.fasterxml.jackson.core" module="*" name="*" type="*" ext="*" conf="" matcher="exact"/>
        </dependency>
        <dependency org="org.slf4j" name="slf4j-api" rev="2.0.17" {RUNTIME}/>
        <dependency org="org.apache.spark" name="spark-sql_2.13" rev="4.2.0" {PROVIDED}/>
        <dependency org="com.amazonaws" name="aws-java-sdk" rev="1.12.262" {PROVIDED}/>
        <dependency org="junit" name="junit" rev="4.13.2" conf="test->runtime(*),master(*)"/>""")
    _ivy_module(cache, "io.delta", "delta-storage", DELTA_REV,
                f'<dependency org="com.fasterxml.jackson.core" name="jackson-core" rev="2.17.0" {RUNTIME}/>')
    _ivy_module(cache, "org.slf4j", "slf4j-api", "2.0.13")
    return root / "ivy"


def test_delta_packages_auto_takes_the_jars_from_ivys_cache_when_it_holds_all_they_need(tmp_path):
    ivy = ivy_folder_with_delta(tmp_path)
    nowhere = closed_port_url()
    choice = choose_delta_jars("auto", {"spark.jars.ivy": str(ivy)}, nowhere, 1.0)
    assert choice == JarsChoice(True, f"Delta {DELTA_REV} jars from the Ivy cache ({ivy})")

    (ivy / "cache" / "io.delta" / "delta-storage" / "jars" / f"delta-storage-{DELTA_REV}.jar").unlink()
    choice = choose_delta_jars("auto", {"spark.jars.ivy": str(ivy)}, nowhere, 1.0)
    assert choice == JarsChoice(False, f"{nowhere} not reachable (Connection refused)")
    assert not choose_delta_jars("auto", {"spark.jars.ivy": str(tmp_path / "empty")}, nowhere, 1.0).resolve


def test_delta_packages_auto_asks_the_maven_repository_and_gives_up_after_the_timeout(tmp_path):
    empty_ivy = {"spark.jars.ivy": str(tmp_path / "ivy")}
    with LoopbackServer() as server:
        server.routes[POM] = file_responder(b"<project/>", "text/xml")
        repository = server.url("/maven2/")
        assert choose_delta_jars("auto", empty_ivy, repository, 1.0) == JarsChoice(
            True, f"Delta {DELTA_REV} jars from {repository}")
        assert server.count(POM) == 1
        # an internal mirror in spark.jars.repositories, which Spark resolves from too, is asked instead
        mirrored = {**empty_ivy, "spark.jars.repositories": repository}
        assert choose_delta_jars("auto", mirrored, closed_port_url(), 1.0).resolve and server.count(POM) == 2

        missing = server.url("/empty/")
        assert choose_delta_jars("auto", empty_ivy, missing, 1.0) == JarsChoice(
            False, f"{missing} has no {DELTA} (HTTP 404)")

        hang = server.url("/hang/")
        server.routes["/hang/"] = lambda handler: time.sleep(3)
        started = time.monotonic()
        assert choose_delta_jars("auto", empty_ivy, hang, 0.5) == JarsChoice(False, f"{hang} not reachable in 0.5 s")
        assert time.monotonic() - started < 2


def test_delta_packages_true_and_false_decide_without_asking_and_other_values_are_refused(tmp_path):
    empty_ivy = {"spark.jars.ivy": str(tmp_path / "ivy")}
    with LoopbackServer() as server:
        repository = server.url("/maven2/")
        assert choose_delta_jars(True, empty_ivy, repository, 1.0).resolve
        assert choose_delta_jars(False, empty_ivy, repository, 1.0) == JarsChoice(False, "lake.delta_packages is false")
        assert server.requests == []
    assert load_config("local", ["lake.delta_packages=true"]).get("lake.delta_packages") is True
    assert load_config("local", ["lake.delta_packages=false"]).get("lake.delta_packages") is False
    with pytest.raises(VidlakeError, match="lake.delta_packages must be auto, true or false, got 'yes'"):
        choose_delta_jars("yes", empty_ivy, repository, 1.0)
    with pytest.raises(ConfigError, match="lake.maven_timeout_s"):
        load_config("local", ["lake.maven_timeout_s=0"])


def test_jars_spark_cannot_resolve_at_start_leave_the_run_on_delta_rs_with_one_line(lake, spark, tmp_path):
    """Packages that Ivy cannot fetch stop Spark's JVM from starting: the run goes on with delta-rs,
    says so once, and `vidlake status` shows why. Spark's resolvers (Maven Central and spark-packages,
    through DEFAULT_ARTIFACT_REPOSITORY) point at a closed loopback port and Ivy's folder is empty."""
    video = ("v1", "generic", "s1", "http://127.0.0.1:9/a.mp4", "b1", datetime.now(timezone.utc))
    lake.append(spark.createDataFrame([video], "video_id string, source string, source_video_id string, url string, "
                                               "ingest_batch string, ingested_at timestamp"), "videos")
    settings = ["lake.delta_packages=true", f"spark.conf.spark.jars.ivy={tmp_path / 'ivy'}", "spark.master=local[1]"]
    command = [sys.executable, "-c", "from jobs.cli import main; main()", "status", "--lake", lake.root,
               *[arg for item in settings for arg in ("--set", item)]]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DEFAULT_ARTIFACT_REPOSITORY": closed_port_url()}
    env.pop("VIDLAKE_CONF", None)  # the engine profile of other tests: this one is about lake.engine=auto
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    why = f"Spark could not resolve {DELTA} when it started"
    assert [line for line in result.stderr.splitlines() if line.startswith("[vidlake] lake engine")] == [
        f"[vidlake] lake engine: delta-rs ({why})"]
    assert "Traceback" not in result.stderr
    assert f"lake engine: delta-rs ({why})" in result.stdout
    assert "videos ingested" in result.stdout

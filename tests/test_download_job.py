"""`vidlake download` end to end: real Spark local[2], real Delta tables, a real loopback server.

The resume test kills a real job process (its whole process group: the Python driver and its
Spark JVM) right after its first Delta commit, then runs the job again.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from loopback_server import LoopbackServer, file_responder
from media import packaged_video

from jobs.cli import build_parser
from jobs.context import JobContext
from jobs.download import download_conf, run, tasks_per_batch
from schemas.ids import video_id
from schemas.tables import VIDEO_FILES, VIDEOS
from udfs.errors import VidlakeError

ROOT = Path(__file__).resolve().parent.parent
NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
HINTS = [{"start_s": 0.5, "end_s": 3.0, "caption": "a bike rides past", "score": 0.47},
         {"start_s": 4.0, "end_s": 8.5, "caption": "another bike", "score": 0.51}]


def video_row(source: str, source_id: str, url: str, hints: list | None = None) -> dict:
    return {"video_id": video_id(source, source_id), "source": source, "source_video_id": source_id,
            "url": url, "caption": f"video {source_id}", "duration_s": None, "clip_hints": hints,
            "extra": {"k": "v"}, "ingest_batch": "test", "ingested_at": NOW}


def job_args(**overrides) -> argparse.Namespace:
    return argparse.Namespace(**{"limit": None, "retry_failed": False, **overrides})


def set_download_conf(cfg, **overrides) -> None:
    """The download conf of these tests: loopback allowed, short timeouts and backoff, small batches."""
    values = {"allow_hosts": ["127.0.0.1"], "timeout_s": 5.0, "read_timeout_s": 3.0, "retries": 1,
              "backoff_s": 0.05, "backoff_max_s": 0.1, "commit_every": 4, "concurrency": 4, **overrides}
    for key, value in values.items():
        cfg.set(f"download.{key}", value)


def ok_rows_have_their_blobs(rows, lake) -> None:
    """Each ok row's blob is under the lake's blob root, which its uri is relative to."""
    for row in rows:
        if row.status == "ok":
            assert not Path(row.uri).is_absolute(), row
            blob = Path(lake.root) / "blobs" / row.uri
            assert blob.is_file(), row
            assert hashlib.sha256(blob.read_bytes()).hexdigest() == row.sha256


@pytest.fixture
def served_videos():
    """A server with three real videos (each under two URLs), an HTML page and a missing file."""
    names = ("bikes", "carphone_pristine", "bigbuckbunny")
    files = {name: packaged_video(name).read_bytes() for name in names}
    with LoopbackServer() as server:
        for name, data in files.items():
            for copy in ("a", "b"):
                server.routes[f"/{copy}/{name}.mp4"] = file_responder(data)
        server.routes["/page.html"] = file_responder(b"<!DOCTYPE html><html>gone</html>", "text/html")
        yield server, files


def test_download_job_fills_video_files_once_per_video_and_resumes(spark, cfg, lake, served_videos):
    server, files = served_videos
    rows = [video_row("webvid10m", f"{copy}-{name}", server.url(f"/{copy}/{name}.mp4"))
            for name in files for copy in ("a", "b")]
    rows.append(video_row("panda70m", "../../etc/passwd", server.url("/a/bikes.mp4"), hints=HINTS))
    rows.append(video_row("webvid10m", "html", server.url("/page.html")))
    rows.append(video_row("webvid10m", "later", server.url("/later/bikes.mp4")))
    lake.append(spark.createDataFrame(rows, VIDEOS), "videos")
    videos_before = sorted(map(repr, lake.read("videos").collect()))
    videos_version = len(lake.history("videos"))
    set_download_conf(cfg)
    ctx = JobContext(cfg, spark, lake)

    assert run(ctx, job_args(limit=4)) == 0
    assert lake.read("video_files").count() == 4

    assert run(ctx, job_args()) == 0
    files_rows = {r.video_id: r for r in lake.read("video_files").collect()}
    assert sorted(files_rows) == sorted(r["video_id"] for r in rows)
    status = {r["source_video_id"]: files_rows[r["video_id"]].status for r in rows}
    failures = {"html": "not_video", "later": "http_error"}
    assert status == {**{r["source_video_id"]: "ok" for r in rows[:7]}, **failures}
    ok_rows_have_their_blobs(files_rows.values(), lake)
    blob_root = Path(lake.root) / "blobs"
    assert {blob_root / r.uri for r in files_rows.values() if r.uri} == set(blob_root.rglob("*.mp4"))
    passwd = files_rows[video_id("panda70m", "../../etc/passwd")]
    assert (blob_root / passwd.uri).parent.parent == blob_root and passwd.num_frames == 250
    assert len(lake.history("video_files")) >= 3  # several commits: commit_every is 4

    requests_before = len(server.requests)
    versions_before = len(lake.history("video_files"))
    assert run(ctx, job_args()) == 0
    assert len(server.requests) == requests_before  # nothing done is fetched again
    assert len(lake.history("video_files")) == versions_before

    server.routes["/later/bikes.mp4"] = file_responder(files["bikes"])
    assert run(ctx, job_args(retry_failed="all")) == 0
    after = {r.video_id: r for r in lake.read("video_files").collect()}
    assert len(after) == len(rows) and lake.read("video_files").count() == len(rows)
    later = after[video_id("webvid10m", "later")]
    assert (later.status, later.attempts, later.num_frames) == ("ok", 2, 250)
    assert after[video_id("webvid10m", "html")].attempts == 2
    assert all(after[v].attempts == 1 for v in after if files_rows[v].status == "ok")
    ok_rows_have_their_blobs(after.values(), lake)

    assert sorted(map(repr, lake.read("videos").collect())) == videos_before  # clip hints untouched
    assert len(lake.history("videos")) == videos_version


def failed_row(video: dict, status: str, error: str) -> dict:
    """A `video_files` row of a download that failed once."""
    row = dict.fromkeys(VIDEO_FILES.fieldNames())
    return {**row, "video_id": video["video_id"], "status": status, "error": error, "url": video["url"],
            "attempts": 1, "fetched_at": NOW}


FAILURES = {  # source id: the status and message of its failed row, and whether --retry-failed retries it
    "timeout": ("timeout", "the download took longer than download.timeout_s=300 s (0 bytes received)", True),
    "reset": ("connection_error", "ConnectionResetError: [Errno 104] Connection reset by peer", True),
    "busy": ("http_error", "HTTP 429 Too Many Requests", True),
    "down": ("http_error", "HTTP 503 Service Unavailable (after 4 attempts)", True),
    "gone": ("http_error", "HTTP 404 Not Found", False),
    "loop": ("http_error", "more than download.max_redirects=5 redirects", False),
    "html": ("not_video", "the body is an HTML page, not a video container", False),
    "huge": ("too_large", "Content-Length 9000000000 is over download.max_bytes=2147483648", False),
    "metadata": ("blocked_url", "169.254.169.254 is a cloud metadata address", False),
    "broken": ("decode_error", "cannot read the file", False),
}


def test_retry_failed_fetches_again_what_may_pass_and_with_all_every_failure(spark, cfg, lake, served_videos):
    server, _files = served_videos
    videos = [video_row("webvid10m", name, server.url("/a/bikes.mp4")) for name in FAILURES]
    lake.append(spark.createDataFrame(videos, VIDEOS), "videos")
    failed = [failed_row(v, *FAILURES[v["source_video_id"]][:2]) for v in videos]
    lake.append(spark.createDataFrame(failed, VIDEO_FILES), "video_files")
    set_download_conf(cfg)
    ctx = JobContext(cfg, spark, lake)
    parser = build_parser("download")

    def rows_by_name() -> dict:
        by_id = {r.video_id: r for r in lake.read("video_files").collect()}
        return {v["source_video_id"]: by_id[v["video_id"]] for v in videos}

    assert run(ctx, parser.parse_args(["download", "--retry-failed"])) == 0  # the flag alone: the contract
    after = rows_by_name()
    assert len(after) == lake.read("video_files").count()
    retried = {name for name, row in after.items() if row.attempts == 2}
    assert retried == {name for name, (_, _, transient) in FAILURES.items() if transient}
    assert all(after[name].status == "ok" for name in retried)
    assert all(after[name].status == FAILURES[name][0] for name in FAILURES if name not in retried)

    assert run(ctx, parser.parse_args(["download", "--retry-failed", "all"])) == 0
    after = rows_by_name()
    assert {name: (row.status, row.attempts) for name, row in after.items()} == {
        name: ("ok", 2) for name in FAILURES}
    assert parser.parse_args(["download"]).retry_failed is None


def test_the_retried_statuses_and_codes_come_from_conf_and_are_checked(spark, cfg, lake, served_videos):
    server, _files = served_videos
    videos = [video_row("webvid10m", name, server.url("/a/bikes.mp4")) for name in ("gone", "down", "html")]
    lake.append(spark.createDataFrame(videos, VIDEOS), "videos")
    failed = [failed_row(v, *FAILURES[v["source_video_id"]][:2]) for v in videos]
    lake.append(spark.createDataFrame(failed, VIDEO_FILES), "video_files")
    set_download_conf(cfg, retry_statuses=["http_error", "not_video"], retry_http_codes=[404])
    assert run(JobContext(cfg, spark, lake), job_args(retry_failed="transient")) == 0
    attempts = {r.video_id: r.attempts for r in lake.read("video_files").collect()}
    assert [attempts[v["video_id"]] for v in videos] == [2, 1, 2]
    for key, value, message in (("retry_statuses", ["ok"], "not failure statuses"),
                                ("retry_statuses", ["timeout", "tiemout"], "tiemout"),
                                ("retry_http_codes", [429, "50x"], "not HTTP codes")):
        cfg.set(f"download.{key}", value)
        with pytest.raises(VidlakeError, match=message):
            download_conf(cfg, lake.root)
        cfg.set(f"download.{key}", ["timeout"] if key == "retry_statuses" else [429])


def test_blob_root_defaults_beside_the_tables_and_bad_settings_are_refused(cfg, lake):
    conf = download_conf(cfg, lake.root)
    assert conf["blob_root"] == f"{lake.root}/blobs"
    assert conf["allow_local_paths"] is False
    cfg.set("ingest.allow_local_paths", True)
    assert download_conf(cfg, lake.root)["allow_local_paths"] is True
    cfg.set("download.allow_local_paths", False)
    assert download_conf(cfg, lake.root)["allow_local_paths"] is False
    cfg.set("download.blob_root", "relative/blobs")
    assert download_conf(cfg, lake.root)["blob_root"] == str(Path("relative/blobs").resolve())
    with pytest.raises(VidlakeError, match="'download.commit_every' must be at least 1, got 0"):
        cfg.set("download.commit_every", 0)


def test_a_batch_gets_as_many_tasks_as_keep_their_downloads_busy():
    conf = {"commit_every": 5000, "concurrency": 16, "partitions_per_batch": None}
    assert tasks_per_batch(conf, default_parallelism=64) == 64
    assert tasks_per_batch(conf, default_parallelism=4000) == 313  # 5000 videos / 16 per task
    assert tasks_per_batch({**conf, "partitions_per_batch": 7}, default_parallelism=64) == 7


def _delayed(data: bytes, delay_s: float):
    def respond(handler) -> None:
        time.sleep(delay_s)
        file_responder(data)(handler)

    return respond


def _slow_videos(server: LoopbackServer, spark, lake, count: int, delay_s: float) -> list[dict]:
    """`count` videos in the lake whose URLs the server answers with a real video after `delay_s`."""
    server.routes["/v/"] = _delayed(packaged_video("carphone_pristine").read_bytes(), delay_s)
    rows = [video_row("webvid10m", str(i), server.url(f"/v/{i}.mp4")) for i in range(count)]
    lake.append(spark.createDataFrame(rows, VIDEOS), "videos")
    return rows


def test_a_batch_of_slow_downloads_commits_every_commit_every_s_and_finishes_in_rounds(spark, cfg, lake):
    count = 6
    with LoopbackServer() as server:
        rows = _slow_videos(server, spark, lake, count, delay_s=0.6)
        # One batch of 6 downloads in one task, two at a time, 0.6 s each: the third pair would start after
        # the 1 s bound.
        set_download_conf(cfg, commit_every=100, commit_every_s=1.0, concurrency=2, partitions_per_batch=1)
        assert run(JobContext(cfg, spark, lake), job_args()) == 0
        files_rows = lake.read("video_files").collect()
        assert sorted(r.video_id for r in files_rows) == sorted(r["video_id"] for r in rows)
        assert all(r.status == "ok" for r in files_rows)
        assert all(server.count(f"/v/{i}.mp4") == 1 for i in range(count))  # no video fetched twice
    ok_rows_have_their_blobs(files_rows, lake)
    assert len(lake.history("video_files")) >= 2  # one commit per round, though commit_every is 100
    with pytest.raises(VidlakeError, match="'download.commit_every_s' must be above 0, got 0.0"):
        cfg.set("download.commit_every_s", 0.0)


def _kill_group(job: subprocess.Popen) -> None:
    """SIGKILL the job's process group: its Python driver and the Spark JVM it started."""
    try:
        os.killpg(job.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    job.wait()


def test_a_job_killed_after_its_first_commit_resumes_without_duplicates(spark, cfg, lake, tmp_path):
    count = 12
    with LoopbackServer() as server:
        rows = _slow_videos(server, spark, lake, count, delay_s=0.3)
        overrides = ["download.allow_hosts=[127.0.0.1]", "download.commit_every=3", "download.concurrency=2",
                     "spark.master=local[2]", "spark.conf.spark.sql.shuffle.partitions='2'"]
        command = [sys.executable, str(ROOT / "jobs" / "download.py"), "--lake", lake.root]
        command += [arg for item in overrides for arg in ("--set", item)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        first_commit = Path(lake.path("video_files")) / "_delta_log" / f"{0:020d}.json"
        with open(tmp_path / "job.log", "wb") as job_log:
            job = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=job_log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
            try:
                deadline = time.monotonic() + 180
                while not first_commit.exists() and job.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.05)
            finally:
                _kill_group(job)
        assert first_commit.exists(), (tmp_path / "job.log").read_text()
        committed = {r.video_id for r in lake.read("video_files").collect()}
        assert 0 < len(committed) < count  # killed with work left
        parts = Path(lake.root) / "blobs" / ".parts"
        (parts / f"{rows[-1]['video_id']}.{'0' * 32}.part").write_bytes(b"\x00" * 1000)  # one body cut short
        hour_ago = time.time() - 3601
        for part in parts.iterdir():  # the re-run comes an hour after the kill
            os.utime(part, (hour_ago, hour_ago))

        set_download_conf(cfg, concurrency=4, commit_every=8)
        assert run(JobContext(cfg, spark, lake), job_args()) == 0
        assert list(parts.iterdir()) == []  # the killed run's parts are gone, the re-run's own published

        files_rows = lake.read("video_files").collect()
        assert len(files_rows) == count
        assert sorted(r.video_id for r in files_rows) == sorted(r["video_id"] for r in rows)
        assert all(r.status == "ok" for r in files_rows)
        ok_rows_have_their_blobs(files_rows, lake)
        by_id = {r["video_id"]: r["url"] for r in rows}
        for video in committed:  # a committed video is never fetched again
            assert server.count(by_id[video].split(str(server.port))[1]) == 1
        blob_root = Path(lake.root) / "blobs"
        assert {blob_root / r.uri for r in files_rows} == set(blob_root.rglob("*.mp4"))

"""The download udfs against a real HTTP server on 127.0.0.1 serving real videos and hostile answers.

No packet leaves loopback: address rules are checked on addresses without connecting, and the
blocked redirects and URLs point at loopback addresses outside the allow list.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import sys
import threading
import time
import types
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import av
import pandas as pd
import pytest
from loopback_server import (
    LoopbackServer,
    endless_responder,
    failing_then,
    file_responder,
    redirect_responder,
    send_bytes,
    slow_headers_responder,
    slow_responder,
)
from media import packaged_video

from udfs import fetch_base as status
from udfs.fetch import VIDEO_FILES_DTYPES, Cutoff, download_batch
from udfs.fetch_base import FetchFailure, FetchSettings
from udfs.fetch_http import backoff_s
from udfs.fetch_safety import blocked_reason, check_address, parse_http_url, resolve_checked
from udfs.fetch_ytdlp import RefusedConnection, check_hosts, connections_checked, media_urls
from udfs.probe import sniff_container

GOOD_VIDEOS = ("bikes", "carphone_pristine", "bigbuckbunny", "transnetv2_test")
MAX_BYTES = 8_000_000  # over every good video (the largest is 4.8 MB)
HTML_PAGE = b"<!DOCTYPE html><html><head><title>Video</title></head><body>Not here</body></html>"


def settings_dict(blob_root: Path | str, **overrides) -> dict:
    """The test's `download` section: the loopback server allowed, short timeouts and backoff."""
    conf = {
        "blob_root": str(blob_root),
        "allow_hosts": ["127.0.0.1"],
        "timeout_s": 3.0,
        "read_timeout_s": 2.0,
        "max_bytes": MAX_BYTES,
        "retries": 2,
        "backoff_s": 0.05,
        "backoff_max_s": 0.2,
        "retry_after_max_s": 2.0,
        "concurrency": 16,
        "ytdlp": {"enabled": True, "hosts": ["youtube.com"], "format": "b"},
    }
    conf.update(overrides)
    return conf


def row_id(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:20]


def pyav_truth(path: Path) -> dict:
    """What PyAV says about a file, frames counted by decoding every one."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        return {"width": stream.codec_context.width, "height": stream.codec_context.height,
                "fps": float(stream.average_rate), "num_frames": frames,
                "has_audio": bool(container.streams.audio)}


def remux(source: Path, target: Path, container_format: str, options: dict | None = None) -> Path:
    """The video stream of `source` copied (not re-encoded) into another container."""
    with av.open(str(source)) as src, av.open(str(target), "w", format=container_format,
                                             options=options or {}) as out:
        stream = out.add_stream_from_template(src.streams.video[0])
        for packet in src.demux(src.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    return target


# ---------------------------------------------------------------------------------------------
# Address and URL rules, without any connection


@pytest.mark.parametrize(
    "address, reason",
    [
        ("127.0.0.1", "loopback"),
        ("127.0.0.2", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("100.100.100.200", "cloud metadata"),
        ("100.64.0.1", "not globally routable"),
        ("224.0.0.1", "multicast"),
        ("239.255.255.250", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("::1", "loopback"),
        ("::", "unspecified"),
        ("fe80::1", "link-local"),
        ("fc00::1", "private"),
        ("fd00:ec2::254", "cloud metadata"),
        ("ff02::1", "multicast"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("::ffff:10.0.0.1", "private"),
        ("64:ff9b::a9fe:a9fe", "cloud metadata"),
        ("2002:7f00:1::", "loopback"),
        ("::7f00:1", "loopback"),
    ],
)
def test_non_public_addresses_are_blocked_with_their_kind(address, reason):
    assert reason in blocked_reason(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700::6810:85e5", "::ffff:8.8.8.8"])
def test_public_addresses_pass(address):
    assert blocked_reason(ipaddress.ip_address(address)) is None


def test_allow_hosts_lets_named_hosts_addresses_and_networks_through_and_nothing_else():
    loopback = ipaddress.ip_address("127.0.0.1")
    check_address("127.0.0.1", loopback, ["127.0.0.1"])
    check_address("mirror.internal", ipaddress.ip_address("10.0.0.7"), ["mirror.internal"])
    check_address("anything", ipaddress.ip_address("10.0.0.7"), ["10.0.0.0/8"])
    for host, address in (("127.0.0.2", "127.0.0.2"), ("::1", "::1"), ("evil.example", "169.254.169.254")):
        with pytest.raises(FetchFailure) as failure:
            check_address(host, ipaddress.ip_address(address), ["127.0.0.1", "mirror.internal"])
        assert failure.value.status == status.BLOCKED_URL


@pytest.mark.parametrize(
    "url, expected",
    [
        ("ftp://example.com/a.mp4", status.BLOCKED_URL),
        ("gopher://example.com/", status.BLOCKED_URL),
        ("http://user:secret@example.com/a.mp4", status.BLOCKED_URL),
        ("http://169.254.169.254/latest/meta-data/", status.BLOCKED_URL),
        ("http://[::ffff:127.0.0.1]:8080/a.mp4", status.BLOCKED_URL),
        ("http://[::1]/a.mp4", status.BLOCKED_URL),
        ("http:///a.mp4", status.INVALID_URL),
        ("http://example.com:99999/a.mp4", status.INVALID_URL),
    ],
)
def test_urls_refused_before_any_connection(url, expected):
    with pytest.raises(FetchFailure) as failure:
        parse_http_url(url, ["127.0.0.1"])
    assert failure.value.status == expected


def test_hosts_and_paths_are_sent_in_their_ascii_forms():
    target = parse_http_url("http://例え.jp:8080/a clip/ü.mp4?t=1 2", [])
    assert (target.host, target.port, target.path) == ("xn--r8jz45g.jp", 8080, "/a%20clip/%C3%BC.mp4?t=1%202")
    assert parse_http_url("https://example.com/a%20b.mp4", []).path == "/a%20b.mp4"


def test_a_name_that_resolves_to_loopback_is_blocked_unless_its_address_is_allowed():
    with pytest.raises(FetchFailure) as failure:
        resolve_checked("localhost", 80, [])
    assert failure.value.status == status.BLOCKED_URL
    assert "localhost resolves to" in failure.value.message
    allowed = resolve_checked("localhost", 80, ["127.0.0.1"])
    assert {sockaddr[0] for _, sockaddr in allowed} == {"127.0.0.1"}


def test_backoff_grows_is_capped_and_honours_retry_after_up_to_its_cap(tmp_path):
    settings = FetchSettings.from_conf(settings_dict(tmp_path, backoff_s=1.0, backoff_max_s=4.0,
                                                     retry_after_max_s=10.0))
    assert 0.5 <= backoff_s(0, None, settings) <= 1.0
    assert 2.0 <= backoff_s(3, None, settings) <= 4.0
    assert backoff_s(0, 7.0, settings) == 7.0
    assert backoff_s(0, 3600.0, settings) == 10.0


@pytest.mark.parametrize(
    "head, container",
    [
        (b"\x00\x00\x00\x20ftypisom" + bytes(500), "mp4"),
        (b"\x00\x00\x00\x14ftypqt  " + bytes(500), "mov"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + bytes(500), "webm"),
        (b"\x1a\x45\xdf\xa3\xa3\x42\x86\x81\x01\x42\x82\x88matroska" + bytes(500), "mkv"),
        (b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(500), "avi"),
        (b"FLV\x01\x05\x00\x00\x00\x09" + bytes(500), "flv"),
        ((b"\x47" + bytes(187)) * 3, "mpegts"),
        (b"<!DOCTYPE html><html>" + bytes(500), None),
        (b'{"error": "not found"}', None),
        (b"\x89PNG\r\n\x1a\n" + bytes(500), None),
    ],
)
def test_sniffing_recognises_video_containers_only(head, container):
    assert sniff_container(head) == container


# ---------------------------------------------------------------------------------------------
# One batch against the real server: good videos and every hostile case


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The server, a batch of URLs (good and hostile) and the result of download_batch on them."""
    work = tmp_path_factory.mktemp("fetch")
    videos = {name: packaged_video(name) for name in GOOD_VIDEOS}
    bikes = videos["bikes"].read_bytes()
    # MP4 with its index first (so a truncated copy still opens); MPEG-TS and Matroska record no
    # frame count, so their frames are counted by demuxing.
    faststart = remux(videos["bikes"], work / "faststart.mp4", "mp4", {"movflags": "faststart"}).read_bytes()
    remuxed = {"bikes_ts": remux(videos["bikes"], work / "bikes.ts", "mpegts"),
               "bikes_mkv": remux(videos["bikes"], work / "bikes.mkv", "matroska")}
    videos.update(remuxed)
    server = LoopbackServer()
    routes = {f"/{name}.mp4": file_responder(path.read_bytes()) for name, path in videos.items()}
    routes["/bikes_ts.mp4"] = file_responder(remuxed["bikes_ts"].read_bytes(), "video/mp2t")
    routes["/bikes_mkv.mp4"] = file_responder(remuxed["bikes_mkv"].read_bytes(), "video/x-matroska")
    routes.update({
        "/flaky.mp4": failing_then(file_responder(bikes), failures=1, status=500),
        "/busy.mp4": failing_then(file_responder(bikes), 1, status=429, headers={"Retry-After": "1"}),
        "/down.mp4": failing_then(file_responder(bikes), failures=100, status=503),
        "/slow.mp4": slow_responder(bikes, bytes_per_step=64, step_s=0.25),
        "/slow-headers.mp4": slow_headers_responder(step_s=0.2, steps=100),
        "/huge-length.mp4": lambda h: send_bytes(h, b"", length=MAX_BYTES * 10),
        "/endless.mp4": endless_responder(bikes[:512], limit=MAX_BYTES * 4),
        "/page.html": file_responder(HTML_PAGE, "text/html"),
        "/truncated.mp4": file_responder(bikes[: len(bikes) // 2]),
        "/truncated-faststart.mp4": file_responder(faststart[: len(faststart) // 2]),
        "/last-bytes-missing.mp4": file_responder(faststart[:-100]),
        "/short-body.mp4": lambda h: send_bytes(h, bikes, length=len(bikes) + 1000),
        "/to-bikes": redirect_responder("/bikes.mp4", 301),
        "/to-blocked": redirect_responder(server.url("/bikes.mp4", host="127.0.0.2")),
        "/to-metadata-mapped": redirect_responder("http://[::ffff:169.254.169.254]/latest/meta-data/"),
        "/to-file": redirect_responder("file:///etc/passwd"),
        "/loop": redirect_responder("/loop"),
    })
    server.routes.update(routes)
    cases = {f"good:{name}": f"/{name}.mp4" for name in videos}
    good_paths = set(cases.values())
    cases.update({path: path for path in routes if path not in good_paths})
    cases["/missing.mp4"] = "/missing.mp4"
    with server:
        urls = {case: server.url(path) for case, path in cases.items()}
        urls["ipv6-loopback"] = f"http://[::1]:{server.port}/bikes.mp4"
        urls["localhost-name"] = server.url("/bikes.mp4", host="localhost")
        urls["not-a-url"] = "http://"
        rows = pd.DataFrame({"video_id": [row_id(c) for c in urls], "url": list(urls.values())})
        rows.loc[len(rows)] = ["../../etc/passwd", server.url("/bikes.mp4")]
        urls["path-id"] = server.url("/bikes.mp4")
        blob_root = work / "blobs"
        result = download_batch(rows, settings_dict(blob_root))
        by_case = dict(zip(urls, result.to_dict("records"), strict=True))
        yield {"server": server, "result": result, "rows": by_case, "videos": videos, "blob_root": blob_root,
               "work": work}


def test_the_batch_returns_one_video_files_row_per_input_row(served):
    result = served["result"]
    assert list(result.columns) == list(VIDEO_FILES_DTYPES)
    assert len(result) == len(served["rows"])
    assert set(result["status"]) <= set(status.STATUSES)
    assert (result["attempts"] == 1).all()


def test_the_video_files_columns_match_the_table_contract():
    from schemas.tables import VIDEO_FILES

    assert list(VIDEO_FILES_DTYPES) == VIDEO_FILES.fieldNames()


@pytest.mark.parametrize("name, container", [
    ("bikes", "mp4"), ("carphone_pristine", "mp4"), ("bigbuckbunny", "mp4"), ("transnetv2_test", "mp4"),
    ("bikes_ts", "mpegts"), ("bikes_mkv", "mkv"),
])
def test_good_videos_are_stored_and_probe_as_pyav_sees_them(served, name, container):
    row = served["rows"][f"good:{name}"]
    source = served["videos"][name]
    assert row["status"] == status.OK, row["error"]
    stored = Path(row["uri"])
    assert stored.is_file() and stored.read_bytes() == source.read_bytes()
    assert stored.resolve().is_relative_to(served["blob_root"].resolve())
    assert row["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert row["bytes"] == source.stat().st_size
    assert (row["container"], row["codec"]) == (container, "h264")
    assert stored.name == f"{row['video_id']}.{container}"
    truth = pyav_truth(source)
    assert (row["width"], row["height"], row["num_frames"], row["has_audio"]) == (
        truth["width"], truth["height"], truth["num_frames"], truth["has_audio"])
    assert row["fps"] == pytest.approx(truth["fps"])
    assert row["duration_s"] == pytest.approx(truth["num_frames"] / truth["fps"], abs=0.1)


@pytest.mark.parametrize(
    "case, expected, message",
    [
        ("/missing.mp4", status.HTTP_ERROR, "HTTP 404"),
        ("/down.mp4", status.HTTP_ERROR, "HTTP 503"),
        ("/slow.mp4", status.TIMEOUT, "download.timeout_s"),
        ("/slow-headers.mp4", status.TIMEOUT, "download.timeout_s"),
        ("/huge-length.mp4", status.TOO_LARGE, "Content-Length"),
        ("/endless.mp4", status.TOO_LARGE, "passed download.max_bytes"),
        ("/page.html", status.NOT_VIDEO, "HTML page"),
        ("/truncated.mp4", status.DECODE_ERROR, "cannot read"),
        ("/truncated-faststart.mp4", status.DECODE_ERROR, "truncated"),
        ("/last-bytes-missing.mp4", status.DECODE_ERROR, "cut short"),
        ("/short-body.mp4", status.CONNECTION_ERROR, "body ended"),
        ("/to-blocked", status.BLOCKED_URL, "127.0.0.2 is a loopback address"),
        ("/to-metadata-mapped", status.BLOCKED_URL, "cloud metadata"),
        ("/to-file", status.BLOCKED_URL, "scheme 'file'"),
        ("/loop", status.HTTP_ERROR, "redirects"),
        ("ipv6-loopback", status.BLOCKED_URL, "::1 is a loopback address"),
        ("localhost-name", status.OK, None),
        ("not-a-url", status.INVALID_URL, "no host"),
        ("path-id", status.INVALID_ID, "not a hex hash"),
    ],
)
def test_each_case_ends_in_its_status(served, case, expected, message):
    row = served["rows"][case]
    assert row["status"] == expected, row["error"]
    if message:
        assert message in row["error"]
    if expected != status.OK:
        assert pd.isna(row["uri"])


def test_a_blocked_redirect_never_reaches_the_blocked_address(served):
    assert served["server"].count("/to-blocked") == 1
    assert served["server"].count("/bikes.mp4") == 3  # the good one, the 301 and the localhost name


def test_server_errors_are_retried_and_the_retry_succeeds(served):
    for case in ("/flaky.mp4", "/busy.mp4", "/to-bikes"):
        assert served["rows"][case]["status"] == status.OK, served["rows"][case]["error"]
    assert served["server"].count("/flaky.mp4") == 2
    assert served["server"].count("/down.mp4") == 3  # retries=2: three attempts, then the error
    assert "after 3 attempts" in served["rows"]["/down.mp4"]["error"]


def test_retry_after_is_honoured(served):
    first, second = served["server"].times("/busy.mp4")
    assert second - first >= 1.0


def test_nothing_is_left_in_the_blob_root_but_the_good_blobs(served):
    stored = sorted(p for p in served["blob_root"].rglob("*") if p.is_file())
    ok_uris = sorted(Path(r["uri"]) for r in served["rows"].values() if r["status"] == status.OK)
    assert stored == ok_uris
    assert not (served["work"].parent / "etc").exists()


# ---------------------------------------------------------------------------------------------
# TLS, local paths, yt-dlp


def _self_signed_localhost(folder: Path) -> tuple[Path, Path]:
    """A certificate for the name `localhost` only (no IP address in it) and its key."""
    pytest.importorskip("cryptography")
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_https_checks_the_certificate_against_the_url_host(tmp_path):
    import ssl

    cert, key = _self_signed_localhost(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    bikes = packaged_video("bikes")
    with LoopbackServer(tls_context=context) as server:
        server.routes["/bikes.mp4"] = file_responder(bikes.read_bytes())
        rows = pd.DataFrame({"video_id": [row_id("tls-name"), row_id("tls-ip"), row_id("tls-untrusted")],
                             "url": [server.url("/bikes.mp4", host="localhost"), server.url("/bikes.mp4"),
                                     server.url("/bikes.mp4", host="localhost")]})
        trusted = download_batch(rows.iloc[:2], settings_dict(tmp_path / "blobs", tls_ca_file=str(cert)))
        untrusted = download_batch(rows.iloc[2:], settings_dict(tmp_path / "blobs", retries=0))
    assert trusted["status"].tolist() == [status.OK, status.CONNECTION_ERROR]
    assert "127.0.0.1" in trusted["error"][1]  # the certificate names localhost, not the address
    assert trusted["num_frames"][0] == pyav_truth(bikes)["num_frames"]
    assert untrusted["status"][0] == status.CONNECTION_ERROR
    assert "certificate verify failed" in untrusted["error"][0]


def test_local_paths_are_fetched_only_where_allowed(tmp_path):
    bikes = packaged_video("bikes")
    rows = pd.DataFrame({"video_id": [row_id("plain"), row_id("file-url"), row_id("device"), row_id("gone")],
                         "url": [str(bikes), bikes.as_uri(), "/dev/zero", str(tmp_path / "gone.mp4")]})
    allowed = download_batch(rows, settings_dict(tmp_path / "blobs", allow_local_paths=True))
    refused = download_batch(rows, settings_dict(tmp_path / "blobs", allow_local_paths=False))
    assert allowed["status"].tolist() == [status.OK, status.OK, status.FETCH_ERROR, status.FETCH_ERROR]
    assert "not a regular file" in allowed["error"][2]
    assert allowed["sha256"][0] == hashlib.sha256(bikes.read_bytes()).hexdigest()
    assert (refused["status"] == status.BLOCKED_URL).all()


def test_local_files_outside_local_roots_are_not_read_even_through_a_link(tmp_path):
    from udfs.sources import PATH_OUTSIDE_LOCAL_ROOTS

    root = tmp_path / "videos"
    root.mkdir()
    inside = root / "bikes.mp4"
    inside.write_bytes(packaged_video("bikes").read_bytes())
    outside = tmp_path / "secret.mp4"
    outside.write_bytes(inside.read_bytes())
    (root / "link.mp4").symlink_to(outside)
    rows = pd.DataFrame({"video_id": [row_id("in"), row_id("out"), row_id("link")],
                         "url": [str(inside), outside.as_uri(), str(root / "link.mp4")]})
    got = download_batch(rows, settings_dict(tmp_path / "blobs", allow_local_paths=True, local_roots=[str(root)]))
    assert got["status"].tolist() == [status.OK, status.BLOCKED_URL, status.BLOCKED_URL]
    assert got["error"][2] == f"{PATH_OUTSIDE_LOCAL_ROOTS}: {outside.resolve()} is under none of {root}"


def test_a_local_file_that_is_not_a_video_is_described_without_any_of_its_bytes(tmp_path):
    secret = tmp_path / "passwd"
    secret.write_text("root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin\n")
    keys = tmp_path / "key.bin"
    keys.write_bytes(b"\x01\x02SECRETKEY\x00\xfe" * 8)
    rows = pd.DataFrame({"video_id": [row_id("passwd"), row_id("key")], "url": [str(secret), str(keys)]})
    got = download_batch(rows, settings_dict(tmp_path / "blobs", allow_local_paths=True))
    assert got["status"].tolist() == [status.NOT_VIDEO, status.NOT_VIDEO]
    assert got["error"].tolist() == ["the body is text, not a video container",
                                     "the body is data of an unknown kind, not a video container"]


def test_page_urls_go_to_ytdlp_and_its_failure_is_a_status(tmp_path):
    pytest.importorskip("yt_dlp")
    bikes = packaged_video("bikes")
    with LoopbackServer() as server:
        server.routes["/bikes.mp4"] = file_responder(bikes.read_bytes())
        server.routes["/watch"] = file_responder(HTML_PAGE, "text/html")
        rows = pd.DataFrame({"video_id": [row_id("yt-file"), row_id("yt-page")],
                             "url": [server.url("/bikes.mp4"), server.url("/watch")]})
        # 127.0.0.1 stands in for a page host: yt-dlp's generic extractor handles both URLs.
        result = download_batch(rows, settings_dict(tmp_path / "blobs", ytdlp={"hosts": ["127.0.0.1"],
                                                                                "format": "b"}))
    assert result["status"].tolist() == [status.OK, status.FETCH_ERROR]
    assert result["num_frames"][0] == pyav_truth(bikes)["num_frames"]
    assert "yt-dlp" in result["error"][1] and "Unsupported URL" in result["error"][1]


def test_page_urls_without_ytdlp_installed_get_fetcher_unavailable(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yt_dlp", None)  # what `import yt_dlp` meets when it is not installed
    rows = pd.DataFrame({"video_id": [row_id("yt-missing")], "url": ["https://www.youtube.com/watch?v=AJp_ANXoGoM"]})
    result = download_batch(rows, settings_dict(tmp_path / "blobs", allow_hosts=[]))
    assert result["status"][0] == status.FETCHER_UNAVAILABLE
    assert "pip install yt-dlp" in result["error"][0]




def test_a_cutoff_stops_starting_downloads_after_its_time_but_not_before_the_first_ones(tmp_path):
    rows = pd.DataFrame({"video_id": [row_id(f"cut-{i}") for i in range(6)], "url": ["ftp://example.com/a.mp4"] * 6})
    conf = settings_dict(tmp_path, concurrency=2)
    past = download_batch(rows, conf, Cutoff(time.time() - 1, first=2))
    assert len(past) == 2 and set(past["video_id"]) <= set(rows["video_id"])
    assert (past["status"] == status.BLOCKED_URL).all()
    future = download_batch(rows, conf, Cutoff(time.time() + 60, first=2))
    assert future["video_id"].tolist() == rows["video_id"].tolist()


# yt-dlp's media URLs: the address logic without connecting, then its wiring with a fake yt_dlp module


def test_the_media_urls_of_ytdlps_chosen_format_are_all_the_urls_it_starts_from():
    assert media_urls({"url": "https://cdn.example/v.mp4", "format_id": "18"}) == ["https://cdn.example/v.mp4"]
    merged = {"requested_formats": [{"url": "https://a.example/v"}, {"url": "https://b.example/a"}]}
    assert media_urls(merged) == ["https://a.example/v", "https://b.example/a"]
    dash = {"url": "https://m.example/manifest.mpd", "manifest_url": "https://m.example/manifest.mpd",
            "fragment_base_url": "https://f.example/base/",
            "fragments": [{"path": "seg-1.m4s"}, {"url": "http://127.0.0.2/seg-2.m4s"}]}
    assert media_urls(dash) == ["https://m.example/manifest.mpd", "https://f.example/base/",
                                "https://f.example/base/seg-1.m4s", "http://127.0.0.2/seg-2.m4s"]
    for info, expected in (({"_type": "playlist", "entries": []}, status.FETCH_ERROR),
                           ({"format_id": "x", "protocol": "rtmp"}, status.BLOCKED_URL)):
        with pytest.raises(FetchFailure) as failure:
            media_urls(info)
        assert failure.value.status == expected


@pytest.mark.parametrize("url, reason", [
    ("http://127.0.0.2:8080/v.mp4", "127.0.0.2 is a loopback address"),
    ("https://[::1]/v.mp4", "::1 is a loopback address"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
    ("http://[::ffff:10.0.0.1]/v.mp4", "private"),
    ("rtmp://live.example/stream", "scheme 'rtmp'"),
])
def test_a_ytdlp_url_on_a_refused_address_or_scheme_is_blocked(url, reason):
    with pytest.raises(FetchFailure) as failure:
        check_hosts(["http://127.0.0.1:9/page", url], ("127.0.0.1",), "the media URL yt-dlp chose")
    assert failure.value.status == status.BLOCKED_URL
    assert reason in failure.value.message and failure.value.message.startswith("the media URL yt-dlp chose")


def test_a_ytdlp_host_is_blocked_when_any_of_its_addresses_is_refused(monkeypatch):
    answers = {"cdn.example": ["93.184.215.14", "10.0.0.7"], "public.example": ["93.184.215.14", "2606:4700::1"]}

    def getaddrinfo(host, port, *args, **kwargs):  # DNS answers made up here: nothing is sent
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    check_hosts(["https://public.example/v.mp4"], (), "the media URL yt-dlp chose")
    # vidlake's own connections skip the refused address; yt-dlp might connect to it, so the host is refused
    assert [sockaddr[0] for _, sockaddr in resolve_checked("cdn.example", 443, ())] == ["93.184.215.14"]
    with pytest.raises(FetchFailure) as failure:
        check_hosts(["https://cdn.example/v.mp4"], (), "the media URL yt-dlp chose")
    assert failure.value.status == status.BLOCKED_URL
    assert "cdn.example resolves to 10.0.0.7, a private address" in failure.value.message


class FakeYoutubeDL:
    """yt_dlp.YoutubeDL's calls that vidlake makes: the page 'extracts' to `info`, and
    process_info 'downloads' `body` to the output template."""

    info: dict = {}
    body = b""
    extracted: list = []
    downloaded: list = []

    def __init__(self, options: dict):
        self.options = options

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def extract_info(self, url: str, download: bool = True) -> dict:
        assert not download  # the URLs are checked between extraction and download
        FakeYoutubeDL.extracted.append(url)
        return dict(self.info)

    def process_info(self, info: dict) -> None:
        FakeYoutubeDL.downloaded.append(info["url"])
        Path(self.options["outtmpl"] % {"ext": info["ext"]}).write_bytes(self.body)


@pytest.mark.parametrize("media_host, expected", [("127.0.0.2", status.BLOCKED_URL), ("[::1]", status.BLOCKED_URL),
                                                  ("127.0.0.1", status.OK)])
def test_ytdlp_downloads_only_media_urls_that_pass_the_address_checks(tmp_path, monkeypatch, media_host, expected):
    media = f"http://{media_host}:9/videoplayback?id=1"
    fake = types.SimpleNamespace(YoutubeDL=FakeYoutubeDL)
    monkeypatch.setitem(sys.modules, "yt_dlp", fake)
    monkeypatch.setattr(FakeYoutubeDL, "info", {"id": "x", "url": media, "ext": "mp4", "format_id": "18"})
    monkeypatch.setattr(FakeYoutubeDL, "body", packaged_video("bikes").read_bytes())
    monkeypatch.setattr(FakeYoutubeDL, "extracted", [])
    monkeypatch.setattr(FakeYoutubeDL, "downloaded", [])
    rows = pd.DataFrame({"video_id": [row_id(f"fake-yt-{media_host}")], "url": ["http://127.0.0.1:9/watch?v=x"]})
    result = download_batch(rows, settings_dict(tmp_path / "blobs", ytdlp={"hosts": ["127.0.0.1"]}))
    assert result["status"][0] == expected, result["error"][0]
    assert FakeYoutubeDL.downloaded == ([media] if expected == status.OK else [])
    if expected != status.OK:
        assert f"the media URL yt-dlp chose: {media_host.strip('[]')} is a loopback address" in result["error"][0]


def test_a_page_host_that_resolves_to_a_blocked_address_is_not_handed_to_ytdlp(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yt_dlp", types.SimpleNamespace(YoutubeDL=FakeYoutubeDL))
    monkeypatch.setattr(FakeYoutubeDL, "extracted", [])
    rows = pd.DataFrame({"video_id": [row_id("yt-blocked")], "url": ["http://127.0.0.2/watch?v=x"]})
    result = download_batch(rows, settings_dict(tmp_path / "blobs", ytdlp={"hosts": ["127.0.0.2"]}))
    assert result["status"][0] == status.BLOCKED_URL
    assert "the page URL: 127.0.0.2 is a loopback address" in result["error"][0]
    assert FakeYoutubeDL.extracted == []


def test_real_ytdlp_is_stopped_before_a_media_url_on_a_blocked_address(tmp_path):
    pytest.importorskip("yt_dlp")
    with LoopbackServer() as server:
        blocked, allowed = server.url("/bikes.mp4", host="127.0.0.2"), server.url("/bikes.mp4")
        for path, media in (("/watch-blocked", blocked), ("/watch", allowed)):
            page = f"<!DOCTYPE html><html><body><video src='{media}'></video></body></html>".encode()
            server.routes[path] = file_responder(page, "text/html")
        server.routes["/bikes.mp4"] = file_responder(packaged_video("bikes").read_bytes())
        rows = pd.DataFrame({"video_id": [row_id("yt-media-blocked"), row_id("yt-media-ok")],
                             "url": [server.url("/watch-blocked"), server.url("/watch")]})
        # 127.0.0.1 stands in for a page host; yt-dlp's generic extractor finds the page's <video>.
        result = download_batch(rows, settings_dict(tmp_path / "blobs", ytdlp={"hosts": ["127.0.0.1"]}))
        assert server.count("/bikes.mp4") == 1  # the allowed page's video, once
    assert result["status"].tolist() == [status.BLOCKED_URL, status.OK], result["error"].tolist()
    assert "the media URL yt-dlp chose: 127.0.0.2 is a loopback address" in result["error"][0]


def test_real_ytdlp_following_a_redirect_to_a_blocked_address_is_stopped_at_the_connection(tmp_path):
    pytest.importorskip("yt_dlp")
    with LoopbackServer() as server:
        media = server.url("/media.mp4")  # allowed, so it passes the check of yt-dlp's chosen URLs
        server.routes["/media.mp4"] = redirect_responder(server.url("/bikes.mp4", host="127.0.0.2"))
        server.routes["/bikes.mp4"] = file_responder(packaged_video("bikes").read_bytes())
        page = f"<!DOCTYPE html><html><body><video src='{media}'></video></body></html>".encode()
        server.routes["/watch"] = file_responder(page, "text/html")
        rows = pd.DataFrame({"video_id": [row_id("yt-redirect-blocked")], "url": [server.url("/watch")]})
        result = download_batch(rows, settings_dict(tmp_path / "blobs", ytdlp={"hosts": ["127.0.0.1"]}))
        assert server.count("/bikes.mp4") == 0
    assert result["status"][0] == status.BLOCKED_URL, result["error"][0]
    assert "yt-dlp was stopped connecting: 127.0.0.2 is a loopback address" in result["error"][0]


def test_connections_are_checked_only_in_the_guarded_thread():
    with LoopbackServer() as server:
        with connections_checked(("127.0.0.1",)) as refused:
            socket.create_connection(("127.0.0.1", server.port), timeout=5).close()  # allowed
            with pytest.raises(RefusedConnection):
                socket.create_connection(("127.0.0.2", server.port), timeout=5)
            with pytest.raises(RefusedConnection):
                socket.create_connection(("::1", server.port), timeout=5)
        assert [reason.split(";")[0] for reason in refused] == ["127.0.0.2 is a loopback address",
                                                                "::1 is a loopback address"]
        with connections_checked(()):
            other = ThreadPoolExecutor(1).submit(socket.create_connection, ("127.0.0.1", server.port), 5)
            other.result().close()  # another thread connects unchecked
        socket.create_connection(("127.0.0.1", server.port), timeout=5).close()  # and so does this one, after


@pytest.mark.parametrize("probes_at_once", [1, 3])
def test_no_more_files_are_probed_at_once_than_probes_at_once(tmp_path, monkeypatch, probes_at_once):
    """Probing decodes: CPU work, bounded per task however many downloads are in flight."""
    import udfs.fetch

    real_probe, lock = udfs.fetch.probe_video, threading.Lock()
    running, most = [0], [0]

    def watched_probe(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.02)
            return real_probe(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(udfs.fetch, "probe_video", watched_probe)
    video = packaged_video("bikes")
    rows = pd.DataFrame({"video_id": [row_id(f"probe-{i}") for i in range(12)], "url": [str(video)] * 12})
    conf = settings_dict(tmp_path / "blobs", allow_local_paths=True, concurrency=8, probes_at_once=probes_at_once)
    result = download_batch(rows, conf)
    assert (result["status"] == status.OK).all()
    assert most[0] == probes_at_once


def test_a_full_spool_disk_fails_the_batch_instead_of_failing_every_video(tmp_path, monkeypatch):
    """ENOSPC is the machine's fault: the task fails (Spark retries it, the job stops with the
    reason) rather than writing a failed row for each video, or retrying each as a connection error."""
    from udfs.fetch_store import BlobStore, SpoolError

    def full_spool(self, video_id: str) -> str:
        part = tmp_path / f"{video_id}.part"
        part.symlink_to("/dev/full")  # every write to it fails with ENOSPC
        return str(part)

    monkeypatch.setattr(BlobStore, "spool_path", full_spool)
    rows = pd.DataFrame({"video_id": [row_id(f"full-{i}") for i in range(3)],
                         "url": [str(packaged_video("bikes"))] * 3})
    with pytest.raises(SpoolError, match="No space left on device"):
        download_batch(rows, settings_dict(tmp_path / "blobs", allow_local_paths=True))
    assert not [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]


def test_retry_attempts_count_up_from_the_previous_row(tmp_path):
    rows = pd.DataFrame({"video_id": [row_id("again")], "url": ["ftp://example.com/a.mp4"], "attempts": [2]})
    assert download_batch(rows, settings_dict(tmp_path))["attempts"][0] == 3


def test_the_settings_reject_a_missing_blob_root_and_nonsense_limits(tmp_path):
    with pytest.raises(ValueError, match="blob_root"):
        FetchSettings.from_conf({"blob_root": None})
    with pytest.raises(ValueError, match="max_bytes"):
        FetchSettings.from_conf(settings_dict(tmp_path, max_bytes=0))
    with pytest.raises(ValueError, match="probes_at_once"):
        FetchSettings.from_conf(settings_dict(tmp_path, probes_at_once=0))


def test_the_defaults_file_holds_every_setting_the_fetchers_read():
    from dataclasses import fields

    import yaml

    defaults_file = Path(__file__).parent.parent / "conf/defaults/download.yaml"
    defaults = yaml.safe_load(defaults_file.read_text())["download"]
    flat = {k for k in defaults if k != "ytdlp"} | {f"ytdlp_{k}" for k in defaults["ytdlp"]}
    assert {f.name for f in fields(FetchSettings)} <= flat


@pytest.mark.parametrize("name", GOOD_VIDEOS)
def test_counting_every_packet_agrees_with_the_recorded_frame_count(name):
    from udfs.probe import probe_video

    path = packaged_video(name)
    assert probe_video(path, count_all_packets=True) == probe_video(path, count_all_packets=False)


@pytest.mark.parametrize("name", GOOD_VIDEOS)
def test_the_index_path_describes_a_file_as_ffmpegs_demuxer_does(name):
    from udfs.probe import probe_from_index, probe_video

    path = packaged_video(name)
    assert probe_from_index(path) == probe_video(path, count_all_packets=True)


def test_the_index_path_leaves_cut_and_unindexed_files_to_ffmpeg(tmp_path):
    from udfs.probe import probe_from_index

    bikes = packaged_video("bikes")
    faststart = remux(bikes, tmp_path / "faststart.mp4", "mp4", {"movflags": "faststart"}).read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(faststart[:-100])
    ts = remux(bikes, tmp_path / "bikes.ts", "mpegts")
    assert probe_from_index(tmp_path / "faststart.mp4") is not None
    assert probe_from_index(cut) is None and probe_from_index(ts) is None
    assert probe_from_index(tmp_path / "faststart.mp4", index_max_bytes=1000) is None  # its index is larger


def test_an_object_store_blob_root_gets_the_bytes_through_fsspec(tmp_path):
    import fsspec

    bikes = packaged_video("bikes")
    rows = pd.DataFrame({"video_id": [row_id("remote")], "url": [str(bikes)]})
    spool = str(tmp_path / "spool")
    conf = settings_dict("memory://vidlake-test/blobs", allow_local_paths=True, spool_dir=spool)
    (tmp_path / "spool").mkdir()
    result = download_batch(rows, conf)
    uri = result["uri"][0]
    assert result["status"][0] == status.OK, result["error"][0]
    video = row_id("remote")
    assert uri.startswith("memory://") and uri.endswith(f"/blobs/{video[:2]}/{video}.mp4")
    with fsspec.open(uri, "rb") as stored:
        assert stored.read() == bikes.read_bytes()
    assert list((tmp_path / "spool" / "vidlake-parts").iterdir()) == []  # the spooled body is gone once uploaded


def _part(folder: Path, name: str, age_s: float) -> Path:
    """A body in flight (or abandoned) as the blob store names it, last written `age_s` ago."""
    part = folder / f"{row_id(name)}.{hashlib.md5(name.encode()).hexdigest()}.part"
    part.write_bytes(b"\x00\x00\x00\x20ftypisom" + bytes(100))
    when = time.time() - age_s
    os.utime(part, (when, when))
    return part


@pytest.mark.parametrize("blob_root", ["local", "memory://vidlake-sweep/blobs"])
def test_a_batch_removes_the_parts_a_killed_run_left_but_not_those_still_written(tmp_path, blob_root):
    spool = tmp_path / "spool"
    local = blob_root == "local"
    parts = tmp_path / "blobs" / ".parts" if local else spool / "vidlake-parts"
    parts.mkdir(parents=True)
    abandoned = [_part(parts, name, age_s=2 * 3600) for name in ("killed-1", "killed-2")]
    live = _part(parts, "being-written", age_s=60)
    unrelated = parts / "notes.txt"
    unrelated.write_text("not a part")
    os.utime(unrelated, (0, 0))
    root = str(tmp_path / "blobs") if local else blob_root
    conf = settings_dict(root, allow_local_paths=True, spool_dir=str(spool))
    rows = pd.DataFrame({"video_id": [row_id("after-the-kill")], "url": [str(packaged_video("bikes"))]})
    assert download_batch(rows, conf)["status"].tolist() == [status.OK]
    assert not any(part.exists() for part in abandoned)
    assert sorted(parts.iterdir()) == sorted([live, unrelated])


def test_parts_are_never_swept_sooner_than_a_live_download_may_leave_them_untouched(tmp_path):
    settings = FetchSettings.from_conf(settings_dict(tmp_path))
    assert settings.longest_untouched_part_s() == 3.0 + 2.0  # timeout_s + retry_after_max_s
    with pytest.raises(ValueError, match="part_max_age_s"):
        FetchSettings.from_conf(settings_dict(tmp_path, part_max_age_s=5.0))

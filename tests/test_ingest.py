"""`vidlake ingest` on real Spark (local[2]) and real Delta tables, from fixture files with the
nastiness real source tables have, plus the per-batch parsers of udfs/sources.py on their own."""
from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from schemas.ids import video_id
from udfs import sources as parse
from udfs.errors import VidlakeError

FIXTURES = Path(__file__).parent / "fixtures" / "sources"
ROOT = Path(__file__).resolve().parent.parent


def ingest(ctx, source_format: str, *paths: Path, capsys=None) -> str:
    """Run the stage as the CLI does; the summary line it printed."""
    from jobs import ingest as job

    assert job.run(ctx, argparse.Namespace(source_format=source_format, inputs=[str(p) for p in paths])) == 0
    out = capsys.readouterr().out if capsys else ""
    return next((line for line in out.splitlines() if "input rows =" in line), "")


def table(ctx, name: str):
    """A lake table as plain delta-rs reads it (any Delta reader must see what vidlake wrote)."""
    return DeltaTable(ctx.lake.path(name)).to_pandas()


def errors_by_row(ctx) -> dict[int, tuple[str, str]]:
    errors = table(ctx, "ingest_errors")
    return {r.row_number: (r.severity, r.reason.split(":")[0]) for r in errors.itertuples()}


# --- the parsers, without Spark ----------------------------------------------------------------------


def test_panda70m_lists_with_apostrophes_become_hints():
    hints, warnings = parse.panda70m_row(
        "[['0:00:05.672', '0:00:12.345'], ['0:01:00.000', '0:01:02.5']]",
        "[\"it's a dog's toy\", 'a woman, smiling']",
        "[0.512, 0.4471]",
    )
    assert warnings == []
    assert hints == [
        {"start_s": 5.672, "end_s": 12.345, "caption": "it's a dog's toy", "score": 0.512},
        {"start_s": 60.0, "end_s": 62.5, "caption": "a woman, smiling", "score": 0.4471},
    ]


def test_panda70m_broken_parts_are_dropped_with_a_warning_each():
    hints, warnings = parse.panda70m_row("[[broken", "['a']", "[0.5]")
    assert hints is None and warnings[0].startswith(parse.UNPARSABLE_TIMESTAMPS)
    hints, warnings = parse.panda70m_row(
        "[['0:00:10.000', '0:00:05.000'], ['0:00:12.000', '0:00:15.500'], ['x', '0:00:20']]", "['a', 'b', 'c']", "bad"
    )
    assert [(h["start_s"], h["caption"], h["score"]) for h in hints] == [(12.0, "b", None)]
    categories = [w.split(":")[0] for w in warnings]
    assert categories == [parse.UNPARSABLE_SCORES, parse.DROPPED_SPAN]
    assert "#1" in warnings[1] and "#3" in warnings[1]


def test_miradata_row_uses_frames_and_falls_back_to_timesteps():
    row = {"index": "x-1", "start_frame": "240", "end_frame": "480", "fps": "23.97602398",
           "start_timestep": "0:00:10.010", "end_timestep": "0:00:20.020", "dense_caption": " A kite dips. "}
    hint, clip_json, warnings = parse.miradata_row(row, "dense_caption")
    assert hint["start_s"] == pytest.approx(10.01) and hint["end_s"] == pytest.approx(20.02)
    assert hint["caption"] == "A kite dips." and warnings == []
    assert json.loads(clip_json)["start_frame"] == 240
    hint, _, warnings = parse.miradata_row({**row, "fps": "n/a"}, "dense_caption")
    assert hint["start_s"] == pytest.approx(10.01) and warnings[0].startswith(parse.UNPARSABLE_FIELD)


def test_opensora_plan_caption_list_and_frame_range():
    parsed = parse.opensora_plan_row(
        {"path": "a.mp4", "cap": '["first caption", "second"]', "resolution": '{"height":720,"width":1280}',
         "fps": "25", "duration": "12.3", "frame_idx": "50:300"}
    )
    assert parsed["caption"] == "first caption" and parsed["duration_s"] == 12.3
    assert parsed["clip_hints"] == [{"start_s": 2.0, "end_s": 12.0, "caption": "first caption", "score": None}]
    assert parsed["extra"]["height"] == "720" and json.loads(parsed["extra"]["caps"]) == ["first caption", "second"]
    assert parsed["warnings"] == []


def test_a_relative_path_under_a_url_base_may_not_climb_out_of_it():
    paths = parse.LocalPaths("https://data.example.org/osp", [])
    assert paths.problem("https://data.example.org/osp/a/../b.mp4", "a/../b.mp4") is None
    assert paths.problem("https://data.example.org/osp/../admin/x.mp4", "../admin/x.mp4") == (
        f"{parse.PATH_OUTSIDE_BASE}: ../admin/x.mp4 leads out of https://data.example.org/osp")


# --- the job on Spark and Delta ------------------------------------------------------------------------


def test_vectorised_video_ids_and_buckets_are_the_python_ones():
    from schemas import ids

    source_ids = ["1001", "--BfvyPmVMo", "mixkit/Nature/a b.mp4", "Кот 猫 🐈", "", None]
    hexed, buckets = ids.video_ids("webvid10m", pa.array(source_ids, pa.string()), 7)
    expected = [None if s is None else video_id("webvid10m", s) for s in source_ids]
    assert hexed.to_pylist() == expected
    assert list(buckets[:-1]) == [ids.bucket_of(v, 7) for v in expected[:-1]]


def test_webvid_real_world_csv_and_idempotent_reingest(ctx, capsys):
    source = FIXTURES / "webvid10m_nasty.csv"
    summary = ingest(ctx, "webvid10m", source, capsys=capsys)
    assert "17 input rows = 7 accepted + 8 rejected + 2 folded; 7 videos added" in summary

    videos = table(ctx, "videos").set_index("source_video_id")
    assert sorted(videos.index) == ["1001", "1002", "1003", "1004", "1005", "1009", "1012"]
    assert videos.loc["1002", "caption"] == 'A man says "hello" to the camera'
    assert videos.loc["1001", "caption"] == "Sunset over the sea, seen from a boat"
    assert videos.loc["1003", "caption"] == "Кот спит на диване — 猫が寝ている 🐈"
    assert videos.loc["1004", "caption"].splitlines() == ["First line of the caption", "second line, with a comma"]
    assert len(videos.loc["1005", "caption"]) > 5000
    assert videos.loc["1002", "duration_s"] == 65.0 and videos["duration_s"].isna().sum() == 1
    assert videos.loc["1012", "url"] == "HTTPS://CDN.Example.com/v/1012.MP4"
    assert videos.loc["1001", "video_id"] == video_id("webvid10m", "1001")
    assert dict(videos.loc["1001", "extra"]) == {"page_dir": "000001_000050"}

    assert errors_by_row(ctx) == {
        6: ("rejected", parse.EMPTY_URL),
        7: ("rejected", parse.SCHEME_NOT_ALLOWED),
        8: ("rejected", parse.UNPARSABLE_URL),
        9: ("warning", parse.UNPARSABLE_DURATION),
        11: ("rejected", parse.CONFLICTING_DUPLICATE),
        12: ("warning", parse.DUPLICATE_FOLDED),
        13: ("rejected", parse.MALFORMED_ROW),
        14: ("rejected", parse.EMPTY_ID),
        15: ("rejected", parse.LOCAL_PATH_NOT_ALLOWED),
        17: ("rejected", parse.UNPARSABLE_URL),
    }
    errors = table(ctx, "ingest_errors")
    assert json.loads(errors.set_index("row_number").loc[7, "raw"])["contentUrl"] == "ftp://files.example.com/1007.mp4"

    again = ingest(ctx, "webvid10m", source, capsys=capsys)
    assert "17 input rows = 7 accepted + 8 rejected + 2 folded; 0 videos added (7 rows already in the lake)" in again
    assert len(table(ctx, "videos")) == 7 and len(table(ctx, "ingest_errors")) == 10
    counts = ctx.lake.sql("SELECT source, count(*) AS n FROM videos GROUP BY source").collect()
    assert [(r.source, r.n) for r in counts] == [("webvid10m", 7)]


def write_webvid(path: Path, rows: list[tuple]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["videoid", "contentUrl", "duration", "page_dir", "name"])
        writer.writerows(rows)
    return path


def webvid_rows(ids: range) -> list[tuple]:
    return [(str(i), f"https://cdn.example.com/v/{i}.mp4", "PT00H00M10S", "p", f"clip {i}") for i in ids]


def test_new_rows_add_exactly_their_videos_and_the_lake_wins_conflicts(ctx, tmp_path, capsys):
    first = write_webvid(tmp_path / "part-1.csv", webvid_rows(range(0, 1000)))
    assert "1000 input rows = 1000 accepted + 0 rejected + 0 folded; 1000 videos added" in ingest(
        ctx, "webvid10m", first, capsys=capsys
    )
    conflicting = ("7", "https://cdn.example.com/v/other-7.mp4", "PT00H00M10S", "p", "another url for 7")
    already_there = webvid_rows(range(8, 9))[0]
    second = write_webvid(tmp_path / "part-2.csv", webvid_rows(range(1000, 2000)) + [conflicting, already_there])
    summary = ingest(ctx, "webvid10m", second, capsys=capsys)
    assert "1002 input rows = 1001 accepted + 1 rejected + 0 folded; 1000 videos added (1 rows already" in summary
    videos = table(ctx, "videos")
    assert len(videos) == 2000 and videos["source_video_id"].nunique() == 2000
    assert videos.set_index("source_video_id").loc["7", "url"] == "https://cdn.example.com/v/7.mp4"
    assert errors_by_row(ctx) == {1001: ("rejected", parse.CONFLICTS_WITH_LAKE)}


def test_panda70m_spans_become_clip_hints(ctx, capsys):
    summary = ingest(ctx, "panda70m", FIXTURES / "panda70m_nasty.csv", capsys=capsys)
    assert "6 input rows = 5 accepted + 1 rejected + 0 folded; 5 videos added" in summary
    videos = table(ctx, "videos").set_index("source_video_id")
    hints = list(videos.loc["--BfvyPmVMo", "clip_hints"])
    assert [(h["start_s"], h["end_s"], h["caption"], h["score"]) for h in hints] == [
        (0.0, 5.672, "it's a dog running on the beach", 0.512),
        (5.672, 12.345, "a woman is talking, then she smiles", 0.4471),
    ]
    assert videos.loc["-0aZ5hsF3ho", "clip_hints"] is None
    assert [h["caption"] for h in videos.loc["-1QeTkq4a9s", "clip_hints"]] == ["the chef's knife cuts onions"]
    assert errors_by_row(ctx) == {
        2: ("warning", parse.UNPARSABLE_TIMESTAMPS),
        3: ("warning", parse.DROPPED_SPAN),
        4: ("warning", parse.UNPARSABLE_CAPTIONS),
        5: ("rejected", parse.EMPTY_URL),
        6: ("warning", parse.LIST_LENGTHS_DIFFER),
    }


def test_miradata_clip_rows_fold_into_one_video_each(ctx, capsys):
    summary = ingest(ctx, "miradata", FIXTURES / "miradata_nasty.csv", capsys=capsys)
    assert "6 input rows = 4 accepted + 1 rejected + 1 folded; 2 videos added" in summary
    videos = table(ctx, "videos").set_index("source_video_id")
    kite = videos.loc["AbCdEfGhIjK"]
    assert kite["url"] == "http://www.youtube.com/watch?v=AbCdEfGhIjK"
    assert [round(h["start_s"], 2) for h in kite["clip_hints"]] == [0.0, 10.01]
    assert kite["clip_hints"][0]["caption"].startswith("A red kite flies across a blue sky")
    clips = json.loads(dict(kite["extra"])["clip_captions"])
    assert [c["camera"] for c in clips] == ["Static camera, wide shot", "Pan left"]
    assert clips[0]["background"] == 'Blue sky with "soft" clouds'
    dog = videos.loc["ZyXwVuTsRqP"]
    assert [(h["start_s"], h["end_s"]) for h in dog["clip_hints"]] == [(5.0, 9.5)]
    assert errors_by_row(ctx) == {
        4: ("warning", parse.DROPPED_SPAN),
        5: ("warning", parse.UNPARSABLE_FIELD),
        6: ("rejected", parse.EMPTY_ID),
    }


MIRADATA_HEADER = ("index,video_id,start_frame,end_frame,main_object_caption,background_caption,style_caption,"
                   "camera_caption,short_caption,dense_caption,fps,start_timestep,end_timestep,,")


def test_a_miradata_file_ending_in_a_blank_row_keeps_its_clips_and_rejects_the_blank(ctx, tmp_path, capsys):
    rows = [
        "000000000007_Vid0000000A-000001,Vid0000000A,0,250,A boat,Sea,Film,Static,A boat.,A boat on the sea.,25,"
        "0:00:00.000,0:00:10.000,,",
        "000000000007_Vid0000000A-000002,Vid0000000A,250,500,A boat,Sea,Film,Pan,It turns.,The boat turns.,25,"
        "0:00:10.000,0:00:20.000,,",
        "000000000008_Vid0000000B-000001,Vid0000000B,0,100,A cat,Sofa,Home,Static,A cat.,A cat sleeps.,25,"
        "0:00:00.000,0:00:04.000,,",
        ",,,,,,,,,,,,,,",  # as MiraData's own sample ends: every field empty
    ]
    source = tmp_path / "miradata_sample.csv"
    source.write_text(MIRADATA_HEADER + "\n" + "\n".join(rows) + "\n")
    summary = ingest(ctx, "miradata", source, capsys=capsys)
    assert "4 input rows = 3 accepted + 1 rejected + 0 folded; 2 videos added" in summary
    videos = table(ctx, "videos").set_index("source_video_id")
    assert sorted(videos.index) == ["Vid0000000A", "Vid0000000B"]
    assert [(h["start_s"], h["end_s"]) for h in videos.loc["Vid0000000A", "clip_hints"]] == [(0.0, 10.0), (10.0, 20.0)]
    assert errors_by_row(ctx) == {4: ("rejected", parse.EMPTY_ID)}  # the 4th row after the header


def test_opensora_plan_annotations_under_a_data_root(ctx, capsys):
    ctx.cfg.set("ingest.opensora_plan.data_root", "https://data.example.org/osp/")
    summary = ingest(ctx, "opensora-plan", FIXTURES / "opensora_plan_nasty.json", capsys=capsys)
    assert "5 input rows = 4 accepted + 1 rejected + 0 folded; 3 videos added" in summary
    videos = table(ctx, "videos").set_index("source_video_id")
    waves = videos.loc["mixkit/Nature/mixkit-waves-on-rocks-1168.mp4"]
    assert waves["url"] == "https://data.example.org/osp/mixkit/Nature/mixkit-waves-on-rocks-1168.mp4"
    assert [(h["start_s"], h["end_s"]) for h in waves["clip_hints"]] == [(0.0, 6.0), (6.0, 12.0)]
    assert waves["caption"] == "Waves crash on dark rocks, white foam everywhere." and waves["duration_s"] == 12.3
    assert videos.loc["pexels/city/traffic-at-night-20394.mp4", "caption"].endswith("夜の道路")
    assert errors_by_row(ctx)[4] == ("rejected", parse.EMPTY_ID)
    assert {r.reason.split(":")[0] for r in table(ctx, "ingest_errors").itertuples() if r.row_number == 5} == {
        parse.UNPARSABLE_FIELD, parse.UNPARSABLE_DURATION, parse.DROPPED_SPAN,
    }


def test_generic_csv_jsonl_and_parquet_with_local_paths(ctx, tmp_path, capsys):
    ctx.cfg.set("ingest.allow_local_paths", True)
    ctx.cfg.set("ingest.generic.duration", "seconds")
    (tmp_path / "clips").mkdir()
    (tmp_path / "clips" / "a.csv").write_text("path,caption,camera\nvideos/a.mp4,\"A, with comma\",static\n"
                                              "/abs/b.mp4,B,pan\n")
    (tmp_path / "clips" / "c.jsonl").write_text(
        json.dumps({"url": "https://cdn.example.com/c.mp4", "caption": "C", "seconds": 4.5}) + "\n"
        + json.dumps({"url": "ftp://cdn.example.com/d.mp4", "caption": "D"}) + "\n"
    )
    pq.write_table(pa.table({"url": ["https://cdn.example.com/e.mp4"], "seconds": ["soon"], "tags": [["x", "y"]]}),
                   tmp_path / "clips" / "e.parquet")
    summary = ingest(ctx, "generic", tmp_path / "clips", capsys=capsys)
    assert "5 input rows = 4 accepted + 1 rejected + 0 folded; 4 videos added" in summary
    videos = table(ctx, "videos").set_index("url")
    assert sorted(videos.index) == [
        "/abs/b.mp4", f"{tmp_path}/clips/videos/a.mp4", "https://cdn.example.com/c.mp4", "https://cdn.example.com/e.mp4"
    ]
    assert videos.loc[f"{tmp_path}/clips/videos/a.mp4", "caption"] == "A, with comma"
    assert dict(videos.loc["/abs/b.mp4", "extra"]) == {"camera": "pan"}
    assert videos.loc["https://cdn.example.com/c.mp4", "duration_s"] == 4.5
    assert dict(videos.loc["https://cdn.example.com/e.mp4", "extra"]) == {"tags": '["x","y"]'}
    reasons = sorted(r.reason.split(":")[0] for r in table(ctx, "ingest_errors").itertuples())
    assert reasons == [parse.UNPARSABLE_DURATION, parse.SCHEME_NOT_ALLOWED]


def test_a_reingest_that_accepts_rejected_rows_no_longer_lists_them_and_a_third_adds_nothing(ctx, tmp_path, capsys):
    listing = tmp_path / "mine.csv"
    listing.write_text("path,caption,seconds\n/data/a.mp4,A,10\n/data/b.mp4,B,soon\nftp://host/c.mp4,C,3\n"
                       "https://cdn.example.com/d.mp4,D,4\n")
    ctx.cfg.set("ingest.generic.duration", "seconds")
    assert "4 input rows = 1 accepted + 3 rejected + 0 folded; 1 videos added" in ingest(
        ctx, "generic", listing, capsys=capsys)
    assert errors_by_row(ctx) == {1: ("rejected", parse.LOCAL_PATH_NOT_ALLOWED),
                                  2: ("rejected", parse.LOCAL_PATH_NOT_ALLOWED),
                                  3: ("rejected", parse.SCHEME_NOT_ALLOWED)}

    ctx.cfg.set("ingest.allow_local_paths", True)  # as the rejection's reason advises
    assert "4 input rows = 3 accepted + 1 rejected + 0 folded; 2 videos added (1 rows already" in ingest(
        ctx, "generic", listing, capsys=capsys)
    assert sorted(table(ctx, "videos")["url"]) == ["/data/a.mp4", "/data/b.mp4", "https://cdn.example.com/d.mp4"]
    assert errors_by_row(ctx) == {2: ("warning", parse.UNPARSABLE_DURATION), 3: ("rejected", parse.SCHEME_NOT_ALLOWED)}

    versions = {name: DeltaTable(ctx.lake.path(name)).version() for name in ("videos", "ingest_errors")}
    assert "4 input rows = 3 accepted + 1 rejected + 0 folded; 0 videos added (3 rows already" in ingest(
        ctx, "generic", listing, capsys=capsys)
    assert {name: DeltaTable(ctx.lake.path(name)).version() for name in versions} == versions

    shutil.rmtree(ctx.lake.path("videos"))  # as if a run had stopped after committing its errors
    assert "3 videos added" in ingest(ctx, "generic", listing, capsys=capsys)
    assert len(table(ctx, "ingest_errors")) == 2  # their warning is not recorded twice

    listing.write_text(listing.read_text().replace("ftp://host/c.mp4", "https://cdn.example.com/c.mp4"))
    assert "4 input rows = 4 accepted + 0 rejected + 0 folded; 1 videos added (3 rows already" in ingest(
        ctx, "generic", listing, capsys=capsys)  # the edited file is a new batch: its rejections replace the old
    assert errors_by_row(ctx) == {2: ("warning", parse.UNPARSABLE_DURATION)} and len(table(ctx, "ingest_errors")) == 1


def reasons_of(ctx, input_file: Path) -> dict[int, str]:
    errors = table(ctx, "ingest_errors")
    return {r.row_number: r.reason for r in errors[errors.input_file == str(input_file)].itertuples()}


def test_local_paths_stay_inside_their_base_and_under_local_roots(ctx, tmp_path, capsys):
    ctx.cfg.set("ingest.allow_local_paths", True)
    (tmp_path / "outside").mkdir()
    secret = tmp_path / "outside" / "secret.mp4"
    secret.write_bytes(b"not for this set")
    videos = tmp_path / "set" / "videos"
    videos.mkdir(parents=True)
    (videos / "a.mp4").write_bytes(b"a")
    (videos / "escape.mp4").symlink_to(secret)
    (videos / "inner.mp4").symlink_to(videos / "a.mp4")
    listing = tmp_path / "set" / "list.csv"
    listing.write_text("path\nvideos/a.mp4\n./videos/inner.mp4\nvideos/../videos/b.mp4\n../outside/secret.mp4\n"
                       "../../../../../../../../etc/passwd\nvideos/escape.mp4\n" + f"{secret}\n")
    summary = ingest(ctx, "generic", listing, capsys=capsys)
    assert "7 input rows = 4 accepted + 3 rejected + 0 folded; 4 videos added" in summary
    reasons = reasons_of(ctx, listing)
    assert {row: reason.split(":")[0] for row, reason in reasons.items()} == {
        4: parse.PATH_OUTSIDE_BASE, 5: parse.PATH_OUTSIDE_BASE, 6: parse.PATH_OUTSIDE_BASE}
    assert reasons[6] == (f"{parse.PATH_OUTSIDE_BASE}: videos/escape.mp4 resolves to {secret.resolve()}, "
                          f"outside {tmp_path / 'set'}")
    assert str(secret) in set(table(ctx, "videos")["url"])  # an absolute path: anywhere, without local_roots

    ctx.cfg.set("ingest.local_roots", [str(tmp_path / "set")])
    rooted = tmp_path / "set" / "rooted.csv"
    rooted.write_text(f"url\n{videos / 'a.mp4'}\n{secret}\n{secret.as_uri()}\n{videos / 'escape.mp4'}\n")
    summary = ingest(ctx, "generic", rooted, capsys=capsys)
    assert "4 input rows = 1 accepted + 3 rejected + 0 folded; 0 videos added (1 rows already" in summary
    reasons = reasons_of(ctx, rooted)
    assert {row: reason.split(":")[0] for row, reason in reasons.items()} == {
        row: parse.PATH_OUTSIDE_LOCAL_ROOTS for row in (2, 3, 4)}
    assert reasons[4] == f"{parse.PATH_OUTSIDE_LOCAL_ROOTS}: {secret.resolve()} is under none of {tmp_path / 'set'}"
    ctx.cfg.set("ingest.local_roots", ["set"])
    with pytest.raises(VidlakeError, match="ingest.local_roots must be absolute folders, not set$"):
        ingest(ctx, "generic", rooted)


def test_clear_errors_for_missing_input_wrong_header_and_unknown_format(spark, tmp_path, capsys):
    from jobs.cli import run_stage

    lake = ["--lake", str(tmp_path / "lake"), "--set", "spark.master=local[2]"]
    missing = str(tmp_path / "nowhere.csv")
    assert run_stage(["ingest", "--format", "webvid10m", "--input", missing, *lake]) == 2
    assert f"vidlake: error: input {missing!r} not found" in capsys.readouterr().err
    panda = str(FIXTURES / "panda70m_nasty.csv")
    assert run_stage(["ingest", "--format", "webvid10m", "--input", panda, *lake]) == 2
    err = capsys.readouterr().err
    assert "is not webvid10m's (videoid, contentUrl, duration, page_dir, name)" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_:
        run_stage(["ingest", "--format", "youtube8m", "--input", panda, *lake])
    assert exit_.value.code == 2 and "invalid choice: 'youtube8m'" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("spark-submit") is None, reason="spark-submit is not on PATH")
def test_spark_submit_runs_the_stage_and_exits_zero(tmp_path):
    lake = tmp_path / "lake"
    result = subprocess.run(
        ["spark-submit", "--master", "local[2]", str(ROOT / "jobs" / "ingest.py"), "--format", "panda70m",
         "--input", str(FIXTURES / "panda70m_nasty.csv"), "--lake", str(lake)],
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=_env(),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "6 input rows = 5 accepted + 1 rejected + 0 folded" in result.stdout
    assert len(DeltaTable(str(lake / "videos")).to_pandas()) == 5


def _env() -> dict:
    import os

    return {**os.environ, "PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}



def test_csv_blocks_give_every_row_once_with_its_place():
    from pyarrow import fs

    from udfs import csv_blocks

    path = FIXTURES / "webvid10m_nasty.csv"
    header = ["videoid", "contentUrl", "duration", "page_dir", "name"]
    local = fs.LocalFileSystem()
    whole = csv_blocks.read_block(local, csv_blocks.plan_blocks(str(path), path.stat().st_size, 1 << 30, True)[0],
                                  header)
    lines = (FIXTURES / "webvid10m_nasty.csv").read_bytes()
    clean = FIXTURES.parent / "webvid_clean_copy.csv"
    try:
        # The fixture without its rows that hold a newline inside quotes: blocks of 97 bytes then
        # cut through rows anywhere, and every row must still come back once.
        rows = [line for line in lines.split(b"\r\n") if line.count(b'"') % 2 == 0]
        clean.write_bytes(b"\r\n".join(rows))
        one = csv_blocks.read_block(local, csv_blocks.plan_blocks(str(clean), clean.stat().st_size, 1 << 30, False)[0],
                                    header)
        blocks = csv_blocks.plan_blocks(str(clean), clean.stat().st_size, 97, False)
        parts = [csv_blocks.read_block(local, b, header) for b in blocks]
    finally:
        clean.unlink()
    assert len(blocks) > 10
    in_order = [r for part in parts for r in sorted(part.to_pylist(), key=lambda r: r["_pos"])]
    assert [{**r, "_pos": None} for r in in_order] == [{**r, "_pos": None} for r in sorted(
        one.to_pylist(), key=lambda r: r["_pos"])]
    for part in parts:
        assert sorted(part["_pos"].to_pylist()) == list(range(part.num_rows))
    corrupt = whole.filter(pa.compute.is_valid(whole["_corrupt_record"]))
    assert whole.num_rows == 17 and sorted(whole["_pos"].to_pylist()) == list(range(17))
    assert corrupt["_pos"].to_pylist() == [12] and corrupt["_corrupt_record"][0].as_py().endswith("fields,extra")


def test_rows_are_numbered_across_blocks_and_spark_read_files_agree(ctx, tmp_path, monkeypatch, capsys):
    from jobs import ingest as job

    rows = webvid_rows(range(300))
    rows[40] = ("40", "", "PT00H00M10S", "p", "no url")
    rows[41] = ("41", "https://cdn.example.com/v/41.mp4", "PT00H00M10S", "p", "a caption\nover two lines")
    rows[250] = ("250", "https://cdn.example.com/v/250.mp4", "soon", "p", "clip 250")
    rows[299] = ("3", "https://cdn.example.com/v/3.mp4", "PT00H00M10S", "p", "clip 3 again, other words")
    source = write_webvid(tmp_path / "blocks.csv", rows)
    ctx.cfg.set("ingest.block_mb", 0.002)  # blocks of 2 KB: about 10 rows each
    ctx.cfg.set("ingest.csv_multiline", "never")  # the quoted newline stays inside one block here
    summary = ingest(ctx, "webvid10m", source, capsys=capsys)
    assert "300 input rows = 298 accepted + 1 rejected + 1 folded; 298 videos added" in summary
    expected = {41: ("rejected", parse.EMPTY_URL), 251: ("warning", parse.UNPARSABLE_DURATION),
                300: ("warning", parse.DUPLICATE_FOLDED)}
    assert errors_by_row(ctx) == expected
    assert table(ctx, "videos").set_index("source_video_id").loc["41", "caption"] == "a caption\nover two lines"

    monkeypatch.setattr(job, "ARROW_SCHEMES", ())  # every file read by Spark, as on HDFS
    ctx.cfg.set("ingest.csv_multiline", "auto")  # Spark's block reader breaks the quoted newline: read again
    spark_read = write_webvid(tmp_path / "again.csv", rows)
    summary = ingest(ctx, "webvid10m", spark_read, capsys=capsys)
    assert "300 input rows = 298 accepted + 1 rejected + 1 folded; 0 videos added (298 rows already" in summary
    errors = table(ctx, "ingest_errors")
    again = errors[errors.input_file == str(spark_read)]
    assert {r.row_number: (r.severity, r.reason.split(":")[0]) for r in again.itertuples()} == {
        41: ("rejected", parse.EMPTY_URL)}
    assert json.loads(again.iloc[0].raw) == {"videoid": "40", "contentUrl": None, "duration": "PT00H00M10S",
                                             "page_dir": "p", "name": "no url"}


def test_a_quoted_newline_across_a_block_edge_reads_the_file_again_whole(ctx, capsys):
    ctx.cfg.set("ingest.block_mb", 0.0001)  # blocks of 104 bytes: the fixture's multi-line captions cross edges
    summary = ingest(ctx, "webvid10m", FIXTURES / "webvid10m_nasty.csv", capsys=capsys)
    assert "17 input rows = 7 accepted + 8 rejected + 2 folded; 7 videos added" in summary
    assert table(ctx, "videos").set_index("source_video_id").loc["1004", "caption"].splitlines() == [
        "First line of the caption", "second line, with a comma"]
    assert errors_by_row(ctx)[13] == ("rejected", parse.MALFORMED_ROW)


def test_duplicates_are_decided_in_file_order_whatever_order_a_bucket_holds_them():
    from udfs import duplicates

    def row(pos, video, url, caption, reject=None):
        return {"_file": "a.csv", "_block": 0, "_pos": pos, "video_id": video, "row_key": video, "url": url,
                "reject": reject, "src.caption": caption}

    rows = pa.Table.from_pylist([
        row(5, "v1", "https://x/1", "another caption"),  # the same url, other fields: folded, differs
        row(9, "v2", "https://x/2b", "b"),  # a later row of v2 with another url: rejected
        row(1, "v1", "https://x/1", "a caption"),  # v1's first row, given last but one: accepted
        row(2, "v2", "https://x/2", "b"),
        row(3, "v3", "https://x/3", "c"),  # the lake has v3 with another url: rejected
        row(4, None, "https://x/4", "d", reject=parse.EMPTY_ID),
        row(6, "v1", "https://x/1", "a caption"),  # an exact duplicate of v1's first row: folded quietly
    ])
    lake = pa.table({"video_id": ["v3"], "url": ["https://x/other"]})
    classified = duplicates.classify(rows, lake)
    got = {r["_pos"]: r for r in classified.to_pylist()}

    assert {pos: r["status"] for pos, r in got.items()} == {
        1: "accepted", 2: "accepted", 3: "rejected", 4: "rejected", 5: "folded", 6: "folded", 9: "rejected"}
    assert got[9]["reason"].startswith(parse.CONFLICTING_DUPLICATE) and got[9]["reason"].endswith("https://x/2")
    assert got[3]["reason"].startswith(parse.CONFLICTS_WITH_LAKE) and got[3]["video_id"] is None
    assert got[5]["differs"] and not got[6]["differs"]
    assert got[3]["in_lake"] and not got[1]["in_lake"]
    warned_at, texts = duplicates.warnings(classified, np.array([2]), pa.array([["field warning"]]))
    assert [(classified["_pos"][int(i)].as_py(), t) for i, t in zip(warned_at, texts.to_pylist(), strict=True)] == [
        (5, duplicates.FOLDED_WARNING), (1, "field warning")]


def test_raw_rows_are_the_json_that_json_dumps_writes_whatever_they_hold():
    from udfs import candidates

    values = ['plain', 'say "hi"', "back\\slash", "two\nlines\r\n", "tab\there", "bell\x07 and \x1f", "Ünïcødé ✓",
              None, ""]
    rows = pa.table({"_file": ["a.csv"] * len(values), candidates.CORRUPT_RECORD: pa.nulls(len(values), pa.string()),
                     "src.caption": values, "src.id": [str(i) for i in range(len(values))]})
    for part in (rows, rows.slice(2, 5)):  # a slice's bytes start mid-buffer
        raw = candidates.raw_json(part, pa.array(part["_file"].to_pylist()), {"a.csv": ["id", "caption"]})
        assert raw.to_pylist() == [json.dumps({"id": i, "caption": c}, ensure_ascii=False, separators=(",", ":"))
                                   for i, c in zip(part["src.id"].to_pylist(), part["src.caption"].to_pylist(),
                                                   strict=True)]


def nasty_webvid_rows(count: int) -> list[tuple]:
    """WebVid rows with a row of too many fields every 97 rows, a caption over two lines every 89,
    and a row of too many fields last."""
    rows = webvid_rows(range(count))
    for i in range(0, count, 89):
        rows[i] = (*rows[i][:4], f"clip {i}\nits second line, with a comma")
    for i in range(50, count, 97):
        rows[i] = (*rows[i], "a sixth field")
    rows[-1] = (*rows[-1], "a sixth field")
    return rows


def test_a_stream_is_parsed_in_chunks_that_keep_every_row_and_its_place(tmp_path, monkeypatch):
    import gzip

    from pyarrow import fs

    from udfs import csv_blocks

    plain = write_webvid(tmp_path / "many.csv", nasty_webvid_rows(3000))
    packed = tmp_path / "many.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    header = ["videoid", "contentUrl", "duration", "page_dir", "name"]
    whole = csv_blocks.read_block(fs.LocalFileSystem(), csv_blocks.CsvBlock(str(plain), 0, plain.stat().st_size),
                                  header)
    monkeypatch.setattr(csv_blocks, "PARSE_CHUNK_BYTES", 4096)  # pyarrow's batches: about 60 rows
    block = csv_blocks.plan_blocks(str(packed), packed.stat().st_size, 1 << 30, False)[0]
    chunks = list(csv_blocks.read_chunks(fs.LocalFileSystem(), block, header, chunk_bytes=20_000))

    assert block.stream and len(chunks) > 5
    assert pa.concat_tables(chunks).sort_by("_pos").equals(whole.sort_by("_pos"))
    assert whole.num_rows == 3000 and pa.compute.sum(pa.compute.is_valid(whole["_corrupt_record"])).as_py() == 32


def test_a_gzip_file_is_ingested_with_its_row_numbers(ctx, tmp_path, capsys):
    import gzip

    rows = nasty_webvid_rows(300)
    packed = tmp_path / "webvid.csv.gz"
    packed.write_bytes(gzip.compress(write_webvid(tmp_path / "webvid.csv", rows).read_bytes()))
    summary = ingest(ctx, "webvid10m", packed, capsys=capsys)
    assert "300 input rows = 296 accepted + 4 rejected + 0 folded; 296 videos added" in summary
    assert errors_by_row(ctx) == {row: ("rejected", parse.MALFORMED_ROW) for row in (51, 148, 245, 300)}
    assert table(ctx, "videos").set_index("source_video_id").loc["89", "caption"] == (
        "clip 89\nits second line, with a comma")


def test_a_killed_attempts_partial_staged_file_is_not_read(tmp_path):
    from jobs import ingest as job

    rows = pa.table({"_file": ["a.csv"] * 4, "_pos": [0, 1, 2, 3]})
    job._write_buckets(rows, np.array([0, 1, 0, 1]), str(tmp_path), "b000000-00000")
    (tmp_path / "_bucket=0" / ".b000001-00000.arrow.0f3a.tmp").write_bytes(b"ARROW1 and then the task died")

    assert sorted(p.name for p in (tmp_path / "_bucket=1").iterdir()) == ["b000000-00000.arrow"]
    assert job._read_staged(str(tmp_path), 0)["_pos"].to_pylist() == [0, 2]

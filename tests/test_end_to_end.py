"""From a source CSV of URLs on a loopback HTTP server to a curated Open-Sora CSV, through the
`vidlake run` and `vidlake curate` commands, on real Spark with real videos."""
from __future__ import annotations

import csv

import av
import pandas as pd
from loopback_server import LoopbackServer, file_responder
from media import Shot, make_video, packaged_video

from jobs.cli import run_stage
from jobs.lake import Lake

FILTER = "brightness BETWEEN 20 AND 250 AND ocr_area_ratio < 0.5 AND num_frames >= 25"


def test_source_csv_to_curated_opensora_csv(spark, engine, tmp_path, capsys):
    shots = tmp_path / "shots.mp4"
    make_video(shots, [Shot(100, seed=1), Shot(100, seed=2, pan=(-3.0, 1.0)), Shot(100, seed=3)], fps=25,
               size=(320, 180))
    files = {"shots.mp4": shots.read_bytes(), "bikes.mp4": packaged_video("bikes").read_bytes(),
             "carphone.mp4": packaged_video("carphone_pristine").read_bytes()}
    lake = tmp_path / "lake"
    with LoopbackServer() as server:
        for name, data in files.items():
            server.routes[f"/videos/{name}"] = file_responder(data)
        sources = tmp_path / "sources.csv"
        with sources.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["url", "caption"])
            writer.writerows([(server.url(f"/videos/{name}"), f"a video called {name}") for name in files])
        settings = ["download.allow_hosts=[127.0.0.1]", "split.materialize=reencode", "score.frames.n=2",
                    "pipeline.caption_models=[source]", "score.scorers=[luma,ocr,aesthetic]", "spark.master=local[2]"]
        common = ["--lake", str(lake), *[arg for item in settings for arg in ("--set", item)]]
        assert run_stage(["run", "--format", "generic", "--input", str(sources), *common]) == 0
    summary = capsys.readouterr().out
    assert "score:aesthetic" in summary and "skipped" in summary and "models.aesthetic.path" in summary

    out = tmp_path / "train.csv"
    assert run_stage(["curate", "--where", FILTER, "--export", "opensora-csv", "--out", str(out), *common]) == 0
    table = pd.read_csv(out)
    assert len(table) >= 3
    assert table["text"].str.lower().str.startswith("a video called").all()  # the source caption, tidied
    brightness = {r.clip_id: r.brightness for r in Lake(spark, str(lake), engine).read("scores").collect()}
    for row in table.itertuples():
        assert 20 <= brightness[row.id] <= 250
        with av.open(row.path) as container:
            assert sum(1 for _ in container.decode(video=0)) == row.num_frames
        assert row.ocr < 0.5 and row.num_frames >= 25
    assert run_stage(["sql", "SELECT count(*) AS n FROM clip_view WHERE " + FILTER, *common]) == 0
    assert str(len(table)) in capsys.readouterr().out

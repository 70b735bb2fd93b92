"""vidlake sql and vidlake curate on a lake of real clip files (tests/curated_lake.py), on real Spark."""
from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path

import av
import pandas as pd
import pytest
from curated_lake import CLIPS_SPEC, PASSING, curated_context

from jobs import curate, sql
from jobs.filters import conditions, split_conditions
from jobs.output import QueryError
from jobs.views import register_clip_view
from udfs.errors import VidlakeError

DEFAULT_WHERE = "aesthetic >= 4.5 AND pwatermark < 0.3 AND ocr_area_ratio < 0.02 AND motion BETWEEN 0.5 AND 20"


@pytest.fixture(scope="module")
def built(spark, engine, tmp_path_factory):
    """One lake for the module (building it is the slow part); tests only read it."""
    return curated_context(spark, tmp_path_factory.mktemp("curate"), engine)


def curate_args(out, export="opensora-csv", **overrides) -> argparse.Namespace:
    values = dict(where=None, sql=None, caption_kind=None, export=export, out=str(out), limit=None, overwrite=False)
    return argparse.Namespace(**{**values, **overrides})


def names_by_id(ids: dict[str, str]) -> dict[str, str]:
    return {clip: name for name, clip in ids.items()}


def test_default_filter_exports_an_opensora_csv_of_the_passing_clips(built, tmp_path):
    ctx, ids = built
    out = tmp_path / "train.csv"
    assert curate.run(ctx, curate_args(out)) == 0
    table = pd.read_csv(out)
    assert list(table.columns[:11]) == ["path", "text", "num_frames", "height", "width", "aspect_ratio", "fps",
                                        "resolution", "aes", "flow", "ocr"]
    assert {names_by_id(ids)[i] for i in table["id"]} == PASSING
    for row in table.itertuples():
        with av.open(row.path) as container:
            decoded = sum(1 for _ in container.decode(video=0))
        assert decoded == row.num_frames
        assert row.resolution == row.height * row.width
        assert row.aspect_ratio == pytest.approx(row.height / row.width)
        assert row.aes >= 4.5 and 0.5 <= row.flow <= 20 and row.ocr < 0.02


def test_caption_kind_picks_the_model_caption_and_falls_back_to_the_source(built, tmp_path):
    ctx, ids = built
    out = tmp_path / "dense.csv"
    assert curate.run(ctx, curate_args(out, where="motion < 100", caption_kind="dense")) == 0
    texts = dict(zip(pd.read_csv(out)["id"], pd.read_csv(out)["text"], strict=True))
    assert texts[ids["good_a"]] == "A red kite drifts over a green field."
    assert texts[ids["good_b"]] == "source caption of good_b"


def test_sql_file_selection_and_parquet_export(built, tmp_path):
    ctx, ids = built
    query = tmp_path / "select.sql"
    query.write_text("-- the two most aesthetic clips\nSELECT clip_id FROM scores ORDER BY aesthetic DESC LIMIT 2;\n")
    out = tmp_path / "top.parquet"
    assert curate.run(ctx, curate_args(out, export="parquet", sql=str(query))) == 0
    table = pd.read_parquet(out)
    assert {names_by_id(ids)[i] for i in table["clip_id"]} == {"good_a", "good_b"}
    assert {"uri", "text", "aesthetic", "motion"} <= set(table.columns)


def test_webdataset_shards_hold_clip_caption_and_scores(built, tmp_path):
    ctx, ids = built
    ctx.cfg.set("curate.export.shard_size", 2)
    out = tmp_path / "shards"
    assert curate.run(ctx, curate_args(out, export="webdataset", where="motion >= 0.5")) == 0
    shards = sorted(out.glob("*.tar"))
    assert [s.name for s in shards] == ["clips-000000.tar", "clips-000001.tar", "clips-000002.tar"]
    members = {}
    for shard in shards:
        with tarfile.open(shard) as tar:
            names = tar.getnames()
            assert len(names) <= 6
            members.update({name: tar.extractfile(name).read() for name in names})
    scored = [s.name for s in CLIPS_SPEC if s.motion is not None and s.motion >= 0.5]
    for name in scored:
        key = ids[name]
        meta = json.loads(members[f"{key}.json"])
        assert meta["aesthetic"] == next(s.aesthetic for s in CLIPS_SPEC if s.name == name)
        assert members[f"{key}.txt"].decode() == f"source caption of {name}"
        assert members[f"{key}.mp4"] == (Path(ctx.lake.root).parent / "files" / f"{name}.mp4").read_bytes()


def test_a_missing_clip_file_is_an_error_row_not_a_silent_drop(built, tmp_path):
    ctx, ids = built
    out = tmp_path / "shards"
    assert curate.run(ctx, curate_args(out, export="webdataset", where="motion < 0.3")) == 1
    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert [e["clip_id"] for e in errors] == [ids["lost"]]
    assert "cannot read clip file" in errors[0]["reason"]
    with tarfile.open(next(out.glob("*.tar"))) as tar:
        assert tar.getnames() == [f"{ids['static']}.mp4", f"{ids['static']}.txt", f"{ids['static']}.json"]


@pytest.mark.parametrize("where, message", [
    ("aesthetik > 4", "aesthetik"),
    ("aesthetic >= AND 4", "PARSE_SYNTAX_ERROR"),
    ("", "--where is empty"),
])
def test_rejected_where_is_one_clear_line(built, tmp_path, where, message):
    ctx, _ = built
    with pytest.raises(VidlakeError) as error:
        curate.run(ctx, curate_args(tmp_path / "x.csv", where=where))
    assert message in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "x.csv").exists()


def test_sql_prints_and_writes_results_and_refuses_writes(built, tmp_path, capsys):
    ctx, ids = built
    query = "SELECT clip_id, aesthetic, text FROM clip_view WHERE aesthetic > 6"
    assert sql.run(ctx, argparse.Namespace(query=query, out=None, limit=None, caption_kind=None,
                                           overwrite=False)) == 0
    printed = capsys.readouterr().out
    assert ids["good_b"] in printed and ids["good_a"] not in printed
    out = tmp_path / "scores.json"
    assert sql.run(ctx, argparse.Namespace(query="SELECT * FROM scores", out=str(out), limit=3, caption_kind=None,
                                           overwrite=False)) == 0
    assert len(pd.read_json(out, lines=True)) == 3
    with pytest.raises(QueryError, match="only read-only queries run here, and this statement holds DropTable"):
        sql.run(ctx, argparse.Namespace(query="DROP TABLE clips", out=None, limit=None, caption_kind=None,
                                        overwrite=False))


def test_clip_view_has_one_row_per_clip_with_all_scores(built):
    ctx, ids = built
    view = register_clip_view(ctx.lake, ctx.cfg, "dense")
    rows = {r.clip_id: r for r in view.collect()}
    assert set(rows) == set(ids.values())
    assert rows[ids["unscored"]].aesthetic is None and rows[ids["unscored"]].text == "source caption of unscored"
    assert rows[ids["good_a"]].caption_model == "florence2"


def test_filter_conditions_split_at_top_level_and_only():
    assert split_conditions(DEFAULT_WHERE) == ["aesthetic >= 4.5", "pwatermark < 0.3", "ocr_area_ratio < 0.02",
                                               "motion BETWEEN 0.5 AND 20"]
    assert split_conditions("(a > 1 AND b < 2) AND t LIKE '%AND%'") == ["(a > 1 AND b < 2)", "t LIKE '%AND%'"]
    motion = conditions(DEFAULT_WHERE)[-1]
    assert (motion.column, motion.thresholds) == ("motion", (0.5, 20.0))


def test_status_counts_done_pending_and_failed_per_stage(built):
    from jobs.status import format_status, lake_status

    ctx, ids = built
    rows = {row.stage: row for row in lake_status(ctx.lake)}
    assert (rows["download"].done, rows["download"].pending, rows["download"].failed) == (1, 0, 0)
    assert (rows["split"].done, rows["split"].pending) == (len(ids), 0)
    assert (rows["score"].done, rows["score"].pending) == (len(ids) - 1, 1)  # `unscored` has no row
    assert (rows["caption"].done, rows["caption"].pending, rows["caption"].failed) == (len(ids), 0, 0)
    assert format_status(list(rows.values())).splitlines()[0].split()[:5] == ["stage", "table", "done", "pending",
                                                                              "failed"]


def test_webdataset_json_names_the_source_timeline_and_agrees_with_the_csv_on_resolution(built, tmp_path):
    ctx, ids = built
    where = f"clip_id = '{ids['good_b']}'"
    assert curate.run(ctx, curate_args(tmp_path / "shards", export="webdataset", where=where)) == 0
    assert curate.run(ctx, curate_args(tmp_path / "train.csv", where=where)) == 0
    with tarfile.open(next((tmp_path / "shards").glob("*.tar"))) as tar:
        meta = json.loads(tar.extractfile(f"{ids['good_b']}.json").read())
        with av.open(tar.extractfile(f"{ids['good_b']}.mp4")) as container:
            frames = sum(1 for _ in container.decode(video=0))
    row = pd.read_csv(tmp_path / "train.csv").iloc[0]
    clip = ctx.lake.read("clips").where(where).first()
    assert "start_s" not in meta and "end_s" not in meta  # the mp4 starts at 0, the clip's source span does not
    assert (meta["source_start_s"], meta["source_end_s"]) == (clip.start_s, clip.end_s) and clip.start_s > 0
    assert (meta["source_start_frame"], meta["source_end_frame"]) == (row.source_start_frame, row.source_end_frame)
    assert meta["num_frames"] == frames == row.num_frames
    assert meta["resolution"] == row.resolution == meta["height"] * meta["width"]
    assert meta["resolution_label"] == clip.resolution == "240p"

"""Captioners on real clips with random-weight Florence-2, Qwen2.5-VL and CLIP checkpoints loaded
through the real loading code; caption hygiene on real-looking strings; the source captioner."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from media import Shot, make_video
from score_models import save_tiny_clip

from jobs.config import load_config
from udfs.caption_text import QUALITIES, HygieneRules, caption_quality, clean_caption, tidy
from udfs.captioners import caption_stream, check_weights, make_captioner
from udfs.captioners.base import tile_grid
from udfs.captioners.random_init import save_random_florence2, save_random_qwen2_5_vl
from udfs.captioners.source import pick_source_caption
from udfs.device import cached_keys
from udfs.weights import MissingWeightsError

TOKENS = 8  # min = max new tokens: random models always say something, of a fixed length


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("checkpoints")
    return {
        "florence2": save_random_florence2(root / "florence2"),
        "qwen2_5_vl": save_random_qwen2_5_vl(root / "qwen2_5_vl"),
        "clip": save_tiny_clip(root / "clip"),
    }


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, str]:
    """A landscape and a portrait video (different sizes, so Qwen2.5-VL's prompts differ in length)."""
    root = tmp_path_factory.mktemp("videos")
    make_video(root / "wide.mp4", [Shot(30, seed=1), Shot(30, seed=2)], size=(160, 96))
    make_video(root / "tall.mp4", [Shot(60, seed=3, moving_object=True)], size=(96, 128))
    (root / "broken.mp4").write_bytes(b"not a video at all")
    return {name: str(root / f"{name}.mp4") for name in ("wide", "tall", "broken")}


def caption_conf(checkpoints: dict[str, Path], *overrides: str) -> tuple[dict, dict]:
    """(caption section, models section) of the local profile, pointed at the random checkpoints,
    with frame sizes small enough for tiny models on a CPU."""
    cfg = load_config("local", [
        f"models.florence2.path={checkpoints['florence2']}",
        f"models.qwen2_5_vl.path={checkpoints['qwen2_5_vl']}",
        f"models.clip.path={checkpoints['clip']}",
        "caption.florence2.frame_size=64",
        "caption.qwen2_5_vl.frame_size=112",
        "caption.qwen2_5_vl.max_pixels=12544",
        f"caption.florence2.generation.max_new_tokens={TOKENS}",
        f"caption.florence2.generation.min_new_tokens={TOKENS}",
        "caption.florence2.generation.num_beams=2",
        f"caption.qwen2_5_vl.generation.max_new_tokens={TOKENS}",
        f"caption.qwen2_5_vl.generation.min_new_tokens={TOKENS}",
        "caption.qwen2_5_vl.generation.repetition_penalty=1.3",  # must not see the batch's padding
        *overrides,
    ])
    return cfg.section("caption"), cfg.section("models")


def clip_rows(videos: dict[str, str], kinds: list[str]) -> pd.DataFrame:
    """Rows for three clips (two of the wide video, one of the tall) times the kinds."""
    clips = [
        ("wide_a", videos["wide"], 0.0, 1.2), ("wide_b", videos["wide"], 1.2, 2.4), ("tall", videos["tall"], 0.3, 2.3),
    ]
    return pd.DataFrame(
        [(clip_id, uri, start, end, kind) for clip_id, uri, start, end in clips for kind in kinds],
        columns=["clip_id", "uri", "start_s", "end_s", "kind"],
    )


def one_by_one(captioner, rows: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([captioner(rows.iloc[[i]]) for i in range(len(rows))], ignore_index=True)


@pytest.mark.parametrize("model", ["florence2", "qwen2_5_vl"])
def test_captions_do_not_depend_on_which_clips_share_the_batch(checkpoints, videos, model):
    caption, models = caption_conf(checkpoints)
    captioner = make_captioner(model, caption, models, device="cpu")
    rows = clip_rows(videos, ["short", "dense"])

    batched = captioner(rows)
    single = one_by_one(captioner, rows)

    assert batched["caption"].tolist() == single["caption"].tolist()
    assert batched["match"].to_numpy() == pytest.approx(single["match"].to_numpy(), abs=1e-5)
    assert batched["caption"].map(bool).all()  # min_new_tokens: every clip got some text
    assert batched["caption"].nunique() > 1  # the model saw different clips
    assert batched["kind"].tolist() == rows["kind"].tolist()
    prompts = caption[model]["prompts"]
    assert batched["prompt"].tolist() == [prompts[k] for k in rows["kind"]]
    assert set(batched["model"]) == {model}
    assert set(batched["model_id"]) == {str(checkpoints[model])}
    assert batched["model_revision"].str.match(r"^local-[0-9a-f]{12}$").all()
    # A random model's words are luck: once in a fresh clone's run one caption was only punctuation
    # (quality "empty"). What is asserted is that quality is one of the three, the same either way.
    assert batched["quality"].isin(QUALITIES).all()
    assert batched["quality"].tolist() == single["quality"].tolist()
    assert batched["match"].between(-1, 1).all()


def test_qwen2_5_vl_left_pads_prompts_of_different_lengths(checkpoints, videos):
    """The wide and tall clips give different numbers of video tokens: the batch needs padding,
    on the left, for the batched captions above to equal the one-by-one ones."""
    caption, models = caption_conf(checkpoints)
    captioner = make_captioner("qwen2_5_vl", caption, models, device="cpu")
    captioner.load()
    prepared = captioner.prepare(clip_rows(videos, ["short"]))
    mask = prepared.inputs["attention_mask"]
    assert (mask[:, 0] == 0).any() and (mask[:, -1] == 1).all()


def test_qwen2_5_vl_on_a_grid_writes_miradata_structured_kinds(checkpoints, videos):
    caption, models = caption_conf(checkpoints, "caption.qwen2_5_vl.input=grid", "caption.qwen2_5_vl.frame_size=56")
    captioner = make_captioner("qwen2_5_vl", caption, models, device="cpu")
    kinds = ["main_object", "background", "style", "camera"]
    result = captioner(clip_rows(videos, kinds).iloc[:4])

    assert result["kind"].tolist() == kinds
    assert result["prompt"].tolist() == [caption["qwen2_5_vl"]["prompts"][k] for k in kinds]
    assert result["caption"].map(bool).all()


def test_florence2_on_a_grid_of_frames(checkpoints, videos):
    caption, models = caption_conf(checkpoints, "caption.florence2.input=grid", "caption.florence2.frame_size=32")
    captioner = make_captioner("florence2", caption, models, device="cpu")
    captioner.load()
    rows = clip_rows(videos, ["short"])
    prepared = captioner.prepare(rows)
    assert [f.shape[0] for f in prepared.frames] == [8, 8, 8]  # a 2x4 grid's frames
    assert captioner.generate(prepared)["caption"].map(bool).all()


def test_an_undecodable_clip_is_an_error_row_and_the_rest_are_captioned(checkpoints, videos):
    caption, models = caption_conf(checkpoints)
    captioner = make_captioner("florence2", caption, models, device="cpu")
    broken = pd.DataFrame(
        [("broken", videos["broken"], 0.0, 1.0, "short")], columns=["clip_id", "uri", "start_s", "end_s", "kind"]
    )
    rows = pd.concat([clip_rows(videos, ["short"]).iloc[:1], broken], ignore_index=True)

    result = captioner(rows).set_index("clip_id")

    assert result.loc["wide_a", "quality"] != "error" and result.loc["wide_a", "caption"]
    assert result.loc["broken", "quality"] == "error"
    assert result.loc["broken", "caption"] is None
    assert "broken.mp4" in result.loc["broken", "error"]


def test_caption_stream_overlaps_decoding_and_gives_the_same_captions(checkpoints, videos):
    caption, models = caption_conf(checkpoints, "caption.florence2.batch_size=2")
    captioner = make_captioner("florence2", caption, models, device="cpu")
    rows = clip_rows(videos, ["short", "dense"])

    streamed = pd.concat(list(caption_stream(captioner, [rows.iloc[:4], rows.iloc[4:]], 2, 2)), ignore_index=True)

    assert streamed["caption"].tolist() == captioner(rows)["caption"].tolist()
    assert sum(1 for key in cached_keys() if key[0] == "florence2" and key[-3] == "cpu") == 1  # loaded once


def test_missing_weights_name_the_model_where_it_looked_and_how_to_provide_them(checkpoints, tmp_path, monkeypatch):
    caption, models = caption_conf(checkpoints, f"models.qwen2_5_vl.path={tmp_path / 'nowhere'}")
    with pytest.raises(MissingWeightsError) as missing:
        check_weights("qwen2_5_vl", caption, models)
    message = str(missing.value)
    assert "qwen2_5_vl" in message and str(tmp_path / "nowhere") in message and "models.qwen2_5_vl.path" in message

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    caption, models = caption_conf(checkpoints, "models.florence2.path=florence-community/Florence-2-large")
    with pytest.raises(MissingWeightsError, match="not in the local Hugging Face cache.*models.florence2.path"):
        check_weights("florence2", caption, models)

    caption, models = caption_conf(checkpoints, f"models.clip.path={tmp_path / 'no-clip'}")
    with pytest.raises(MissingWeightsError, match="'clip'.*no-clip.*caption.match.enabled=false"):
        check_weights("source", caption, models)


def test_weights_of_another_architecture_are_refused(checkpoints, videos):
    caption, models = caption_conf(checkpoints, f"models.florence2.path={checkpoints['qwen2_5_vl']}")
    captioner = make_captioner("florence2", caption, models, device="cpu")
    with pytest.raises(MissingWeightsError, match="holds a .qwen2_5_vl. model, not .florence2."):
        captioner(clip_rows(videos, ["short"]).iloc[:1])


def test_a_kind_without_a_prompt_is_refused(checkpoints, videos):
    caption, models = caption_conf(checkpoints)
    captioner = make_captioner("florence2", caption, models, device="cpu")
    with pytest.raises(ValueError, match="no prompt for kind.*camera"):
        captioner.prepare(clip_rows(videos, ["camera"]))


def test_tile_grid_lays_frames_out_row_by_row():
    frames = np.stack([np.full((2, 3, 3), i, dtype=np.uint8) for i in range(8)])
    grid = tile_grid(frames, 2, 4)
    assert grid.shape == (4, 12, 3)
    assert [grid[0, 3 * c, 0] for c in range(4)] == [0, 1, 2, 3]
    assert [grid[2, 3 * c, 0] for c in range(4)] == [4, 5, 6, 7]


# --- the source captioner -------------------------------------------------------------------

HINTS = [
    {"start_s": 0.0, "end_s": 4.0, "caption": "A man opens a red door.", "score": 0.5},
    {"start_s": 4.0, "end_s": 9.0, "caption": "A dog runs through a garden.", "score": 0.6},
]


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0.5, 3.5, "A man opens a red door."),  # inside the first hint
        (3.5, 8.0, "A dog runs through a garden."),  # mostly the second
        (9.5, 12.0, "Video caption."),  # no hint there: the video's caption
        (3.8, 4.4, "A dog runs through a garden."),  # 0.4 s of the second, 0.2 s of the first
    ],
)
def test_a_clip_takes_the_caption_of_the_hint_it_overlaps_most(start, end, expected):
    assert pick_source_caption(start, end, "Video caption.", HINTS, min_overlap=0.5) == expected


def test_source_captions_are_recorded_as_model_source(checkpoints, videos):
    caption, models = caption_conf(checkpoints)
    captioner = make_captioner("source", caption, models, device="cpu")
    rows = pd.DataFrame({
        "clip_id": ["c1", "c2"], "uri": [videos["wide"], videos["tall"]], "start_s": [0.0, 0.0],
        "end_s": [2.0, 2.0], "kind": ["short", "short"], "source": ["panda70m", "webvid10m"],
        "video_caption": [None, None],
        "clip_hints": [np.array([{"start_s": 0.0, "end_s": 2.2, "caption": "The video shows a city street at night."}]),
                       None],
    })

    result = captioner(rows)

    assert result["model"].tolist() == ["source", "source"]
    assert result["caption"].tolist() == ["A city street at night.", None]
    assert result["quality"].tolist() == ["ok", "empty"]
    assert result["model_id"].tolist() == ["panda70m", "webvid10m"]
    assert -1 <= result.loc[0, "match"] <= 1
    assert pd.isna(result.loc[1, "match"])


# --- hygiene ----------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("The image shows a man riding a red bicycle along a coastal road at sunset.",
         "A man riding a red bicycle along a coastal road at sunset."),
        ("In this video, we see a golden retriever running across a snowy field.",
         "A golden retriever running across a snowy field."),
        ("The video depicts a busy city street at night, with cars passing by.",
         "A busy city street at night, with cars passing by."),
        ("This image features a close-up of a bowl of ramen.", "A close-up of a bowl of ramen."),
        ("In the image, there is a red car parked beside a tree.", "A red car parked beside a tree."),
        ("An image of a cat sleeping on a windowsill.", "A cat sleeping on a windowsill."),
        ("  The scene is set in a kitchen where a chef slices onions.  ",
         "The scene is set in a kitchen where a chef slices onions."),
        ("<s>A woman dances in the rain.</s><pad><pad>", "A woman dances in the rain."),
    ],
)
def test_boilerplate_openings_and_special_tokens_are_removed(raw, clean):
    assert clean_caption(raw) == clean


def test_an_echoed_prompt_is_removed():
    prompt = "Describe this video in one sentence."
    assert clean_caption("Describe this video in one sentence. A woman walks her dog in a park.", prompt) == (
        "A woman walks her dog in a park."
    )


@pytest.mark.parametrize(
    ("caption", "quality"),
    [
        ("", "empty"),
        ("  ... ", "empty"),
        ("a dog a dog a dog a dog a dog", "degenerate"),
        ("The camera pans slowly across the the the the the valley.", "degenerate"),
        ("A man is walking. A man is walking. A man is walking. A man is walking.", "degenerate"),
        ("A red car. A red truck. A red car. A red truck. A red car. A red truck. A red car. A red bus.", "degenerate"),
        ("Very very fast cars race on a track.", "ok"),
        ("A serene mountain lake at dawn. The water is still and reflects the surrounding pine trees and the "
         "snow-capped peaks in the background. A thin layer of mist hovers over the surface of the lake, and the "
         "sky turns from deep blue to soft orange as the sun rises behind the mountains. The camera remains static "
         "throughout the shot, emphasizing the calm of the scene.", "ok"),
    ],
)
def test_empty_and_degenerate_captions_are_flagged(caption, quality):
    assert caption_quality(caption, HygieneRules()) == quality


def test_tidy_counts_the_words_of_the_cleaned_caption():
    result = tidy("The video shows a close-up of a man's hands kneading dough.")
    assert (result.caption, result.words, result.quality) == ("A close-up of a man's hands kneading dough.", 8, "ok")

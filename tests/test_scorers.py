"""Scorers on real frames: real OCR and NSFW models; CLIP, aesthetic and watermark with random weights, real layouts."""
from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from media import Shot, make_video
from score_models import models_conf

from jobs.config import load_config
from udfs.clip import ClipEncoder
from udfs.scorers import SCORERS
from udfs.scorers.runner import ClipScorer, check_weights, scorer_conf
from udfs.weights import MissingWeightsError


@pytest.fixture(scope="module")
def score_conf() -> dict:
    return load_config("local").section("score")


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict:
    return models_conf(tmp_path_factory.getbasetemp() / "score_models")  # shared by this run's test modules


def make_scorer(name: str, score_conf: dict, models: dict):
    return SCORERS[name](scorer_conf(score_conf, name), models, "cpu").load()


def frames_batch(*clips: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"clip_id": [f"clip{i}" for i in range(len(clips))], "frames": list(clips),
                         "pairs": [None] * len(clips), "decode_error": [None] * len(clips)})


def textured_frame(seed: int = 0, height: int = 270, width: int = 480) -> np.ndarray:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (9, 16, 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def text_frame(height: int = 448, width: int = 796) -> np.ndarray:
    frame = np.full((height, width, 3), 235, np.uint8)
    cv2.putText(frame, "BIG TITLE", (30, 190), cv2.FONT_HERSHEY_SIMPLEX, 4.0, (10, 10, 10), 12)
    cv2.putText(frame, "subscribe now", (60, 330), cv2.FONT_HERSHEY_SIMPLEX, 2.5, (10, 10, 10), 7)
    return frame


def test_ocr_finds_large_rendered_text_and_nothing_on_a_plain_frame(score_conf, models):
    ocr = make_scorer("ocr", score_conf, models)
    plain = np.full((448, 796, 3), 235, np.uint8)
    out = ocr(frames_batch(np.stack([text_frame(), plain]), np.stack([plain, plain])))
    with_text, without = out["ocr_area_ratio"]
    assert with_text > 0.05  # max over frames: the one text frame counts
    assert without == 0.0
    assert out["error"].isna().all()


def test_motion_of_a_static_clip_is_far_below_a_panning_one(score_conf, models, tmp_path):
    conf = {**score_conf, "frames": {**score_conf["frames"], "n": 1}}
    rows = []
    for name, pan in [("static", (0.0, 0.0)), ("pan", (8.0, 2.0))]:
        path = tmp_path / f"{name}.mp4"
        make_video(path, [Shot(60, seed=5, pan=pan)], fps=25, size=(640, 360))
        rows.append({"clip_id": name, "uri": str(path), "start_s": 0.0, "end_s": 2.4})
    clips = pd.DataFrame(rows)
    out = ClipScorer(conf, models, ["motion"], device="cpu")(clips).set_index("clip_id")
    assert out.loc["static", "motion"] < 0.05
    assert out.loc["pan", "motion"] > 20 * max(out.loc["static", "motion"], 0.01)
    # The same clip seen at half the resolution (what its 180p rendition decodes to) measures the same,
    # because the flow is measured at the reference size.
    reference = {**conf["motion"], "reference_short_side": 128}
    small = {**conf, "frames": {**conf["frames"], "size": 180}, "motion": reference}
    large = {**small, "frames": {**small["frames"], "size": 360}}
    low = ClipScorer(small, models, ["motion"], device="cpu")(clips).set_index("clip_id")
    high = ClipScorer(large, models, ["motion"], device="cpu")(clips).set_index("clip_id")
    assert low.loc["pan", "motion"] == pytest.approx(high.loc["pan", "motion"], rel=0.1)


def test_a_black_frame_has_low_brightness_and_no_sharpness(score_conf, models):
    luma = make_scorer("luma", score_conf, models)
    black = np.zeros((2, 180, 320, 3), np.uint8)
    out = luma(frames_batch(black, np.stack([textured_frame(1, 180, 320)] * 2)))
    assert out.loc[0, "brightness"] == 0.0 and out.loc[0, "sharpness"] == 0.0
    assert out.loc[1, "brightness"] > 20 and out.loc[1, "sharpness"] > 0


def test_nsfw_prepares_frames_exactly_as_nudenet_and_scores_a_landscape_low(score_conf, models):
    from nudenet import nudenet as nudenet_module

    from udfs.scorers.nsfw import prepare

    frame = textured_frame(2)
    theirs = nudenet_module._read_image(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), 320)[0]
    np.testing.assert_allclose(prepare(frame, 320)[None], theirs, atol=1 / 255)
    nsfw = make_scorer("nsfw", score_conf, models)
    out = nsfw(frames_batch(np.stack([frame, textured_frame(3)])))
    assert 0.0 <= out.loc[0, "nsfw"] < 0.2  # below NudeNet's reporting threshold: nothing unsafe


def test_aesthetic_is_the_head_on_normalised_clip_embeddings_per_frame_and_mean(score_conf, models):
    from transformers import CLIPImageProcessor, CLIPModel

    from udfs.scorers.aesthetic import load_head

    scorer = make_scorer("aesthetic", score_conf, models)
    frames = np.stack([textured_frame(4), textured_frame(5), textured_frame(6)])
    out = scorer(frames_batch(frames, frames[:1]))
    # The reference: transformers' own processor and full CLIPModel, then the head, all on the CPU.
    clip = CLIPModel.from_pretrained(models["clip"]["path"]).eval()
    pixels = CLIPImageProcessor.from_pretrained(models["clip"]["path"])(images=list(frames), return_tensors="pt")
    with torch.inference_mode():
        features = clip.get_image_features(**pixels)
        features = features if torch.is_tensor(features) else features.pooler_output
        expected = load_head(models["aesthetic"]["path"], "cpu")(features / features.norm(dim=-1, keepdim=True))
    expected = expected.squeeze(-1).numpy()
    np.testing.assert_allclose(out.loc[0, "aesthetic_frames"], expected, atol=2e-3)
    assert out.loc[0, "aesthetic"] == pytest.approx(float(np.mean(out.loc[0, "aesthetic_frames"])))
    assert out.loc[1, "aesthetic_frames"] == pytest.approx(out.loc[0, "aesthetic_frames"][:1], abs=1e-5)


def test_watermark_probability_matches_laions_preprocessing_and_class_order(score_conf, models):
    from PIL import Image
    from torchvision import transforms as T

    from udfs.scorers.watermark import load_model

    frames = np.stack([textured_frame(7)])
    scorer = make_scorer("watermark", score_conf, models)
    out = scorer(frames_batch(frames))
    # LAION's example_use.py: PIL resize to 256x256, ImageNet normalisation, softmax, column 0 = watermark.
    preprocessing = T.Compose([T.Resize((256, 256)), T.ToTensor(),
                               T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    model = load_model(models["watermark"]["path"], "cpu", torch.float32)
    with torch.inference_mode():
        probabilities = torch.softmax(model(torch.stack([preprocessing(Image.fromarray(f)) for f in frames])), 1)
    assert out.loc[0, "pwatermark"] == pytest.approx(float(probabilities[:, 0].mean()), abs=0.02)
    clear_conf = {**score_conf, "watermark": {**score_conf["watermark"], "watermark_class": 1}}
    flipped = make_scorer("watermark", clear_conf, models)(frames_batch(frames))
    assert flipped.loc[0, "pwatermark"] == pytest.approx(1 - out.loc[0, "pwatermark"], abs=1e-5)


def test_clip_text_embeddings_match_transformers_and_are_unit_length(models):
    from transformers import AutoTokenizer, CLIPModel

    encoder = ClipEncoder(models["clip"]["path"], "cpu")
    texts = ["a red car on a road", "surfing"]
    embeddings = encoder.text_embeddings(texts)
    clip = CLIPModel.from_pretrained(models["clip"]["path"]).eval()
    tokens = AutoTokenizer.from_pretrained(models["clip"]["path"])(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        features = clip.get_text_features(**tokens)
        features = features if torch.is_tensor(features) else features.pooler_output
    np.testing.assert_allclose(embeddings.numpy(), (features / features.norm(dim=-1, keepdim=True)).numpy(), atol=1e-5)


def test_every_scorer_on_real_clips_gives_scores_or_an_error_per_clip(score_conf, models, tmp_path):
    conf = {**score_conf, "frames": {"n": 2, "where": "uniform", "size": 224}, "clips_per_batch": 2,
            "motion": {**score_conf["motion"], "pairs": 1}}
    path = tmp_path / "clip.mp4"
    make_video(path, [Shot(50, seed=9), Shot(50, seed=10)], fps=25, size=(320, 180))
    clips = pd.DataFrame({"clip_id": ["a", "b", "gone"], "uri": [str(path), str(path), str(tmp_path / "x.mp4")],
                          "start_s": [0.0, 2.0, 0.0], "end_s": [2.0, 4.0, 1.0]})
    scorer = ClipScorer(conf, models, list(SCORERS), device="cpu")
    out = scorer(clips).set_index("clip_id")
    for column in ("aesthetic", "pwatermark", "ocr_area_ratio", "motion", "nsfw", "brightness", "sharpness"):
        assert out.loc[["a", "b"], column].notna().all(), column
        assert pd.isna(out.loc["gone", column])
    assert out.loc["a", "frames_sampled"] == 2 and out.loc["a", "errors"] is None
    assert set(out.loc["gone", "errors"]) == set(SCORERS) and set(out.loc["a", "scorer_versions"]) == set(SCORERS)


def test_missing_weights_name_the_model_the_path_and_the_fix(score_conf, models, tmp_path):
    broken = {**models, "watermark": {"path": str(tmp_path / "nowhere" / "watermark_model_v1.pt")},
              "clip": {"path": str(tmp_path / "no-clip-here")}}
    with pytest.raises(MissingWeightsError) as error:
        check_weights(["aesthetic", "watermark", "luma"], score_conf, broken)
    message = str(error.value)
    assert "models.watermark.path" in message and "nowhere/watermark_model_v1.pt" in message
    assert "LAION-5B-WatermarkDetection" in message and "--set models.watermark.path=" in message
    assert "models.clip.path" in message and "config.json" in message
    with pytest.raises(MissingWeightsError, match="models.watermark.path"):
        SCORERS["watermark"](scorer_conf(score_conf, "watermark"), broken, "cpu")

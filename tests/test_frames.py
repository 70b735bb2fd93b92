"""Frame sampling by seeking: the sampled frames are exactly the frames a full decode shows at those times."""
import av
import numpy as np
import pytest
from media import Shot, make_video

from udfs.device import cached_model, task_device
from udfs.frames import FrameSampleError, FrameSampling, decode_at, prefetch, sample_frames, sample_times

FPS = 25


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    """8 s at 25 fps with a keyframe every 2 s, two different shots: seeks land mid-GOP."""
    path = tmp_path_factory.mktemp("frames") / "two_shots.mp4"
    make_video(path, [Shot(100, seed=1), Shot(100, seed=2, pan=(-3.0, 2.0))], fps=FPS, gop=50)
    with av.open(str(path)) as container:
        every_frame = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    return str(path), np.stack(every_frame)


def test_seeked_frames_match_a_full_decode(video):
    path, every_frame = video
    times = [6.5, 0.0, 2.04, 2.08, 3.9, 7.96]  # unsorted, mid-GOP, adjacent frames, the last frame
    frames = decode_at(path, times)
    for got, time in zip(frames, times, strict=True):
        np.testing.assert_array_equal(got, every_frame[int(time * FPS + 1e-6)])


def test_uniform_samples_take_span_centres_at_the_requested_size(video):
    path, every_frame = video
    frames = sample_frames(path, 2.0, 6.0, 4, size=90)
    assert frames.shape == (4, 90, 160, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(sample_frames(path, 2.0, 6.0, 4), every_frame[[62, 87, 112, 137]])
    assert sample_frames(path, 2.0, 6.0, 2, size=(64, 48)).shape == (2, 48, 64, 3)


def test_more_samples_than_frames_repeat_frames_and_times_past_the_end_get_the_last(video):
    path, every_frame = video
    frames = sample_frames(path, 1.0, 1.08, 6)  # a 2-frame clip: frames 25 and 26
    assert all(np.array_equal(frame, every_frame[25]) for frame in frames[:3])
    assert all(np.array_equal(frame, every_frame[26]) for frame in frames[3:])
    np.testing.assert_array_equal(decode_at(path, [60.0])[0], every_frame[-1])


def test_sampling_places_and_conf():
    np.testing.assert_allclose(sample_times(0.0, 4.0, 4, "uniform"), [0.5, 1.5, 2.5, 3.5])
    assert sample_times(1.0, 3.0, 3, "middle").tolist() == [2.0, 2.0, 2.0]
    assert sample_times(1.0, 3.0, 2, "start").tolist() == [1.0, 1.0]
    assert FrameSampling.from_conf({"n": 3, "where": "linspace", "size": [64, 48]}).size == (64, 48)
    with pytest.raises(ValueError, match="not one of"):
        FrameSampling(n=2, where="random")
    with pytest.raises(FrameSampleError, match="empty clip"):
        sample_times(2.0, 2.0, 1)


def test_unreadable_sources_raise_a_clear_error(tmp_path):
    with pytest.raises(FrameSampleError, match="does not exist"):
        sample_frames(str(tmp_path / "missing.mp4"), 0.0, 1.0, 2)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    with pytest.raises(FrameSampleError, match="cannot decode"):
        sample_frames(str(garbage), 0.0, 1.0, 2)


def test_prefetch_keeps_order_and_runs_ahead():
    from concurrent.futures import ThreadPoolExecutor

    started = []

    def work(item):
        started.append(item)
        return item * 10

    with ThreadPoolExecutor(2) as pool:
        results = prefetch(range(6), work, pool, depth=2)
        assert next(results) == 0
        assert len(started) >= 3  # items 1 and 2 were submitted before item 0 was handed over
        assert list(results) == [10, 20, 30, 40, 50]


def test_a_model_loads_once_per_worker_and_outside_spark_the_device_is_torchs():
    loads = []
    first = cached_model(("test-model", "cpu"), lambda: loads.append(1) or object())
    again = cached_model(("test-model", "cpu"), lambda: loads.append(1) or object())
    assert first is again and loads == [1]
    import torch

    assert task_device() == ("cuda:0" if torch.cuda.is_available() else "cpu")
    assert task_device(prefer_gpu=False) == "cpu"

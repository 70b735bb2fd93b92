"""Test media: synthetic H.264 videos with exactly known cuts, and the real videos PyPI packages ship.

Import it from a test module as `from media import Dissolve, Fade, Shot, make_video, packaged_video`
(pytest puts tests/ on sys.path).

A video is a list of segments. Two `Shot`s in a row meet at a hard cut; a `Fade` (through
black) or a `Dissolve` between two shots is a gradual transition. `make_video` returns the
cut frames: the first frame of each new shot, or for a gradual transition its middle frame.
A `Shot` can be static with a moving object, or carry flashes: neither is a cut.
"""
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from udfs.sample_videos import missing_reason, packaged_videos

FLASH_GAIN = 0.85  # how far a flash frame is pushed towards white


@dataclass(frozen=True)
class Shot:
    """A shot of `frames` frames: a textured, coloured scene the camera pans over.

    `seed` picks the texture and palette (different seeds look different). `pan` is the
    camera speed in pixels per frame at the output size; (0, 0) makes a static shot.
    `moving_object` adds a square crossing the frame. `flashes` are (first frame, length)
    spans, local to the shot, where the frame turns nearly white.
    """

    frames: int
    seed: int
    pan: tuple[float, float] = (3.0, 1.5)
    moving_object: bool = False
    flashes: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Fade:
    """A fade through black between the shots around it: out over half the frames, in over the rest.

    The frames either side of the middle are black; at least 2 frames.
    """

    frames: int


@dataclass(frozen=True)
class Dissolve:
    """A cross-dissolve between the shots around it."""

    frames: int


Segment = Shot | Fade | Dissolve


class _ShotRenderer:
    """Renders frame i of a shot (i may run past either end, for transitions) as float32 RGB 0-1."""

    def __init__(self, shot: Shot, width: int, height: int) -> None:
        rng = np.random.default_rng(shot.seed)
        self.shot, self.width, self.height = shot, width, height
        self.texture = _texture(rng, 2 * width, 2 * height)
        self.object_colour = rng.uniform(0.0, 1.0, 3).astype(np.float32)

    def render(self, i: int) -> np.ndarray:
        dx, dy = self.shot.pan
        x = _bounce(i * dx, self.texture.shape[1] - self.width)
        y = _bounce(i * dy, self.texture.shape[0] - self.height)
        frame = self.texture[y : y + self.height, x : x + self.width].copy()
        if self.shot.moving_object:
            self._draw_object(frame, i)
        for first, length in self.shot.flashes:
            if first <= i < first + length:
                frame += (1.0 - frame) * FLASH_GAIN
        return frame

    def _draw_object(self, frame: np.ndarray, i: int) -> None:
        side = max(4, self.height // 5)
        x = _bounce(i * 4.0, self.width - side)
        y = _bounce(i * 2.0 + self.height // 3, self.height - side)
        frame[y : y + side, x : x + side] = self.object_colour


def _bounce(position: float, span: int) -> int:
    """A position moving along [0, span] and bouncing at its ends (a triangle wave)."""
    if span <= 0:
        return 0
    phase = abs(position) % (2 * span)
    return int(phase if phase <= span else 2 * span - phase)


def _texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Smooth coloured blobs plus finer detail in a random palette: looks like a scene, encodes well."""
    import cv2

    coarse = rng.uniform(0.0, 1.0, (6, 10, 3)).astype(np.float32)
    fine = rng.uniform(-0.15, 0.15, (height // 8, width // 8, 3)).astype(np.float32)
    image = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    image += cv2.resize(fine, (width, height), interpolation=cv2.INTER_LINEAR)
    tint = rng.uniform(0.3, 1.0, 3).astype(np.float32)
    return np.clip(image * tint + rng.uniform(0.0, 0.3), 0.0, 1.0)


def _plan(segments: Sequence[Segment]) -> list[tuple[Segment, int]]:
    """Each segment with its first frame in the video; checks transitions sit between two shots."""
    planned, start = [], 0
    for index, segment in enumerate(segments):
        if segment.frames <= 0:
            raise ValueError(f"segment {index} ({segment}) has no frames")
        if not isinstance(segment, Shot):
            neighbours = segments[index - 1 : index + 2] if index > 0 else ()
            if len(neighbours) != 3 or not all(isinstance(s, Shot) for s in (neighbours[0], neighbours[2])):
                raise ValueError(f"segment {index} ({segment}) must sit between two Shots")
        planned.append((segment, start))
        start += segment.frames
    if not planned:
        raise ValueError("a video needs at least one segment")
    return planned


def cut_frames(segments: Sequence[Segment]) -> list[int]:
    """The frames where a new shot starts: hard cuts exactly, gradual transitions at their middle."""
    planned = _plan(segments)
    cuts = []
    for (previous, _), (segment, start) in zip(planned, planned[1:], strict=False):
        if isinstance(segment, Shot) and isinstance(previous, Shot):
            cuts.append(start)
        elif not isinstance(segment, Shot):
            cuts.append(start + segment.frames // 2)
    return cuts


def _frames(segments: Sequence[Segment], width: int, height: int):
    """Yields the video's frames as uint8 RGB arrays."""
    planned = _plan(segments)
    renderers = {id(s): _ShotRenderer(s, width, height) for s, _ in planned if isinstance(s, Shot)}
    for index, (segment, _) in enumerate(planned):
        if isinstance(segment, Shot):
            frames = (renderers[id(segment)].render(i) for i in range(segment.frames))
        else:
            before, after = planned[index - 1][0], planned[index + 1][0]
            frames = _transition(segment, renderers[id(before)], before.frames, renderers[id(after)])
        for frame in frames:
            yield (frame * 255.0 + 0.5).astype(np.uint8)


def _transition(segment: Fade | Dissolve, before: _ShotRenderer, before_frames: int, after: _ShotRenderer):
    """The frames of a gradual transition: the shot before keeps moving, the shot after already moves."""
    n = segment.frames
    half = n // 2
    for i in range(n):
        outgoing = before.render(before_frames + i)
        incoming = after.render(i - n)
        if isinstance(segment, Dissolve):
            weight = (i + 1) / (n + 1)
            yield outgoing * (1.0 - weight) + incoming * weight
        elif i < half:
            yield outgoing * (1.0 - (i + 1) / half)
        else:
            yield incoming * ((i - half) / (n - half))


def make_video(
    path: str | Path,
    segments: Sequence[Segment],
    fps: float | Fraction = 25,
    size: tuple[int, int] = (320, 180),
    codec: str = "libx264",
    gop: int | None = None,
    crf: int = 23,
    preset: str = "veryfast",
) -> list[int]:
    """Writes the segments as a real MP4 (H.264 by default, yuv420p) and returns its cut frames.

    `size` is (width, height). `gop` sets the keyframe interval (None: the encoder's choice).
    `crf` and `preset` are libx264's quality and speed settings.
    Every frame gets pts = its index in a 1/fps time base, so frame i starts at i / fps.
    """
    width, height = size
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.time_base = 1 / rate
        options = {"crf": str(crf), "preset": preset} if codec == "libx264" else {}
        if gop is not None:
            options.update({"g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"})
        stream.options = options
        for index, rgb in enumerate(_frames(segments, width, height)):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return cut_frames(segments)


def packaged_video(name: str) -> Path:
    """A real video a PyPI package ships (see udfs.sample_videos); skips the test if it is not installed."""
    path = packaged_videos().get(name)
    if path is None:
        pytest.skip(missing_reason(name))
    return path


def first_seconds(source: Path, seconds: float, destination: Path) -> Path:
    """The first `seconds` of a video, remuxed without re-encoding (a real encoder's stream, shorter)."""
    with av.open(str(source)) as src, av.open(str(destination), "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream_from_template(stream)
        for packet in src.demux(stream):
            if packet.dts is None or packet.pts * stream.time_base >= seconds:
                continue  # the flush packet, or a frame past the end (B-frames arrive out of order)
            packet.stream = out
            dst.mux(packet)
    return destination


def standard_segments(shot_frames: int = 40) -> list[Segment]:
    """One of each kind of event: hard cuts, a fade, a dissolve, a static shot, a flash. Six true cuts."""
    n = shot_frames
    return [
        Shot(n, seed=1),
        Shot(n, seed=2, pan=(-2.0, 1.0)),
        Fade(12),
        Shot(n, seed=3, pan=(1.0, -2.5)),
        Shot(n, seed=4, pan=(0.0, 0.0), moving_object=True),
        Dissolve(10),
        Shot(n, seed=5, flashes=((n // 2, 2),)),
        Shot(n, seed=6, pan=(4.0, 0.0)),
        Shot(n, seed=7, pan=(-1.5, -1.5)),
    ]

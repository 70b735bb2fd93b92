"""Decode a video once, small, in batches: the frames every requested consumer needs from one pass.

At 1080p decoding is the whole cost of scene detection, so a video is decoded exactly once, with
as many FFmpeg threads as the task has cores, and each frame is brought straight to the small sizes
the detectors ask for: by the decoder's reformat (libswscale) for TransNetV2's 48x27, or by taking
every k-th pixel of the decoded planes for content detection (a few hundred pixels wide). Only the
small frames are copied into Python.
"""
from __future__ import annotations

import bisect
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

# OpenCV's conversion of an I420 (planar YUV 4:2:0, BT.601 limited range) image, per subsampled format.
SUBSAMPLE_CODES = {"bgr24": cv2.COLOR_YUV2BGR_I420, "rgb24": cv2.COLOR_YUV2RGB_I420, "gray": None}
SUBSAMPLE_FORMATS = tuple(SUBSAMPLE_CODES)


class DecodeError(Exception):
    """The video cannot be decoded: no video stream, a broken stream, or no frames at all."""


def local_path(uri: str) -> str | None:
    """The local file a uri names (a plain path or file://), or None for a remote URL."""
    if uri.startswith("file://"):
        return uri[len("file://") :]
    if "://" in uri:
        return None
    return uri


def open_container(uri: str | Path) -> av.container.InputContainer:
    """Opens a local path or file:// URI directly, any other URL through fsspec (s3://, gs://, ...)."""
    path = local_path(str(uri))
    if path is not None:
        return av.open(path)
    import fsspec

    return av.open(fsspec.open(str(uri), "rb").open())


@dataclass(frozen=True)
class FrameSpec:
    """A frame size and pixel format a consumer needs.

    `height` None keeps the video's aspect ratio (rounded to an even number of rows). With
    `upscale` False a video smaller than the spec is decoded at its own size instead.

    With `subsample` the frame is not scaled by libswscale: every k-th pixel of the decoded YUV 4:2:0
    planes is taken (k the whole number of times `width` fits the video's width, as PySceneDetect's
    own downscale factor is), so the frame is at least `width` wide, never upscaled, and OpenCV turns
    it into `format` (bgr24, rgb24 or gray). At 1080p that costs about a fifth of a libswscale
    downscale, which has to read every source row. Frames in other pixel formats are scaled by
    libswscale to the same size.

    `interpolation` is libswscale's for this spec's frames (FAST_BILINEAR, BILINEAR, AREA, ...);
    None takes the decoder's. A consumer whose output depends on every pixel of a tiny frame
    (TransNetV2's 48x27) names its own: FAST_BILINEAR aliases at such sizes.
    """

    width: int
    height: int | None = None
    format: str = "bgr24"
    upscale: bool = True
    subsample: bool = False
    interpolation: str | None = None

    def __post_init__(self) -> None:
        if self.subsample and self.format not in SUBSAMPLE_FORMATS:
            raise ValueError(f"subsampled frames come as {', '.join(SUBSAMPLE_FORMATS)}, not {self.format}")

    def size_for(self, video_width: int, video_height: int) -> tuple[int, int]:
        if self.subsample:
            step_x, step_y = self.steps_for(video_width, video_height)
            return _even(video_width // step_x), _even(video_height // step_y)
        width = self.width if self.upscale else min(self.width, video_width)
        if self.height is not None:
            height = self.height if self.upscale else min(self.height, video_height)
            return width, height
        height = max(2, 2 * round(width * video_height / video_width / 2))
        return width, height

    def steps_for(self, video_width: int, video_height: int) -> tuple[int, int]:
        """The subsampling steps (columns, rows): the same for both when `height` is None."""
        step_x = max(1, video_width // self.width)
        return step_x, step_x if self.height is None else max(1, video_height // self.height)


def _even(pixels: int) -> int:
    return max(2, pixels - pixels % 2)


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about the video stream, before decoding."""

    width: int
    height: int
    fps: Fraction
    time_base: Fraction
    codec: str
    frames_declared: int  # the container's frame count; 0 when it does not say


@dataclass
class FrameBatch:
    """Decoded frames in display order: `frames[name]` is (n, height, width, 3) uint8 for each spec.

    `indices` are the frames' numbers in the video: consecutive, unless the decoder skips frames
    (VideoDecoder's `skip_nonref`).
    """

    indices: np.ndarray
    times: np.ndarray  # presentation time of each frame in seconds (PyAV's frame.time)
    frames: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)


@dataclass
class DecodeSummary:
    """Complete once decoding ends: every frame's presentation time (skipped frames included), the
    time the last one ends, and how many frames were decoded."""

    times: np.ndarray = field(default_factory=lambda: np.empty(0))
    end_time: float = 0.0
    decoded: int = 0

    @property
    def num_frames(self) -> int:
        return len(self.times)


class VideoDecoder:
    """One pass over a video's frames, scaled to every spec, `batch_frames` frames at a time.

    `interpolation` is libswscale's (FAST_BILINEAR, BILINEAR, AREA, ...) for the specs that name
    none; `skip_loop_filter` skips H.264/HEVC deblocking, for frames that only feed detectors
    (TransNetV2's included: on the package's test video it moves the network's probabilities by
    at most 0.055 and costs no cut). `skip_nonref` has FFmpeg skip the
    frames no other frame refers to (most B-frames: 40-50% of an x264 stream's frames, a third of
    its decoding time), for detectors that do not need every frame; it applies to MP4/MOV and
    Matroska/WebM files, whose packets carry every frame's timestamp, so each decoded frame still
    gets its true number and the summary every frame's time.

    Use as a context manager; `info` is known once opened, `summary` is complete once
    `batches()` is exhausted. Any FFmpeg error while opening or decoding raises DecodeError.
    """

    def __init__(
        self,
        path: str | Path,
        specs: Mapping[str, FrameSpec],
        batch_frames: int = 64,
        threads: int = 0,
        interpolation: str = "BILINEAR",
        skip_loop_filter: bool = False,
        skip_nonref: bool = False,
        large_nonref_ratio: float = 1.0,
    ) -> None:
        self.path, self.specs, self.batch_frames = str(path), dict(specs), batch_frames
        self.threads, self.interpolation, self.skip_loop_filter = threads, interpolation, skip_loop_filter
        self.skip_nonref, self.large_nonref_ratio = skip_nonref, large_nonref_ratio
        self.summary = DecodeSummary()
        self._container = None
        self._stream = None
        self._sparse: _SparseDecoding | None = None
        self._last_index = -1
        self.info: VideoInfo | None = None

    def __enter__(self) -> VideoDecoder:
        try:
            self._container = open_container(self.path)
        except (av.FFmpegError, OSError) as error:
            raise DecodeError(f"cannot open {self.path}: {error}") from error
        if not self._container.streams.video:
            self.close()
            raise DecodeError(f"{self.path} has no video stream")
        stream = self._container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.thread_count = self.threads
        if self.skip_loop_filter:
            # No deblocking: about 20% less decoding work at 1080p H.264; the blocking it leaves is
            # invisible at the few hundred pixels detectors look at. Never for frames that are kept.
            stream.codec_context.options = {"skip_loop_filter": "all"}
        if self.skip_nonref and _packets_carry_times(self._container):
            self._sparse = _SparseDecoding(stream.codec_context, self.large_nonref_ratio)
        self._stream = stream
        self.info = _stream_info(stream)
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def batches(self) -> Iterator[FrameBatch]:
        if self._stream is None or self.info is None:
            raise RuntimeError("open the decoder with `with VideoDecoder(...) as decoder:` first")
        fillers = {name: self._filler(spec) for name, spec in self.specs.items()}
        indices: list[int] = []
        pts: list[int | None] = []
        decoded_times: list[np.ndarray] = []
        frame = None
        for frame in self._frames():
            for filler in fillers.values():
                filler.put(len(pts), frame)
            indices.append(self._index_of(frame))
            pts.append(frame.pts)
            if len(pts) == self.batch_frames:
                yield self._batch(indices, pts, fillers, decoded_times)
                indices, pts = [], []
        if pts:
            yield self._batch(indices, pts, fillers, decoded_times)
        if self.summary.decoded == 0:
            raise DecodeError(f"{self.path} has a video stream but no frame could be decoded")
        self._finish(decoded_times, frame)

    def _filler(self, spec: FrameSpec) -> _Filler:
        video_size = (self.info.width, self.info.height)
        interpolation = spec.interpolation or self.interpolation
        if spec.subsample:
            return _SubsampledFrames(spec, video_size, self.batch_frames, interpolation)
        return _ScaledFrames(spec.size_for(*video_size), spec.format, self.batch_frames, interpolation)

    def _index_of(self, frame: av.VideoFrame) -> int:
        """The frame's number: its rank among the packets' timestamps when frames are skipped (a
        decoder hands out a frame only after every packet shown before it), else the next number."""
        if self._sparse is not None and frame.pts is not None:
            self._last_index = self._sparse.rank(frame.pts)
        else:
            self._last_index += 1
        return self._last_index

    def _batch(
        self, indices: list[int], pts: list[int | None], fillers: Mapping[str, _Filler], decoded_times: list
    ) -> FrameBatch:
        times = [self._frame_time(value, index) for value, index in zip(pts, indices, strict=True)]
        times = np.array(times, dtype=np.float64)
        decoded_times.append(times)
        self.summary.decoded += len(pts)
        frames = {name: filler.take(len(pts)) for name, filler in fillers.items()}
        return FrameBatch(np.array(indices, dtype=np.int64), times, frames)

    def _finish(self, decoded_times: list[np.ndarray], last: av.VideoFrame) -> None:
        """Every frame's time and the end of the last: the packets' when frames were skipped."""
        if self._sparse is not None:
            time_base = self.info.time_base
            self.summary.times = self._sparse.seconds(time_base)
            self.summary.end_time = self._sparse.end(time_base) or float(self.summary.times[-1] + 1 / self.info.fps)
            return
        self.summary.times = np.concatenate(decoded_times)
        self.summary.end_time = float(self.summary.times[-1]) + self._frame_duration(last)

    def _frames(self) -> Iterator[av.VideoFrame]:
        decoded = 0
        try:
            if self._sparse is None:
                packets_frames = self._container.decode(self._stream)
            else:
                packets_frames = self._sparse.decode(self._container.demux(self._stream))
            for frame in packets_frames:
                yield frame
                decoded += 1
        except (av.FFmpegError, OSError) as error:
            raise DecodeError(f"decoding {self.path} failed after {decoded} frames: {error}") from error

    def _frame_time(self, pts: int | None, index: int) -> float:
        """pts x time_base, as exact integer division: the float of the Fraction, at a tenth of its cost."""
        if pts is None:
            return float(index / self.info.fps)
        return pts * self.info.time_base.numerator / self.info.time_base.denominator

    def _frame_duration(self, frame: av.VideoFrame) -> float:
        if frame.duration:
            return float(frame.duration * self.info.time_base)
        return float(1 / self.info.fps)


def _packets_carry_times(container: av.container.InputContainer) -> bool:
    """Whether the container stores one frame per packet, each with its presentation time."""
    return bool({"mp4", "mov", "matroska", "webm"} & set(container.format.name.split(",")))


class _SparseDecoding:
    """Decodes packets with FFmpeg skipping the non-reference frames whose packets are small, and
    keeps the presentation timestamps of every packet demuxed so far, sorted.

    A non-reference frame the encoder coded in few bits is well predicted from the frames around
    it, so it holds no cut, flash or fade step of its own; one whose packet is larger than
    `large_ratio` times the recent average packet (keyframes aside) is decoded as any other frame.
    """

    AVERAGE_WEIGHT = 1 / 32  # of the newest packet in the running average of packet sizes

    def __init__(self, codec_context: av.codec.context.CodecContext, large_ratio: float) -> None:
        self._context, self._large_ratio = codec_context, large_ratio
        self._pts: list[int] = []
        self._last_duration = 0
        self._average_size = 0.0

    def decode(self, packets: Iterator[av.Packet]) -> Iterator[av.VideoFrame]:
        """The frames of `packets`, recording each packet's timestamp before decoding it."""
        for packet in packets:
            if packet.pts is not None and packet.size > 0:
                self._record(packet)
            yield from packet.decode()

    def _record(self, packet: av.Packet) -> None:
        if not self._pts or packet.pts > self._pts[-1]:
            self._pts.append(packet.pts)
            self._last_duration = packet.duration or 0
        else:
            bisect.insort(self._pts, packet.pts)
        large = packet.size > self._large_ratio * self._average_size
        self._context.skip_frame = "DEFAULT" if large else "NONREF"
        if not packet.is_keyframe:
            weight = self.AVERAGE_WEIGHT if self._average_size else 1.0
            self._average_size += weight * (packet.size - self._average_size)

    def rank(self, pts: int) -> int:
        return bisect.bisect_left(self._pts, pts)

    def seconds(self, time_base: Fraction) -> np.ndarray:
        return np.array(self._pts, dtype=np.int64) * time_base.numerator / time_base.denominator

    def end(self, time_base: Fraction) -> float:
        """When the last frame ends; 0.0 when its packet has no duration."""
        if not self._pts or not self._last_duration:
            return 0.0
        return float((self._pts[-1] + self._last_duration) * time_base)


def _stream_info(stream: av.video.stream.VideoStream) -> VideoInfo:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    if not rate or rate <= 0:
        raise DecodeError("the video stream declares no frame rate")
    if not stream.width or not stream.height:
        raise DecodeError("the video stream declares no frame size")
    return VideoInfo(
        width=stream.width,
        height=stream.height,
        fps=Fraction(rate),
        time_base=Fraction(stream.time_base) if stream.time_base else 1 / Fraction(rate),
        codec=stream.codec_context.name,
        frames_declared=int(stream.frames or 0),
    )


class _Filler(ABC):
    """One spec's frames of the batch being decoded: `put` each frame in its slot, `take` the batch."""

    @abstractmethod
    def put(self, slot: int, frame: av.VideoFrame) -> None:
        """Brings `frame` to the spec and keeps it as frame `slot` of the batch."""

    @abstractmethod
    def take(self, count: int) -> np.ndarray:
        """The batch's first `count` frames, (count, height, width[, 3]) uint8."""


class _ScaledFrames(_Filler):
    """Frames scaled by libswscale to `size`, written into the batch's array as they come."""

    def __init__(self, size: tuple[int, int], format: str, capacity: int, interpolation: str) -> None:
        self.size, self.format, self.interpolation = size, format, interpolation
        self.capacity = capacity
        self._frames: np.ndarray | None = None

    def put(self, slot: int, frame: av.VideoFrame) -> None:
        scaled = frame.to_ndarray(width=self.size[0], height=self.size[1], format=self.format,
                                  interpolation=self.interpolation)
        if self._frames is None:
            self._frames = np.empty((self.capacity, *scaled.shape), np.uint8)
        self._frames[slot] = scaled

    def take(self, count: int) -> np.ndarray:
        """The batch's frames; the next batch fills a new array (a batch may still be in use)."""
        frames, self._frames = self._frames[:count], None
        return frames


class _SubsampledFrames(_Filler):
    """Every `steps`-th pixel of each yuv420p frame's planes, gathered into one I420 image per batch.

    The batch's luma planes are stacked, then its U planes, then its V planes: that is the I420
    layout of one tall image, so OpenCV converts the whole batch to `format` in one call, into the
    (n, height, width, 3) array the batch hands on (no per-frame image, no stacking copy). Frames
    that are not yuv420p at the stream's size (another pixel format, a size change) are brought
    to it by libswscale first.
    """

    def __init__(self, spec: FrameSpec, video_size: tuple[int, int], capacity: int, interpolation: str) -> None:
        self.size, self.steps = spec.size_for(*video_size), spec.steps_for(*video_size)
        self.video_size, self.capacity, self.interpolation = video_size, capacity, interpolation
        self._code = SUBSAMPLE_CODES[spec.format]
        width, height = self.size
        self._image = np.empty((capacity * height * 3 // 2, width), np.uint8)
        flat = self._image.reshape(-1)
        self._luma = flat[: capacity * height * width].reshape(capacity, height, width)
        self._chroma = flat[capacity * height * width :].reshape(2, capacity, height // 2, width // 2)
        step_x, step_y = self.steps
        self._luma_pixels = np.s_[: height * step_y : step_y, : width * step_x : step_x]
        self._chroma_pixels = np.s_[: height // 2 * step_y : step_y, : width // 2 * step_x : step_x]

    def put(self, slot: int, frame: av.VideoFrame) -> None:
        if frame.format.name != "yuv420p" or (frame.width, frame.height) != self.video_size:
            self._put_scaled(slot, frame)
            return
        planes = frame.planes
        self._luma[slot] = _rows(planes[0])[self._luma_pixels]
        if self._code is not None:
            self._chroma[0, slot] = _rows(planes[1])[self._chroma_pixels]
            self._chroma[1, slot] = _rows(planes[2])[self._chroma_pixels]

    def _put_scaled(self, slot: int, frame: av.VideoFrame) -> None:
        width, height = self.size
        i420 = frame.to_ndarray(width=width, height=height, format="yuv420p", interpolation=self.interpolation)
        flat = i420.reshape(-1)
        self._luma[slot] = flat[: width * height].reshape(height, width)
        self._chroma[:, slot] = flat[width * height :].reshape(2, height // 2, width // 2)

    def take(self, count: int) -> np.ndarray:
        width, height = self.size
        if self._code is None:
            return self._luma[:count].copy()
        if count == self.capacity:
            image = self._image
        else:
            image = np.concatenate([self._luma[:count].reshape(-1), self._chroma[:, :count].reshape(-1)])
            image = image.reshape(-1, width)
        return cv2.cvtColor(image, self._code).reshape(count, height, width, 3)


def _rows(plane: av.video.plane.VideoPlane) -> np.ndarray:
    """A view of one plane of a decoded frame, one row per line (padding included)."""
    return np.frombuffer(plane, np.uint8).reshape(-1, plane.line_size)


def probe_info(path: str | Path) -> VideoInfo:
    """The video stream's header (size, rate, codec) without reading any frame."""
    try:
        with open_container(path) as container:
            if not container.streams.video:
                raise DecodeError(f"{path} has no video stream")
            return _stream_info(container.streams.video[0])
    except (av.FFmpegError, OSError) as error:
        raise DecodeError(f"cannot open {path}: {error}") from error


def prefetched(items: Iterator, depth: int) -> Iterator:
    """`items`, produced by a background thread up to `depth` ahead (0: in this thread).

    Decoding and scaling (FFmpeg and libswscale, outside the GIL) then overlap the detectors'
    work on the previous batch. An error in the producer is raised here; stopping early stops it.
    """
    if depth <= 0:
        yield from items
        return
    buffer: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(finished)
        except BaseException as error:  # handed to the consumer, which raises it
            put(_Failure(error))

    thread = threading.Thread(target=produce, name="vidlake-decode", daemon=True)
    thread.start()
    try:
        while (item := buffer.get()) is not finished:
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        thread.join()


@dataclass(frozen=True)
class _Failure:
    error: BaseException


@dataclass(frozen=True)
class PacketIndex:
    """Every frame of a video from its packets alone (no decoding): times and keyframes.

    Assumes one frame per packet, as MP4/MKV/WebM video tracks store them.
    """

    info: VideoInfo
    times: np.ndarray  # presentation time of each frame, sorted, in seconds
    keyframes: np.ndarray  # indices of the frames that are keyframes
    end_time: float


def index_packets(path: str | Path) -> PacketIndex:
    """Reads the packets of the first video stream (fast: demuxing only) and indexes its frames."""
    try:
        with open_container(path) as container:
            if not container.streams.video:
                raise DecodeError(f"{path} has no video stream")
            stream = container.streams.video[0]
            info = _stream_info(stream)
            entries = [
                (packet.pts, packet.duration or 0, packet.is_keyframe)
                for packet in container.demux(stream)
                if packet.pts is not None and packet.size > 0
            ]
    except (av.FFmpegError, OSError) as error:
        raise DecodeError(f"cannot read the packets of {path}: {error}") from error
    if not entries:
        raise DecodeError(f"{path} has a video stream but no frames")
    entries.sort()
    pts = np.array([entry[0] for entry in entries], dtype=np.int64)
    times = pts * float(info.time_base)
    last_duration = entries[-1][1] * float(info.time_base) or float(1 / info.fps)
    keyframes = np.flatnonzero([entry[2] for entry in entries])
    return PacketIndex(info=info, times=times, keyframes=keyframes, end_time=float(times[-1] + last_duration))

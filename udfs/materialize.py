"""Write clips as their own files, or not (conf `split.materialize`), with PyAV only (no ffmpeg binary).

- `none`: a clip is a frame range of the source video; its uri is the video's.
- `copy`: the clip's packets are stream-copied, keyframe to keyframe. A copied clip can only start
  on a keyframe, so each clip moves to the keyframes nearest its ends (`align`), but never across
  a detected cut or into another clip (encoders usually put a keyframe on a hard cut, so a shot
  often keeps its whole length; the frames dropped at cuts may come back). Its row records the
  frames the file holds. Fast (no decoding); fewer clips where keyframes are sparse.
- `reencode`: the clip's frames are decoded and encoded to H.264 (libx264), frame-accurately, at
  conf's size and frame rate. The row's num_frames/fps/width/height then describe the file.

Clip files go to `<clip_root>/<video_id>/<clip_id>.mp4`; clip_root may be an fsspec URL.
`Materializer.cut` makes the file of a clip split earlier with `none` (the Open-Sora CSV export
does, so no trainer is pointed at a whole source video), and `clip_file` says what a reader of a
clip file finds in it.
"""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from udfs.decode import PacketIndex, VideoInfo, index_packets, local_path, open_container
from udfs.scenes import ClipSpan, Timeline

MODES = ("none", "copy", "reencode")


@dataclass(frozen=True)
class MadeClip:
    """Where a clip's frames are and what a reader of that file sees."""

    uri: str
    num_frames: int
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class ReencodeSettings:
    max_short_side: int
    fps: float | None
    crf: int
    preset: str

    def size_for(self, width: int, height: int) -> tuple[int, int]:
        """Downscaled so the short side is at most max_short_side, even dimensions, never upscaled."""
        scale = 1.0
        if self.max_short_side and min(width, height) > self.max_short_side:
            scale = self.max_short_side / min(width, height)
        return max(2, 2 * round(width * scale / 2)), max(2, 2 * round(height * scale / 2))


class Materializer:
    def __init__(self, mode: str, clip_root: str | None, reencode: ReencodeSettings) -> None:
        if mode not in MODES:
            raise ValueError(f"split.materialize is {mode!r}; choose one of {', '.join(MODES)}")
        if mode != "none" and not clip_root:
            raise ValueError(f"split.materialize={mode} needs a clip root to write clip files to")
        self.mode, self.clip_root, self.reencode = mode, clip_root, reencode

    @classmethod
    def from_conf(cls, conf: Mapping[str, Any], clip_root: str | None) -> Materializer:
        settings = conf["reencode"]
        reencode = ReencodeSettings(
            max_short_side=int(settings["max_short_side"]),
            fps=None if settings["fps"] is None else float(settings["fps"]),
            crf=int(settings["crf"]),
            preset=str(settings["preset"]),
        )
        return cls(str(conf["materialize"]), clip_root, reencode)

    def align(self, uri: str, clips: Sequence[ClipSpan], min_frames: int) -> list[ClipSpan]:
        """In copy mode, each clip moved to the keyframes nearest its ends within its room (a clip
        that gets shorter than `min_frames` is dropped); in the other modes, the clips as they are."""
        if self.mode != "copy" or not clips:
            return list(clips)
        packets = index_packets(uri)
        boundaries = np.append(packets.keyframes, len(packets.times))
        aligned = []
        for clip in clips:
            start = _nearest(boundaries, clip.start, clip.room_start, clip.end - 1)
            end = None if start is None else _nearest(boundaries, clip.end, start + 1, clip.room_end)
            if start is not None and end is not None and end - start >= min_frames:
                aligned.append(ClipSpan(start, end, clip.room_start, clip.room_end))
        return aligned

    def write(
        self, uri: str, video_id: str, clip_id: str, span: ClipSpan, timeline: Timeline, info: VideoInfo
    ) -> MadeClip:
        if self.mode == "none":
            return MadeClip(uri, span.end - span.start, float(info.fps), info.width, info.height)
        destination = f"{self.clip_root.rstrip('/')}/{video_id}/{clip_id}.mp4"
        with _local_target(destination) as path:
            if self.mode == "copy":
                copy_clip(uri, path, timeline, span)
                made = MadeClip(destination, span.end - span.start, float(info.fps), info.width, info.height)
            else:
                made = reencode_clip(uri, path, timeline, span, info, self.reencode)
                made = MadeClip(destination, made.num_frames, made.fps, made.width, made.height)
        return made

    def cut(
        self, uri: str, video_id: str, clip_id: str, start_frame: int, end_frame: int,
        packets: PacketIndex | None = None,
    ) -> MadeClip:
        """Writes frames [start_frame, end_frame) of the video at `uri` as the clip's file, the frames
        numbered by the video's packets (as split's hints detector and copy mode number them);
        `packets` is the video's index_packets, where the caller cut another clip of it already."""
        packets = packets or index_packets(uri)
        timeline = Timeline(packets.info.fps, packets.times, packets.end_time)
        if not 0 <= start_frame < end_frame <= timeline.num_frames:
            raise ValueError(f"frames [{start_frame}, {end_frame}) are not inside the {timeline.num_frames} "
                             f"frames of {uri}")
        span = ClipSpan(start_frame, end_frame, start_frame, end_frame)
        return self.write(uri, video_id, clip_id, span, timeline, packets.info)


def clip_file(uri: str) -> MadeClip:
    """What a reader of the clip file at `uri` finds: its frames (one per packet), rate and size."""
    packets = index_packets(uri)
    info = packets.info
    return MadeClip(uri, len(packets.times), float(info.fps), info.width, info.height)


@contextmanager
def _local_target(destination: str):
    """A local path to write to: the destination itself, or a temp file uploaded with fsspec after."""
    local = local_path(destination)
    if local is not None:
        Path(local).parent.mkdir(parents=True, exist_ok=True)
        yield local
        return
    import fsspec

    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "clip.mp4")
        yield path
        with open(path, "rb") as source, fsspec.open(destination, "wb") as target:
            shutil.copyfileobj(source, target)


def copy_clip(uri: str, path: str, timeline: Timeline, span: ClipSpan) -> None:
    """Stream-copies frames [span.start, span.end) (span.start a keyframe; span.end a keyframe or the end)."""
    time_base = None
    with open_container(uri) as source, av.open(path, mode="w") as target:
        stream = source.streams.video[0]
        out = target.add_stream_from_template(stream)
        time_base = stream.time_base
        start_pts = round(timeline.time_of(span.start) / time_base)
        end_pts = round(timeline.time_of(span.end) / time_base) if span.end < timeline.num_frames else None
        source.seek(start_pts, stream=stream, backward=True, any_frame=False)
        started = False
        for packet in source.demux(stream):
            if packet.pts is None or packet.size == 0:
                continue
            if not started:
                if not (packet.is_keyframe and packet.pts == start_pts):
                    continue
                started, offset = True, packet.dts if packet.dts is not None else packet.pts
            if end_pts is not None and packet.is_keyframe and packet.pts >= end_pts:
                break
            packet.pts -= offset
            if packet.dts is not None:
                packet.dts -= offset
            packet.stream = out
            target.mux(packet)
    if not started:
        raise OSError(f"keyframe at frame {span.start} of {uri} not found when copying")


def reencode_clip(
    uri: str, path: str, timeline: Timeline, span: ClipSpan, info: VideoInfo, settings: ReencodeSettings
) -> MadeClip:
    """Decodes frames [span.start, span.end) and encodes them to H.264, frame-accurately."""
    width, height = settings.size_for(info.width, info.height)
    out_fps = Fraction(settings.fps).limit_denominator(1001) if settings.fps else info.fps
    clip_start = timeline.time_of(span.start)
    duration = timeline.time_of(span.end) - clip_start
    written = 0
    with open_container(uri) as source, av.open(path, mode="w") as target:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        out = target.add_stream("libx264", rate=out_fps)
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        out.time_base = 1 / out_fps
        out.options = {"crf": str(settings.crf), "preset": settings.preset}
        source.seek(round(clip_start / stream.time_base), stream=stream, backward=True, any_frame=False)
        for frame in source.decode(stream):
            index = _frame_index(timeline, frame.time)
            if index is None or index < span.start:
                continue
            if index >= span.end:
                break
            relative_end = timeline.time_of(index + 1) - clip_start
            repeats = _frames_before(relative_end, out_fps, duration) - written
            if repeats <= 0:
                continue
            pixels = frame.to_ndarray(width=width, height=height, format="yuv420p")
            for _ in range(repeats):
                # A fresh frame without a timestamp: the encoder numbers frames at the stream's rate.
                # (Reformatted frames keep the source's time base, so their pts would be misread.)
                target.mux(out.encode(av.VideoFrame.from_ndarray(pixels, format="yuv420p")))
                written += 1
        target.mux(out.encode(None))
    return MadeClip(path, written, float(out_fps), width, height)


def _nearest(candidates: np.ndarray, target: int, low: int, high: int) -> int | None:
    """The candidate in [low, high] closest to target (the earlier one on a tie), or None."""
    inside = candidates[(candidates >= low) & (candidates <= high)]
    if not len(inside):
        return None
    return int(inside[np.argmin(np.abs(inside - target))])


def _frame_index(timeline: Timeline, seconds: float | None) -> int | None:
    """The index of the frame presented at `seconds` (the nearest frame time)."""
    if seconds is None:
        return None
    position = int(np.searchsorted(timeline.times, seconds))
    candidates = [i for i in (position - 1, position) if 0 <= i < timeline.num_frames]
    return min(candidates, key=lambda i: abs(timeline.times[i] - seconds))


def _frames_before(seconds: float, fps: Fraction, duration: float) -> int:
    """Output frames whose time k / fps lies before `seconds` (and before the clip's end)."""
    limit = min(seconds, duration)
    return max(0, math.ceil(limit * float(fps) - 1e-6))

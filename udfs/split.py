"""Split videos into clips: the work of `vidlake split` on one batch of `video_files` rows.

`SceneSplitter` is the udf: `load()` once per Python worker, then `__call__(videos) -> rows` for
each pandas batch. A video is decoded once (udfs.decode) to feed its detector, its scenes go
through the clip rules (udfs.scenes), and its clips are materialized as conf says
(udfs.materialize). A video that fails gives an error row and the batch goes on.
"""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pandas as pd

from schemas.ids import clip_id
from udfs.decode import DecodeError, FrameSpec, VideoDecoder, VideoInfo, index_packets, prefetched, probe_info
from udfs.materialize import Materializer
from udfs.scenes import (
    ClipRules,
    ClipSpan,
    CutDetector,
    Timeline,
    build_detector,
    hint_scenes,
    resolution_bucket,
    scenes_from_cuts,
)

CLIP_COLUMNS = (
    "clip_id", "video_id", "clip_index", "start_s", "end_s", "start_frame", "end_frame", "num_frames",
    "fps", "width", "height", "aspect_ratio", "resolution", "detector", "detector_params", "uri", "created_at",
)
# The udf's rows: a clip (`split_error` null) or a video's error (`split_error` says why).
OUTPUT_COLUMNS = (*CLIP_COLUMNS, "split_error")


@dataclass
class DetectedVideo:
    """One decoding pass over a video: its stream, its frames' timeline, each detector's cuts."""

    info: VideoInfo
    timeline: Timeline
    cuts: dict[str, list[int]] = field(default_factory=dict)


def detect_cuts(path: str | Path, detectors: Sequence[CutDetector], decode_conf: Mapping[str, Any]) -> DetectedVideo:
    """Decodes `path` once and feeds every detector; detectors asking for the same frames share them."""
    specs = {}
    for detector in detectors:
        specs.update(detector.frame_specs())
    cores = task_cores()
    threads = int(decode_conf["threads"]) or cores
    # OpenCV converts whole batches, which it splits over its threads: by default every CPU of the
    # machine, not the task's, so N one-core tasks would each run N threads.
    cv2.setNumThreads(threads)
    decoder = conf_decoder(path, specs, decode_conf, threads, any(d.needs_every_frame for d in detectors))
    # Decoding ahead overlaps the detectors only where the task has a core to spare for it.
    depth = int(decode_conf["prefetch_batches"]) if cores > 1 else 0
    with decoder:
        for detector in detectors:
            detector.start(decoder.info)
        for batch in prefetched(decoder.batches(), depth):
            for detector in detectors:
                detector.process(batch)
    summary = decoder.summary
    timeline = Timeline(decoder.info.fps, summary.times, summary.end_time)
    return DetectedVideo(decoder.info, timeline, {d.name: d.finish(summary.num_frames) for d in detectors})


def conf_decoder(
    path: str | Path, specs: Mapping[str, FrameSpec], decode_conf: Mapping[str, Any], threads: int, every_frame: bool
) -> VideoDecoder:
    """The decoder the `split.decode` conf describes, on `threads` threads; `every_frame` (a detector
    that needs them all) turns skip_nonref off."""
    return VideoDecoder(
        path,
        specs,
        batch_frames=int(decode_conf["batch_frames"]),
        threads=threads,
        interpolation=str(decode_conf["interpolation"]),
        skip_loop_filter=bool(decode_conf["skip_loop_filter"]),
        skip_nonref=bool(decode_conf["skip_nonref"]) and not every_frame,
        large_nonref_ratio=float(decode_conf["large_nonref_ratio"]),
    )


def task_cores() -> int:
    """The cores this task may use: spark.task.cpus inside a Spark task, else the CPUs this process may run on.

    Spark runs one task per `spark.task.cpus` cores of an executor, so a decoder with more threads
    than that only competes with the other tasks' decoders.
    """
    pyspark = sys.modules.get("pyspark")  # a Spark Python worker has it loaded; elsewhere it is not imported
    context = pyspark.TaskContext.get() if pyspark is not None else None
    if context is not None:
        return max(1, int(context.cpus()))
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


class SceneSplitter:
    """The split udf: video_files rows (video_id, uri, clip_hints) in, clip and error rows out.

    `conf` is the `split` conf section; `detector` one of udfs.scenes.DETECTORS; `clip_root`
    where materialized clips go; `device` the torch device for TransNetV2.
    """

    def __init__(self, conf: Mapping[str, Any], detector: str, clip_root: str | None = None, device: str = "cpu"):
        self.conf, self.detector_name, self.device = dict(conf), detector, device
        self.rules = ClipRules.from_conf(conf["clips"])
        self.materializer = Materializer.from_conf(conf, clip_root)
        self._detector: CutDetector | None = None

    def load(self) -> None:
        """Builds the detector (TransNetV2 loads its weights here, once per worker)."""
        if self.detector_name != "hints" and self._detector is None:
            self._detector = build_detector(self.detector_name, self.conf, self.device)
            if hasattr(self._detector, "load"):
                self._detector.load()

    def detector_params(self) -> str:
        params = {"hints": {}} if self.detector_name == "hints" else {self.detector_name: self._detector.params()}
        params["clips"] = self.conf["clips"]
        params["materialize"] = self.conf["materialize"]
        return json.dumps(params, sort_keys=True)

    def __call__(self, videos: pd.DataFrame) -> pd.DataFrame:
        self.load()
        rows: list[dict] = []
        for video in videos.itertuples(index=False):
            rows.extend(self.split_one(video.video_id, video.uri, getattr(video, "clip_hints", None)))
        return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))

    def split_one(self, video_id: str, uri: str, hints: Any = None) -> list[dict]:
        """The clip rows of one video, or one error row saying why it has none."""
        return self.split_video(video_id, uri, hints).rows

    def split_video(self, video_id: str, uri: str, hints: Any = None) -> VideoSplit:
        """The rows of one video (clips, or one error row) and the cuts its detector found."""
        self.load()
        now = datetime.now(timezone.utc)
        cuts: list[int] = []
        try:
            clips, info, timeline, cuts, problems = self._clips(uri, _as_hint_list(hints))
            rows = self._clip_rows(video_id, uri, clips, info, timeline, now)
        except (DecodeError, ClipError) as error:
            return VideoSplit([self._error_row(video_id, str(error), now)], cuts)
        except (av.FFmpegError, OSError) as error:  # writing a clip file failed
            return VideoSplit([self._error_row(video_id, f"materializing clips failed: {error}", now)], cuts)
        if problems:
            rows.append(self._error_row(video_id, "; ".join(problems), now))
        return VideoSplit(rows, cuts)

    def _clips(self, uri: str, hints: list[dict] | None):
        """(clips, video info, timeline, detected cuts, problems with the hints) of one video."""
        problems: list[str] = []
        cuts: list[int] = []
        if self.detector_name == "hints":
            if not hints:
                raise ClipError("the video has no clip hints (the hints detector uses the spans its source ships)")
            packets = index_packets(uri)
            info, timeline = packets.info, Timeline(packets.info.fps, packets.times, packets.end_time)
            self._check_resolution(info)
            scenes, problems = hint_scenes(hints, timeline)
        else:
            if self.rules.min_short_side:
                self._check_resolution(probe_info(uri))  # before paying for the decode
            detected = detect_cuts(uri, [self._detector], self.conf["decode"])
            info, timeline, cuts = detected.info, detected.timeline, detected.cuts[self.detector_name]
            scenes = scenes_from_cuts(cuts, timeline.num_frames)
        clips = self.rules.clips(scenes, timeline)
        if not clips:
            raise ClipError(
                f"no clips: none of its {len(scenes)} scene(s) reaches split.clips.min_clip_s "
                f"({self.rules.min_clip_s} s) after dropping {self.rules.drop_at_cut_s} s at each cut"
            )
        return clips, info, timeline, cuts, problems

    def _check_resolution(self, info: VideoInfo) -> None:
        minimum = int(self.rules.min_short_side)
        if minimum and min(info.width, info.height) < minimum:
            raise ClipError(
                f"resolution {info.width}x{info.height} is below split.clips.min_short_side ({minimum})"
            )

    def _clip_rows(
        self, video_id: str, uri: str, clips: list[ClipSpan], info: VideoInfo, timeline: Timeline, now: datetime
    ) -> list[dict]:
        params = self.detector_params()
        spans = self.materializer.align(uri, clips, self.rules.min_frames(timeline.fps))
        if not spans:
            raise ClipError(
                f"no clips: split.materialize=copy found no keyframes around its {len(clips)} clip(s) "
                f"leaving at least {self.rules.min_clip_s} s"
            )
        rows = []
        for index, span in enumerate(spans):
            cid = clip_id(video_id, span.start, span.end)
            made = self.materializer.write(uri, video_id, cid, span, timeline, info)
            rows.append(
                {
                    "clip_id": cid,
                    "video_id": video_id,
                    "clip_index": index,
                    "start_s": timeline.time_of(span.start),
                    "end_s": timeline.time_of(span.end),
                    "start_frame": span.start,
                    "end_frame": span.end,
                    "num_frames": made.num_frames,
                    "fps": made.fps,
                    "width": made.width,
                    "height": made.height,
                    "aspect_ratio": made.height / made.width,
                    "resolution": resolution_bucket(made.width, made.height),
                    "detector": self.detector_name,
                    "detector_params": params,
                    "uri": made.uri,
                    "created_at": now,
                    "split_error": None,
                }
            )
        return rows

    def _error_row(self, video_id: str, reason: str, now: datetime) -> dict:
        row = dict.fromkeys(OUTPUT_COLUMNS)
        row.update(video_id=video_id, detector=self.detector_name, created_at=now, split_error=reason)
        return row


@dataclass
class VideoSplit:
    rows: list[dict]
    cuts: list[int]


class ClipError(Exception):
    """The video decodes but cannot give clips under the rules (no hints, too small)."""


def _as_hint_list(hints: Any) -> list[dict] | None:
    """Clip hints as a list of dicts, from what Arrow hands pandas (arrays of dicts or None)."""
    if hints is None or (isinstance(hints, float) and np.isnan(hints)):
        return None
    return [dict(hint) for hint in hints]

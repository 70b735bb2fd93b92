"""NSFW score from NudeNet's detector (the `320n.onnx` YOLO model the `nudenet` package ships).

Frames are prepared as NudeNet's own `detect` prepares an image file (padded to a square at the
bottom and right, resized to 320x320, scaled to 0-1, channels in the order its model then receives:
for a 3-channel image OpenCV reads, its RGBA2BGR conversion and blobFromImage's swapRB swap twice,
so BGR), batched through one onnxruntime session. `nsfw` is
the highest confidence of any unsafe class (`score.nsfw.unsafe_classes`) over all anchors of all
sampled frames: NudeNet reports a detection from 0.2 up, so below 0.2 nothing would be reported.
"""
from __future__ import annotations

import importlib.metadata
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from udfs.device import cached_model
from udfs.scorers.base import Scorer, per_frame_values
from udfs.weights import ModelSource, file_digest, resolve

ORIGIN = "the nudenet package (pip install nudenet), which ships 320n.onnx"
# NudeNet 3's class order (the detector's output rows after the 4 box coordinates).
LABELS = (
    "FEMALE_GENITALIA_COVERED", "FACE_FEMALE", "BUTTOCKS_EXPOSED", "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED", "MALE_BREAST_EXPOSED", "ANUS_EXPOSED", "FEET_EXPOSED", "BELLY_COVERED",
    "FEET_COVERED", "ARMPITS_COVERED", "ARMPITS_EXPOSED", "FACE_MALE", "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED", "ANUS_COVERED", "FEMALE_BREAST_COVERED", "BUTTOCKS_COVERED",
)


def packaged_model() -> str | None:
    try:
        import nudenet
    except ImportError:
        return None
    return str(Path(nudenet.__file__).parent / "320n.onnx")


def prepare(frame: np.ndarray, size: int) -> np.ndarray:
    """One (H, W, 3) uint8 RGB frame as NudeNet's (3, size, size) float32 input (BGR planes, see above)."""
    height, width = frame.shape[:2]
    side = max(height, width)
    padded = cv2.copyMakeBorder(frame, 0, side - height, 0, side - width, cv2.BORDER_CONSTANT, value=0)
    resized = cv2.resize(padded, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(resized.transpose(2, 0, 1)[::-1], dtype=np.float32) / 255.0


def build_session(path: str, use_cuda: bool, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    available = onnxruntime.get_available_providers()
    providers = ["CUDAExecutionProvider"] if use_cuda and "CUDAExecutionProvider" in available else []
    return onnxruntime.InferenceSession(path, sess_options=options, providers=providers + ["CPUExecutionProvider"])


class NsfwScorer(Scorer):
    name = "nsfw"
    columns = ("nsfw",)

    def __init__(self, conf: Mapping[str, Any], models: Mapping[str, Any], device: str = "cpu"):
        super().__init__(conf, models, device)
        self.path = resolve(self.model_sources(models)[0])
        unknown = set(conf["unsafe_classes"]) - set(LABELS)
        if unknown:
            raise ValueError(f"score.nsfw.unsafe_classes: {sorted(unknown)} are not NudeNet classes {LABELS}")
        self.unsafe_rows = np.array([4 + LABELS.index(name) for name in conf["unsafe_classes"]])
        self.session = None

    @classmethod
    def model_sources(cls, models: Mapping[str, Any]) -> list[ModelSource]:
        return [ModelSource("nsfw", models.get("nsfw", {}).get("path") or packaged_model(), "file", ORIGIN)]

    def load(self) -> NsfwScorer:
        if self.session is None:
            use_cuda = self.device.startswith("cuda")
            self.session = cached_model(("nsfw", self.path, use_cuda),
                                        lambda: build_session(self.path, use_cuda, int(self.conf["threads"])))
        return self

    def version(self) -> str:
        return f"nudenet-320n:{file_digest(self.path)} nudenet {_package_version()}"

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        """The highest unsafe-class confidence of each frame."""
        size = int(self.conf["input_size"])
        blob = np.stack([prepare(frame, size) for frame in frames])
        (output,) = self.session.run(None, {self.session.get_inputs()[0].name: blob})
        return output[:, self.unsafe_rows, :].max(axis=(1, 2)).astype(np.float64)

    def score_frames(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        values = per_frame_values(list(batch["frames"]), self.frame_scores, int(self.conf["batch_size"]))
        return [{"nsfw": float(v.max())} for v in values]


def _package_version() -> str:
    try:
        return importlib.metadata.version("nudenet")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"

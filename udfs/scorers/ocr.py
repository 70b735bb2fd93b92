"""Text area ratio from PP-OCR text detection (the PP-OCRv4 detector `rapidocr-onnxruntime` ships).

Per frame: the area of the detected text boxes over the frame's area; `ocr_area_ratio` is the max
over the sampled frames (a title card on one frame is enough to reject a clip). Only detection runs:
the ratio needs no recognition.
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
from udfs.scorers.base import Scorer
from udfs.weights import ModelSource, file_digest, resolve

ORIGIN = "the rapidocr-onnxruntime package (pip install rapidocr-onnxruntime), which ships ch_PP-OCRv4_det_infer.onnx"
DETECTOR_KEYS = ("limit_side_len", "limit_type", "thresh", "box_thresh", "unclip_ratio", "max_candidates")


def packaged_model() -> str | None:
    """The PP-OCRv4 detection model rapidocr-onnxruntime ships, if it is installed."""
    try:
        import rapidocr_onnxruntime
    except ImportError:
        return None
    return str(Path(rapidocr_onnxruntime.__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx")


def build_detector(model_path: str, conf: Mapping[str, Any], use_cuda: bool):
    from rapidocr_onnxruntime.ch_ppocr_det import TextDetector

    config = {key: conf[key] for key in DETECTOR_KEYS}
    config.update(
        model_path=model_path, use_cuda=use_cuda, use_dml=False, use_dilation=True, score_mode="fast",
        mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5],
        intra_op_num_threads=int(conf["threads"]), inter_op_num_threads=1,
    )
    return TextDetector(config)


def text_area_ratio(boxes: np.ndarray | None, height: int, width: int) -> float:
    """Total area of the text boxes (quadrilaterals in pixels) over the frame area, at most 1."""
    if boxes is None or len(boxes) == 0:
        return 0.0
    area = sum(abs(cv2.contourArea(np.asarray(box, dtype=np.float32))) for box in boxes)
    return float(min(1.0, area / (height * width)))


class OcrScorer(Scorer):
    name = "ocr"
    columns = ("ocr_area_ratio",)

    def __init__(self, conf: Mapping[str, Any], models: Mapping[str, Any], device: str = "cpu"):
        super().__init__(conf, models, device)
        self.path = resolve(self.model_sources(models)[0])
        self.detector = None

    @classmethod
    def model_sources(cls, models: Mapping[str, Any]) -> list[ModelSource]:
        return [ModelSource("ocr", models.get("ocr", {}).get("path") or packaged_model(), "file", ORIGIN)]

    def load(self) -> OcrScorer:
        if self.detector is None:
            use_cuda = self.device.startswith("cuda")
            key = ("ocr", self.path, use_cuda, tuple(self.conf[k] for k in DETECTOR_KEYS))
            self.detector = cached_model(key, lambda: build_detector(self.path, self.conf, use_cuda))
        return self

    def version(self) -> str:
        return f"pp-ocrv4-det:{file_digest(self.path)} rapidocr-onnxruntime {_package_version()}"

    def frame_ratio(self, frame: np.ndarray) -> float:
        """The text area ratio of one (H, W, 3) uint8 RGB frame."""
        boxes, _ = self.detector(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        return text_area_ratio(boxes, frame.shape[0], frame.shape[1])

    def score_frames(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        return [{"ocr_area_ratio": max(self.frame_ratio(frame) for frame in frames)} for frames in batch["frames"]]


def _package_version() -> str:
    try:
        return importlib.metadata.version("rapidocr-onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"

"""LAION's watermark detector: timm EfficientNet-B3 with a 2-class MLP head, from its original weights file.

The layout is LAION-AI/LAION-5B-WatermarkDetection's (`models/watermark_model_v1.pt`): the
classifier is Linear 1536-625, ReLU, Dropout 0.3, Linear 625-256, ReLU, Linear 256-2; frames are
resized to 256x256 (aspect not kept) and ImageNet-normalised. Its example_use.py reads the softmax
as (watermark, clear), so the watermark probability is class 0 (`score.watermark.watermark_class`).
`pwatermark` is the mean over the sampled frames: one frame with a logo-like shape sways a max.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from udfs.clip import compute_dtype, to_device_images
from udfs.device import cached_model
from udfs.scorers.base import Scorer, per_frame_values
from udfs.weights import ModelSource, file_digest, resolve

ORIGIN = "https://github.com/LAION-AI/LAION-5B-WatermarkDetection (models/watermark_model_v1.pt)"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def build_model() -> nn.Module:
    """The detector's architecture with random weights (the weights file overwrites every parameter)."""
    import timm

    model = timm.create_model("efficientnet_b3", pretrained=False, num_classes=2)
    model.classifier = nn.Sequential(
        nn.Linear(in_features=1536, out_features=625),
        nn.ReLU(),
        nn.Dropout(p=0.3),
        nn.Linear(in_features=625, out_features=256),
        nn.ReLU(),
        nn.Linear(in_features=256, out_features=2),
    )
    return model


def load_model(path: str, device: str, dtype: torch.dtype) -> nn.Module:
    model = build_model()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.to(device=device, dtype=dtype).eval().to(memory_format=torch.channels_last)


class WatermarkScorer(Scorer):
    name = "watermark"
    columns = ("pwatermark",)
    uses_gpu = True

    def __init__(self, conf: Mapping[str, Any], models: Mapping[str, Any], device: str = "cpu"):
        super().__init__(conf, models, device)
        self.path = resolve(self.model_sources(models)[0])
        self.dtype = compute_dtype(conf["precision"], device)
        self.model: nn.Module | None = None

    @classmethod
    def model_sources(cls, models: Mapping[str, Any]) -> list[ModelSource]:
        return [ModelSource("watermark", models.get("watermark", {}).get("path"), "file", ORIGIN)]

    def load(self) -> WatermarkScorer:
        if self.model is None:
            self.model = cached_model(("watermark", self.path, self.device, self.dtype),
                                      lambda: load_model(self.path, self.device, self.dtype))
        return self

    def version(self) -> str:
        return f"laion-watermark-efficientnet_b3:{file_digest(self.path)}"

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> the detector's input: 256x256 bilinear, ImageNet-normalised, on the device."""
        size = int(self.conf["image_size"])
        images = to_device_images(frames, self.device).float()
        resized = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        mean = torch.tensor(IMAGENET_MEAN, device=resized.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=resized.device).view(1, 3, 1, 1)
        return ((resized.clamp(0, 255) / 255.0 - mean) / std).contiguous(memory_format=torch.channels_last)

    def frame_probabilities(self, frames: np.ndarray) -> np.ndarray:
        """The watermark probability of each frame."""
        with torch.inference_mode():
            logits = self.model(self.preprocess(frames).to(self.dtype)).float()
            return F.softmax(logits, dim=1)[:, int(self.conf["watermark_class"])].cpu().numpy().astype(np.float64)

    def score_frames(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        values = per_frame_values(list(batch["frames"]), self.frame_probabilities, int(self.conf["batch_size"]))
        return [{"pwatermark": float(v.mean())} for v in values]

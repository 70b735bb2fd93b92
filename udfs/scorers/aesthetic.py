"""LAION's improved aesthetic predictor: CLIP ViT-L/14 image embeddings, L2-normalised, into an MLP head.

The head is loaded from the original `.pth` state dict (christophschuhmann/improved-aesthetic-predictor,
`sac+logos+ava1-l14-linearMSE.pth`): `layers.0/2/4/6/7` are Linear 768-1024-128-64-16-1, with dropouts
between the first four. Scores are on the LAION 1-10 scale; `aesthetic` is the mean over the sampled
frames and `aesthetic_frames` keeps each frame's score in time order.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from udfs.clip import ClipEncoder
from udfs.device import cached_model
from udfs.scorers.base import Scorer, per_frame_values
from udfs.weights import ModelSource, file_digest, resolve

CLIP_ORIGIN = "the Hugging Face hub (`huggingface-cli download openai/clip-vit-large-patch14` where it is reachable)"
HEAD_ORIGIN = (
    "https://github.com/christophschuhmann/improved-aesthetic-predictor "
    "(sac+logos+ava1-l14-linearMSE.pth)"
)


class AestheticHead(nn.Module):
    """The improved aesthetic predictor's MLP, laid out as its state dict expects."""

    def __init__(self, input_size: int = 768):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def load_head(path: str, device: str) -> AestheticHead:
    """The MLP head from its original `.pth` (a plain state dict; the input size is read from it)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    head = AestheticHead(input_size=int(state["layers.0.weight"].shape[1]))
    head.load_state_dict(state)
    return head.to(device).eval()


class AestheticScorer(Scorer):
    name = "aesthetic"
    columns = ("aesthetic", "aesthetic_frames")
    uses_gpu = True

    def __init__(self, conf: Mapping[str, Any], models: Mapping[str, Any], device: str = "cpu"):
        super().__init__(conf, models, device)
        self.clip_path = resolve(self.model_sources(models)[0], bool(conf.get("allow_download", False)))
        self.head_path = resolve(self.model_sources(models)[1])
        self.encoder: ClipEncoder | None = None
        self.head: AestheticHead | None = None

    @classmethod
    def model_sources(cls, models: Mapping[str, Any]) -> list[ModelSource]:
        return [
            ModelSource("clip", models.get("clip", {}).get("path"), "hf", CLIP_ORIGIN),
            ModelSource("aesthetic", models.get("aesthetic", {}).get("path"), "file", HEAD_ORIGIN),
        ]

    def load(self) -> AestheticScorer:
        if self.head is None:
            self.encoder = ClipEncoder(self.clip_path, self.device, self.conf["precision"])
            self.head = cached_model(("aesthetic-head", self.head_path, self.device),
                                     lambda: load_head(self.head_path, self.device))
        return self

    def version(self) -> str:
        return f"laion-improved-aesthetic:{file_digest(self.head_path)}+clip:{self.clip_path}"

    def frame_scores(self, frames: np.ndarray) -> np.ndarray:
        """The aesthetic score of each (H, W, 3) uint8 frame."""
        embeddings = self.encoder.image_embeddings(frames, normalize=True)
        with torch.inference_mode():
            return self.head(embeddings).squeeze(-1).float().cpu().numpy().astype(np.float64)

    def score_frames(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        scores = per_frame_values(list(batch["frames"]), self.frame_scores, int(self.conf["batch_size"]))
        return [{"aesthetic": float(s.mean()), "aesthetic_frames": s.tolist()} for s in scores]

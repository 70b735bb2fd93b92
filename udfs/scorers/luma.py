"""Brightness and sharpness: cheap CPU measures of the sampled frames' luma.

`brightness` is the mean BT.601 luma (0-255) over the sampled frames; `sharpness` the mean over
frames of the variance of the Laplacian of the luma, measured at the sampling size
(`score.frames.size`), so clips of every resolution are measured at the same scale.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import pandas as pd

from udfs.scorers.base import Scorer


def luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma of an (H, W, 3) uint8 RGB frame, as uint8."""
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def laplacian_variance(grey: np.ndarray) -> float:
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


class LumaScorer(Scorer):
    name = "luma"
    columns = ("brightness", "sharpness")

    def version(self) -> str:
        return f"luma-bt601+laplacian-var opencv {cv2.__version__}"

    def score_frames(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        rows = []
        for frames in batch["frames"]:
            greys = [luma(frame) for frame in frames]
            rows.append({
                "brightness": float(np.mean([grey.mean() for grey in greys])),
                "sharpness": float(np.mean([laplacian_variance(grey) for grey in greys])),
            })
        return rows

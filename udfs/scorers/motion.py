"""Motion: mean Farnebäck optical-flow magnitude between frame pairs, at a reference resolution.

Each pair is two frames `pair_gap_s` apart (0.5 s: the 2 fps sampling Data-Juicer uses), placed at
the centres of `pairs` equal spans of the clip. Both frames are turned grey and resized so their
short side is `reference_short_side`, so a 4K clip and a 480p clip of the same scene give the same
number: pixels of displacement per pair gap, at the reference size. `motion` is the mean over pairs.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np
import pandas as pd

from udfs.frames import output_size
from udfs.scorers.base import Scorer

FARNEBACK_KEYS = ("pyr_scale", "levels", "winsize", "iterations", "poly_n", "poly_sigma")


def pair_times(start_s: float, end_s: float, pairs: int, gap_s: float) -> np.ndarray:
    """(pairs, 2) times: each pair starts at the centre of one of `pairs` equal spans of [start_s, end_s - gap).

    A clip shorter than the gap gets pairs of its first and last instants."""
    gap = min(gap_s, max(end_s - start_s, 0.0) * 0.999)
    first = start_s + (np.arange(pairs) + 0.5) * (end_s - start_s - gap) / pairs
    return np.stack([first, first + gap], axis=1)


def grey_at_reference(frame: np.ndarray, short_side: int) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> grey, resized so its short side is `short_side`."""
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    width, height = output_size(grey.shape[1], grey.shape[0], short_side)
    # INTER_AREA only when shrinking: enlarging with it replicates pixels, and the blocks mislead the flow.
    shrinking = width < grey.shape[1]
    return cv2.resize(grey, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def flow_magnitude(first: np.ndarray, second: np.ndarray, params: Mapping[str, Any]) -> float:
    """Mean Farnebäck flow magnitude (pixels) between two grey frames of the same size."""
    flow = cv2.calcOpticalFlowFarneback(
        first, second, None, float(params["pyr_scale"]), int(params["levels"]), int(params["winsize"]),
        int(params["iterations"]), int(params["poly_n"]), float(params["poly_sigma"]), 0,
    )
    return float(np.sqrt((flow**2).sum(axis=-1)).mean())


class MotionScorer(Scorer):
    name = "motion"
    columns = ("motion",)
    needs_pairs = True
    needs_frames = False

    def version(self) -> str:
        params = ",".join(f"{key}={self.conf[key]}" for key in FARNEBACK_KEYS)
        return (f"opencv-farneback {cv2.__version__} ({params}) gap={self.conf['pair_gap_s']}s "
                f"ref={self.conf['reference_short_side']}px")

    def pair_times(self, start_s: float, end_s: float) -> np.ndarray:
        return pair_times(start_s, end_s, int(self.conf["pairs"]), float(self.conf["pair_gap_s"]))

    def clip_motion(self, pairs: np.ndarray) -> float:
        """The mean flow magnitude over (p, 2, H, W, 3) uint8 RGB frame pairs."""
        short_side = int(self.conf["reference_short_side"])
        magnitudes = [
            flow_magnitude(grey_at_reference(a, short_side), grey_at_reference(b, short_side), self.conf)
            for a, b in pairs
        ]
        return float(np.mean(magnitudes))

    def score_frames(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        return [{"motion": self.clip_motion(pairs)} for pairs in batch["pairs"]]

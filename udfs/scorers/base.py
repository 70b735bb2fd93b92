"""What every scorer is: a class built from conf that checks its weights, loads once per worker and
scores a batch of clips' sampled frames.

A batch is a pandas DataFrame with one row per clip: `clip_id`, `frames` ((n, H, W, 3) uint8 RGB,
the sampled frames in time order), `pairs` ((p, 2, h, w) uint8 grey frame pairs, for motion) and
`decode_error` (why the clip has no frames, else None). A scorer returns a DataFrame with `clip_id`,
its own columns (schemas.tables.SCORES) and `error` (why it gave no score for that clip, else None).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from udfs.weights import ModelSource


class Scorer(ABC):
    """One scorer. Subclasses set `name`, `columns`, and implement `score_frames`."""

    name: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    uses_gpu: ClassVar[bool] = False
    needs_pairs: ClassVar[bool] = False
    needs_frames: ClassVar[bool] = True

    def __init__(self, conf: Mapping[str, Any], models: Mapping[str, Any], device: str = "cpu"):
        """`conf` is this scorer's section of `score` (score.<name>), `models` the `models` section."""
        self.conf, self.models, self.device = dict(conf), dict(models), device

    @classmethod
    def model_sources(cls, models: Mapping[str, Any]) -> list[ModelSource]:
        """The weights this scorer needs (checked on the driver before anything is scored)."""
        return []

    def load(self) -> Scorer:
        """Load the models; subclasses go through udfs.device.cached_model, so a worker loads each once."""
        return self

    @abstractmethod
    def version(self) -> str:
        """The model and version that produced the scores, for `scorer_versions`."""

    @abstractmethod
    def score_frames(self, batch: pd.DataFrame) -> list[dict[str, Any]]:
        """One dict of this scorer's columns per row of `batch` (all rows have frames)."""

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        self.load()
        source = "pairs" if self.needs_pairs else "frames"
        usable = batch[source].map(lambda value: value is not None) & batch["decode_error"].isna()
        rows: list[dict[str, Any]] = [dict.fromkeys(self.columns) for _ in range(len(batch))]
        errors: list[str | None] = [None if ok else (err or "no frames") for ok, err in
                                    zip(usable, batch["decode_error"], strict=True)]
        if usable.any():
            scored = self.score_frames(batch[usable.to_numpy()].reset_index(drop=True))
            for position, values in zip(np.flatnonzero(usable.to_numpy()), scored, strict=True):
                rows[position] = values
        return self._frame(batch, rows, errors)

    def error_rows(self, batch: pd.DataFrame, message: str) -> pd.DataFrame:
        """No score for any clip of the batch, with `message` as each clip's error."""
        return self._frame(batch, [dict.fromkeys(self.columns) for _ in range(len(batch))], [message] * len(batch))

    def _frame(self, batch: pd.DataFrame, rows: list[dict[str, Any]], errors: list[str | None]) -> pd.DataFrame:
        out = pd.DataFrame(rows, columns=list(self.columns))
        out.insert(0, "clip_id", batch["clip_id"].to_numpy())
        out["error"] = errors
        return out


def per_frame_values(
    stacks: list[np.ndarray], model: Callable[[np.ndarray], np.ndarray], batch_size: int
) -> list[np.ndarray]:
    """`model` over every frame of every clip, in batches of at most `batch_size` same-size frames.

    `stacks` holds each clip's (n, H, W, 3) frames; clips of the same frame size share batches
    (clips of different aspect ratios cannot be stacked). `model` maps (m, H, W, 3) uint8 to m
    values (or rows); the result is one array of per-frame values per clip, in the input order.
    """
    results: list[np.ndarray | None] = [None] * len(stacks)
    groups: dict[tuple, list[int]] = {}
    for position, stack in enumerate(stacks):
        groups.setdefault(tuple(stack.shape[1:]), []).append(position)
    for positions in groups.values():
        frames = np.concatenate([stacks[p] for p in positions])
        values = np.concatenate([model(frames[i : i + batch_size]) for i in range(0, len(frames), batch_size)])
        bounds = np.cumsum([len(stacks[p]) for p in positions])[:-1]
        for position, part in zip(positions, np.split(values, bounds), strict=True):
            results[position] = part
    return results

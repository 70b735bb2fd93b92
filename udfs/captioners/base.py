"""What every captioner shares: the rows it takes and gives, weights lookup, frame grids, hygiene.

A captioner turns rows (one per clip and caption kind: clip_id, uri, start_s, end_s, kind) into
rows of the `captions` table. Its work is split in two so decoding overlaps generation:
`prepare(rows)` decodes the frames and builds the model's inputs on the CPU (run on a thread
pool, batches ahead), `generate(prepared)` runs the model on the task's device. Calling the
captioner does both.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from udfs.caption_text import HygieneRules, tidy
from udfs.frames import FrameSampleError, FrameSampling, sample_frames
from udfs.weights import MissingWeightsError, ModelSource, resolve

INPUT_COLUMNS = ("clip_id", "uri", "start_s", "end_s", "kind")
CAPTION_COLUMNS = (
    "clip_id", "model", "kind", "prompt", "caption", "words", "quality", "match", "error",
    "model_id", "model_revision", "created_at",
)


# Where a user gets each captioner's weights, for the missing-weights error.
ORIGINS = {
    "florence2": "the Hugging Face hub (florence-community/Florence-2-large: Florence-2 in transformers' own format)",
    "qwen2_5_vl": "the Hugging Face hub (Qwen/Qwen2.5-VL-7B-Instruct or Qwen/Qwen2.5-VL-3B-Instruct)",
}


@dataclass(frozen=True)
class CaptionModel:
    """A captioner's weights: `models.<name>.path` (hub id or local folder) and `models.<name>.revision`."""

    name: str
    path: str | None
    revision: str | None = None

    @classmethod
    def from_conf(cls, name: str, models_conf: Mapping[str, Any]) -> CaptionModel:
        entry = models_conf.get(name) or {}
        return cls(name=name, path=entry.get("path"), revision=entry.get("revision"))

    def resolve(self, allow_download: bool = False) -> str:
        """The local folder of the weights, or MissingWeightsError naming the model, where it looked
        and how to provide them. Touches the network only with `allow_download`."""
        origin = ORIGINS.get(self.name, "the Hugging Face hub")
        return resolve(ModelSource(self.name, self.path, "hf", origin, self.revision), allow_download)


def load_pretrained(
    model_class, model_type: str, weights: CaptionModel, device: str, dtype: str, attn_implementation: str,
    allow_download: bool = False,
):
    """(model on `device` in eval mode, its processor, the revision that loaded) through the real
    transformers loading code. Weights that do not fit the architecture are an error, never a
    silently random layer."""
    import torch
    from transformers import AutoProcessor

    folder = weights.resolve(allow_download)
    check_model_type(weights, folder, model_type)
    torch_dtype = getattr(torch, dtype) if device.startswith("cuda") else torch.float32
    processor = AutoProcessor.from_pretrained(folder)
    model, info = model_class.from_pretrained(
        folder, dtype=torch_dtype, attn_implementation=attn_implementation, output_loading_info=True
    )
    broken = sorted(info["missing_keys"]) + sorted(str(k) for k in info["mismatched_keys"])
    if broken:
        raise MissingWeightsError(
            f"model {weights.name!r}: {weights.path} does not hold {model_class.__name__} weights ({len(broken)} "
            f"missing or mismatched, e.g. {broken[0]}); models.{weights.name}.path must name a checkpoint in "
            "transformers' own format"
        )
    return model.to(device).eval(), processor, loaded_revision(folder)


def check_model_type(weights: CaptionModel, folder: str, model_type: str) -> None:
    """MissingWeightsError when the folder holds another kind of model than the captioner runs."""
    found = json.loads((Path(folder) / "config.json").read_text()).get("model_type")
    if found != model_type:
        raise MissingWeightsError(
            f"model {weights.name!r}: models.{weights.name}.path = {weights.path} holds a {found!r} model, "
            f"not {model_type!r}; point it at a {model_type} checkpoint"
        )


def loaded_revision(folder: str) -> str:
    """The hub commit of a cached snapshot (its folder name); for any other folder a fingerprint of
    its config and weight files (names and sizes), since a folder has no revision of its own."""
    path = Path(folder)
    if path.parent.name == "snapshots":
        return path.name
    digest = hashlib.sha256((path / "config.json").read_bytes())
    for weights_file in sorted(path.glob("*.safetensors")) + sorted(path.glob("*.bin")):
        digest.update(f"{weights_file.name}:{weights_file.stat().st_size}".encode())
    return f"local-{digest.hexdigest()[:12]}"


def tile_grid(frames: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """rows x cols frames (in time order, row by row) tiled into one image, as MiraData captions
    a clip: (n, H, W, 3) -> (rows*H, cols*W, 3)."""
    if len(frames) != rows * cols:
        raise ValueError(f"a {rows}x{cols} grid needs {rows * cols} frames, got {len(frames)}")
    _, height, width, channels = frames.shape
    grid = frames.reshape(rows, cols, height, width, channels).transpose(0, 2, 1, 3, 4)
    return np.ascontiguousarray(grid.reshape(rows * height, cols * width, channels))


@dataclass
class Prepared:
    """A batch of rows ready for the model: the rows, each row's frames (None where decoding
    failed, with the reason in `errors`), and the model inputs of the rows that decoded."""

    rows: pd.DataFrame
    frames: list[np.ndarray | None]
    errors: list[str | None]
    inputs: Any = None
    extra: dict = field(default_factory=dict)

    @property
    def ok(self) -> list[int]:
        return [i for i, error in enumerate(self.errors) if error is None]


def check_rows(rows: pd.DataFrame, columns: Sequence[str] = INPUT_COLUMNS) -> None:
    missing = [c for c in columns if c not in rows.columns]
    if missing:
        raise ValueError(f"caption rows lack column(s) {', '.join(missing)}")


def decode_clips(rows: pd.DataFrame, sampling: FrameSampling) -> tuple[list[np.ndarray | None], list[str | None]]:
    """Each row's sampled frames, decoding a clip once however many kinds ask for it."""
    by_clip: dict[str, tuple[np.ndarray | None, str | None]] = {}
    for row in rows.itertuples(index=False):
        if row.clip_id in by_clip:
            continue
        try:
            by_clip[row.clip_id] = (
                sample_frames(row.uri, float(row.start_s), float(row.end_s), sampling.n, sampling.size, sampling.where),
                None,
            )
        except (FrameSampleError, ValueError) as error:
            by_clip[row.clip_id] = (None, f"frames: {error}")
    frames = [by_clip[c][0] for c in rows["clip_id"]]
    errors = [by_clip[c][1] for c in rows["clip_id"]]
    return frames, errors


def caption_rows(
    rows: pd.DataFrame,
    model: str,
    prompts: Sequence[str | None],
    texts: Sequence[str | None],
    errors: Sequence[str | None],
    rules: HygieneRules,
    model_id: str | None,
    model_revision: str | None,
) -> pd.DataFrame:
    """`captions` rows: cleaned captions with words and quality; a failed row has quality
    `error`, no caption and the reason, so it is visible instead of dropped."""
    records = []
    now = pd.Timestamp.now(tz="UTC")
    for row, prompt, text, error in zip(rows.itertuples(index=False), prompts, texts, errors, strict=True):
        record = {
            "clip_id": row.clip_id, "model": model, "kind": row.kind, "prompt": prompt, "caption": None,
            "words": None, "quality": "error", "match": None, "error": error, "model_id": model_id,
            "model_revision": model_revision, "created_at": now,
        }
        if error is None:
            cleaned = tidy(text, prompt, rules)
            record.update(caption=cleaned.caption or None, words=cleaned.words, quality=cleaned.quality)
        records.append(record)
    frame = pd.DataFrame.from_records(records, columns=list(CAPTION_COLUMNS))
    return frame.astype({"words": "Int32", "match": "float64"})

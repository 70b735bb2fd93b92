"""The shared machinery of model captioners: load once per worker, prepare on the CPU, generate on the device."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from udfs.caption_text import DEFAULT_RULES, HygieneRules
from udfs.captioners.base import (
    CaptionModel,
    Prepared,
    caption_rows,
    check_rows,
    decode_clips,
    load_pretrained,
)
from udfs.device import cached_model, task_device
from udfs.frames import FrameSampling

# frames per row, caption per row -> CLIP similarity per row (None where it cannot be computed)
Matcher = Callable[[Sequence[np.ndarray], Sequence[str | None]], list[float | None]]

GENERATION_KEYS = ("max_new_tokens", "min_new_tokens", "num_beams", "repetition_penalty", "length_penalty")


class VLMCaptioner:
    """A vision-language captioner: `conf` is its `caption.<name>` section, `models` the `models` section.

    Subclasses say how frames become model inputs (`build_inputs`) and which prompt each kind gets.
    """

    name = ""
    model_type = ""  # config.json's model_type of a checkpoint this captioner runs
    model_class_name = ""

    def __init__(
        self,
        conf: Mapping[str, Any],
        models: Mapping[str, Any],
        rules: HygieneRules = DEFAULT_RULES,
        matcher: Matcher | None = None,
        device: str | None = None,
        dtype: str = "bfloat16",
        attn_implementation: str = "sdpa",
        allow_download: bool = False,
    ):
        self.conf = dict(conf)
        self.weights = CaptionModel.from_conf(self.name, models)
        self.allow_download = allow_download
        self.rules = rules
        self.matcher = matcher
        self.device = device
        self.dtype = dtype
        self.attn_implementation = attn_implementation
        self.prompts: dict[str, str] = dict(self.conf["prompts"])
        self.generation = {k: self.conf["generation"][k] for k in GENERATION_KEYS if k in self.conf["generation"]}
        self.model = self.processor = self.revision = None

    @property
    def kinds(self) -> list[str]:
        return list(self.prompts)

    @property
    def batch_size(self) -> int:
        return int(self.conf["batch_size"])

    def sampling(self) -> FrameSampling:
        raise NotImplementedError

    def build_inputs(self, rows: pd.DataFrame, frames: Sequence[np.ndarray]) -> Any:
        """The processor's output (tensors on the CPU) for rows whose frames decoded."""
        raise NotImplementedError

    def new_tokens(self, inputs: Any, output_ids) -> Any:
        """The generated part of `generate`'s output."""
        raise NotImplementedError

    def load(self) -> None:
        """Loads model and processor once per Python worker (and device, dtype)."""
        import transformers

        if self.model is not None:
            return
        device = self.device or task_device()
        model_class = getattr(transformers, self.model_class_name)
        key = (self.name, self.weights, device, self.dtype, self.attn_implementation)
        self.model, self.processor, self.revision = cached_model(
            key,
            lambda: load_pretrained(
                model_class, self.model_type, self.weights, device, self.dtype, self.attn_implementation,
                self.allow_download,
            ),
        )
        self.device = device
        self._after_load()

    def _after_load(self) -> None:
        """Hook for processor settings a subclass needs (e.g. left padding)."""

    def check_kinds(self, kinds: Sequence[str]) -> None:
        unknown = [k for k in kinds if k not in self.prompts]
        if unknown:
            raise ValueError(
                f"{self.name} has no prompt for kind(s) {', '.join(unknown)}; its kinds are {', '.join(self.prompts)} "
                f"(add one under caption.{self.name}.prompts)"
            )

    def prepare(self, rows: pd.DataFrame) -> Prepared:
        """Decodes the rows' frames and builds the model inputs; CPU only, safe on a thread pool."""
        check_rows(rows)
        rows = rows.reset_index(drop=True)
        self.check_kinds(rows["kind"].unique().tolist())
        frames, errors = decode_clips(rows, self.sampling())
        prepared = Prepared(rows=rows, frames=frames, errors=errors)
        ok = prepared.ok
        if ok:
            prepared.inputs = self.build_inputs(rows.iloc[ok], [frames[i] for i in ok])
        return prepared

    def run_model(self, inputs: Any):
        """Token ids generated for a prepared batch (inputs moved to the device here)."""
        import torch

        batch = inputs.to(self.device)
        if "pixel_values" in batch and batch["pixel_values"].is_floating_point():
            batch["pixel_values"] = batch["pixel_values"].to(self.model.dtype)
        if "pixel_values_videos" in batch:
            batch["pixel_values_videos"] = batch["pixel_values_videos"].to(self.model.dtype)
        settings = self.generation_settings(batch)
        with torch.inference_mode():
            output = self.model.generate(**batch, do_sample=False, **settings)
        return self.new_tokens(batch, output)

    def generation_settings(self, batch) -> dict:
        """generate()'s settings for one batch: conf's, as they apply to this batch's padding."""
        return dict(self.generation)

    def generate(self, prepared: Prepared) -> pd.DataFrame:
        """The `captions` rows of a prepared batch."""
        self.load()
        ok = prepared.ok
        texts: list[str | None] = [None] * len(prepared.rows)
        if ok:
            token_ids = self.run_model(prepared.inputs)
            decoded = self.processor.batch_decode(token_ids, skip_special_tokens=True)
            for i, text in zip(ok, decoded, strict=True):
                texts[i] = text
        prompts = [self.prompts[k] for k in prepared.rows["kind"]]
        result = caption_rows(
            prepared.rows, self.name, prompts, texts, prepared.errors, self.rules, self.weights.path, self.revision
        )
        if self.matcher is not None:
            add_match(result, prepared.frames, self.matcher)
        return result

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        self.load()
        return self.generate(self.prepare(rows))


def add_match(result: pd.DataFrame, frames: Sequence[np.ndarray | None], matcher: Matcher) -> None:
    """Fills `match` for the rows that have frames and a caption."""
    scored = [i for i, f in enumerate(frames) if f is not None and result.at[i, "caption"] is not None]
    if not scored:
        return
    scores = matcher([frames[i] for i in scored], [result.at[i, "caption"] for i in scored])
    for i, score in zip(scored, scores, strict=True):
        result.at[i, "match"] = score

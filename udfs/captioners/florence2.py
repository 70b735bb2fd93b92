"""Florence-2 (transformers' Florence2ForConditionalGeneration): a frame captioner.

Each kind maps to one of Florence-2's task prompts (`<CAPTION>`, `<DETAILED_CAPTION>`,
`<MORE_DETAILED_CAPTION>`). The model sees one image per clip: a chosen frame (the middle one
by default) or a grid of frames sampled across the clip, tiled into one image.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from udfs.captioners.base import tile_grid
from udfs.captioners.vlm import VLMCaptioner
from udfs.frames import FrameSampling

TASK_PROMPTS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")
INPUTS = ("frame", "grid")


class Florence2Captioner(VLMCaptioner):
    name = "florence2"
    model_type = "florence2"
    model_class_name = "Florence2ForConditionalGeneration"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        bad = {kind: prompt for kind, prompt in self.prompts.items() if prompt not in TASK_PROMPTS}
        if bad:
            raise ValueError(f"caption.florence2.prompts: {bad} are not Florence-2 task prompts {TASK_PROMPTS}")
        if self.conf["input"] not in INPUTS:
            raise ValueError(f"caption.florence2.input must be one of {INPUTS}, got {self.conf['input']!r}")

    def sampling(self) -> FrameSampling:
        if self.conf["input"] == "frame":
            return FrameSampling(n=1, where=self.conf["frame_where"], size=self.conf["frame_size"])
        rows, cols = self.conf["grid"]
        return FrameSampling(n=rows * cols, where="uniform", size=self.conf["frame_size"])

    def image(self, frames: np.ndarray) -> np.ndarray:
        if self.conf["input"] == "frame":
            return frames[0]
        rows, cols = self.conf["grid"]
        return tile_grid(frames, rows, cols)

    def build_inputs(self, rows: pd.DataFrame, frames: Sequence[np.ndarray]):
        return self.processor(
            text=[self.prompts[k] for k in rows["kind"]],
            images=[self.image(f) for f in frames],
            padding=True,
            return_tensors="pt",
        )

    def new_tokens(self, inputs, output_ids):
        return output_ids  # an encoder-decoder generates only the answer

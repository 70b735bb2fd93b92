"""Qwen2.5-VL (transformers' Qwen2_5_VLForConditionalGeneration): a video captioner.

The model sees N frames sampled across the clip as a video (their timing passed along, so its
temporal position ids are right), or, as MiraData captions, a 2x4 grid of 8 frames tiled into
one image. Each kind has its own prompt in conf, MiraData's structured kinds included. Prompts
are left-padded in a batch, so a caption does not depend on which clips share its batch.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from udfs.captioners.base import tile_grid
from udfs.captioners.vlm import VLMCaptioner
from udfs.frames import FrameSampling

INPUTS = ("video", "grid")


class Qwen2_5_VLCaptioner(VLMCaptioner):
    name = "qwen2_5_vl"
    model_type = "qwen2_5_vl"
    model_class_name = "Qwen2_5_VLForConditionalGeneration"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.conf["input"] not in INPUTS:
            raise ValueError(f"caption.qwen2_5_vl.input must be one of {INPUTS}, got {self.conf['input']!r}")
        if self.conf["input"] == "video" and int(self.conf["num_frames"]) % 2:
            raise ValueError("caption.qwen2_5_vl.num_frames must be even (Qwen2.5-VL packs frames in pairs)")
        self._chat: dict[str, str] = {}

    def _after_load(self) -> None:
        self.processor.tokenizer.padding_side = "left"

    def sampling(self) -> FrameSampling:
        if self.conf["input"] == "video":
            n = int(self.conf["num_frames"])
        else:
            rows, cols = self.conf["grid"]
            n = rows * cols
        return FrameSampling(n=n, where="uniform", size=self.conf["frame_size"])

    def chat_text(self, kind: str) -> str:
        """The chat-formatted prompt of a kind (the checkpoint's own chat template)."""
        if kind not in self._chat:
            medium = "video" if self.conf["input"] == "video" else "image"
            content = [{"type": medium}, {"type": "text", "text": self.prompts[kind]}]
            messages = [{"role": "user", "content": content}]
            self._chat[kind] = self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self._chat[kind]

    def _size(self) -> dict:
        return {"shortest_edge": int(self.conf["min_pixels"]), "longest_edge": int(self.conf["max_pixels"])}

    def build_inputs(self, rows: pd.DataFrame, frames: Sequence[np.ndarray]):
        texts = [self.chat_text(k) for k in rows["kind"]]
        if self.conf["input"] == "grid":
            rows_, cols = self.conf["grid"]
            images = [tile_grid(f, rows_, cols) for f in frames]
            return self.processor(
                text=texts, images=images, padding=True, return_tensors="pt", images_kwargs={"size": self._size()}
            )
        from transformers.video_utils import VideoMetadata

        metadata = [
            VideoMetadata(total_num_frames=len(f), fps=len(f) / max(float(r.end_s - r.start_s), 1e-3))
            for f, r in zip(frames, rows.itertuples(index=False), strict=True)
        ]
        return self.processor(
            text=texts, videos=[np.asarray(f) for f in frames], padding=True, return_tensors="pt",
            videos_kwargs={
                "video_metadata": metadata,
                "do_sample_frames": False,
                "size": self._size(),
                "cap_pixels_per_frame": True,
            },
        )

    def generation_settings(self, batch) -> dict:
        """A repetition penalty that skips each row's left padding: transformers' own penalty counts
        every token of input_ids, pads included, so the pad token (Qwen's <|endoftext|>, also an
        end-of-text token) would be penalised only in rows that share a batch with longer ones."""
        settings = dict(self.generation)
        penalty = float(settings.pop("repetition_penalty", 1.0))
        if penalty != 1.0:
            from transformers import LogitsProcessorList, RepetitionPenaltyLogitsProcessor

            pads = (batch["attention_mask"] == 0).sum(dim=1)
            settings["logits_processor"] = LogitsProcessorList(
                [RepetitionPenaltyLogitsProcessor(penalty, prompt_ignore_length=pads)]
            )
        return settings

    def new_tokens(self, inputs, output_ids):
        return output_ids[:, inputs["input_ids"].shape[1]:]

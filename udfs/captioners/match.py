"""`match`: how well a caption fits its clip, as CLIP sees it (Open-Sora filters on this after captioning).

The score is the mean, over a few frames spread across the clip, of the cosine similarity
between the frame's CLIP image embedding and the caption's CLIP text embedding (-1 to 1; for
CLIP ViT-L/14 a fitting caption scores about 0.25-0.35, an unrelated one below 0.15).
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from udfs.clip import ClipEncoder


def spread(frames: np.ndarray, n: int) -> np.ndarray:
    """n of the frames (all if fewer), evenly spread in time."""
    if len(frames) <= n:
        return frames
    return frames[np.linspace(0, len(frames) - 1, n).round().astype(int)]


class ClipMatcher:
    """Scores (frames, caption) pairs with CLIP; the encoder loads once per worker, on first use."""

    def __init__(self, encoder: ClipEncoder, frames_per_clip: int):
        self.encoder = encoder
        self.frames_per_clip = frames_per_clip

    def __call__(self, frames: Sequence[np.ndarray], captions: Sequence[str | None]) -> list[float | None]:
        scores: list[float | None] = [None] * len(frames)
        wanted = [i for i, caption in enumerate(captions) if caption]
        if not wanted:
            return scores
        texts = self.encoder.text_embeddings([captions[i] for i in wanted])
        text_of = dict(zip(wanted, texts, strict=True))
        by_shape: dict[tuple, list[int]] = defaultdict(list)  # frames of one shape embed in one batch
        for i in wanted:
            by_shape[frames[i].shape[1:]].append(i)
        for rows in by_shape.values():
            picked = [spread(frames[i], self.frames_per_clip) for i in rows]
            images = self.encoder.image_embeddings(np.concatenate(picked))
            offset = 0
            for i, clip_frames in zip(rows, picked, strict=True):
                similarity = images[offset:offset + len(clip_frames)] @ text_of[i]
                scores[i] = float(similarity.mean())
                offset += len(clip_frames)
        return scores

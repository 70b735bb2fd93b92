"""The caption the source set shipped, recorded as model `source` beside the models' captions.

WebVid ships one caption per video (its `name`), Panda-70M and MiraData one per clip span (the
video's `clip_hints`). A clip takes the caption of the hint it overlaps most, if that overlap
covers at least `min_overlap` of the shorter of the two spans, else the video's caption. SQL
can then compare a model's caption with the source's, or fall back to it.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from udfs.caption_text import DEFAULT_RULES, HygieneRules
from udfs.captioners.base import INPUT_COLUMNS, Prepared, caption_rows, check_rows, decode_clips
from udfs.captioners.vlm import Matcher, add_match
from udfs.frames import FrameSampling

MATCH_SAMPLING = FrameSampling(n=3, where="uniform", size=224)
SOURCE_COLUMNS = (*INPUT_COLUMNS, "source", "video_caption", "clip_hints")


def pick_source_caption(
    start_s: float, end_s: float, video_caption: str | None, hints: Iterable[Mapping[str, Any]] | None,
    min_overlap: float,
) -> str | None:
    """The caption of the hint that best covers [start_s, end_s), else the video's caption."""
    start_s, end_s = float(start_s), float(end_s)
    best, best_overlap = None, 0.0
    for hint in hints if hints is not None else ():
        if not hint or hint.get("caption") is None or hint.get("start_s") is None or hint.get("end_s") is None:
            continue
        hint_start, hint_end = float(hint["start_s"]), float(hint["end_s"])
        shorter = min(end_s - start_s, hint_end - hint_start)
        if shorter <= 0:
            continue
        overlap = (min(end_s, hint_end) - max(start_s, hint_start)) / shorter
        if overlap >= min_overlap and overlap > best_overlap:
            best, best_overlap = hint["caption"], overlap
    return best if best is not None else video_caption


class SourceCaptioner:
    """No model: the source's caption, cleaned and judged like any other, with `match` if a matcher is given."""

    name = "source"

    def __init__(
        self,
        conf: Mapping[str, Any],
        rules: HygieneRules = DEFAULT_RULES,
        matcher: Matcher | None = None,
        match_sampling: FrameSampling = MATCH_SAMPLING,
    ):
        self.kind = str(conf["kind"])
        self.min_overlap = float(conf["min_overlap"])
        self.match_sampling = match_sampling
        self.rules = rules
        self.matcher = matcher

    @property
    def kinds(self) -> list[str]:
        return [self.kind]

    @property
    def batch_size(self) -> int:
        return 256

    def check_kinds(self, kinds: Sequence[str]) -> None:
        unknown = [k for k in kinds if k != self.kind]
        if unknown:
            raise ValueError(
                f"the source caption is recorded as kind {self.kind!r} (caption.source.kind), not {', '.join(unknown)}"
            )

    def load(self) -> None:
        """Nothing to load (the matcher loads its own model)."""

    def prepare(self, rows: pd.DataFrame) -> Prepared:
        check_rows(rows, SOURCE_COLUMNS)
        rows = rows.reset_index(drop=True)
        self.check_kinds(rows["kind"].unique().tolist())
        if self.matcher is None:
            frames, errors = [None] * len(rows), [None] * len(rows)
        else:
            frames, errors = decode_clips(rows, self.match_sampling)
        return Prepared(rows=rows, frames=frames, errors=[None] * len(rows), extra={"frame_errors": errors})

    def generate(self, prepared: Prepared) -> pd.DataFrame:
        rows = prepared.rows
        texts = [
            pick_source_caption(r.start_s, r.end_s, r.video_caption, _hints(r.clip_hints), self.min_overlap)
            for r in rows.itertuples(index=False)
        ]
        result = caption_rows(rows, self.name, [None] * len(rows), texts, prepared.errors, self.rules, None, None)
        result["model_id"] = rows["source"].to_numpy()
        if self.matcher is not None:
            add_match(result, prepared.frames, self.matcher)
        return result

    def __call__(self, rows: pd.DataFrame) -> pd.DataFrame:
        return self.generate(self.prepare(rows))


def _hints(value: Any) -> list[Mapping[str, Any]]:
    """clip_hints as Arrow hands them to pandas: None, a list or a numpy array of dicts."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    return list(value)

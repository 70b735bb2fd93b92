"""The score stage's work on a stream of clips: decode on a thread pool, score with the selected scorers.

Per clip, a pool thread decodes the sampled frames (one seek-and-decode pass for every scorer)
and runs the CPU scorers (OCR, NSFW, motion, luma: OpenCV and onnxruntime release the GIL). The
calling thread stacks `clips_per_batch` decoded clips into one batch for each GPU scorer (aesthetic,
watermark). The pool runs `prefetch_clips` clips ahead, so the GPU never waits on a decode.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from itertools import islice
from typing import Any

import numpy as np
import pandas as pd

from udfs.device import task_device
from udfs.errors import VidlakeError
from udfs.frames import FrameSampleError, FrameSampling, decode_at, sample_times
from udfs.scorers import SCORERS, Scorer
from udfs.weights import MissingWeightsError, resolve

# Keys of the `score` section every scorer's conf also gets.
SHARED_KEYS = ("precision", "allow_download")
# The clip columns the runner reads.
CLIP_COLUMNS = ("clip_id", "uri", "start_s", "end_s")


def parse_scorers(names: str | Sequence[str]) -> list[str]:
    """Scorer names from `aesthetic,ocr` or a list, checked, in the registry's order."""
    wanted = [n.strip() for n in names.split(",")] if isinstance(names, str) else [str(n).strip() for n in names]
    wanted = [n for n in wanted if n]
    unknown = [n for n in wanted if n not in SCORERS]
    if unknown or not wanted:
        given = ", ".join(unknown) or "(none given)"
        raise VidlakeError(f"unknown scorer(s) {given}; the scorers are {', '.join(SCORERS)}")
    return [n for n in SCORERS if n in wanted]


def scorer_conf(score_conf: Mapping[str, Any], name: str) -> dict[str, Any]:
    """One scorer's conf: its `score.<name>` section plus the stage-wide keys it also reads."""
    return {**{key: score_conf[key] for key in SHARED_KEYS}, **score_conf[name]}


def output_columns(names: Sequence[str]) -> list[str]:
    """The `scores` columns a run of these scorers writes (the others keep what the table holds)."""
    columns = ["clip_id"]
    for name in names:
        columns += list(SCORERS[name].columns)
    if any(SCORERS[name].needs_frames for name in names):
        columns.append("frames_sampled")
    return columns + ["scorer_versions", "errors", "scored_at"]


def check_weights(names: Sequence[str], score_conf: Mapping[str, Any], models: Mapping[str, Any]) -> None:
    """Raise one MissingWeightsError naming every selected scorer's model that is not where conf points."""
    problems = []
    for name in names:
        for source in SCORERS[name].model_sources(models):
            try:
                resolve(source, bool(score_conf["allow_download"]))
            except MissingWeightsError as error:
                problems.append(f"scorer {name}: {error}")
    if problems:
        raise MissingWeightsError("nothing was scored; weights are missing:\n" + "\n".join(problems))


class ClipScorer:
    """Scores clips (rows with clip_id, uri, start_s, end_s) with the named scorers; see the module doc."""

    def __init__(
        self, score_conf: Mapping[str, Any], models: Mapping[str, Any], names: Sequence[str], device: str | None = None
    ):
        self.conf = dict(score_conf)
        self.device = device or task_device(prefer_gpu=bool(score_conf["use_gpu"]))
        self.scorers: list[Scorer] = [
            SCORERS[name](scorer_conf(score_conf, name), models, self.device) for name in parse_scorers(names)
        ]
        self.sampling = FrameSampling.from_conf(score_conf["frames"])
        self.motion = next((s for s in self.scorers if s.needs_pairs), None)
        self.needs_frames = any(s.needs_frames for s in self.scorers)
        self._versions: dict[str, str] | None = None

    def load(self) -> ClipScorer:
        for scorer in self.scorers:
            scorer.load()
        return self

    def versions(self) -> dict[str, str]:
        if self._versions is None:
            self._versions = {scorer.name: scorer.version() for scorer in self.scorers}
        return self._versions

    def __call__(self, clips: pd.DataFrame) -> pd.DataFrame:
        """Scores of one DataFrame of clips (all at once; `score_stream` is the pipelined form)."""
        return _stack(list(self.score_stream([clips]))) if len(clips) else self._empty()

    def score_stream(self, batches: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        """Scores of a stream of clip batches (what mapInPandas hands a task), `clips_per_batch` rows at a time."""
        from udfs.frames import prefetch

        self.load()
        self.versions()
        rows = (row for batch in batches for row in batch[list(CLIP_COLUMNS)].itertuples(index=False))
        with ThreadPoolExecutor(int(self.conf["decode_threads"]), thread_name_prefix="score-decode") as pool:
            prepared = prefetch(rows, self._prepare, pool, int(self.conf["prefetch_clips"]))
            while chunk := list(islice(prepared, int(self.conf["clips_per_batch"]))):
                yield self._finish(pd.DataFrame(chunk))

    def _prepare(self, clip) -> dict[str, Any]:
        """On a pool thread: decode the clip's samples and run the CPU scorers on it."""
        row = {"clip_id": clip.clip_id, "frames": None, "pairs": None, "decode_error": None}
        try:
            row["frames"], row["pairs"] = self._decode(clip)
        except FrameSampleError as error:
            row["decode_error"] = f"decode: {error}"
        one = pd.DataFrame([row])
        row["cpu_results"] = [_score_or_error(scorer, one) for scorer in self.scorers if not scorer.uses_gpu]
        return row

    def _decode(self, clip) -> tuple[np.ndarray | None, np.ndarray | None]:
        start, end = float(clip.start_s), float(clip.end_s)
        times = []
        if self.needs_frames:
            times.append(sample_times(start, end, self.sampling.n, self.sampling.where))
        if self.motion is not None:
            times.append(self.motion.pair_times(start, end).reshape(-1))
        if not times:
            return None, None
        decoded = decode_at(clip.uri, np.concatenate(times), self.sampling.size, float(self.conf["seek_ahead_s"]))
        frames = decoded[: self.sampling.n] if self.needs_frames else None
        pairs = decoded[self.sampling.n if self.needs_frames else 0 :] if self.motion is not None else None
        return frames, (pairs.reshape(-1, 2, *pairs.shape[1:]) if pairs is not None else None)

    def _finish(self, chunk: pd.DataFrame) -> pd.DataFrame:
        """The GPU scorers on the decoded chunk, then every scorer's columns into `scores` rows."""
        cpu_scorers = [s.name for s in self.scorers if not s.uses_gpu]
        per_scorer = {
            name: _stack([results[position] for results in chunk["cpu_results"]])
            for position, name in enumerate(cpu_scorers)
        }
        for scorer in self.scorers:
            if scorer.uses_gpu:
                per_scorer[scorer.name] = scorer(chunk)
        return self._rows(chunk, per_scorer)

    def _rows(self, chunk: pd.DataFrame, per_scorer: dict[str, pd.DataFrame]) -> pd.DataFrame:
        out = pd.DataFrame({"clip_id": chunk["clip_id"].to_numpy()})
        errors: list[dict[str, str]] = [{} for _ in range(len(chunk))]
        for name, result in per_scorer.items():
            for column in SCORERS[name].columns:
                out[column] = result[column].to_numpy()
            for position, error in enumerate(result["error"]):
                if error is not None:
                    errors[position][name] = str(error)
        if self.needs_frames:
            out["frames_sampled"] = [
                len(frames) if frames is not None else 0 for frames in chunk["frames"]
            ]
        out["scorer_versions"] = [dict(self.versions()) for _ in range(len(chunk))]
        out["errors"] = [e or None for e in errors]
        out["scored_at"] = pd.Timestamp(datetime.now(timezone.utc))
        return out

    def _empty(self) -> pd.DataFrame:
        return pd.DataFrame(columns=output_columns([s.name for s in self.scorers]))


def _score_or_error(scorer: Scorer, batch: pd.DataFrame) -> pd.DataFrame:
    """A CPU scorer's rows for one clip; a failure on that clip becomes its error, not a failed task."""
    try:
        return scorer(batch)
    except Exception as error:  # noqa: BLE001 - any failure on one clip's frames is that clip's error
        return scorer.error_rows(batch, f"{type(error).__name__}: {error}")


def _stack(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Same-column frames one under another, keeping object values (lists, None) as they are."""
    return pd.DataFrame({column: [v for f in frames for v in f[column]] for column in frames[0].columns})

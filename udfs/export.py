"""Export writers' per-batch work: Open-Sora CSV rows, and webdataset tar shards.

Rows come in as clip_view columns (jobs/views.py). Nothing here imports Spark.

Open-Sora's loaders read a CSV with `path, text, num_frames, height, width, aspect_ratio, fps,
resolution` (hpcaitech/Open-Sora tools/datasets: `aspect_ratio` is height / width, `resolution`
is height x width as a number) and its filters use `aes`, `flow`, `ocr` and `match`.
"""
from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Iterator
from pathlib import PurePosixPath

import pandas as pd

# Open-Sora column -> clip_view column it comes from (None: computed below).
OPENSORA_COLUMNS = {
    "path": "uri",
    "text": "text",
    "num_frames": "num_frames",
    "height": "height",
    "width": "width",
    "aspect_ratio": "aspect_ratio",
    "fps": "fps",
    "resolution": None,
    "aes": "aesthetic",
    "flow": "motion",
    "ocr": "ocr_area_ratio",
    "match": "match",
    "pwatermark": "pwatermark",
    "nsfw": "nsfw",
    "id": "clip_id",
    "video_id": "video_id",
    "start_frame": "start_frame",
    "end_frame": "end_frame",
    "caption_model": "caption_model",
}

# What a webdataset sample's .json holds: the clip's metadata and every score.
SAMPLE_JSON_COLUMNS = (
    "clip_id", "video_id", "source", "start_s", "end_s", "start_frame", "end_frame", "num_frames", "fps", "width",
    "height", "aspect_ratio", "resolution", "aesthetic", "pwatermark", "ocr_area_ratio", "motion", "nsfw",
    "brightness", "sharpness", "match", "caption_model", "caption_kind",
)
# Columns a webdataset shard writer needs besides SAMPLE_JSON_COLUMNS.
SHARD_INPUT_COLUMNS = ("uri", "video_uri", "text")


def opensora_rows(batch: pd.DataFrame) -> pd.DataFrame:
    """clip_view rows as Open-Sora CSV rows (OPENSORA_COLUMNS, in that order)."""
    out = pd.DataFrame(index=batch.index)
    for column, source in OPENSORA_COLUMNS.items():
        if source is not None:
            out[column] = batch[source]
    out["resolution"] = batch["height"].astype("Int64") * batch["width"].astype("Int64")
    return out[list(OPENSORA_COLUMNS)]


def opensora_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """`opensora_rows` over a stream of batches (the shape Spark's mapInPandas calls)."""
    for batch in batches:
        yield opensora_rows(batch)


def shard_name(shard: int) -> str:
    """`clips-000042.tar`: the brace-expandable names webdataset loaders take (`clips-{000000..000099}.tar`)."""
    return f"clips-{shard:06d}.tar"


def write_shard(rows: pd.DataFrame, out_dir: str, shard: int) -> dict:
    """Writes one tar shard holding `<clip_id>.mp4` (the clip file), `.txt` (its caption) and `.json`
    (its scores) per clip; returns the shard's summary with one failure entry per clip left out."""
    import fsspec

    name = shard_name(shard)
    fs, root = fsspec.core.url_to_fs(out_dir)
    final, partial = f"{root}/{name}", f"{root}/{name}.partial"
    failures, written, size = [], 0, 0
    with fs.open(partial, "wb") as stream, tarfile.open(fileobj=stream, mode="w|") as tar:
        for row in rows.sort_values("clip_id").to_dict("records"):
            problem = _clip_file_problem(row)
            try:
                video = _read_bytes(row["uri"]) if problem is None else None
            except OSError as err:
                problem = f"cannot read clip file {row['uri']}: {err}"
            if problem is not None:
                failures.append({"clip_id": row["clip_id"], "reason": problem})
                continue
            key = row["clip_id"]
            suffix = PurePosixPath(str(row["uri"])).suffix or ".mp4"
            for member, payload in (
                (f"{key}{suffix}", video),
                (f"{key}.txt", (row.get("text") or "").encode("utf-8")),
                (f"{key}.json", json.dumps(sample_json(row), ensure_ascii=False).encode("utf-8")),
            ):
                _add_member(tar, member, payload)
            written += 1
            size += len(video)
    if written:
        fs.mv(partial, final)
    else:
        fs.rm(partial)
    return {"shard": name if written else None, "clips": written, "video_bytes": size,
            "failures": json.dumps(failures)}


def sample_json(row: dict) -> dict:
    """The .json of a webdataset sample: metadata and scores, NaN as null."""
    return {column: _plain(row.get(column)) for column in SAMPLE_JSON_COLUMNS}


def _clip_file_problem(row: dict) -> str | None:
    if not row.get("uri"):
        return "clip has no file (clips.uri is empty)"
    if row.get("video_uri") and row["uri"] == row["video_uri"]:
        return ("clip is not materialized (its uri is the whole source video); split with clips materialized "
                "to export webdataset shards")
    return None


def _read_bytes(uri: str) -> bytes:
    import fsspec

    with fsspec.open(uri, "rb") as handle:
        return handle.read()


def _add_member(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(payload))


def _plain(value):
    """A JSON-safe scalar: numpy scalars unwrapped, NaN and NA as None."""
    if value is None or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value

"""Export writers' per-batch work: clip files, Open-Sora CSV rows, and webdataset tar shards.

Rows come in as clip_view columns (jobs/views.py). Nothing here imports Spark.

Open-Sora's loaders read a CSV with `path, text, num_frames, height, width, aspect_ratio, fps,
resolution` (hpcaitech/Open-Sora tools/datasets: `aspect_ratio` is height / width, `resolution`
is height x width as a number) and its filters use `aes`, `flow`, `ocr` and `match`. Its loader
reads every frame of `path` and samples its training window anywhere in them, so `path` is always
a file of exactly the clip: `ClipFiles` cuts one for a clip that split left as a frame range of its
source video (split.materialize=none).

Timelines: in both exports `num_frames`, `fps`, `width`, `height` (and the sample json's
`duration_s`) describe the clip's own file (the CSV's `path`, the sample's mp4), which starts at
0. The fields named `source_*` are on the source video's timeline: `source_start_frame` and
`source_end_frame` (both exports), `source_start_s` and `source_end_s` (the sample json) are where
the clip lies in the video `video_id`. `resolution` is height x width in both; the sample json's
`resolution_label` is the clips table's short-side bucket (`240p`, `<240p`, ...).
"""
from __future__ import annotations

import io
import json
import math
import tarfile
from collections.abc import Iterator
from pathlib import PurePosixPath

import av
import pandas as pd

from udfs.decode import DecodeError, PacketIndex, index_packets
from udfs.materialize import MadeClip, Materializer, clip_file

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
    "source_start_frame": "start_frame",
    "source_end_frame": "end_frame",
    "caption_model": "caption_model",
}

# What a webdataset sample's .json holds: the clip's metadata and every score (json field ->
# clip_view column; None: computed in sample_json).
SAMPLE_JSON_FIELDS = {
    "clip_id": "clip_id", "video_id": "video_id", "source": "source",
    "source_start_s": "start_s", "source_end_s": "end_s",
    "source_start_frame": "start_frame", "source_end_frame": "end_frame", "duration_s": "duration_s",
    "num_frames": "num_frames", "fps": "fps", "width": "width", "height": "height", "aspect_ratio": "aspect_ratio",
    "resolution": None, "resolution_label": "resolution",
    "aesthetic": "aesthetic", "pwatermark": "pwatermark", "ocr_area_ratio": "ocr_area_ratio", "motion": "motion",
    "nsfw": "nsfw", "brightness": "brightness", "sharpness": "sharpness", "match": "match",
    "caption_model": "caption_model", "caption_kind": "caption_kind",
}
SAMPLE_JSON_COLUMNS = tuple(c for c in SAMPLE_JSON_FIELDS.values() if c)
# Columns a webdataset shard writer needs besides SAMPLE_JSON_COLUMNS.
SHARD_INPUT_COLUMNS = ("uri", "video_uri", "text")
# The columns that describe a clip's file, which ClipFiles sets from the file it cuts.
FILE_COLUMNS = ("uri", "num_frames", "fps", "width", "height", "aspect_ratio")
# Columns ClipFiles needs besides FILE_COLUMNS.
CUT_INPUT_COLUMNS = ("clip_id", "video_id", "video_uri", "start_frame", "end_frame")


def has_own_file(row: dict) -> bool:
    """Whether the clip's uri is a file of the clip alone (materialized), not its whole source video."""
    return bool(row.get("uri")) and not (row.get("video_uri") and row["uri"] == row["video_uri"])


class ClipFiles:
    """Gives each clip row a file of exactly its frames, and `export_error` (None, or why it has none).

    A clip materialized at split time keeps its file and row. A clip that is a frame range of its
    source video is cut into `<clip_dir>/<video_id>/<clip_id>.mp4`, re-encoded frame-accurately as
    split.materialize=reencode does with `reencode_conf` (split.reencode); its FILE_COLUMNS then
    describe that file as a reader finds it (its frames counted from its packets, not assumed).
    """

    def __init__(self, clip_dir: str, reencode_conf: dict) -> None:
        self.materializer = Materializer.from_conf({"materialize": "reencode", "reencode": reencode_conf}, clip_dir)
        # The packet index of the source video cut last: a task gets a video's clips together
        # (the export partitions by video), so each source is demuxed once, not once per clip.
        self._indexed: tuple[str, PacketIndex] | None = None

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        out = batch.astype({"uri": object}).assign(export_error=None)
        for index, row in zip(batch.index, batch.to_dict("records"), strict=True):
            if has_own_file(row):
                continue
            if not row.get("uri"):
                out.at[index, "export_error"] = "clip has no file (clips.uri is empty)"
                continue
            try:
                made = self._cut(row)
            except (DecodeError, av.FFmpegError, OSError, ValueError) as err:
                out.at[index, "export_error"] = f"cannot cut the clip from {row['video_uri']}: {err}"
                continue
            for column, value in (("uri", made.uri), ("num_frames", made.num_frames), ("fps", made.fps),
                                  ("width", made.width), ("height", made.height),
                                  ("aspect_ratio", made.height / made.width)):
                out.at[index, column] = value
        return out

    def _cut(self, row: dict) -> MadeClip:
        made = self.materializer.cut(row["video_uri"], row["video_id"], row["clip_id"],
                                     int(row["start_frame"]), int(row["end_frame"]), self._packets(row["video_uri"]))
        return clip_file(made.uri)

    def _packets(self, uri: str) -> PacketIndex:
        if self._indexed is None or self._indexed[0] != uri:
            self._indexed = (uri, index_packets(uri))
        return self._indexed[1]


def opensora_rows(batch: pd.DataFrame) -> pd.DataFrame:
    """clip_view rows as Open-Sora CSV rows (OPENSORA_COLUMNS, in that order)."""
    out = pd.DataFrame(index=batch.index)
    for column, source in OPENSORA_COLUMNS.items():
        if source is not None:
            out[column] = batch[source]
    out["resolution"] = resolution(batch["height"], batch["width"])
    return out[list(OPENSORA_COLUMNS)]


def resolution(height, width):
    """Open-Sora's `resolution`: height x width, as a number (of pandas columns or of scalars)."""
    if isinstance(height, pd.Series):
        return height.astype("Int64") * width.astype("Int64")
    return None if height is None or width is None else int(height) * int(width)


def opensora_export_batches(clip_files: ClipFiles):
    """The mapInPandas function of the Open-Sora export: each clip's file (ClipFiles), then its CSV
    row (OPENSORA_COLUMNS) and `export_error`."""

    def batches(stream: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in stream:
            made = clip_files(batch)
            yield opensora_rows(made).assign(export_error=made["export_error"])

    return batches


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
    """The .json of a webdataset sample (SAMPLE_JSON_FIELDS): metadata and scores, NaN as null."""
    values = {field: _plain(row.get(column)) for field, column in SAMPLE_JSON_FIELDS.items() if column}
    values["resolution"] = resolution(values["height"], values["width"])
    return {field: values[field] for field in SAMPLE_JSON_FIELDS}


def _clip_file_problem(row: dict) -> str | None:
    if not row.get("uri"):
        return "clip has no file (clips.uri is empty)"
    if not has_own_file(row):
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

"""The Delta tables of a vidlake lake: one Spark schema per table, its key and its partitioning.

This module is the one place a column is defined. Jobs write exactly these columns (the lake
checks), udfs return pandas frames with exactly these column names, and users query them.
"""
from dataclasses import dataclass

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DoubleType,
    IntegerType,
    LongType,
    MapType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)


def _fields(*specs: tuple) -> StructType:
    return StructType([StructField(name, dtype, nullable) for name, dtype, nullable in specs])


CLIP_HINT = _fields(
    ("start_s", DoubleType(), True),
    ("end_s", DoubleType(), True),
    ("caption", StringType(), True),
    ("score", DoubleType(), True),
)

VIDEOS = _fields(
    ("video_id", StringType(), False),  # schemas.ids.video_id(source, source_video_id)
    ("source", StringType(), False),  # webvid10m, panda70m, miradata, opensora-plan, generic
    ("source_video_id", StringType(), False),  # the id the source set gives the video
    ("url", StringType(), False),  # http(s) URL, or a local path where ingest allows them
    ("caption", StringType(), True),  # the caption the source set ships
    ("duration_s", DoubleType(), True),
    ("clip_hints", ArrayType(CLIP_HINT), True),  # clip spans the source ships (Panda-70M, MiraData)
    ("extra", MapType(StringType(), StringType()), True),  # every other source column, as text
    ("ingest_batch", StringType(), False),
    ("ingested_at", TimestampType(), False),
)

INGEST_ERRORS = _fields(
    ("source", StringType(), False),
    ("input_file", StringType(), False),
    ("row_number", LongType(), True),  # 1-based data row in the input file
    ("raw", StringType(), True),  # the row as read, JSON-encoded
    ("severity", StringType(), False),  # rejected: row not ingested; warning: ingested, a field dropped
    ("reason", StringType(), False),
    ("video_id", StringType(), True),  # set for warnings: the video that was kept
    ("ingest_batch", StringType(), False),
    ("recorded_at", TimestampType(), False),
)

VIDEO_FILES = _fields(
    ("video_id", StringType(), False),
    ("status", StringType(), False),  # ok or the failure: http_error, timeout, too_large, blocked_url, not_video, ...
    ("error", StringType(), True),
    ("url", StringType(), True),
    # Where the bytes are stored: relative to the blob root (download.blob_root) when under it,
    # else absolute; jobs/blobs.py resolves it against the blob root of the lake being read.
    ("uri", StringType(), True),
    ("bytes", LongType(), True),
    ("sha256", StringType(), True),
    ("container", StringType(), True),
    ("codec", StringType(), True),
    ("width", IntegerType(), True),
    ("height", IntegerType(), True),
    ("fps", DoubleType(), True),
    ("num_frames", LongType(), True),
    ("duration_s", DoubleType(), True),
    ("has_audio", BooleanType(), True),
    ("attempts", IntegerType(), True),
    ("fetched_at", TimestampType(), True),
)

CLIPS = _fields(
    ("clip_id", StringType(), False),  # schemas.ids.clip_id(video_id, start_frame, end_frame)
    ("video_id", StringType(), False),
    ("clip_index", IntegerType(), False),  # 0-based order of the clip in its video
    ("start_s", DoubleType(), False),
    ("end_s", DoubleType(), False),
    ("start_frame", LongType(), False),  # first frame, inclusive
    ("end_frame", LongType(), False),  # last frame, exclusive
    ("num_frames", LongType(), False),
    ("fps", DoubleType(), True),
    ("width", IntegerType(), True),
    ("height", IntegerType(), True),
    ("aspect_ratio", DoubleType(), True),  # height / width, as Open-Sora records it
    ("resolution", StringType(), True),  # bucket by the short side: 240p, 360p, 480p, 720p, 1080p, 4k
    ("detector", StringType(), False),
    ("detector_params", StringType(), True),  # JSON of the detector's parameters
    # The cut clip file when clips are materialized, else the source video; relative to the blob
    # root when under it, like video_files.uri.
    ("uri", StringType(), True),
    ("created_at", TimestampType(), False),
)

SPLIT_ERRORS = _fields(
    ("video_id", StringType(), False),
    ("detector", StringType(), False),
    ("reason", StringType(), False),
    ("recorded_at", TimestampType(), False),
)

SCORES = _fields(
    ("clip_id", StringType(), False),
    ("aesthetic", DoubleType(), True),  # LAION improved aesthetic predictor, 1-10, mean over frames
    ("aesthetic_frames", ArrayType(DoubleType()), True),  # per sampled frame, in time order
    ("pwatermark", DoubleType(), True),  # LAION watermark detector probability, mean over frames
    ("ocr_area_ratio", DoubleType(), True),  # PP-OCR text box area / frame area, max over frames
    ("motion", DoubleType(), True),  # mean Farneback flow magnitude, pixels at the reference resolution
    ("nsfw", DoubleType(), True),  # NudeNet: highest unsafe-class confidence over frames
    ("brightness", DoubleType(), True),  # mean luma, 0-255
    ("sharpness", DoubleType(), True),  # variance of the Laplacian of the luma
    ("frames_sampled", IntegerType(), True),
    ("scorer_versions", MapType(StringType(), StringType()), True),  # scorer -> model and version that ran
    ("errors", MapType(StringType(), StringType()), True),  # scorer -> why it gave no score for this clip
    ("scored_at", TimestampType(), True),
)

CAPTIONS = _fields(
    ("clip_id", StringType(), False),
    ("model", StringType(), False),  # source, florence2, qwen2_5_vl, ...
    ("kind", StringType(), False),  # short, dense, main_object, background, style, camera
    ("prompt", StringType(), True),
    ("caption", StringType(), True),
    ("words", IntegerType(), True),
    ("quality", StringType(), True),  # ok, empty, degenerate; error when no caption could be made
    ("match", DoubleType(), True),  # CLIP similarity of the clip's frames and this caption
    ("error", StringType(), True),  # why there is no caption (quality error): undecodable clip, ...
    ("model_id", StringType(), True),  # hub id or path the weights came from
    ("model_revision", StringType(), True),
    ("created_at", TimestampType(), False),
)


@dataclass(frozen=True)
class Table:
    name: str
    schema: StructType
    keys: tuple
    partition_by: tuple = ()
    # Columns whose values rarely repeat: their parquet pages skip the dictionary a writer would
    # build and then drop (about 30% of the write time of an ingest_errors file).
    distinct: tuple = ()


TABLES = {
    t.name: t
    for t in (
        Table("videos", VIDEOS, ("video_id",), ("source",), distinct=("video_id", "source_video_id", "url", "caption")),
        Table("ingest_errors", INGEST_ERRORS, ("ingest_batch", "input_file", "row_number", "reason"),
              distinct=("row_number", "raw", "video_id")),
        Table("video_files", VIDEO_FILES, ("video_id",)),
        Table("clips", CLIPS, ("clip_id",)),
        Table("split_errors", SPLIT_ERRORS, ("video_id", "detector")),
        Table("scores", SCORES, ("clip_id",)),
        Table("captions", CAPTIONS, ("clip_id", "model", "kind")),
    )
}


def table(name: str) -> Table:
    """The contract of a lake table; a clear error for a name that is not one."""
    try:
        return TABLES[name]
    except KeyError:
        raise KeyError(f"no lake table named {name!r}; the tables are {', '.join(TABLES)}") from None

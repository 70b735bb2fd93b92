"""The source sets vidlake ingests, as their own public files define them.

Each format names the columns of its files in file order; the ingest job reads every column as
text (nothing is lost to type inference) and parses the fields itself, so a malformed value is a
warning or a rejected row with a reason instead of a silently nulled cell.

- webvid10m: WebVid-10M's CSV (results_10M_train.csv); `duration` is ISO 8601 (`PT00H00M11S`).
- panda70m: Panda-70M's CSV (snap-research/Panda-70M, dataset_dataloading/README.md);
  `timestamp`, `caption` and `matching_score` are Python-literal lists, one entry per clip span.
- miradata: MiraData's CSV (mira-space/MiraData); one row per clip, several rows per video; its
  header ends with two empty column names. The video is a YouTube id.
- opensora-plan: Open-Sora-Plan v1.x annotation JSON: a list of objects
  `{"path", "cap" (a string or a list), "resolution": {"height", "width"}, "fps", "duration",
  "frame_idx": "start:end"}`; `path` is relative to a data root.
- generic: any CSV, JSON lines or parquet file with a url or path column (and optionally caption,
  id and duration columns), mapped by `ingest.generic.*`.
"""
from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql.types import StringType, StructField, StructType

# The column Spark fills with the text of a record whose fields do not fit the header.
CORRUPT_RECORD = "_corrupt_record"


@dataclass(frozen=True)
class SourceFormat:
    """One source set's file layout.

    `columns` are the header names in file order ("" for an unnamed column); `video_id_column` holds
    the source's id of the video; `reader` is csv, json (a JSON array or JSON lines) or any (picked
    by each file's extension). What makes two rows of one video duplicates (a clip's key, for sets
    that ship one row per clip) is `udfs.candidates`' rule for each format."""

    name: str
    reader: str
    columns: tuple[str, ...]
    video_id_column: str | None
    rows_per_video: str = "one"  # one, or many (one row per clip)

    @property
    def named_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.columns if c)


WEBVID10M = SourceFormat(
    name="webvid10m",
    reader="csv",
    columns=("videoid", "contentUrl", "duration", "page_dir", "name"),
    video_id_column="videoid",
)

PANDA70M = SourceFormat(
    name="panda70m",
    reader="csv",
    columns=("videoID", "url", "timestamp", "caption", "matching_score"),
    video_id_column="videoID",
)

MIRADATA = SourceFormat(
    name="miradata",
    reader="csv",
    columns=(
        "index", "video_id", "start_frame", "end_frame",
        "main_object_caption", "background_caption", "style_caption", "camera_caption",
        "short_caption", "dense_caption", "fps", "start_timestep", "end_timestep", "", "",
    ),
    video_id_column="video_id",
    rows_per_video="many",
)

OPENSORA_PLAN = SourceFormat(
    name="opensora-plan",
    reader="json",
    columns=("path", "cap", "resolution", "fps", "duration", "frame_idx"),
    video_id_column="path",
    rows_per_video="many",
)

GENERIC = SourceFormat(
    name="generic",
    reader="any",
    columns=(),
    video_id_column=None,
)

FORMATS = {f.name: f for f in (WEBVID10M, PANDA70M, MIRADATA, OPENSORA_PLAN, GENERIC)}


def source_format(name: str) -> SourceFormat:
    """The format of a source set; a clear error for a name that is not one."""
    try:
        return FORMATS[name]
    except KeyError:
        raise KeyError(f"unknown source format {name!r}; the formats are {', '.join(FORMATS)}") from None


def text_schema(columns: list[str] | tuple[str, ...], corrupt_record: bool = True) -> StructType:
    """Every column as a nullable string, plus Spark's corrupt-record column for rows that do not fit."""
    fields = [StructField(c, StringType(), True) for c in columns]
    if corrupt_record:
        fields.append(StructField(CORRUPT_RECORD, StringType(), True))
    return StructType(fields)


# Open-Sora-Plan's JSON objects, every leaf read as text: `cap` may be a string or a list (Spark
# keeps a list's JSON text in a string field), numbers keep their written form until parsed.
OPENSORA_PLAN_SCHEMA = StructType(
    [
        StructField("path", StringType(), True),
        StructField("cap", StringType(), True),
        StructField("resolution", StringType(), True),
        StructField("fps", StringType(), True),
        StructField("duration", StringType(), True),
        StructField("frame_idx", StringType(), True),
        StructField(CORRUPT_RECORD, StringType(), True),
    ]
)

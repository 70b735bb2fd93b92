"""Parsing of source-set fields in Python, and the reasons a row is rejected or warned.

Ingest's rules, whole: udfs/candidates.py applies them to Arrow batches, with vectorised kernels
for the shapes that fill a 10M-row file (http URLs, WebVid's PT00H00M11S) and these functions for
everything else, so one definition holds for both. The fields that need a real parser are here:
Panda-70M's Python-literal lists (`ast.literal_eval`, strings with apostrophes included),
MiraData's clip rows (frame range and fps, or H:MM:SS timesteps, and the structured captions),
Open-Sora-Plan's annotations (`cap` as a string or a list, `frame_idx` "start:end").

Reasons are "<category>: <detail>" with the categories below, so `split(reason, ':')[0]` groups them.
"""
from __future__ import annotations

import ast
import json
import math
import os
import posixpath
import re
from collections.abc import Sequence
from urllib.parse import unquote, urlsplit

import pandas as pd

# Rejected rows: not ingested.
MALFORMED_ROW = "malformed row"
EMPTY_ID = "empty id"
EMPTY_URL = "empty url"
UNPARSABLE_URL = "unparsable url"
SCHEME_NOT_ALLOWED = "url scheme not allowed"
LOCAL_PATH_NOT_ALLOWED = "local path not allowed"
PATH_OUTSIDE_BASE = "path outside its base"
PATH_OUTSIDE_LOCAL_ROOTS = "local path outside ingest.local_roots"
CONFLICTING_DUPLICATE = "duplicate id with a different url"
CONFLICTS_WITH_LAKE = "id already in the lake with a different url"

# Warnings: the video is kept, the named field is null or the named span is not a clip hint.
UNPARSABLE_DURATION = "unparsable duration"
UNPARSABLE_TIMESTAMPS = "unparsable timestamp list"
DROPPED_SPAN = "clip span dropped"
UNPARSABLE_CAPTIONS = "unparsable caption list"
UNPARSABLE_SCORES = "unparsable score list"
LIST_LENGTHS_DIFFER = "list lengths differ"
UNPARSABLE_FIELD = "unparsable field"
DUPLICATE_FOLDED = "duplicate id with other fields"

# ISO 8601 durations as WebVid writes them (PT00H00M11S).
ISO_DURATION = r"^PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?$"
# A URL scheme, and the http(s) URL shape: a host, then no whitespace.
URL_SCHEME = r"^([A-Za-z][A-Za-z0-9+.\-]*):"
HTTP_URL = r"(?i)^https?://[^\s/?#@]+(?:[/?#]\S*)?$"
FILE_URL = r"(?i)^file://(?:localhost)?/"

# A clock time H:MM:SS(.fff) or MM:SS(.fff), as Panda-70M and MiraData write spans.
CLOCK_TIME = r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$"
_CLOCK = re.compile(CLOCK_TIME)
_ISO = re.compile(ISO_DURATION)
_SCHEME = re.compile(URL_SCHEME)
_HTTP = re.compile(HTTP_URL)
_FILE = re.compile(FILE_URL)
SHOWN_URL_CHARS = 200


def url_problem(url: str | None, allow_local_paths: bool) -> str | None:
    """Why a (trimmed) URL cannot be ingested, or None: http(s) with a host and no whitespace, or
    (where allowed) an absolute local path or file:// URL."""
    if _blank(url):
        return f"{EMPTY_URL}: the row has no url"
    if _HTTP.match(url):
        return None
    found = _SCHEME.match(url)
    scheme = found.group(1).lower() if found else ""
    local = url.startswith("/") or scheme == "file"
    unparsable = f"{UNPARSABLE_URL}: {url[:SHOWN_URL_CHARS]}"
    if scheme in ("http", "https"):
        return unparsable
    if local and not allow_local_paths:
        return f"{LOCAL_PATH_NOT_ALLOWED}: set ingest.allow_local_paths=true to ingest local files"
    if scheme == "file":
        return None if _FILE.match(url) else unparsable
    if local:
        return None
    if scheme:
        return f"{SCHEME_NOT_ALLOWED}: {scheme} (only http and https)"
    return unparsable


class LocalPaths:
    """Where the local files a batch of rows names may be: inside the base its relative paths were
    joined onto, and, where `local_roots` is not empty, under one of those folders. Symlinks are
    resolved before either check (the folders' once, here), so a link cannot lead out."""

    def __init__(self, base: str | None, local_roots: Sequence[str]):
        self.base = base
        base_file = local_file(base) if base else None
        self.real_base = os.path.realpath(base_file) if base_file else None
        self.local_roots = list(local_roots)
        self.real_roots = [os.path.realpath(root) for root in self.local_roots]

    def problem(self, location: str, relative: str | None) -> str | None:
        """Why an allowed location may still not be read, or None. `relative` is the path that was
        joined onto the base to give `location` (None where the row named it absolutely)."""
        if relative is not None and _climbs_out(relative):
            return f"{PATH_OUTSIDE_BASE}: {relative[:SHOWN_URL_CHARS]} leads out of {self.base}"
        file = local_file(location)
        if file is None:
            return None
        real = os.path.realpath(file)
        if relative is not None and self.real_base is not None and not _inside(real, self.real_base):
            return f"{PATH_OUTSIDE_BASE}: {relative[:SHOWN_URL_CHARS]} resolves to {real}, outside {self.base}"
        if self.real_roots and not any(_inside(real, root) for root in self.real_roots):
            return (f"{PATH_OUTSIDE_LOCAL_ROOTS}: {real[:SHOWN_URL_CHARS]} is under none of "
                    f"{', '.join(self.local_roots)}")
        return None


def local_file(location: str) -> str | None:
    """The file system path of a local location (/data/a.mp4, file:///data/a.mp4), else None."""
    if location.startswith("/"):
        return location
    if _FILE.match(location):
        return unquote(urlsplit(location).path)
    return None


def _climbs_out(relative: str) -> bool:
    """Whether a relative path's `..` parts lead above where it starts."""
    normal = posixpath.normpath(relative)
    return normal == ".." or normal.startswith("../")


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def parse_duration(text: object) -> float | None:
    """Seconds from ISO 8601 (PT00H00M11S), H:MM:SS or a plain non-negative number; None otherwise."""
    if _blank(text):
        return None
    value = str(text).strip()
    iso = _ISO.match(value)
    if iso and value != "PT":
        hours, minutes, seconds = iso.groups()
        return int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(seconds or 0)
    if _CLOCK.match(value):
        return parse_clock(value)
    number = None if "_" in value else _finite_float(value)
    return number if number is not None and number >= 0 else None


def parse_clock(text: object) -> float | None:
    """Seconds of a clock time `H:MM:SS(.fff)` or `MM:SS(.fff)` (or plain seconds); None if unparsable."""
    if text is None or (isinstance(text, float) and math.isnan(text)):
        return None
    value = str(text).strip()
    match = _CLOCK.match(value)
    if match:
        hours, minutes, seconds = match.groups()
        return int(hours or 0) * 3600 + int(minutes) * 60 + float(seconds)
    return _finite_float(value)


def _finite_float(value: object) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or str(value).strip() == ""


def _text(value: object) -> str | None:
    """A caption or field as clean text: None for a missing value, surrounding whitespace removed."""
    return None if _blank(value) else str(value).strip()


def _literal_list(text: object) -> list | None:
    """A Python-literal list (or tuple) as written by pandas' to_csv of a list column; None if unparsable."""
    if _blank(text):
        return None
    try:
        value = ast.literal_eval(str(text).strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return list(value) if isinstance(value, (list, tuple)) else None


def _span(start: float | None, end: float | None) -> str | None:
    """Why a span cannot be a clip hint, or None if it can."""
    if start is None or end is None:
        return "unparsable time"
    if start < 0:
        return "negative start"
    if end <= start:
        return "end is not after start"
    return None


def _merged(problems: dict[str, list[str]]) -> list[str]:
    """One warning per category: "category: detail; detail", so a row never repeats a reason."""
    return [f"{category}: {'; '.join(details)}" for category, details in problems.items()]


def panda70m_row(timestamp: object, caption: object, matching_score: object) -> tuple[list[dict] | None, list[str]]:
    """Panda-70M's clip spans of one video as clip hints, and the warnings of the fields it dropped.

    A broken timestamp list leaves no hints (None); a broken or short caption or score list leaves
    those hints without a caption or score; an unusable span is dropped from the hints."""
    problems: dict[str, list[str]] = {}
    spans = _literal_list(timestamp)
    if spans is None:
        problems[UNPARSABLE_TIMESTAMPS] = [_shorten(timestamp)]
        return None, _merged(problems)
    captions = _literal_list(caption)
    if captions is None and not _blank(caption):
        problems.setdefault(UNPARSABLE_CAPTIONS, []).append(_shorten(caption))
    scores = _literal_list(matching_score)
    if scores is None and not _blank(matching_score):
        problems.setdefault(UNPARSABLE_SCORES, []).append(_shorten(matching_score))
    for name, values in (("caption", captions), ("matching_score", scores)):
        if values is not None and len(values) != len(spans):
            problems.setdefault(LIST_LENGTHS_DIFFER, []).append(
                f"{len(spans)} spans, {len(values)} {name} entries"
            )
    hints = []
    for i, span in enumerate(spans):
        pair = list(span) if isinstance(span, (list, tuple)) and len(span) == 2 else None
        start, end = (parse_clock(pair[0]), parse_clock(pair[1])) if pair else (None, None)
        why = _span(start, end) if pair else "not a [start, end] pair"
        if why:
            problems.setdefault(DROPPED_SPAN, []).append(f"#{i + 1} {_shorten(span)} ({why})")
            continue
        hints.append(
            {
                "start_s": start,
                "end_s": end,
                "caption": _text(captions[i]) if captions is not None and i < len(captions) else None,
                "score": _finite_float(scores[i]) if scores is not None and i < len(scores) else None,
            }
        )
    return hints, _merged(problems)


def panda70m_fields(batch: pd.DataFrame) -> pd.DataFrame:
    """The batch with `clip_hints` and `warnings` added from Panda-70M's list columns."""
    parsed = [
        panda70m_row(t, c, s)
        for t, c, s in zip(batch["timestamp"], batch["caption"], batch["matching_score"], strict=True)
    ]
    return batch.assign(clip_hints=[p[0] for p in parsed], warnings=[p[1] for p in parsed])


MIRADATA_CAPTIONS = {
    "short": "short_caption",
    "dense": "dense_caption",
    "main_object": "main_object_caption",
    "background": "background_caption",
    "style": "style_caption",
    "camera": "camera_caption",
}


def miradata_row(row: dict, hint_caption: str) -> tuple[dict | None, str, list[str]]:
    """One MiraData clip row: its clip hint (None if its span is unusable), the JSON of its structured
    captions, and its warnings.

    The span comes from the frame range and fps when they parse (exact), else from the H:MM:SS
    timesteps."""
    fps = _finite_float(row.get("fps"))
    start_frame, end_frame = _finite_float(row.get("start_frame")), _finite_float(row.get("end_frame"))
    if fps and fps > 0 and start_frame is not None and end_frame is not None:
        start, end = start_frame / fps, end_frame / fps
    else:
        start, end = parse_clock(row.get("start_timestep")), parse_clock(row.get("end_timestep"))
    warnings = []
    if not _blank(row.get("fps")) and not (fps and fps > 0):
        warnings.append(f"{UNPARSABLE_FIELD}: fps {_shorten(row.get('fps'))}")
    why = _span(start, end)
    hint = None
    if why:
        detail = (
            f"frames {row.get('start_frame')}-{row.get('end_frame')} at fps {row.get('fps')}, "
            f"timesteps {row.get('start_timestep')}-{row.get('end_timestep')}"
        )
        warnings.append(f"{DROPPED_SPAN}: {_shorten(detail)} ({why})")
    else:
        hint = {"start_s": start, "end_s": end, "caption": _text(row.get(hint_caption)), "score": None}
    clip = {
        "index": _text(row.get("index")),
        "start_frame": _int_or_none(start_frame),
        "end_frame": _int_or_none(end_frame),
        "fps": fps,
        "start_s": start,
        "end_s": end,
        **{kind: _text(row.get(column)) for kind, column in MIRADATA_CAPTIONS.items()},
    }
    return hint, json.dumps(clip, ensure_ascii=False), warnings


def _int_or_none(value: float | None) -> int | None:
    return int(value) if value is not None and float(value).is_integer() else None


def miradata_fields(batch: pd.DataFrame, hint_caption: str = "dense_caption") -> pd.DataFrame:
    """The batch with `clip_hints` (the row's one hint, or empty), `clip_json` and `warnings` added."""
    if hint_caption not in MIRADATA_CAPTIONS.values():
        raise ValueError(f"MiraData hint caption must be one of {', '.join(MIRADATA_CAPTIONS.values())}")
    parsed = [miradata_row(row, hint_caption) for row in batch.to_dict("records")]
    return batch.assign(
        clip_hints=[[p[0]] if p[0] else [] for p in parsed],
        clip_json=[p[1] for p in parsed],
        warnings=[p[2] for p in parsed],
    )


def _captions(cap: object) -> list[str] | None:
    """Open-Sora-Plan's `cap`: a string, or a list of strings (kept by Spark as its JSON text)."""
    if _blank(cap):
        return []
    text = str(cap).strip()
    if not text.startswith("["):
        return [text]
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(c, str) for c in value):
        return None
    return [c.strip() for c in value if c.strip()]


def opensora_plan_row(row: dict) -> dict:
    """One Open-Sora-Plan annotation: caption, duration, its clip hint (from frame_idx and fps), extra
    fields as text, and the warnings of the fields that did not parse."""
    problems: dict[str, list[str]] = {}
    captions = _captions(row.get("cap"))
    if captions is None:
        problems.setdefault(UNPARSABLE_CAPTIONS, []).append(_shorten(row.get("cap")))
        captions = []
    fps = _finite_float(row.get("fps"))
    if not _blank(row.get("fps")) and not (fps and fps > 0):
        problems.setdefault(UNPARSABLE_FIELD, []).append(f"fps {_shorten(row.get('fps'))}")
        fps = None
    duration = _finite_float(row.get("duration"))
    if not _blank(row.get("duration")) and (duration is None or duration < 0):
        problems.setdefault(UNPARSABLE_DURATION, []).append(_shorten(row.get("duration")))
        duration = None
    extra = {"fps": _text(row.get("fps")), "frame_idx": _text(row.get("frame_idx"))}
    extra.update(_resolution(row.get("resolution"), problems))
    if len(captions) > 1:
        extra["caps"] = json.dumps(captions, ensure_ascii=False)
    hints = []
    frame_idx = _text(row.get("frame_idx"))
    if frame_idx is not None:
        hint, why = _frame_idx_hint(frame_idx, fps, captions[0] if captions else None)
        if hint:
            hints.append(hint)
        else:
            problems.setdefault(DROPPED_SPAN, []).append(f"frame_idx {_shorten(frame_idx)} ({why})")
    return {
        "caption": captions[0] if captions else None,
        "duration_s": duration,
        "clip_hints": hints,
        "extra": {k: v for k, v in extra.items() if v is not None},
        "warnings": _merged(problems),
    }


def _resolution(resolution: object, problems: dict[str, list[str]]) -> dict[str, str]:
    if _blank(resolution):
        return {}
    try:
        value = json.loads(str(resolution))
        return {k: str(int(value[k])) for k in ("height", "width") if value.get(k) is not None}
    except (ValueError, TypeError, AttributeError):
        problems.setdefault(UNPARSABLE_FIELD, []).append(f"resolution {_shorten(resolution)}")
        return {}


def _frame_idx_hint(frame_idx: str, fps: float | None, caption: str | None) -> tuple[dict | None, str]:
    parts = frame_idx.split(":")
    frames = [_finite_float(p) for p in parts] if len(parts) == 2 else [None, None]
    if None in frames:
        return None, "not start:end"
    if fps is None:
        return None, "no fps to convert frames to seconds"
    start, end = frames[0] / fps, frames[1] / fps
    why = _span(start, end)
    if why:
        return None, why
    return {"start_s": start, "end_s": end, "caption": caption, "score": None}, ""


def opensora_plan_fields(batch: pd.DataFrame) -> pd.DataFrame:
    """The batch with caption, duration_s, clip_hints, extra and warnings added."""
    parsed = [opensora_plan_row(row) for row in batch.to_dict("records")]
    columns = ("caption", "duration_s", "clip_hints", "extra", "warnings")
    return batch.assign(**{c: [p[c] for p in parsed] for c in columns})


def _shorten(value: object, limit: int = 120) -> str:
    """A field as it was written, cut to a length that keeps a reason readable."""
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 3] + "..."

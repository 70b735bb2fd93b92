"""Ingest's per-row rules in Arrow, one batch of source rows at a time, without Spark.

Pass 1 (`candidates`): a row's ids (schemas.ids), its URL and what is wrong with it on its own
(`reject`: malformed, no id, an unusable URL). Every source column is kept as text under `src.<name>`
so that pass 2 can build the video's fields, compare a duplicate with the row it folds into, and
write a rejected row as it was read.

Pass 2, after udfs/duplicates.py decided each row's status: `video_fields` (caption, duration,
clip hints, extra fields and their warnings) for the rows that become videos, and `error_rows`
(one ingest_errors row per rejected row and per warning).

Vectorised kernels carry the common case (WebVid's `PT00H00M11S`, http URLs); the rare rest goes
through the Python rules of udfs/sources.py, so both agree by construction.
"""
from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from schemas import ids
from schemas.sources import SourceFormat
from udfs import sources as parse
from udfs.csv_blocks import CORRUPT_RECORD, POSITION

SRC = "src."  # prefix of the source columns in a candidate row
ID_SEPARATOR = "\u001f"
ORDER = ("_file", "_block", POSITION)
HINT = pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("caption", pa.string()),
                  ("score", pa.float64())])
HINTS = pa.list_(HINT)
EXTRA = pa.map_(pa.string(), pa.string())
WARNINGS = pa.list_(pa.string())
WEBVID_DURATION = r"^PT\d\dH\d\dM\d\dS$"
JSON_ESCAPES = (("\\", "\\\\"), ('"', '\\"'), ("\n", "\\n"), ("\r", "\\r"), ("\t", "\\t"))
OTHER_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
SHOWN_VALUE_CHARS = 120
PARENT_PART = r"(^|/)\.\.(/|$)"  # a `..` part of a path


def candidates(
    rows: pa.Table, fmt: SourceFormat, settings: dict, file_name: str, block: int, columns: list[str], buckets: int
) -> tuple[pa.Table, np.ndarray]:
    """Rows of one file block (`columns` as text, CORRUPT_RECORD, POSITION) as candidates, and each
    one's bucket (rows without an id spread by position)."""
    n = rows.num_rows
    malformed = pc.is_valid(rows[CORRUPT_RECORD])
    keys = _keys(fmt, lambda name: rows[name] if name in columns else pa.nulls(n, pa.string()), columns, settings,
                 file_name)
    video_ids, buckets_of = ids.video_ids(fmt.name, keys["source_video_id"], buckets)
    no_id = pc.is_null(keys["source_video_id"])
    buckets_of = np.where(no_id.to_numpy(zero_copy_only=False), rows[POSITION].to_numpy() % buckets, buckets_of)
    empty_id = f"{parse.EMPTY_ID}: {fmt.video_id_column or 'its id or url column'} is empty"
    reject = pc.coalesce(
        when(malformed, pa.scalar(f"{parse.MALFORMED_ROW}: its fields do not match the header")),
        when(no_id, pa.scalar(empty_id)),
        url_problems(keys["url"], settings["allow_local_paths"], keys.get("relative"),
                     parse.LocalPaths(keys.get("base"), settings.get("local_roots") or ())),
    )
    table = pa.table({
        "_file": pa.repeat(pa.scalar(file_name), n).dictionary_encode(),
        "_block": pa.repeat(pa.scalar(block, pa.int64()), n),
        POSITION: rows[POSITION],
        "video_id": video_ids,
        "source_video_id": keys["source_video_id"],
        "row_key": keys["row_key"],
        "url": keys["url"],
        "reject": reject,
        CORRUPT_RECORD: rows[CORRUPT_RECORD],
        **{SRC + c: rows[c] for c in columns},
    })
    return table, buckets_of


# --- keys --------------------------------------------------------------------------------------------


def text(values) -> pa.Array:
    """A text field, trimmed; null where blank."""
    trimmed = pc.utf8_trim_whitespace(values)
    blank = pc.equal(trimmed, "")
    if not pc.any(blank).as_py():  # most columns: no copy of the strings to null a blank
        return trimmed
    return pc.if_else(blank, pa.scalar(None, pa.string()), trimmed)


def _keys(fmt: SourceFormat, field, columns: list[str], settings: dict, file_name: str) -> dict:
    """source_video_id, row_key and url of a format's rows. Rows with the same video id and row_key
    are duplicates; row_key is null where a row is the whole video (WebVid, Panda-70M, generic), so
    the id alone decides and no copy of it is staged. Formats with paths also give `base`, what
    relative paths are joined onto, and `relative`, each url's relative path (null where it has none)."""
    if fmt.name == "generic":
        return _generic_keys(field, columns, settings["generic"], file_name)
    video_id = text(field(fmt.video_id_column))
    if fmt.name == "miradata":
        parts = settings["miradata"]["url_template"].split("{video_id}")
        url = pc.binary_join_element_wise(*[p for part in parts for p in (part, video_id)][:-1], "")
        # Nulls as empty text: "skip" leaves a row whose fields are all null out of the result
        # (Arrow 26), so a blank row would shift every later row's key.
        frames = pc.binary_join_element_wise(video_id, field("start_frame"), field("end_frame"), ID_SEPARATOR,
                                             null_handling="replace", null_replacement="")
        return {"source_video_id": video_id, "row_key": pc.coalesce(text(field("index")), frames), "url": url}
    if fmt.name == "opensora-plan":
        base = base_of(settings["opensora_plan"]["data_root"], file_name)
        url, relative = resolved(video_id, base)
        frame_idx = pc.coalesce(text(field("frame_idx")), "")
        return {"source_video_id": video_id, "row_key": pc.binary_join_element_wise(video_id, frame_idx, ID_SEPARATOR),
                "url": url, "base": base, "relative": relative}
    url_column = {"webvid10m": "contentUrl", "panda70m": "url"}[fmt.name]
    return {"source_video_id": video_id, "row_key": pa.nulls(len(video_id), pa.string()),
            "url": text(field(url_column))}


def check_generic_mapping(mapping: dict, columns: list[str], file_name: str) -> None:
    """A clear error where the generic column mapping does not fit a file's columns: it needs a url
    or path column, and the id column where one is mapped (caption and duration may be missing)."""
    if mapping.get("id") is not None and mapping["id"] not in columns:
        raise ValueError(
            f"{file_name}: ingest.generic.id names column {mapping['id']!r}, which the input lacks (it has {columns})"
        )
    if not any(mapping.get(key) in columns for key in ("url", "path")):
        raise ValueError(
            f"{file_name}: the input has neither a url column {mapping.get('url')!r} nor a path column "
            f"{mapping.get('path')!r} (it has {columns}); map yours with --set ingest.generic.url=NAME or "
            "ingest.generic.path=NAME"
        )


def _generic_keys(field, columns: list[str], mapping: dict, file_name: str) -> dict:
    check_generic_mapping(mapping, columns, file_name)
    present = [key for key in ("url", "path") if mapping.get(key) in columns]
    url = text(field(mapping["url"])) if "url" in present else None
    base, relative = base_of(mapping["data_root"], file_name), None
    if "path" in present:
        path, relative = resolved(text(field(mapping["path"])), base)
        if url is not None:  # a row's url wins over its path
            relative = pc.if_else(pc.is_null(url), relative, pa.scalar(None, pa.string()))
        url = path if url is None else pc.coalesce(url, path)
    identity = text(field(mapping["id"])) if mapping.get("id") else url
    return {"source_video_id": identity, "row_key": pa.nulls(len(identity), pa.string()), "url": url, "base": base,
            "relative": relative}


def base_of(data_root: str | None, file_name: str) -> str:
    """What relative paths are under: data_root, or the input file's folder where it is not set."""
    return data_root.rstrip("/") if data_root else file_name.rsplit("/", 1)[0]


def resolved(path: pa.Array, base: str) -> tuple[pa.Array, pa.Array]:
    """Paths as locations (absolute paths and URLs as they are, relative ones joined onto base),
    and the relative paths (null where a path was absolute)."""
    absolute = pc.or_(pc.starts_with(path, "/"), pc.match_substring_regex(path, parse.URL_SCHEME))
    relative = pc.if_else(absolute, pa.scalar(None, pa.string()), pc.replace_substring_regex(path, r"^\./", ""))
    return pc.coalesce(pc.binary_join_element_wise(base, relative, "/"), path), relative


# --- rejects -----------------------------------------------------------------------------------------


def url_problems(
    urls: pa.Array, allow_local_paths: bool, relative: pa.Array | None, local_paths: parse.LocalPaths
) -> pa.Array:
    """Why each URL cannot be ingested, or null (udfs/sources.url_problem, then LocalPaths.problem
    for what it allows; `relative` is each URL's relative path, or None where none has one). http
    URLs whose relative path (if any) has no `..` part, nearly every row, are settled by vectorised
    matches."""
    plain = pc.fill_null(pc.match_substring_regex(urls, parse.HTTP_URL), False)
    if relative is not None:
        plain = pc.and_(plain, pc.invert(pc.fill_null(pc.match_substring_regex(relative, PARENT_PART), False)))
    problems = np.full(len(urls), None, dtype=object)
    rest = np.flatnonzero(~plain.to_numpy(zero_copy_only=False))
    values = pc.take(urls, pa.array(rest)).to_pylist()
    paths = pc.take(relative, pa.array(rest)).to_pylist() if relative is not None else [None] * len(rest)
    problems[rest] = [parse.url_problem(url, allow_local_paths) or local_paths.problem(url, path)
                      for url, path in zip(values, paths, strict=True)]
    return pa.array(problems, pa.string())


def when(condition: pa.Array, value: pa.Array | pa.Scalar) -> pa.Array:
    """`value` where `condition` holds, else null."""
    return pc.if_else(condition, value, pa.scalar(None, value.type))


# --- pass 2: video fields ----------------------------------------------------------------------------


def video_fields(rows: pa.Table, fmt: SourceFormat, settings: dict, file_columns: dict) -> dict[str, pa.Array]:
    """caption, duration_s, clip_hints, extra, clip_json and warnings of rows that become videos
    (or, for sets with one row per clip, clips of one); `file_columns` names each file's columns."""
    n = rows.num_rows
    src = _src_columns(rows)
    nothing = {"caption": pa.nulls(n, pa.string()), "duration_s": pa.nulls(n, pa.float64()),
               "clip_hints": pa.nulls(n, HINTS), "extra": pa.nulls(n, EXTRA), "clip_json": pa.nulls(n, pa.string())}
    if fmt.name == "webvid10m":
        seconds, warnings = durations(text(src["duration"]))
        page_dir = pa.MapArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32)),
                                           pa.repeat(pa.scalar("page_dir"), n), src["page_dir"])
        return {**nothing, "caption": text(src["name"]), "duration_s": seconds, "extra": page_dir,
                "warnings": _as_lists(warnings)}
    if fmt.name == "generic":
        return _generic_fields(rows, src, settings["generic"], nothing, file_columns)
    return {**nothing, **_python_fields(src, fmt, settings, n)}


def _generic_fields(
    rows: pa.Table, src: dict[str, pa.Array], mapping: dict, nothing: dict, file_columns: dict
) -> dict[str, pa.Array]:
    """The mapped fields, and every other column of the row's file as `extra`."""
    n = rows.num_rows
    fields = dict(nothing)
    if mapping.get("caption") in src:
        fields["caption"] = text(src[mapping["caption"]])
    warnings = pa.nulls(n, pa.string())
    if mapping.get("duration") in src:
        fields["duration_s"], warnings = durations(text(src[mapping["duration"]]))
    mapped = {mapping.get(k) for k in ("url", "path", "caption", "id", "duration")}
    files = plain(rows["_file"]).to_numpy(zero_copy_only=False)
    has = {name: np.isin(files, [f for f, cols in file_columns.items() if name in cols]) for name in src}
    fields["extra"] = _as_map({name: values for name, values in src.items() if name not in mapped}, has, n)
    fields["warnings"] = _as_lists(warnings)
    return fields


def _python_fields(src: dict[str, pa.Array], fmt: SourceFormat, settings: dict, n: int) -> dict[str, pa.Array]:
    """The fields of the sets whose lists and clip rows need a real parser (udfs/sources.py)."""
    batch = pa.table(src).to_pandas() if src else None
    if fmt.name == "panda70m":
        parsed, outputs = parse.panda70m_fields(batch), ("clip_hints", "warnings")
    elif fmt.name == "miradata":
        parsed = parse.miradata_fields(batch, hint_caption=settings["miradata"]["hint_caption"])
        outputs = ("clip_hints", "clip_json", "warnings")
    else:
        parsed = parse.opensora_plan_fields(batch)
        outputs = ("caption", "duration_s", "clip_hints", "extra", "warnings")
    types = {"caption": pa.string(), "duration_s": pa.float64(), "clip_hints": HINTS, "extra": EXTRA,
             "clip_json": pa.string(), "warnings": WARNINGS}
    fields = {name: pa.array(parsed[name].tolist(), types[name]) for name in outputs}
    if "extra" in fields:
        fields["extra"] = pa.array([list(e.items()) if e else e for e in parsed["extra"]], EXTRA)
    return fields


def durations(values: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Seconds of each duration (udfs/sources.parse_duration), and a warning where a value is there
    but unparsable. WebVid's PT00H00M11S is read by position; other shapes go through Python."""
    fixed = pc.fill_null(pc.match_substring_regex(values, WEBVID_DURATION), False).to_numpy(zero_copy_only=False)
    seconds = np.full(len(values), np.nan)
    if fixed.any():
        shaped = pc.filter(values, pa.array(fixed))
        parts = [pc.cast(pc.utf8_slice_codeunits(shaped, a, a + 2), pa.int64()) for a in (2, 5, 8)]
        total = pc.add(pc.add(pc.multiply(parts[0], 3600), pc.multiply(parts[1], 60)), parts[2])
        seconds[fixed] = pc.cast(total, pa.float64()).to_numpy()
    rest = np.flatnonzero(~fixed & pc.is_valid(values).to_numpy(zero_copy_only=False))
    warnings = np.full(len(values), None, dtype=object)
    for i, value in zip(rest, pc.take(values, pa.array(rest)).to_pylist(), strict=True):
        parsed = parse.parse_duration(value)
        if parsed is None:
            warnings[i] = f"{parse.UNPARSABLE_DURATION}: {value[:SHOWN_VALUE_CHARS]}"
        else:
            seconds[i] = parsed
    return pa.array(seconds, pa.float64(), from_pandas=True), pa.array(warnings, pa.string())


def _as_lists(warnings: pa.Array) -> pa.Array:
    """One warning per row (or null) as a list of warnings (empty where there is none)."""
    present = pc.is_valid(warnings).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(present)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pc.drop_null(warnings))


def _as_map(columns: dict[str, pa.Array], has: dict[str, np.ndarray], n: int) -> pa.Array:
    """Columns as one map per row (column name -> text, nulls included), each row with the columns
    its file has (`has[name]` marks the rows whose file has that column)."""
    names = list(columns)
    if not names:
        return pa.MapArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()),
                                       pa.array([], pa.string()))
    keep = np.stack([has[name] for name in names], axis=1).ravel()  # by row, then column
    by_row = np.arange(n * len(names)).reshape(len(names), n).T.ravel()[keep]
    items = pa.concat_arrays([plain(columns[name]) for name in names]).take(pa.array(by_row))
    keys = pa.array(np.tile(np.array(names, dtype=object), n)[keep], pa.string())
    counts = keep.reshape(n, len(names)).sum(axis=1)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    return pa.MapArray.from_arrays(offsets, keys, items)


def plain(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array (a table's column is chunked)."""
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def _json_special_chars(values: pa.Array) -> set[str]:
    """The characters JSON escapes (quote, backslash, controls) that occur in a string array: one
    numpy scan of its UTF-8 bytes (a multi-byte character has no byte below 0x80)."""
    if len(values) == 0 or values.buffers()[2] is None:
        return set()
    width = np.int64 if pa.types.is_large_string(values.type) else np.int32
    offsets = np.frombuffer(values.buffers()[1], dtype=width)[values.offset: values.offset + len(values) + 1]
    text = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[-1]]
    special = text[(text < 0x20) | (text == ord('"')) | (text == ord("\\"))]
    return {chr(b) for b in np.unique(special)}


def _src_columns(rows: pa.Table) -> dict[str, pa.Array]:
    return {name[len(SRC):]: plain(rows[name]) for name in rows.column_names if name.startswith(SRC)}


# --- pass 2: ingest_errors ---------------------------------------------------------------------------


def error_rows(
    classified: pa.Table, warned_at: np.ndarray, warnings: pa.Array, source: str, row_offsets: dict,
    file_columns: dict, batch: str, now: datetime,
) -> pa.Table:
    """ingest_errors' rows: one per rejected row, and one per warning (`warnings[i]` is a warning of
    row `warned_at[i]`). `row_offsets` maps (file, block) to the number to add to a row's POSITION
    to get its 1-based row in the file; `file_columns` names each file's columns (what `raw` shows)."""
    rejected = np.flatnonzero(pc.equal(classified["status"], "rejected").to_numpy(zero_copy_only=False))
    at = np.concatenate([rejected, warned_at]).astype(np.int64)
    shown = [*ORDER, "video_id", CORRUPT_RECORD, *[c for c in classified.column_names if c.startswith(SRC)]]
    rows = classified.select(shown).take(pa.array(at))
    reasons = pa.concat_arrays([plain(pc.take(classified["reason"], pa.array(rejected))), plain(warnings)])
    warning = pa.array(np.arange(len(at)) >= len(rejected))
    files = plain(rows["_file"])
    return pa.table({
        "source": pa.repeat(pa.scalar(source), rows.num_rows),
        "input_file": files,
        "row_number": _row_numbers(rows, files, row_offsets),
        "raw": raw_json(rows, files, file_columns),
        "severity": pc.if_else(warning, "warning", "rejected"),
        "reason": reasons,
        "video_id": pc.if_else(warning, rows["video_id"], pa.scalar(None, pa.string())),
        "ingest_batch": pa.repeat(pa.scalar(batch), rows.num_rows),
        "recorded_at": pa.repeat(pa.scalar(now, pa.timestamp("us", tz="UTC")), rows.num_rows),
    })


def _row_numbers(rows: pa.Table, files: pa.Array, row_offsets: dict) -> pa.Array:
    blocks = rows["_block"].to_numpy()
    offsets = np.zeros(rows.num_rows, dtype=np.int64)
    for file_name, at in _rows_by_file(files):
        for block in np.unique(blocks[at]):
            offsets[at[blocks[at] == block]] = row_offsets[(file_name, int(block))]
    return pa.array(plain(rows[POSITION]).to_numpy() + offsets)


def _rows_by_file(files: pa.Array) -> list[tuple[str, np.ndarray]]:
    encoded = pc.dictionary_encode(files)
    codes = encoded.indices.to_numpy(zero_copy_only=False)
    return [(name, np.flatnonzero(codes == code)) for code, name in enumerate(encoded.dictionary.to_pylist())]


def raw_json(rows: pa.Table, files: pa.Array, file_columns: dict) -> pa.Array:
    """Each row as it was read: a corrupt record's text, else a JSON object of its file's columns."""
    by_file = _rows_by_file(files)
    if not by_file:
        return pa.array([], pa.string())
    if len(by_file) == 1:  # one input file, the common case: no reordering
        objects = _json_objects(rows, file_columns[by_file[0][0]])
    else:
        parts = [_json_objects(rows.take(pa.array(at)), file_columns[name]) for name, at in by_file]
        back = np.argsort(np.concatenate([at for _, at in by_file]))
        objects = pa.concat_arrays(parts).take(pa.array(back))
    corrupt = plain(rows[CORRUPT_RECORD])
    return pc.if_else(pc.is_valid(corrupt), corrupt, objects) if corrupt.null_count < len(corrupt) else objects


def _json_objects(rows: pa.Table, columns: list[str]) -> pa.Array:
    """`{"column":"text" or null,...}` per row, as compact json.dumps writes it (non-ASCII kept). A column
    is searched only for the special characters it holds; most hold none and are copied as they are."""
    import json

    pieces, text, odd = [], "{", np.zeros(rows.num_rows, dtype=bool)
    for i, name in enumerate(columns):
        escaped = plain(rows[SRC + name])
        present = _json_special_chars(escaped)
        for char, escape in JSON_ESCAPES:
            if char in present:
                escaped = pc.replace_substring(escaped, char, escape)
        if present - {escape[0] for escape in JSON_ESCAPES}:
            odd |= pc.fill_null(pc.match_substring_regex(escaped, OTHER_CONTROL), False).to_numpy(
                zero_copy_only=False)
        text += ("," if i else "") + json.dumps(name) + ":"
        if escaped.null_count:
            pieces += [pa.scalar(text), pc.fill_null(pc.binary_join_element_wise('"', escaped, '"', ""), "null")]
            text = ""
        else:  # its quotes join the constant text around it: one join fewer
            pieces += [pa.scalar(text + '"'), escaped]
            text = '"'
    objects = pc.binary_join_element_wise(*pieces, text + "}", "")
    if not odd.any():
        return objects
    result = objects.to_numpy(zero_copy_only=False)
    for i in np.flatnonzero(odd):
        result[i] = json.dumps({name: rows[SRC + name][int(i)].as_py() for name in columns}, ensure_ascii=False,
                               separators=(",", ":"))
    return pa.array(result, pa.string())

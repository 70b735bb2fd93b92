"""Ingest's duplicate rules on one bucket of candidate rows (all rows of a set of video ids), in Arrow.

The ingest job hashes every candidate row to a bucket by video_id, so all rows that could be
duplicates of each other, and the lake's row for their video, meet in one bucket; `classify`
decides each row's status there with vectorised sorts and comparisons, without a Spark shuffle.

The rules, in order: a row's own problem (`reject`, set before); a later row (in file order) with
the id of an earlier one but another URL is rejected (the first row wins); a row whose URL is not
the one the lake has for its video is rejected (the lake's row is older than any input row); a
later row with the first one's URL is folded into it, with a warning when its other fields differ.
Re-ingesting a file gives every row the status and reason it had the first time.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from udfs import sources as parse
from udfs.candidates import SRC, plain, when

ORDER = ("_file", "_block", "_pos")
NULL_TEXT = "\u0000"  # stands for a null field when fields are compared
FOLDED_WARNING = (
    f"{parse.DUPLICATE_FOLDED}: the first row with this id and url is kept, this row's other fields dropped"
)


def classify(rows: pa.Table, lake_urls: pa.Table | None) -> pa.Table:
    """`rows` (video_id, row_key, url, reject, ORDER and the source columns `src.*`) with status
    (accepted | folded | rejected), reason, in_lake and differs (a folded row whose source fields
    are not its first row's) added; video_id is null where rejected. `lake_urls` (video_id, url)
    holds the lake's videos of the same source and bucket."""
    first = _first_of_key(rows)
    first_url = rows["url"].take(first["row"])
    later = pc.and_(pc.is_null(rows["reject"]), pc.invert(first["is_first"]))
    conflict = pc.and_(later, pc.not_equal(rows["url"], first_url))
    lake_url = _lake_url(rows["video_id"], lake_urls)
    lake_conflict = pc.and_(pc.is_valid(lake_url), pc.not_equal(lake_url, rows["url"]))
    reason = pc.coalesce(
        rows["reject"],
        _prefixed_where(conflict, f"{parse.CONFLICTING_DUPLICATE}: the first row with this id has ", first_url),
        _prefixed_where(lake_conflict, f"{parse.CONFLICTS_WITH_LAKE}: ", lake_url),
    )
    rejected = pc.is_valid(reason)
    status = pc.if_else(rejected, "rejected", pc.if_else(later, "folded", "accepted"))
    differs = _fields_differ(rows, first["row"], pc.and_(pc.invert(rejected), later))
    return (
        rows.set_column(
            rows.schema.get_field_index("video_id"), "video_id", when(pc.invert(rejected), rows["video_id"])
        )
        .append_column("status", status)
        .append_column("reason", reason)
        .append_column("in_lake", pc.is_valid(lake_url))
        .append_column("differs", differs)
    )


def warnings(classified: pa.Table, new_at: np.ndarray, field_warnings: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """Every warning of a bucket as (row, text), by row: the field warnings of the rows added now
    (`field_warnings` lists them for the rows `new_at`), and FOLDED_WARNING for a folded row with
    other fields whose video is added now. Rows rejected or already in the lake warn of nothing."""
    field_rows = new_at[pc.list_parent_indices(field_warnings).to_numpy()]
    folded = pc.and_(classified["differs"], pc.invert(classified["in_lake"]))
    folded_rows = np.flatnonzero(folded.to_numpy(zero_copy_only=False)) if len(classified) else np.array([], int)
    rows = np.concatenate([field_rows, folded_rows]).astype(np.int64)
    texts = pa.concat_arrays([
        pc.list_flatten(field_warnings).cast(pa.string()),
        pa.repeat(pa.scalar(FOLDED_WARNING), len(folded_rows)),
    ])
    order = np.argsort(rows, kind="stable")
    return rows[order], texts.take(pa.array(order))


def _fields_differ(rows: pa.Table, first_row: pa.Array, later: pa.Array) -> pa.Array:
    """Whether a `later` row's source fields differ from those of the row `first_row` names (nulls
    equal); false for every other row. Only later rows are compared: in most files they are few."""
    at = np.flatnonzero(later.to_numpy(zero_copy_only=False))
    differ = np.zeros(rows.num_rows, dtype=bool)
    if not len(at):
        return pa.array(differ)
    rows_at, firsts = pa.array(at), pa.array(first_row.to_numpy()[at])
    for name in rows.column_names:
        if name.startswith(SRC):
            mine = pc.fill_null(rows[name].take(rows_at), NULL_TEXT)
            theirs = pc.fill_null(rows[name].take(firsts), NULL_TEXT)
            differ[at] |= pc.not_equal(mine, theirs).to_numpy(zero_copy_only=False)
    return pa.array(differ)


def _first_of_key(rows: pa.Table) -> dict[str, pa.Array]:
    """Per row: whether it is the first (in file order) of the valid rows with its (video_id,
    row_key), and that first row's index. Rejected rows are each their own first.

    Keys become integer codes (Arrow's hash-based dictionary encoding), so the work is a numpy
    lexsort of integers rather than a sort of strings."""
    n = rows.num_rows
    valid_at = np.flatnonzero(pc.is_null(rows["reject"]).to_numpy(zero_copy_only=False))
    keyed = rows.select(["video_id", "row_key", *ORDER]).take(pa.array(valid_at))
    file_order = _codes(keyed["_file"], ranked=True)
    in_file_order = np.lexsort((keyed["_pos"].to_numpy(), keyed["_block"].to_numpy(), file_order))
    key = _codes(keyed["video_id"]) * (len(valid_at) + 1) + _codes(keyed["row_key"])
    _, first_of_group, group = np.unique(key[in_file_order], return_index=True, return_inverse=True)
    sorted_rows = valid_at[in_file_order]
    first_row = np.arange(n)
    first_row[sorted_rows] = sorted_rows[first_of_group[group]]
    return {"is_first": pa.array(first_row == np.arange(n)), "row": pa.array(first_row)}


def _codes(values: pa.ChunkedArray, ranked: bool = False) -> np.ndarray:
    """An int64 code per value, equal for equal values (null is its own value); with `ranked`, codes
    follow the values' sort order."""
    encoded = pc.dictionary_encode(values, null_encoding="encode").combine_chunks()
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    if not ranked:
        return codes
    rank = np.empty(len(encoded.dictionary), dtype=np.int64)
    rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary))
    return rank[codes]


def _lake_url(video_id: pa.ChunkedArray, lake_urls: pa.Table | None) -> pa.Array:
    if lake_urls is None or lake_urls.num_rows == 0:
        return pa.nulls(len(video_id), pa.string())
    at = pc.index_in(video_id, value_set=lake_urls["video_id"].combine_chunks())
    return lake_urls["url"].combine_chunks().take(at)


def _prefixed_where(condition: pa.Array, prefix: str, url: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`prefix` and the start of `url` where `condition` holds, else null; only those rows' texts
    are built."""
    mask = pa.array(pc.fill_null(condition, False).to_numpy(zero_copy_only=False))
    url = plain(url)
    texts = pc.binary_join_element_wise(prefix, pc.utf8_slice_codeunits(url.filter(mask), 0, parse.SHOWN_URL_CHARS), "")
    return pc.replace_with_mask(pa.nulls(len(url), pa.string()), mask, texts)

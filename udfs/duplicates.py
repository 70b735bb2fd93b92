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

ORDER = ("_file", "_block", "_pos")
SHOWN_URL_CHARS = 200
FOLDED_WARNING = (
    f"{parse.DUPLICATE_FOLDED}: the first row with this id and url is kept, this row's other fields dropped"
)


def classify(rows: pa.Table, lake_urls: pa.Table | None) -> pa.Table:
    """`rows` (video_id, row_key, url, reject, row_hash, field_warnings, ORDER, ...) with status
    (accepted | folded | rejected), reason, in_lake and warnings added; video_id is null where rejected.
    `lake_urls` (video_id, url) holds the lake's videos of the same source and bucket."""
    first = _first_of_key(rows)
    later = pc.and_(pc.is_null(rows["reject"]), pc.invert(first["is_first"]))
    conflict = pc.and_(later, pc.not_equal(rows["url"], first["url"]))
    lake_url = _lake_url(rows["video_id"], lake_urls)
    lake_conflict = pc.and_(pc.is_valid(lake_url), pc.not_equal(lake_url, rows["url"]))
    reason = pc.coalesce(
        rows["reject"],
        _when(conflict, _prefixed(f"{parse.CONFLICTING_DUPLICATE}: the first row with this id has ", first["url"])),
        _when(lake_conflict, _prefixed(f"{parse.CONFLICTS_WITH_LAKE}: ", lake_url)),
    )
    rejected = pc.is_valid(reason)
    status = pc.if_else(rejected, "rejected", pc.if_else(later, "folded", "accepted"))
    in_lake = pc.is_valid(lake_url)
    folded_warned = pc.and_(pc.and_(pc.invert(rejected), later), pc.not_equal(rows["row_hash"], first["row_hash"]))
    warnings = _warnings(rows["field_warnings"], status, in_lake, folded_warned)
    return (
        rows.drop_columns(["field_warnings"])
        .set_column(rows.schema.get_field_index("video_id"), "video_id", _when(pc.invert(rejected), rows["video_id"]))
        .append_column("status", status)
        .append_column("reason", reason)
        .append_column("in_lake", in_lake)
        .append_column("warnings", warnings)
    )


def _first_of_key(rows: pa.Table) -> dict[str, pa.Array]:
    """Per row: whether it is the first (in file order) of the valid rows with its (video_id,
    row_key), and that first row's url and row_hash. Rejected rows are each their own first."""
    n = rows.num_rows
    valid = pc.is_null(rows["reject"]).to_numpy(zero_copy_only=False)
    valid_at = np.flatnonzero(valid)
    keyed = rows.select(["video_id", "row_key", *ORDER]).take(valid_at)
    order = pc.sort_indices(keyed, sort_keys=[(name, "ascending") for name in keyed.column_names]).to_numpy()
    video_id = keyed["video_id"].take(order).to_numpy(zero_copy_only=False)
    row_key = keyed["row_key"].take(order).to_numpy(zero_copy_only=False)
    starts = np.ones(len(order), dtype=bool)
    starts[1:] = (video_id[1:] != video_id[:-1]) | (row_key[1:] != row_key[:-1])
    group_first = np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))
    sorted_rows = valid_at[order]
    first_row = np.arange(n)
    first_row[sorted_rows] = sorted_rows[group_first]
    first_taken = pa.array(first_row)
    return {
        "is_first": pa.array(first_row == np.arange(n)),
        "url": rows["url"].take(first_taken),
        "row_hash": rows["row_hash"].take(first_taken),
    }


def _lake_url(video_id: pa.ChunkedArray, lake_urls: pa.Table | None) -> pa.Array:
    if lake_urls is None or lake_urls.num_rows == 0:
        return pa.nulls(len(video_id), pa.string())
    at = pc.index_in(video_id, value_set=lake_urls["video_id"].combine_chunks())
    return lake_urls["url"].combine_chunks().take(at)


def _when(condition: pa.Array, value: pa.Array) -> pa.Array:
    return pc.if_else(condition, value, pa.scalar(None, value.type))


def _prefixed(prefix: str, url: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise(prefix, pc.utf8_slice_codeunits(url, 0, SHOWN_URL_CHARS), "")


def _warnings(
    field_warnings: pa.ChunkedArray, status: pa.Array, in_lake: pa.Array, folded_warned: pa.Array
) -> pa.Array:
    """An accepted row added now keeps its field warnings; a folded row with other fields gets
    FOLDED_WARNING; every other row (rejected, or its video already in the lake) none."""
    n = len(status)
    none = pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, dtype=np.int32)), pa.array([], pa.string()))
    folded = pa.ListArray.from_arrays(
        pa.array(np.arange(n + 1, dtype=np.int32)), pa.array(np.full(n, FOLDED_WARNING, dtype=object), pa.string())
    )
    new = pc.invert(in_lake)
    accepted_new = pc.and_(pc.equal(status, "accepted"), new)
    chosen = pc.if_else(accepted_new, pc.coalesce(field_warnings, none), none)
    return pc.if_else(pc.and_(folded_warned, new), folded, chosen)

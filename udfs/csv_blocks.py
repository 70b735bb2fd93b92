"""A CSV file's byte range as Arrow rows, the way Hadoop splits text files, without Spark.

A block [start, end) owns the rows that begin in it: it skips the partial row it starts in and
reads past `end` to finish its last row. Read in blocks, a newline inside a quoted field can fall
on a block's edge and break rows apart; those rows do not fit the header and come back as corrupt
records, and the ingest job then reads the file again as one stream (`stream=True`, one block from
0 to the end of the file, gzip included), which `read_chunks` parses as it reads and hands over in
chunks, so one task streams a file of any size.

Each row keeps its place: `_pos` is its ordinal among the block's rows (blank lines skipped, as
Spark skips them), corrupt records included, so a reader can number every row of the file.
"""
from __future__ import annotations

import csv
import io
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

CORRUPT_RECORD = "_corrupt_record"
POSITION = "_pos"
PARSE_CHUNK_BYTES = 1 << 20  # pyarrow's parse chunk: in cache (1 MiB parsed a 64 MB block 25% faster than 4)
SCAN_BYTES = 1 << 16  # read size when looking for the end of a row
FIRST_DATA_ROW = 2  # pyarrow's number of a stream's first row after its header
HEADER_BYTES = 1 << 20  # a header longer than this is not a CSV header


@dataclass(frozen=True)
class CsvBlock:
    """`path` as its file system names it; `header` is true for the block that starts the file."""

    path: str
    start: int
    end: int
    stream: bool = False

    @property
    def header(self) -> bool:
        return self.start == 0


def plan_blocks(path: str, size: int, block_bytes: int, stream: bool) -> list[CsvBlock]:
    """The blocks of one file: about `block_bytes` each, or the whole file as one stream (compressed
    files are always one stream)."""
    if stream or compressed(path) or size <= block_bytes:
        return [CsvBlock(path, 0, size, stream=stream or compressed(path))]
    return [CsvBlock(path, start, min(start + block_bytes, size)) for start in range(0, size, block_bytes)]


def compressed(path: str) -> bool:
    """A gzip file: it cannot be read from the middle, so it is always one stream."""
    return path.endswith(".gz")


def read_header(filesystem, path: str) -> list[str]:
    """The header's column names, an empty name as Spark names it (`_c<position>`)."""
    with _open(filesystem, path, stream=True) as f:
        text = f.read(HEADER_BYTES).decode("utf-8-sig", errors="replace")
    names = next(csv.reader(io.StringIO(text)), [])
    return [name if name else f"_c{i}" for i, name in enumerate(names)]


def read_block(filesystem, block: CsvBlock, columns: list[str]) -> pa.Table:
    """The block's rows: every column as text (null where empty), CORRUPT_RECORD (the text of a row
    that does not fit the header, whose other columns are null) and POSITION."""
    if block.stream:
        return pa.concat_tables(read_chunks(filesystem, block, columns, chunk_bytes=1 << 62))
    data = _block_bytes(filesystem, block)
    try:
        return _parse(data, block, columns)
    except pa.ArrowInvalid as err:
        if "Empty CSV file" in str(err):  # a block with no row starting in it, or a header alone
            return _no_rows(columns)
        if "UTF8" not in str(err).upper():
            raise
        # Invalid UTF-8 becomes U+FFFD, as Spark's reader does, rather than failing the file.
        return _parse(bytes(data).decode("utf-8", errors="replace").encode(), block, columns)


def read_chunks(filesystem, block: CsvBlock, columns: list[str], chunk_bytes: int) -> Iterator[pa.Table]:
    """A block's rows (as read_block gives them) in tables of about `chunk_bytes` each; a stream
    block (a whole file, gzip included) is parsed as it is read, so no task holds a whole file."""
    if not block.stream:
        yield read_block(filesystem, block, columns)
        return
    corrupt: list[pcsv.InvalidRow] = []

    def keep_corrupt(row: pcsv.InvalidRow) -> str:
        corrupt.append(row)
        return "skip"

    pending, pending_bytes, seen = [], 0, 0
    with _open(filesystem, block.path, stream=True) as source:
        try:
            reader = pcsv.open_csv(
                source,
                read_options=pcsv.ReadOptions(use_threads=False, block_size=PARSE_CHUNK_BYTES, column_names=columns,
                                              skip_rows=1),
                parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=keep_corrupt),
                # Bytes, made text per batch: invalid UTF-8 is replaced there instead of failing the stream.
                convert_options=_text_options(columns, pa.binary()),
            )
        except pa.ArrowInvalid as err:
            if "Empty CSV file" not in str(err):
                raise
            yield _no_rows(columns)
            return
        batches = (pa.Table.from_batches([batch]) for batch in reader)
        for table in itertools.chain(batches, [None]):  # None: the corrupt rows after the last batch
            if table is None:
                table, owned = pa.schema([(c, pa.binary()) for c in columns]).empty_table(), len(corrupt)
            else:
                owned = _corrupt_within(corrupt, seen, table.num_rows)
            rows = _with_places(table, corrupt[:owned], seen, FIRST_DATA_ROW)
            del corrupt[:owned]
            rows = pa.table({c: _as_text(rows[c]) if c in columns else rows[c] for c in rows.column_names})
            seen += rows.num_rows
            pending.append(rows)
            pending_bytes += rows.nbytes
            if pending_bytes >= chunk_bytes:
                yield pa.concat_tables(pending)
                pending, pending_bytes = [], 0
    yield pa.concat_tables(pending)


def _parse(data: pa.Buffer | bytes, block: CsvBlock, columns: list[str]) -> pa.Table:
    corrupt: list[pcsv.InvalidRow] = []

    def keep_corrupt(row: pcsv.InvalidRow) -> str:
        corrupt.append(row)
        return "skip"

    table = pcsv.read_csv(
        pa.BufferReader(data),
        read_options=pcsv.ReadOptions(
            use_threads=False, block_size=PARSE_CHUNK_BYTES, column_names=columns, skip_rows=int(block.header)
        ),
        parse_options=pcsv.ParseOptions(newlines_in_values=True, invalid_row_handler=keep_corrupt),
        convert_options=_text_options(columns, pa.string()),
    )
    # pyarrow numbers rows from 1, the skipped header included
    return _with_places(table, corrupt, 0, 1 + int(block.header))


def _corrupt_within(corrupt: list, before: int, valid_rows: int) -> int:
    """How many of the corrupt rows parsed so far (in file order) lie among a batch's rows: those
    before its last valid row. The reader parses ahead, so later batches' corrupt rows may be there."""
    owned = 0
    while owned < len(corrupt) and corrupt[owned].number - FIRST_DATA_ROW < before + valid_rows + owned:
        owned += 1
    return owned


def _text_options(columns: list[str], kind: pa.DataType) -> pcsv.ConvertOptions:
    return pcsv.ConvertOptions(column_types={c: kind for c in columns}, strings_can_be_null=True, null_values=[""],
                               quoted_strings_can_be_null=False)


def _as_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Bytes as UTF-8 text; invalid UTF-8 becomes U+FFFD, as Spark's reader does."""
    try:
        return values.cast(pa.string())
    except pa.ArrowInvalid:
        return pa.chunked_array([pa.array([None if v is None else v.decode("utf-8", errors="replace")
                                           for v in values.to_pylist()], pa.string())])


def _with_places(table: pa.Table, corrupt: list, before: int, first_number: int) -> pa.Table:
    """`table`'s rows and the corrupt rows parsed with them, each with its POSITION: its ordinal
    among the rows read, counting from `before`; `first_number` is pyarrow's number of that row."""
    corrupt_at = np.array([row.number - first_number for row in corrupt], dtype=np.int64)
    total = table.num_rows + len(corrupt)
    positions = np.setdiff1d(np.arange(before, before + total, dtype=np.int64), corrupt_at, assume_unique=True)
    rows = table.append_column(CORRUPT_RECORD, pa.nulls(table.num_rows, pa.string()))
    rows = rows.append_column(POSITION, pa.array(positions))
    if not corrupt:
        return rows
    records = {c: pa.nulls(len(corrupt), rows.schema.field(c).type) for c in table.column_names}
    records[CORRUPT_RECORD] = pa.array([row.text for row in corrupt], pa.string())
    records[POSITION] = pa.array(corrupt_at)
    return pa.concat_tables([rows, pa.table(records, schema=rows.schema)])


def _no_rows(columns: list[str]) -> pa.Table:
    schema = pa.schema([(c, pa.string()) for c in (*columns, CORRUPT_RECORD)] + [(POSITION, pa.int64())])
    return schema.empty_table()


def _open(filesystem, path: str, stream: bool):
    if stream:
        return filesystem.open_input_stream(path, compression="detect")
    return filesystem.open_input_file(path)


def _block_bytes(filesystem, block: CsvBlock) -> pa.Buffer | bytes:
    with _open(filesystem, block.path, stream=False) as f:
        start = block.start if block.header else _next_row_start(f, block.start - 1)
        end = block.end if f.read_at(1, block.end - 1) == b"\n" else _next_row_start(f, block.end)
        if start >= end:
            return b""
        f.seek(start)
        return f.read_buffer(end - start)  # an Arrow buffer: about 7x faster than read_at's bytes here


def _next_row_start(f, offset: int) -> int:
    """The offset just after the first newline at or after `offset` (the file's size if none)."""
    size = f.size()
    while offset < size:
        chunk = f.read_at(min(SCAN_BYTES, size - offset), offset)
        newline = chunk.find(b"\n")
        if newline >= 0:
            return offset + newline + 1
        offset += len(chunk)
    return size

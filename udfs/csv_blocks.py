"""A CSV file's byte range as Arrow rows, the way Hadoop splits text files, without Spark.

A block [start, end) owns the rows that begin in it: it skips the partial row it starts in and
reads past `end` to finish its last row. Read in blocks, a newline inside a quoted field can fall
on a block's edge and break rows apart; those rows do not fit the header and come back as corrupt
records, and the ingest job then reads the file again as one stream (`stream=True`, one block from
0 to the end of the file, gzip included).

Each row keeps its place: `_pos` is its ordinal among the block's rows (blank lines skipped, as
Spark skips them), corrupt records included, so a reader can number every row of the file.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

CORRUPT_RECORD = "_corrupt_record"
POSITION = "_pos"
PARSE_CHUNK_BYTES = 1 << 20  # pyarrow's parse chunk: in cache (1 MiB parsed a 64 MB block 25% faster than 4)
SCAN_BYTES = 1 << 16  # read size when looking for the end of a row
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
    if stream or path.endswith(".gz") or size <= block_bytes:
        return [CsvBlock(path, 0, size, stream=stream or path.endswith(".gz"))]
    return [CsvBlock(path, start, min(start + block_bytes, size)) for start in range(0, size, block_bytes)]


def read_header(filesystem, path: str) -> list[str]:
    """The header's column names, an empty name as Spark names it (`_c<position>`)."""
    with _open(filesystem, path, stream=True) as f:
        text = f.read(HEADER_BYTES).decode("utf-8-sig", errors="replace")
    names = next(csv.reader(io.StringIO(text)), [])
    return [name if name else f"_c{i}" for i, name in enumerate(names)]


def read_block(filesystem, block: CsvBlock, columns: list[str]) -> pa.Table:
    """The block's rows: every column as text (null where empty), CORRUPT_RECORD (the text of a row
    that does not fit the header, whose other columns are null) and POSITION."""
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
        convert_options=pcsv.ConvertOptions(
            column_types={c: pa.string() for c in columns}, strings_can_be_null=True, null_values=[""],
            quoted_strings_can_be_null=False,
        ),
    )
    first = 1 + int(block.header)  # pyarrow numbers rows from 1, the skipped header included
    corrupt_at = np.array([row.number - first for row in corrupt], dtype=np.int64)
    total = table.num_rows + len(corrupt)
    positions = np.setdiff1d(np.arange(total, dtype=np.int64), corrupt_at, assume_unique=True)
    rows = table.append_column(CORRUPT_RECORD, pa.nulls(table.num_rows, pa.string()))
    rows = rows.append_column(POSITION, pa.array(positions))
    if not corrupt:
        return rows
    records = {c: pa.nulls(len(corrupt), pa.string()) for c in columns}
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
    if block.stream:
        with _open(filesystem, block.path, stream=True) as f:
            return f.read()
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

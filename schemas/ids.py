"""Id rules. Pure Python (no pyspark) so executors and udfs can use them too.

Ids are stable across runs: the same source row always gets the same video_id, the same
frame range of a video always gets the same clip_id.
"""
import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

VIDEO_ID_HEX = 20  # 80 bits: a collision among 10^8 videos has odds below 1e-8
BUCKET_HEX = 8  # a video's bucket (ingest's pass 2) is its id's first 32 bits modulo the bucket count
_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)


def video_id(source: str, source_video_id: str) -> str:
    """The video id of a source row: a hash of its source name and its id in that source."""
    digest = hashlib.sha256(f"{source}\x1f{source_video_id}".encode()).hexdigest()
    return digest[:VIDEO_ID_HEX]


def video_ids(source: str, source_video_ids: pa.Array, buckets: int) -> tuple[pa.Array, np.ndarray]:
    """`video_id` of every row of a column (null where the source id is null), and each id's
    bucket among `buckets` (`bucket_of`); one sha256 per row, the hex digits made in numpy."""
    if isinstance(source_video_ids, pa.ChunkedArray):
        source_video_ids = source_video_ids.combine_chunks()
    values = source_video_ids.cast(pa.binary()).to_pylist()
    width = VIDEO_ID_HEX // 2
    empty = bytes(width)
    prefixed = hashlib.sha256(f"{source}\x1f".encode())  # copying a primed hash is about 2x a new one per row
    digests = []
    for value in values:
        if value is None:
            digests.append(empty)
            continue
        digest = prefixed.copy()
        digest.update(value)
        digests.append(digest.digest()[:width])
    digests = b"".join(digests)
    raw = np.frombuffer(digests, dtype=np.uint8).reshape(len(values), width)
    digits = np.empty((len(values), VIDEO_ID_HEX), dtype=np.uint8)
    digits[:, 0::2], digits[:, 1::2] = _HEX_DIGITS[raw >> 4], _HEX_DIGITS[raw & 15]
    offsets = np.arange(0, VIDEO_ID_HEX * (len(values) + 1), VIDEO_ID_HEX, dtype=np.int32)
    valid = pc.is_valid(source_video_ids).buffers()[1] if source_video_ids.null_count else None
    hexed = pa.StringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(digits.tobytes()), valid,
                                        source_video_ids.null_count)
    first_bits = np.ascontiguousarray(raw[:, : BUCKET_HEX // 2]).view(">u4").ravel()
    return hexed, (first_bits % buckets).astype(np.int64)


def bucket_of(video_id_: str, buckets: int) -> int:
    """The pass-2 bucket of a video id: its first BUCKET_HEX hex digits as a number, modulo `buckets`."""
    return int(video_id_[:BUCKET_HEX], 16) % buckets


def clip_id(video_id_: str, start_frame: int, end_frame: int) -> str:
    """The clip id of frames [start_frame, end_frame) of a video."""
    return f"{video_id_}_{int(start_frame):07d}_{int(end_frame):07d}"

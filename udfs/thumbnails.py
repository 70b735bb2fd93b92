"""Thumbnails for the report's sample grids: one frame from the middle of each clip, as PNG bytes."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd

from udfs.frames import FrameSampleError, sample_frames


def png_bytes(frame: np.ndarray) -> bytes:
    """An RGB uint8 frame as PNG."""
    import cv2

    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(frame[:, :, ::-1]))
    if not ok:
        raise ValueError("PNG encoding failed")
    return encoded.tobytes()


def thumbnails(batch: pd.DataFrame, width: int) -> pd.DataFrame:
    """clip_id, png (None when the clip cannot be decoded) and error, for rows of clip_id, uri,
    start_s, end_s (times within the file at uri)."""
    import cv2

    rows = []
    for row in batch.itertuples(index=False):
        try:
            frame = sample_frames(row.uri, float(row.start_s), float(row.end_s), 1, size=None, where="middle")[0]
            height = max(2, round(frame.shape[0] * width / frame.shape[1]))
            small = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            rows.append({"clip_id": row.clip_id, "png": png_bytes(small), "error": None})
        except (FrameSampleError, ValueError, OSError) as err:
            rows.append({"clip_id": row.clip_id, "png": None, "error": str(err)})
    return pd.DataFrame(rows, columns=["clip_id", "png", "error"])


def thumbnail_batches(width: int):
    """The mapInPandas function over batches of clips."""

    def run(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            yield thumbnails(batch, width)

    return run

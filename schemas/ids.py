"""Id rules. Pure Python (no pyspark) so executors and udfs can use them too.

Ids are stable across runs: the same source row always gets the same video_id, the same
frame range of a video always gets the same clip_id.
"""
import hashlib

VIDEO_ID_HEX = 20  # 80 bits: a collision among 10^8 videos has odds below 1e-8


def video_id(source: str, source_video_id: str) -> str:
    """The video id of a source row: a hash of its source name and its id in that source."""
    digest = hashlib.sha256(f"{source}\x1f{source_video_id}".encode()).hexdigest()
    return digest[:VIDEO_ID_HEX]


def clip_id(video_id_: str, start_frame: int, end_frame: int) -> str:
    """The clip id of frames [start_frame, end_frame) of a video."""
    return f"{video_id_}_{int(start_frame):07d}_{int(end_frame):07d}"

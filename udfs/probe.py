"""What is inside a video file: the container from its first bytes, then the streams through PyAV.

`sniff_container` looks only at the first bytes, so a download of an HTML error page stops
after a few hundred bytes instead of running to the size cap. `probe_video` describes the file,
decodes its first frame (a file that does not decode is not a training video) and checks that
the file holds all the frames its index promises.

An MP4/MOV file of a codec in MP4_DECODERS is described from its own index (the `moov` box):
the sample tables give the frame count, rate and duration and where every frame's bytes lie,
and only the first keyframe is handed to a bare decoder. That skips FFmpeg's demuxer set-up and
its stream analysis, which decodes a frame of its own (the probe then cost about 3 ms of CPU
per file, a third of a loopback download). Any other file, and any file the index path does not
accept (fragmented, several video tracks, data past the end, a frame that does not decode),
goes through FFmpeg's demuxer, which also writes the error message.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO

import numpy as np

SNIFF_BYTES = 512  # enough for every signature below (MPEG-TS needs two 188-byte packets)
TS_PACKET = 188

# ISO base media brands of QuickTime files; every other `ftyp` brand is MP4 / 3GP and relatives.
QUICKTIME_BRANDS = (b"qt  ",)
# Atoms a QuickTime file without an `ftyp` atom may start with.
QUICKTIME_FIRST_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
# Containers whose index describes every stream, so opening them needs no stream analysis.
INDEXED_CONTAINERS = ("mp4", "mov")
QUICK_OPEN = {"probesize": "32", "analyzeduration": "0"}
ASF_GUID = bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c")
# MP4/MOV sample entries read from the index: FFmpeg's decoder and the box that holds the decoder
# configuration (FFmpeg's extradata).
MP4_DECODERS = {b"avc1": ("h264", b"avcC"), b"avc3": ("h264", b"avcC"),
                b"hvc1": ("hevc", b"hvcC"), b"hev1": ("hevc", b"hvcC")}
MOV_FORMAT_NAME = "mov,mp4,m4a,3gp,3g2,mj2"  # FFmpeg's name for the demuxer of these files
INDEX_MAX_BYTES = 64 << 20  # download.index_max_bytes's default
VISUAL_ENTRY_BYTES = 78  # the fixed fields of a visual sample entry, before its child boxes
# The probe decodes a keyframe only to prove it decodes, so it skips H.264/HEVC deblocking: a filter
# over the decoded pixels that finds no error in the bitstream (a fifth of the decode's CPU).
PROBE_DECODER_OPTIONS = {"skip_loop_filter": "all"}


class ProbeError(Exception):
    """The file is not a decodable video; the message says why."""


@dataclass(frozen=True)
class Probe:
    format_name: str  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    codec: str
    width: int
    height: int
    fps: float | None
    num_frames: int
    duration_s: float | None
    has_audio: bool


def sniff_container(head: bytes) -> str | None:
    """The container the first bytes announce (mp4, mov, webm, mkv, avi, mpegts, m2ts, mpeg-ps,
    flv, asf, ogg), or None when they are not a video container's."""
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mov" if head[8:12] in QUICKTIME_BRANDS else "mp4"
    if len(head) >= 8 and head[4:8] in QUICKTIME_FIRST_ATOMS:
        return "mov"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm" if b"webm" in head[:64] else "mkv"
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return "avi"
    if head.startswith(b"FLV\x01"):
        return "flv"
    if head.startswith(ASF_GUID):
        return "asf"
    if head.startswith(b"OggS"):
        return "ogg"
    if head.startswith(b"\x00\x00\x01\xba"):
        return "mpeg-ps"
    if _sync_bytes_at(head, 0, TS_PACKET):
        return "mpegts"
    if _sync_bytes_at(head, 4, TS_PACKET + 4):
        return "m2ts"
    return None


def _sync_bytes_at(head: bytes, offset: int, stride: int) -> bool:
    """MPEG-TS: the sync byte 0x47 at the start of each packet (two packets, or one in a short file)."""
    positions = [p for p in (offset, offset + stride) if p < len(head)]
    return len(head) > offset and all(head[p] == 0x47 for p in positions)


def describe_head(head: bytes) -> str:
    """What kind of bytes a body that is not a video holds, for the error message: a kind only,
    never the bytes, since the file may be anyone's (a local path's, a server's private page)."""
    text = head[:200].lstrip().lower()
    kinds = (
        (b"<!doctype html", "an HTML page"), (b"<html", "an HTML page"), (b"<?xml", "an XML document"),
        (b"{", "JSON"), (b"[", "JSON"), (b"\x89png", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"),
        (b"gif8", "a GIF image"), (b"%pdf", "a PDF"), (b"pk\x03\x04", "a ZIP archive"),
    )
    for prefix, kind in kinds:
        if text.startswith(prefix):
            return kind
    if not head:
        return "an empty body"
    controls = set(head[:200]) - set(b"\t\n\r\f")
    return "text" if not any(b < 0x20 or b == 0x7F for b in controls) else "data of an unknown kind"


def probe_video(path: str | Path, count_all_packets: bool = False, container: str | None = None,
                index_max_bytes: int = INDEX_MAX_BYTES) -> Probe:
    """Opens `path` with PyAV and describes its first video stream.

    The frame count is the stream's own when the container records it (MP4, MOV), and then
    only the last packets are read, to check they are all there: a file cut short after its
    index promises frames it does not hold. Where the container records no count (WebM,
    MPEG-TS), or with `count_all_packets`, every video packet is demuxed (not decoded) and
    counted, which also catches a cut.

    `container` is what `sniff_container` said: an MP4 or MOV file describes its streams in its
    index, so it is opened without FFmpeg's stream analysis (which decodes frames of every
    stream: 70 ms instead of 7 on a 720p file with audio)."""
    import av

    quick = container in INDEXED_CONTAINERS
    if quick and not count_all_packets:
        probe = probe_from_index(path, index_max_bytes)
        if probe is not None:
            return probe
    try:
        with av.open(str(path), metadata_errors="ignore", options=QUICK_OPEN if quick else {}) as opened:
            if quick and not _described(opened):
                return probe_video(path, count_all_packets)
            return _probe_open(opened, count_all_packets)
    except av.error.FFmpegError as err:
        raise ProbeError(f"PyAV cannot read the file: {err}") from None


def _described(container) -> bool:
    """Whether the index alone gave the video stream's size and frame rate."""
    streams = container.streams.video
    return bool(streams) and bool(streams[0].codec_context.width) and bool(streams[0].average_rate)


def _probe_open(container, count_all_packets: bool) -> Probe:
    if not container.streams.video:
        raise ProbeError("the file has no video stream")
    stream = container.streams.video[0]
    stream.thread_type = "SLICE"
    stream.codec_context.thread_count = 1
    stream.codec_context.options = dict(PROBE_DECODER_OPTIONS)
    header_frames = int(stream.frames or 0)
    count_all = count_all_packets or not header_frames or not stream.duration
    counted = _decode_first_frame(container, stream, count_all)
    if count_all:
        if header_frames and counted < header_frames:
            raise ProbeError(f"truncated: the index lists {header_frames} frames, the file holds {counted}")
        num_frames = counted
    else:
        _check_tail(container, stream)
        num_frames = header_frames
    if num_frames <= 0:
        raise ProbeError("the video stream has no frames")
    rate = stream.average_rate or stream.guessed_rate
    fps = float(rate) if rate else None
    return Probe(
        format_name=container.format.name,
        codec=stream.codec_context.name,
        width=int(stream.codec_context.width),
        height=int(stream.codec_context.height),
        fps=fps,
        num_frames=num_frames,
        duration_s=_duration_s(container, stream, num_frames, fps),
        has_audio=bool(container.streams.audio),
    )


def _decode_first_frame(container, stream, count_all: bool) -> int:
    """Decodes the first keyframe (ProbeError if it does not decode); with `count_all` goes on
    demuxing, without decoding, to the end. Returns the video packets seen.

    Only one packet is decoded: the decoder is flushed right after it, which makes it give the
    frame out at once instead of waiting for the packets its reordering delay asks for."""
    import av

    counted, decoded = 0, None
    try:
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            if packet.is_corrupt:
                raise ProbeError(f"truncated or corrupt: packet {counted} of the video stream is damaged")
            counted += 1
            if decoded is None and packet.is_keyframe:
                decoded = bool(packet.decode()) or bool(stream.codec_context.decode(None))
            elif decoded is not None and not count_all:
                break
    except av.error.FFmpegError as err:
        raise ProbeError(f"corrupt video data after {counted} packets: {err}") from None
    if decoded is None:
        raise ProbeError("the video stream has no keyframe")
    if not decoded:
        raise ProbeError("the first keyframe of the video stream does not decode")
    return counted


def _check_tail(container, stream) -> None:
    """Reads the packets from the last keyframe on: they must be whole and reach the stream's end."""
    import av

    end = (stream.start_time or 0) + stream.duration
    rate = stream.average_rate or stream.guessed_rate
    slack = 2 / (float(rate) * float(stream.time_base)) if rate else 0
    reached = None
    try:
        container.seek(end, stream=stream, backward=True)
        for packet in container.demux(stream):
            if packet.size == 0 or packet.pts is None:
                continue
            if packet.is_corrupt:
                raise ProbeError("truncated: the last packets of the video stream are cut short")
            packet_end = packet.pts + (packet.duration or 0)
            reached = packet_end if reached is None else max(reached, packet_end)
    except av.error.FFmpegError as err:
        raise ProbeError(f"truncated or corrupt near the end: {err}") from None
    should_last = f"the video stream should last {float(end * stream.time_base):.2f} s"
    if reached is None:
        raise ProbeError(f"truncated: none of the last packets is in the file ({should_last})")
    if reached < end - slack:
        ends = float(reached * stream.time_base)
        raise ProbeError(f"truncated: {should_last}, the file's data ends at {ends:.2f} s")


def _duration_s(container, stream, num_frames: int, fps: float | None) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / 1_000_000
    return num_frames / fps if fps else None


class _NotIndexed(Exception):
    """The file is not one the index path describes; FFmpeg's demuxer takes it."""


@dataclass(frozen=True)
class _Mp4Track:
    """What the `moov` box says about the video track."""

    decoder: str
    extradata: bytes
    fps: Fraction
    num_frames: int
    duration_s: float
    has_audio: bool
    data_end: int  # the byte after the last byte of video data the index points to
    key_offset: int  # where the first keyframe's bytes lie
    key_size: int


def probe_from_index(path: str | Path, index_max_bytes: int = INDEX_MAX_BYTES) -> Probe | None:
    """An MP4/MOV file described from its index plus one decoded keyframe, or None when the file
    needs FFmpeg's demuxer (to be described, or to say what is wrong with it). An index (`moov`
    box) over `index_max_bytes` is not read into memory: FFmpeg's demuxer takes the file."""
    try:
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            track = _mp4_track(_read_moov(file, size, index_max_bytes))
            if track.data_end > size:
                return None
            file.seek(track.key_offset)
            keyframe = file.read(track.key_size)
    except (_NotIndexed, OSError, struct.error, ValueError, IndexError):
        return None
    decoded = _decode_one(track.decoder, track.extradata, keyframe)
    if decoded is None:
        return None
    return Probe(format_name=MOV_FORMAT_NAME, codec=track.decoder, width=decoded[0], height=decoded[1],
                 fps=float(track.fps), num_frames=track.num_frames, duration_s=track.duration_s,
                 has_audio=track.has_audio)


def _box_header(data: bytes, pos: int, end: int) -> tuple[bytes, int, int]:
    """(type, payload start, box end) of the box at `pos` in data[:end]."""
    size, kind = struct.unpack_from(">I4s", data, pos)
    header = 8
    if size == 1:
        size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
    elif size == 0:
        size = end - pos
    if size < header or pos + size > end:
        raise _NotIndexed(f"box {kind!r} overruns its parent")
    return kind, pos + header, pos + size


def _children(data: bytes, start: int, end: int) -> dict[bytes, list[tuple[int, int]]]:
    """The boxes inside data[start:end]: type -> [(payload start, payload end), ...]."""
    found: dict[bytes, list[tuple[int, int]]] = {}
    while start + 8 <= end:
        kind, payload, box_end = _box_header(data, start, end)
        found.setdefault(kind, []).append((payload, box_end))
        start = box_end
    return found


def _read_moov(file: BinaryIO, size: int, max_bytes: int) -> bytes:
    """The `moov` box's payload, found by walking the top-level box headers."""
    pos = 0
    while pos + 8 <= size:
        file.seek(pos)
        head = file.read(16)
        kind, payload, box_end = _box_header(head + bytes(16 - len(head)), 0, size - pos)
        if kind == b"moof":
            raise _NotIndexed("fragmented MP4")
        if kind == b"moov":
            if box_end - payload > max_bytes:
                raise _NotIndexed("index too large to read into memory")
            file.seek(pos + payload)
            return file.read(box_end - payload)
        pos += box_end
    raise _NotIndexed("no moov box")


def _mp4_track(moov: bytes) -> _Mp4Track:
    boxes = _children(moov, 0, len(moov))
    if b"mvex" in boxes:
        raise _NotIndexed("fragmented MP4")
    handlers: dict[bytes, list[dict]] = {}
    for start, end in boxes.get(b"trak", []):
        media = _children(moov, *_only(_children(moov, start, end), b"mdia"))
        handler_at = _only(media, b"hdlr")[0] + 8  # after version, flags and pre_defined
        handlers.setdefault(moov[handler_at:handler_at + 4], []).append(media)
    if len(handlers.get(b"vide", [])) != 1:
        raise _NotIndexed("not exactly one video track")
    return _video_track(moov, handlers[b"vide"][0], has_audio=b"soun" in handlers)


def _only(boxes: dict, kind: bytes) -> tuple[int, int]:
    if len(boxes.get(kind, [])) != 1:
        raise _NotIndexed(f"not exactly one {kind!r} box")
    return boxes[kind][0]


def _video_track(moov: bytes, media: dict, has_audio: bool) -> _Mp4Track:
    timescale, duration = _media_header(moov, _only(media, b"mdhd")[0])
    minf = _children(moov, *_only(media, b"minf"))
    stbl = _children(moov, *_only(minf, b"stbl"))
    decoder, extradata = _sample_entry(moov, *_only(stbl, b"stsd"))
    sizes = _sample_sizes(moov, _only(stbl, b"stsz")[0])
    deltas = _table(moov, _only(stbl, b"stts")[0], 2)
    total_delta = int((deltas[:, 0] * deltas[:, 1]).sum())
    if not len(sizes) or total_delta <= 0 or int(deltas[:, 0].sum()) != len(sizes):
        raise _NotIndexed("sample tables disagree")
    offsets = _sample_offsets(moov, stbl, sizes)
    key = int(_table(moov, stbl[b"stss"][0][0], 1)[0, 0]) - 1 if b"stss" in stbl else 0
    return _Mp4Track(
        decoder=decoder, extradata=extradata, fps=Fraction(timescale * len(sizes), total_delta),
        num_frames=len(sizes), duration_s=(duration or total_delta) / timescale, has_audio=has_audio,
        data_end=int((offsets + sizes).max()), key_offset=int(offsets[key]), key_size=int(sizes[key]),
    )


def _media_header(moov: bytes, start: int) -> tuple[int, int]:
    """(timescale, duration) of an `mdhd` box; duration 0 where it is unknown."""
    if moov[start] == 1:
        timescale, duration = struct.unpack_from(">IQ", moov, start + 20)
        unknown = 0xFFFFFFFFFFFFFFFF
    else:
        timescale, duration = struct.unpack_from(">II", moov, start + 12)
        unknown = 0xFFFFFFFF
    if timescale <= 0:
        raise _NotIndexed("no media timescale")
    return timescale, 0 if duration == unknown else duration


def _sample_entry(moov: bytes, start: int, end: int) -> tuple[str, bytes]:
    """The decoder and its configuration from the one visual sample entry of an `stsd` box."""
    if struct.unpack_from(">I", moov, start + 4)[0] != 1:
        raise _NotIndexed("not exactly one sample entry")
    kind, payload, entry_end = _box_header(moov, start + 8, end)
    if kind not in MP4_DECODERS:
        raise _NotIndexed(f"sample entry {kind!r} is left to FFmpeg")
    decoder, config = MP4_DECODERS[kind]
    found = _children(moov, payload + VISUAL_ENTRY_BYTES, entry_end)
    config_start, config_end = _only(found, config)
    return decoder, moov[config_start:config_end]


def _table(moov: bytes, start: int, columns: int, width: str = ">u4") -> np.ndarray:
    """The entries of a full box holding a count and then `columns` numbers per entry."""
    count = struct.unpack_from(">I", moov, start + 4)[0]
    values = np.frombuffer(moov, dtype=width, count=count * columns, offset=start + 8)
    return values.astype(np.int64).reshape(count, columns)


def _sample_sizes(moov: bytes, start: int) -> np.ndarray:
    uniform, count = struct.unpack_from(">II", moov, start + 4)
    if uniform:
        return np.full(count, uniform, dtype=np.int64)
    return np.frombuffer(moov, dtype=">u4", count=count, offset=start + 12).astype(np.int64)


def _sample_offsets(moov: bytes, stbl: dict, sizes: np.ndarray) -> np.ndarray:
    """Each sample's byte offset in the file: chunk offsets (`stco`/`co64`), samples per chunk
    (`stsc`), and the sizes of the samples before it in its chunk."""
    if b"co64" in stbl:
        chunks = _table(moov, _only(stbl, b"co64")[0], 1, ">u8")[:, 0]
    else:
        chunks = _table(moov, _only(stbl, b"stco")[0], 1)[:, 0]
    runs = _table(moov, _only(stbl, b"stsc")[0], 3)
    firsts = runs[:, 0] - 1
    spans = np.diff(np.append(firsts, len(chunks)))
    if not len(runs) or firsts[0] != 0 or (spans <= 0).any():
        raise _NotIndexed("stsc does not cover the chunks")
    per_chunk = np.repeat(runs[:, 1], spans)
    if per_chunk.sum() < len(sizes):
        raise _NotIndexed("fewer samples in the chunks than in stsz")
    chunk_of = np.repeat(np.arange(len(chunks)), per_chunk)[: len(sizes)]
    before = np.concatenate(([0], np.cumsum(sizes)))
    chunk_first = np.cumsum(per_chunk) - per_chunk
    return chunks[chunk_of] + before[:-1] - before[chunk_first[chunk_of]]


def _decode_one(decoder: str, extradata: bytes, packet: bytes) -> tuple[int, int] | None:
    """(width, height) of the frame one keyframe decodes to; None when it does not decode."""
    import av

    context = av.CodecContext.create(decoder, "r")
    context.extradata = extradata
    context.thread_count = 1
    context.options = dict(PROBE_DECODER_OPTIONS)
    try:
        frames = context.decode(av.Packet(packet)) or context.decode(None)
    except av.error.FFmpegError:
        return None
    return (frames[0].width, frames[0].height) if frames else None

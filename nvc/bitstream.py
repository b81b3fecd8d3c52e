"""The nvc container: a versioned, checksummed, seekable file of coded frames.

The layout is declared once, with ``construct``, in the ``HEADER``, ``FRAME_RECORD`` and ``PAYLOAD`` (and,
for a whole file, ``NVC_STREAM``) structures below; ``formats/nvc-bitstream.md`` is the human-readable
specification of the same bytes.  All integers are little-endian.  This module writes format 5.0 (compact
frame records whose frame-type byte also holds the post-filter mode, a new filter's parameters ahead of the
payload; no index; payloads without the fields a decoder derives); 5.0's records are 4.0's, only a post-filter's
parameters differ (several luma filters: ``nvc.postfilter``), and it reads 4.0 as well; it still reads 3.0 streams
(records without a post-filter: ``FRAME_RECORD_V3``), 2.0 streams (their payloads: ``PAYLOAD_V2``) and 1.x streams
(``FRAME_RECORD_V1``, ``INDEX``, ``TRAILER``, ``PAYLOAD_V1``, ``NVC_STREAM_V1``).

``nvc.bitstream.open(path, "w", header=...)`` gives a :class:`StreamWriter` (output written through a
temporary file renamed on success); ``nvc.bitstream.open(path)`` gives a :class:`StreamReader`, which
refuses damaged headers, lists every complete frame of a truncated stream, and verifies each frame's
CRC32 when it is read.  Every refusal is an :class:`nvc.errors.BitstreamError` subclass with a one-line
message; hostile declared lengths are checked against the file size and the documented limits before
anything is allocated.  This module never imports torch or numpy.
"""

from __future__ import annotations

import builtins
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import IntEnum
from pathlib import Path
from typing import Any, BinaryIO

import construct as cs

from ._atomic import AtomicFile
from .errors import BitstreamError, ChecksumError, InputError, TruncatedStreamError, VersionError

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "FrameType",
    "FilterMode",
    "MAX_FILTER_BYTES",
    "filter_data_size",
    "NumericMode",
    "StreamHeader",
    "FramePayload",
    "FrameInfo",
    "FrameRecord",
    "StreamWriter",
    "StreamReader",
    "encode_header",
    "decode_header",
    "encode_payload",
    "decode_payload",
    "open",
    "info_dict",
]

# --------------------------------------------------------------------------------------------------
# Constants and limits (formats/nvc-bitstream.md, "Limits")

FORMAT_VERSION: tuple[int, int] = (5, 0)
READ_MAJORS = (1, 2, 3, 4, 5)  # the major versions this reader reads
MAGIC = b"NVC\x1a"  # "NVC" + Ctrl-Z, like PNG's: stops `type`, catches text-mode transfers
FRAME_SYNC = b"Nf"  # 2.x, 3.x and 4.x
FRAME_SYNC_V1 = b"NVfr"
INDEX_MAGIC = b"NVix"
TRAILER_MAGIC = b"NVtr"

MAX_DIMENSION = 16384
MAX_FRAMES = 2**24
MAX_PAYLOAD = 256 * 2**20
MAX_MODEL_NAME = 64
MAX_SUBSTREAMS = 16
MAX_SHAPE_DIMS = 4
MAX_GOP = 65535

HEADER_PREFIX_SIZE = 8  # magic, major, minor, header_len
HEADER_FIXED_SIZE = 59  # bytes before the model name in a 1.x header
HEADER_MIN_SIZE = HEADER_FIXED_SIZE + 1 + 4  # one-byte model name + CRC
RECORD_HEAD_MAX = 10  # 2.x to 4.x: a five-byte length (payloads up to 2^28 bytes need at most five)
_FILTER_LENGTH = cs.Int8ul  # 4.x: a new post-filter's parameters (nvc.postfilter) follow their length ...
MAX_FILTER_BYTES = (1 << 8 * _FILTER_LENGTH.sizeof()) - 1  # ... so they take 1..255 bytes
RECORD_HEAD_SIZE_V1 = 16
RECORD_CRC_SIZE = 4
RECORD_OVERHEAD_V1 = RECORD_HEAD_SIZE_V1 + RECORD_CRC_SIZE
INDEX_HEAD_SIZE = 8
INDEX_ENTRY_SIZE = 14
TRAILER_SIZE = 20


class FrameType(IntEnum):
    I = 0  # noqa: E741  (intra: decodable alone, starts a GoP)
    P = 1  # predicted from the previous decoded frame


class FilterMode(IntEnum):
    """4.x: what the decoder shows for a frame (``nvc.postfilter``; 1.x to 3.x frames are all ``OFF``)."""

    OFF = 0  # the reconstruction
    KEEP = 1  # the reconstruction through the GoP's current filter
    NEW = 2  # the reconstruction through the filter this record carries, which becomes the GoP's current one


class NumericMode(IntEnum):
    """How the decoder-side networks compute (and so the entropy parameters and the reference).

    ``EXACT`` (1.1) is fixed point, identical on every device; the float modes decode bit exactly only
    on the same kind of device and machine as the encoder."""

    FLOAT32_CPU = 0
    FLOAT32_CUDA = 1
    EXACT = 2


class ColorMatrix(IntEnum):
    """Colour matrix code points (the values of ITU-T H.273 MatrixCoefficients)."""

    bt709 = 1


class ColorRange(IntEnum):
    """Sample range (H.273 VideoFullRangeFlag)."""

    limited = 0
    full = 1


# --------------------------------------------------------------------------------------------------
# The declaration of the container (the one place the byte layout is written down in code)


def _crc32(data: bytes) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


_HEADER_V1 = cs.Struct(  # the header fields of 1.x, 2.x and 3.x
    "weights_digest" / cs.Bytes(16),  # 8
    "numeric_mode" / cs.Enum(cs.Int8ul, NumericMode),  # 24
    "quality" / cs.Int8ul,  # 25
    "matrix" / cs.Enum(cs.Int8ul, ColorMatrix),  # 26
    "color_range" / cs.Enum(cs.Int8ul, ColorRange),  # 27
    "width" / cs.Int32ul,  # 28
    "height" / cs.Int32ul,  # 32
    "padded_width" / cs.Int32ul,  # 36
    "padded_height" / cs.Int32ul,  # 40
    "fps_num" / cs.Int32ul,  # 44
    "fps_den" / cs.Int32ul,  # 48
    "frame_count" / cs.Int32ul,  # 52
    "gop" / cs.Int16ul,  # 56
    "model" / cs.PascalString(cs.Int8ul, "ascii"),  # 58: u8 length, then the name
)

_HEADER_BODY = cs.Struct(
    "magic" / cs.Const(MAGIC),  # 0
    "version_major" / cs.Int8ul,  # 4
    "version_minor" / cs.Int8ul,  # 5
    "header_len" / cs.Int16ul,  # 6: whole header, magic to CRC inclusive
    "fields" / cs.Switch(cs.this.version_major, {m: _HEADER_V1 for m in (1, 2, 3, 4, 5)}, default=cs.Error),
    "fields_end" / cs.Tell,
    cs.Check(cs.this.header_len >= cs.this.fields_end + 4),
    # fields added by later minor versions; a 1.0 reader skips them
    "extra" / cs.Bytes(cs.this.header_len - cs.this.fields_end - 4),
)

HEADER = cs.Struct(
    "body" / cs.RawCopy(_HEADER_BODY),
    "crc" / cs.Checksum(cs.Int32ul, _crc32, cs.this.body.data),
)

# 4.x: a compact record (the per-frame bytes are most of a small, low-rate stream's overhead); its frame-type
# byte also holds the post-filter mode, and a NEW filter's parameters come before the payload
_RECORD_HEAD = cs.Struct(
    "sync" / cs.Const(FRAME_SYNC),  # 0
    "flags" / cs.BitStruct(  # 2, most significant bit first
        "reserved" / cs.BitsInteger(4),  # written 0; a reader refuses others
        "filter" / cs.Enum(cs.BitsInteger(2), FilterMode),
        "frame_type" / cs.Enum(cs.BitsInteger(2), FrameType),
    ),
    "quality" / cs.Int8ul,  # 3
    "seq" / cs.Int8ul,  # 4: frame number mod 256
    "length" / cs.VarInt,  # 5: the record's data length (below), unsigned LEB128, shortest form, 1..5 bytes
)
# parsed with new_filter=(flags.filter == NEW)
RECORD_DATA = cs.Struct(
    "filter" / cs.If(cs.this._params.new_filter, cs.Prefixed(_FILTER_LENGTH, cs.GreedyBytes)),  # 1..255 bytes
    "payload" / cs.GreedyBytes,
)

def filter_data_size(params: bytes) -> int:
    """The bytes of a record's data that post-filter parameters ``params`` take, their length included (none: 0)."""
    return _FILTER_LENGTH.sizeof() + len(params) if params else 0


FRAME_RECORD = cs.Struct(
    "body" / cs.RawCopy(cs.Struct("head" / _RECORD_HEAD, "data" / cs.Bytes(cs.this.head.length))),
    "crc" / cs.Checksum(cs.Int32ul, _crc32, cs.this.body.data),  # covers sync..end of data
)

# 2.x and 3.x: the same record with a whole byte for the frame type and no post-filter
_RECORD_HEAD_V3 = cs.Struct(
    "sync" / cs.Const(FRAME_SYNC),  # 0
    "frame_type" / cs.Enum(cs.Int8ul, FrameType),  # 2
    "quality" / cs.Int8ul,  # 3
    "seq" / cs.Int8ul,  # 4: frame number mod 256
    "length" / cs.VarInt,  # 5: payload length, unsigned LEB128, shortest form, 1..5 bytes
)

FRAME_RECORD_V3 = cs.Struct(
    "body" / cs.RawCopy(cs.Struct("head" / _RECORD_HEAD_V3, "payload" / cs.Bytes(cs.this.head.length))),
    "crc" / cs.Checksum(cs.Int32ul, _crc32, cs.this.body.data),  # covers sync..end of payload
)

# 1.x: fixed 16-byte record heads, an index and a trailer
_RECORD_HEAD_V1 = cs.Struct(
    "sync" / cs.Const(FRAME_SYNC_V1),  # 0
    "index" / cs.Int32ul,  # 4: frame number, 0-based
    "frame_type" / cs.Enum(cs.Int8ul, FrameType),  # 8
    "quality" / cs.Int8ul,  # 9
    "flags" / cs.Int16ul,  # 10: reserved, written 0, ignored by readers
    "length" / cs.Int32ul,  # 12: payload length
)

FRAME_RECORD_V1 = cs.Struct(
    "body" / cs.RawCopy(cs.Struct("head" / _RECORD_HEAD_V1, "payload" / cs.Bytes(cs.this.head.length))),
    "crc" / cs.Checksum(cs.Int32ul, _crc32, cs.this.body.data),  # covers sync..end of payload
)

_INDEX_ENTRY = cs.Struct(
    "offset" / cs.Int64ul,  # file offset of the frame record (its sync marker)
    "length" / cs.Int32ul,  # payload length
    "frame_type" / cs.Enum(cs.Int8ul, FrameType),
    "quality" / cs.Int8ul,
)

INDEX = cs.Struct(
    "body"
    / cs.RawCopy(
        cs.Struct(
            "magic" / cs.Const(INDEX_MAGIC),
            "count" / cs.Int32ul,
            "entries" / cs.Array(cs.this.count, _INDEX_ENTRY),
        )
    ),
    "crc" / cs.Checksum(cs.Int32ul, _crc32, cs.this.body.data),
)

TRAILER = cs.Struct(
    "body" / cs.RawCopy(cs.Struct("index_offset" / cs.Int64ul, "frame_count" / cs.Int32ul)),
    "crc" / cs.Checksum(cs.Int32ul, _crc32, cs.this.body.data),
    "magic" / cs.Const(TRAILER_MAGIC),
)

# A whole, intact file (for documentation, tests and small files; StreamReader parses piecewise).
NVC_STREAM = cs.Struct(
    "header" / HEADER,
    "frames" / cs.GreedyRange(FRAME_RECORD),
    cs.Terminated,
)
NVC_STREAM_V3 = cs.Struct(
    "header" / HEADER,
    "frames" / cs.GreedyRange(FRAME_RECORD_V3),
    cs.Terminated,
)
NVC_STREAM_V1 = cs.Struct(
    "header" / HEADER,
    "frames" / cs.GreedyRange(FRAME_RECORD_V1),
    "index" / INDEX,
    "trailer" / TRAILER,
    cs.Terminated,
)

# 3.x and 4.x: what the decoder already knows is not repeated. One byte holds the shape's rank and the substream count;
# a rank of 0 means the model derives the shape from the frame size (nvc.codec); the last substream's length is
# what the payload has left.
PAYLOAD = cs.Struct(
    "layout" / cs.BitStruct("ndim" / cs.BitsInteger(3), "count" / cs.BitsInteger(5)),
    cs.Check(cs.this.layout.ndim <= MAX_SHAPE_DIMS),
    cs.Check(cs.this.layout.count <= MAX_SUBSTREAMS),
    "shape" / cs.Array(cs.this.layout.ndim, cs.VarInt),  # unsigned LEB128, shortest form
    "lengths" / cs.Array(lambda this: max(this.layout.count - 1, 0), cs.VarInt),  # all but the last substream's
    "data" / cs.GreedyBytes,  # the substreams, concatenated in order
)
PAYLOAD_V2 = cs.Struct(
    "ndim" / cs.Int8ul,
    cs.Check(cs.this.ndim <= MAX_SHAPE_DIMS),
    "count" / cs.Int8ul,
    cs.Check(cs.this.count <= MAX_SUBSTREAMS),
    "shape" / cs.Array(cs.this.ndim, cs.VarInt),  # unsigned LEB128, shortest form
    "lengths" / cs.Array(cs.this.count, cs.VarInt),
    "data" / cs.GreedyBytes,  # the substreams, concatenated in order
)
PAYLOAD_V1 = cs.Struct(
    "ndim" / cs.Int8ul,
    cs.Check(cs.this.ndim <= MAX_SHAPE_DIMS),
    "count" / cs.Int8ul,
    cs.Check(cs.this.count <= MAX_SUBSTREAMS),
    "shape" / cs.Array(cs.this.ndim, cs.Int16ul),
    "lengths" / cs.Array(cs.this.count, cs.Int32ul),
    "data" / cs.GreedyBytes,
)

assert _RECORD_HEAD_V1.sizeof() == RECORD_HEAD_SIZE_V1
assert _INDEX_ENTRY.sizeof() == INDEX_ENTRY_SIZE
assert TRAILER.sizeof() == TRAILER_SIZE

_CONSTRUCT_ERRORS = (cs.ConstructError, struct.error, EOFError, UnicodeError, OverflowError, ValueError, TypeError)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    msg = text[-1] if text else type(e).__name__
    return msg[:160]


def _parse(con: cs.Construct, data: bytes, what: str, **params: Any) -> Any:
    """``con.parse(data)`` with construct's (and struct's, codecs'...) exceptions turned into ours."""
    try:
        return con.parse(data, **params)
    except cs.ChecksumError:
        raise ChecksumError(f"{what}: CRC mismatch") from None
    except cs.StreamError as e:
        raise TruncatedStreamError(f"{what}: truncated ({_first_line(e)})") from None
    except UnicodeError:
        raise BitstreamError(f"{what}: text field is not ASCII") from None
    except _CONSTRUCT_ERRORS as e:
        raise BitstreamError(f"{what}: malformed ({_first_line(e)})") from None


def _build(con: cs.Construct, value: Any, what: str, **params: Any) -> bytes:
    try:
        return con.build(value, **params)
    except _CONSTRUCT_ERRORS as e:
        raise BitstreamError(f"{what}: cannot encode ({_first_line(e)})") from None


def _enum_value(v: Any, enum: type[IntEnum], what: str) -> IntEnum:
    """A parsed ``cs.Enum`` value -> member of ``enum``; unknown codes refused (the ``default=Error`` rule)."""
    if not isinstance(v, cs.EnumIntegerString):
        raise BitstreamError(f"{what}: unknown code {int(v)}")
    return enum[str(v)]


# --------------------------------------------------------------------------------------------------
# Header


@dataclass(frozen=True)
class StreamHeader:
    model: str
    weights_digest: bytes
    numeric_mode: int
    quality: int
    width: int
    height: int
    padded_width: int
    padded_height: int
    fps_num: int
    fps_den: int
    gop: int
    frame_count: int = 0
    matrix: str = "bt709"
    color_range: str = "limited"
    version: tuple[int, int] = FORMAT_VERSION


def _check_int(name: str, v: Any, lo: int, hi: int) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise BitstreamError(f"header: {name} {v!r} outside {lo}..{hi}")


def _validate_header(h: StreamHeader) -> None:
    if not isinstance(h.model, str) or not h.model or not h.model.isascii() or not h.model.isprintable():
        raise BitstreamError(f"header: model name {h.model!r} must be 1..{MAX_MODEL_NAME} printable ASCII characters")
    if len(h.model) > MAX_MODEL_NAME:
        raise BitstreamError(f"header: model name is {len(h.model)} bytes, over the {MAX_MODEL_NAME}-byte limit")
    if not isinstance(h.weights_digest, (bytes, bytearray)) or len(h.weights_digest) != 16:
        raise BitstreamError("header: weights_digest must be exactly 16 bytes")
    if h.numeric_mode not in set(NumericMode):
        raise BitstreamError(f"header: unknown numeric mode {h.numeric_mode!r}")
    _check_int("quality", h.quality, 0, 255)
    _check_int("width", h.width, 1, MAX_DIMENSION)
    _check_int("height", h.height, 1, MAX_DIMENSION)
    _check_int("padded_width", h.padded_width, h.width, MAX_DIMENSION)
    _check_int("padded_height", h.padded_height, h.height, MAX_DIMENSION)
    _check_int("fps_num", h.fps_num, 1, 2**32 - 1)
    _check_int("fps_den", h.fps_den, 1, 2**32 - 1)
    _check_int("gop", h.gop, 1, MAX_GOP)
    _check_int("frame_count", h.frame_count, 0, MAX_FRAMES)
    if h.matrix not in ColorMatrix.__members__:
        known = ", ".join(ColorMatrix.__members__)
        raise BitstreamError(f"header: unknown colour matrix {h.matrix!r} (known: {known})")
    if h.color_range not in ColorRange.__members__:
        raise BitstreamError(f"header: unknown colour range {h.color_range!r} (known: limited, full)")
    v = h.version
    if not (isinstance(v, tuple) and len(v) == 2 and all(isinstance(x, int) and 0 <= x <= 255 for x in v)):
        raise BitstreamError(f"header: version {v!r} must be (major, minor), each 0..255")


def _check_version(major: int, minor: int) -> None:
    if major not in READ_MAJORS:
        known = " and ".join(f"{m}.x" for m in READ_MAJORS)
        raise VersionError(
            f"stream format version {major}.{minor} is not supported: this nvc reads {known}"
            + (" (upgrade nvc)" if major > max(READ_MAJORS) else "")
        )


def _header_len(prefix: bytes) -> int:
    """Validates the 8-byte header prefix (magic, version, length) and returns the header length."""
    if len(prefix) >= 6 and prefix[:4] == MAGIC:
        _check_version(prefix[4], prefix[5])
    if len(prefix) < HEADER_PREFIX_SIZE:
        if MAGIC.startswith(prefix[:4]):
            raise TruncatedStreamError(f"stream truncated in header ({len(prefix)} bytes)")
        raise BitstreamError("not an nvc stream (bad magic)")
    if prefix[:4] != MAGIC:
        raise BitstreamError(f"not an nvc stream (bad magic {prefix[:4]!r}, expected {MAGIC!r})")
    _check_version(prefix[4], prefix[5])
    (header_len,) = struct.unpack_from("<H", prefix, 6)
    if header_len < HEADER_MIN_SIZE:
        raise BitstreamError(f"header: length {header_len} below the minimum {HEADER_MIN_SIZE}")
    return header_len


def encode_header(h: StreamHeader, *, extra: bytes = b"") -> bytes:
    """The header's bytes (``extra``: fields of a later minor version, placed before the CRC)."""
    _validate_header(h)
    header_len = HEADER_FIXED_SIZE + len(h.model) + len(extra) + 4
    if header_len > 0xFFFF:
        raise BitstreamError("header: too long")
    major, minor = h.version
    fields = dict(
        weights_digest=bytes(h.weights_digest),
        numeric_mode=NumericMode(h.numeric_mode).name,
        quality=h.quality,
        matrix=h.matrix,
        color_range=h.color_range,
        width=h.width,
        height=h.height,
        padded_width=h.padded_width,
        padded_height=h.padded_height,
        fps_num=h.fps_num,
        fps_den=h.fps_den,
        frame_count=h.frame_count,
        gop=h.gop,
        model=h.model,
    )
    body = dict(
        magic=MAGIC, version_major=major, version_minor=minor, header_len=header_len, fields=fields, extra=bytes(extra)
    )
    return _build(HEADER, dict(body=dict(value=body), crc=None), "header")


def decode_header(b: bytes) -> StreamHeader:
    """Parses and validates a header (``b`` may continue past it); BitstreamError subclasses on refusal."""
    b = bytes(b)
    header_len = _header_len(b[:HEADER_PREFIX_SIZE])
    if len(b) < header_len:
        raise TruncatedStreamError(f"stream truncated in header (needs {header_len} bytes, {len(b)} present)")
    parsed = _parse(HEADER, b[:header_len], "header")
    body = parsed.body.value
    f = body.fields
    if len(f.model) > MAX_MODEL_NAME:
        raise BitstreamError(f"header: model name is {len(f.model)} bytes, over the {MAX_MODEL_NAME}-byte limit")
    h = StreamHeader(
        model=f.model,
        weights_digest=bytes(f.weights_digest),
        numeric_mode=_enum_value(f.numeric_mode, NumericMode, "header: numeric mode"),
        quality=f.quality,
        width=f.width,
        height=f.height,
        padded_width=f.padded_width,
        padded_height=f.padded_height,
        fps_num=f.fps_num,
        fps_den=f.fps_den,
        gop=f.gop,
        frame_count=f.frame_count,
        matrix=_enum_value(f.matrix, ColorMatrix, "header: colour matrix").name,
        color_range=_enum_value(f.color_range, ColorRange, "header: colour range").name,
        version=(body.version_major, body.version_minor),
    )
    _validate_header(h)
    return h


# --------------------------------------------------------------------------------------------------
# Frame payload (what a model's compress produces for one frame)


@dataclass(frozen=True)
class FramePayload:
    shape: tuple[int, ...]
    strings: list[bytes] = field(default_factory=list)


def _payload_struct(version: tuple[int, int]) -> cs.Construct:
    _check_version(*version)
    return {1: PAYLOAD_V1, 2: PAYLOAD_V2}.get(version[0], PAYLOAD)


def _payload_value(con: cs.Construct, shape: list[int], lengths: list[int], data: bytes) -> dict[str, Any]:
    """What ``con`` builds for these fields (3.x: the count and rank share a byte, the last length is implied)."""
    if con is PAYLOAD:
        return dict(layout=dict(ndim=len(shape), count=len(lengths)), shape=shape, lengths=lengths[:-1], data=data)
    return dict(ndim=len(shape), count=len(lengths), shape=shape, lengths=lengths, data=data)


def encode_payload(p: FramePayload, version: tuple[int, int] = FORMAT_VERSION) -> bytes:
    """The payload's bytes in format ``version``'s layout (3.x: an empty ``shape`` is the model's to derive)."""
    shape, strings = tuple(p.shape), list(p.strings)
    if len(shape) > MAX_SHAPE_DIMS or not all(isinstance(s, int) and 0 <= s <= 0xFFFF for s in shape):
        raise BitstreamError(f"payload: shape {shape!r} must be at most {MAX_SHAPE_DIMS} values in 0..65535")
    if len(strings) > MAX_SUBSTREAMS:
        raise BitstreamError(f"payload: {len(strings)} substreams, over the limit of {MAX_SUBSTREAMS}")
    total = sum(len(s) for s in strings)
    if total > MAX_PAYLOAD:
        raise BitstreamError(f"payload: {total} bytes, over the {MAX_PAYLOAD >> 20} MiB limit")
    con = _payload_struct(version)
    return _build(con, _payload_value(con, list(shape), [len(s) for s in strings], b"".join(strings)), "payload")


def decode_payload(b: bytes, version: tuple[int, int] = FORMAT_VERSION) -> FramePayload:
    """Parses a payload in format ``version``'s layout (a record's :attr:`FrameRecord.version`)."""
    b = bytes(b)
    con = _payload_struct(version)
    if len(b) > MAX_PAYLOAD + 2 + 3 * MAX_SHAPE_DIMS + 5 * MAX_SUBSTREAMS:
        raise BitstreamError(f"payload: {len(b)} bytes, over the {MAX_PAYLOAD >> 20} MiB limit")
    p = _parse(con, b, "payload")
    lengths = list(p.lengths)
    if con is PAYLOAD:
        rest = len(p.data) - sum(lengths)
        if p.layout.count == 0 and p.data:
            raise BitstreamError(f"payload: no substreams, yet {len(p.data)} bytes of data")
        if rest < 0:
            raise BitstreamError(f"payload: substream lengths add up to {sum(lengths)} bytes, {len(p.data)} present")
        lengths += [rest] if p.layout.count else []
    if sum(lengths) != len(p.data):
        raise BitstreamError(f"payload: substream lengths add up to {sum(lengths)} bytes, {len(p.data)} present")
    if not all(s <= 0xFFFF for s in p.shape):
        raise BitstreamError(f"payload: shape {list(p.shape)} has a value over 65535")
    if con is not PAYLOAD_V1:  # varints must be in their shortest form: one byte string per payload
        prefix = _build(con, _payload_value(con, list(p.shape), lengths, b""), "payload")
        if b[: len(prefix)] != prefix or len(prefix) + len(p.data) != len(b):
            raise BitstreamError("payload: a shape value or length is not in its shortest form")
    strings, pos = [], 0
    for n in lengths:
        strings.append(p.data[pos : pos + n])
        pos += n
    return FramePayload(shape=tuple(p.shape), strings=strings)


# --------------------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class FrameInfo:
    index: int
    frame_type: FrameType
    quality: int
    offset: int  # file offset of the payload (4.x: of the record's data)
    length: int  # payload length (4.x: the record's data length)
    head_size: int = RECORD_HEAD_SIZE_V1  # bytes of the record before its payload
    filter: FilterMode = FilterMode.OFF  # 4.x: the post-filter mode

    @property
    def record_offset(self) -> int:
        return self.offset - self.head_size


@dataclass(frozen=True)
class FrameRecord:
    index: int
    frame_type: FrameType
    quality: int
    payload: bytes
    version: tuple[int, int] = FORMAT_VERSION  # the stream's format version (its payload layout)
    filter: FilterMode = FilterMode.OFF  # the post-filter mode (4.x)
    filter_params: bytes = b""  # a NEW filter's parameters (nvc.postfilter.unpack reads them)


@dataclass(frozen=True)
class _Head:
    """A 2.x to 4.x record head's fields (2.x and 3.x: ``filter`` OFF)."""

    frame_type: FrameType
    quality: int
    length: int
    filter: FilterMode


# --------------------------------------------------------------------------------------------------
# Writer


class StreamWriter:
    """Writes a stream through a temporary file renamed over ``path`` by ``close(ok=True)``."""

    def __init__(self, path: str | os.PathLike[str], header: StreamHeader, force: bool = False) -> None:
        self.header = replace(header, frame_count=0, version=FORMAT_VERSION)
        self._header_bytes = encode_header(self.header)  # validates before any file is created
        self.path = Path(path)
        self._atomic = AtomicFile(path, force=force)
        self._count = 0
        self._pos = 0
        self.closed = False
        try:
            self._f: BinaryIO = self._atomic.open()
            self._put(self._header_bytes)
        except BaseException:
            self._atomic.close(ok=False)
            self.closed = True
            raise

    def _put(self, b: bytes) -> None:
        self._f.write(b)
        self._pos += len(b)

    @property
    def frame_count(self) -> int:
        return self._count

    def write(self, frame_type: FrameType, quality: int, payload: bytes, filter: FilterMode = FilterMode.OFF,
              filter_params: bytes = b"") -> None:
        """Appends a frame record: ``filter`` the post-filter mode, ``filter_params`` a NEW filter's bytes."""
        if self.closed:
            raise BitstreamError(f"{self.path}: writer is closed")
        i = self._count
        try:
            ft = FrameType(frame_type)
        except ValueError:
            raise BitstreamError(f"frame {i}: unknown frame type {frame_type!r}") from None
        if i == 0 and ft != FrameType.I:
            raise BitstreamError("frame 0: a stream must start with an I frame")
        if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 255:
            raise BitstreamError(f"frame {i}: quality {quality!r} outside 0..255")
        payload = bytes(payload)
        if len(payload) > MAX_PAYLOAD:
            raise BitstreamError(f"frame {i}: payload of {len(payload)} bytes, over the {MAX_PAYLOAD >> 20} MiB limit")
        if i >= MAX_FRAMES:
            raise BitstreamError(f"frame {i}: over the limit of {MAX_FRAMES} frames")
        try:
            mode = FilterMode(filter)
        except ValueError:
            raise BitstreamError(f"frame {i}: unknown post-filter mode {filter!r}") from None
        filter_params = bytes(filter_params)
        if (mode == FilterMode.NEW) != bool(filter_params) or len(filter_params) > MAX_FILTER_BYTES:
            raise BitstreamError(f"frame {i}: a NEW post-filter takes 1..{MAX_FILTER_BYTES} bytes of parameters, "
                                 f"other modes none ({mode.name}, {len(filter_params)} bytes)")
        if mode == FilterMode.KEEP and ft == FrameType.I:
            raise BitstreamError(f"frame {i}: an I frame has no current post-filter to keep")
        new = mode == FilterMode.NEW
        data = _build(RECORD_DATA, dict(filter=filter_params if new else None, payload=payload), f"frame {i}", new_filter=new)
        if len(data) > MAX_PAYLOAD:
            raise BitstreamError(f"frame {i}: record data of {len(data)} bytes, over the {MAX_PAYLOAD >> 20} MiB limit")
        flags = dict(reserved=0, filter=mode.name, frame_type=ft.name)
        head = dict(sync=FRAME_SYNC, flags=flags, quality=quality, seq=i & 0xFF, length=len(data))
        record = _build(FRAME_RECORD, dict(body=dict(value=dict(head=head, data=data)), crc=None), f"frame {i}")
        self._put(record)
        self._count += 1

    def close(self, ok: bool = True) -> None:
        """``ok``: patches the header's frame count and renames; else deletes."""
        if self.closed:
            return
        self.closed = True
        if not ok:
            self._atomic.close(ok=False)
            return
        try:
            self.header = replace(self.header, frame_count=self._count)
            patched = encode_header(self.header)
            assert len(patched) == len(self._header_bytes)
            self._f.seek(0)
            self._f.write(patched)
            self._f.seek(0, os.SEEK_END)
        except BaseException:
            self._atomic.close(ok=False)
            raise
        self._atomic.close(ok=True)

    def __enter__(self) -> StreamWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(ok=exc_type is None)


# --------------------------------------------------------------------------------------------------
# Reader


class StreamReader:
    """Reads a stream: ``header``, ``frames`` (every complete frame), ``truncated`` (None or why not)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        try:
            self._f: BinaryIO = builtins.open(self.path, "rb")
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such file") from None
        except IsADirectoryError:
            raise InputError(f"{self.path}: is a folder, not a stream") from None
        except OSError as e:
            raise InputError(f"{self.path}: cannot open ({e.strerror})") from None
        self.closed = False
        self.truncated: str | None = None
        self.frames: list[FrameInfo] = []
        try:
            self.file_size = os.fstat(self._f.fileno()).st_size
            self._open()
        except BitstreamError as e:  # a bad header: say which stream, as the frames' errors do
            self.close()
            raise type(e)(f"{self.path.name}: {e}") from None
        except BaseException:
            self.close()
            raise

    # -- low level
    def _pread(self, offset: int, n: int) -> bytes:
        self._f.seek(offset)
        return self._f.read(n)

    def _open(self) -> None:
        header_len = _header_len(self._pread(0, HEADER_PREFIX_SIZE))
        if header_len > self.file_size:
            raise TruncatedStreamError(
                f"stream truncated in header (needs {header_len} bytes, file has {self.file_size})"
            )
        self.header = decode_header(self._pread(0, header_len))
        self.header_size = header_len
        if self.header.version[0] == 1:
            problem = self._load_index()
            if problem is not None:
                self._scan_v1(problem)
        else:
            self._scan()
        self._intra = []
        last_i = -1
        for fi in self.frames:
            if fi.frame_type == FrameType.I:
                last_i = fi.index
            self._intra.append(last_i)

    def _load_index(self) -> str | None:
        """Loads ``frames`` from the index; returns None, or why the index cannot be used."""
        size, start = self.file_size, self.header_size
        if size < start + INDEX_HEAD_SIZE + 4 + TRAILER_SIZE:
            return "index missing"
        tail = self._pread(size - TRAILER_SIZE, TRAILER_SIZE)
        if tail[-4:] != TRAILER_MAGIC:
            return "index missing"
        try:
            tr = _parse(TRAILER, tail, "trailer").body.value
        except BitstreamError as e:
            return f"index unusable ({e})"
        index_offset, count = tr.index_offset, tr.frame_count
        if count > MAX_FRAMES:
            return f"index unusable (trailer frame count {count} over the limit of {MAX_FRAMES})"
        index_size = INDEX_HEAD_SIZE + INDEX_ENTRY_SIZE * count + 4
        if index_offset < start or index_offset + index_size != size - TRAILER_SIZE:
            return "index unusable (trailer offsets do not match the file size)"
        if count != self.header.frame_count:
            return f"index unusable (index lists {count} frames, header announces {self.header.frame_count})"
        try:
            idx = _parse(INDEX, self._pread(index_offset, index_size), "index").body.value
        except BitstreamError as e:
            return f"index unusable ({e})"
        if idx.count != count:
            return "index unusable (index and trailer frame counts differ)"
        frames, expected = [], start
        for i, e in enumerate(idx.entries):
            if e.offset != expected or e.length > MAX_PAYLOAD or not isinstance(e.frame_type, cs.EnumIntegerString):
                return f"index unusable (entry {i} is inconsistent)"
            frames.append(FrameInfo(i, FrameType[str(e.frame_type)], e.quality, e.offset + RECORD_HEAD_SIZE_V1, e.length))
            expected = e.offset + RECORD_OVERHEAD_V1 + e.length
        if expected != index_offset:
            return "index unusable (frames do not end where the index starts)"
        self.frames = frames
        return None

    def _head(self, raw: bytes, i: int) -> tuple[_Head, int]:
        """A 2.x to 4.x record head from the first bytes of a record: (its fields, its size); refuses a damaged one."""
        con = _RECORD_HEAD if self.header.version[0] >= 4 else _RECORD_HEAD_V3
        try:
            head = _parse(con, raw, f"frame {i}")
        except TruncatedStreamError:  # the length's last byte is missing (the caller read RECORD_HEAD_MAX)
            if len(raw) < RECORD_HEAD_MAX:
                raise
            raise BitstreamError(f"frame {i}: payload length longer than 5 bytes") from None
        if head.length > MAX_PAYLOAD:
            raise BitstreamError(f"frame {i}: payload length {head.length} over the {MAX_PAYLOAD >> 20} MiB limit")
        fields = head.flags if con is _RECORD_HEAD else head
        ft = _enum_value(fields.frame_type, FrameType, f"frame {i}: frame type")
        mode = FilterMode.OFF
        if con is _RECORD_HEAD:
            if head.flags.reserved:
                raise BitstreamError(f"frame {i}: reserved flag bits set ({head.flags.reserved})")
            mode = _enum_value(head.flags.filter, FilterMode, f"frame {i}: post-filter mode")
        built = _build(con, head, f"frame {i}")
        if raw[: len(built)] != built:
            raise BitstreamError(f"frame {i}: payload length not in its shortest form")
        if head.seq != i & 0xFF:
            raise BitstreamError(f"frame {i}: record is numbered {head.seq} (mod 256), expected {i & 0xFF}")
        return _Head(ft, head.quality, head.length, mode), len(built)

    def _walk(self, head_at: Any) -> tuple[list[FrameInfo], str | None, int]:
        """Walks the frame records from the header on: ``head_at(pos, left, i)`` reads record ``i``'s head at
        ``pos`` (``left`` bytes to the end of the file) and returns it with its size, or None where the
        records end, or raises BitstreamError with the reason a damaged or cut record stops the walk; the
        payloads and CRCs are skipped. Returns the complete frames, why the walk stopped early (None: at the
        end of the records) and where it stopped."""
        size, pos, i = self.file_size, self.header_size, 0
        frames: list[FrameInfo] = []
        reason: str | None = None
        while pos < size and i < MAX_FRAMES:
            left = size - pos
            try:
                got = head_at(pos, left, i)
            except BitstreamError as e:
                reason = str(e)
                break
            if got is None:
                break
            head, head_size = got
            need = head.length + RECORD_CRC_SIZE
            if need > left - head_size:
                reason = f"stream truncated in frame {i} (payload needs {need} bytes, {left - head_size} left)"
                break
            frames.append(FrameInfo(i, head.frame_type, head.quality, pos + head_size, head.length, head_size,
                                    head.filter))
            pos += head_size + need
            i += 1
        announced = self.header.frame_count
        if reason is None and len(frames) < announced:
            reason = f"stream truncated after {len(frames)} frames (header announces {announced})"
        return frames, reason, pos

    def _head_at(self, pos: int, left: int, i: int) -> tuple[Any, int]:
        """2.x to 4.x: record ``i``'s head at ``pos`` (for :meth:`_walk`)."""
        raw = self._pread(pos, min(RECORD_HEAD_MAX, left))
        if not FRAME_SYNC.startswith(raw[: len(FRAME_SYNC)]):
            raise BitstreamError(f"frame {i}: bad sync marker at offset {pos}")
        try:
            return self._head(raw, i)
        except TruncatedStreamError:
            raise TruncatedStreamError(
                f"stream truncated in frame {i} (record header incomplete, {left} bytes left)"
            ) from None

    def _head_at_v1(self, pos: int, left: int, i: int) -> tuple[Any, int] | None:
        """1.x: record ``i``'s head at ``pos``, or None at the (unusable) index (for :meth:`_walk`)."""
        raw = self._pread(pos, min(RECORD_HEAD_SIZE_V1, left))
        sig = raw[:4]
        if sig == INDEX_MAGIC or (i >= self.header.frame_count and INDEX_MAGIC.startswith(sig)):
            return None  # the index, or its first bytes
        if not FRAME_SYNC_V1.startswith(raw[: len(FRAME_SYNC_V1)]):
            raise BitstreamError(f"frame {i}: bad sync marker at offset {pos}")
        if left < RECORD_HEAD_SIZE_V1:
            raise TruncatedStreamError(
                f"stream truncated in frame {i} (record header needs {RECORD_HEAD_SIZE_V1} bytes, {left} left)"
            )
        head = _parse(_RECORD_HEAD_V1, raw, f"frame {i}")
        if head.index != i:
            raise BitstreamError(f"frame {i}: record is numbered {head.index}")
        if not isinstance(head.frame_type, cs.EnumIntegerString):
            raise BitstreamError(f"frame {i}: unknown frame type {int(head.frame_type)}")
        if head.length > MAX_PAYLOAD:
            raise BitstreamError(f"frame {i}: payload length {head.length} over the {MAX_PAYLOAD >> 20} MiB limit")
        return _Head(FrameType[str(head.frame_type)], head.quality, head.length, FilterMode.OFF), RECORD_HEAD_SIZE_V1

    def _scan(self) -> None:
        """2.x to 4.x: the frames are the records up to the end of the file (:meth:`_walk`)."""
        self.frames, reason, pos = self._walk(self._head_at)
        n, announced = len(self.frames), self.header.frame_count
        if reason is None and pos < self.file_size:
            reason = f"bytes after frame {n - 1}, the limit of {MAX_FRAMES} frames"
        elif reason is None and n > announced:
            reason = f"stream has {n} frames, its header announces {announced}"
        self.truncated = reason

    def _scan_v1(self, index_problem: str) -> None:
        """1.x, when the index is unusable: the records up to the index or the first damaged one (:meth:`_walk`)."""
        self.frames, reason, _ = self._walk(self._head_at_v1)
        self.truncated = reason or index_problem

    # -- public
    def __len__(self) -> int:
        return len(self.frames)

    def _info(self, i: int) -> FrameInfo:
        if not isinstance(i, int) or not 0 <= i < len(self.frames):
            raise IndexError(f"frame {i} out of range (stream has {len(self.frames)} complete frames)")
        return self.frames[i]

    def read(self, i: int) -> FrameRecord:
        """Frame ``i``, its CRC32 verified (ChecksumError naming the frame on mismatch)."""
        fi = self._info(i)
        n = fi.head_size + fi.length + RECORD_CRC_SIZE
        raw = self._pread(fi.record_offset, n)
        if len(raw) < n:
            raise TruncatedStreamError(f"frame {i}: truncated (needs {n} bytes, {len(raw)} left)")
        if self.header.version[0] == 1:
            head = _parse(_RECORD_HEAD_V1, raw[:RECORD_HEAD_SIZE_V1], f"frame {i}")
            got = (head.index, head.length, head.quality, str(head.frame_type))
            if got != (i, fi.length, fi.quality, fi.frame_type.name):
                raise BitstreamError(f"frame {i}: record header does not match the index")
        else:  # listed by the scan, so only a file changed since then differs
            head, head_size = self._head(raw[:RECORD_HEAD_MAX], i)
            got = (head_size, head.length, head.quality, head.frame_type, head.filter)
            if got != (fi.head_size, fi.length, fi.quality, fi.frame_type, fi.filter):
                raise BitstreamError(f"frame {i}: record header changed since the stream was opened")
        data = raw[fi.head_size : fi.head_size + fi.length]
        (stored,) = struct.unpack_from("<I", raw, n - RECORD_CRC_SIZE)
        computed = _crc32(raw[: n - RECORD_CRC_SIZE])
        if stored != computed:
            raise ChecksumError(f"frame {i}: CRC mismatch (stored {stored:08x}, computed {computed:08x})")
        if self.header.version[0] < 4:
            return FrameRecord(i, fi.frame_type, fi.quality, data, self.header.version)
        new = fi.filter == FilterMode.NEW
        d = _parse(RECORD_DATA, data, f"frame {i}: post-filter parameters", new_filter=new)
        if new and not d.filter:
            raise BitstreamError(f"frame {i}: a NEW post-filter without parameters")
        if fi.filter == FilterMode.KEEP and fi.frame_type == FrameType.I:
            raise BitstreamError(f"frame {i}: an I frame has no current post-filter to keep")
        return FrameRecord(i, fi.frame_type, fi.quality, d.payload, self.header.version, fi.filter, d.filter or b"")

    def gop_start(self, i: int) -> int:
        """Index of the last I frame at or before frame ``i``."""
        self._info(i)
        start = self._intra[i]
        if start < 0:
            raise BitstreamError(f"frame {i}: no I frame at or before it")
        return start

    def __iter__(self) -> Iterator[FrameRecord]:
        for i in range(len(self.frames)):
            yield self.read(i)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._f.close()

    def __enter__(self) -> StreamReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(
    path: str | os.PathLike[str], mode: str = "r", header: StreamHeader | None = None, force: bool = False
) -> StreamReader | StreamWriter:
    """``open(path)`` -> :class:`StreamReader`; ``open(path, "w", header=h, force=False)`` -> :class:`StreamWriter`."""
    if mode in ("r", "rb"):
        return StreamReader(path)
    if mode in ("w", "wb"):
        if header is None:
            raise ValueError("nvc.bitstream.open(path, 'w') needs header=")
        return StreamWriter(path, header, force=force)
    raise ValueError(f"mode must be 'r' or 'w', not {mode!r}")


def info_dict(reader: StreamReader) -> dict[str, Any]:
    """Everything about a stream, JSON-serializable (``nvc info``)."""
    h = reader.header
    return {
        "format": "nvc",
        "version": f"{h.version[0]}.{h.version[1]}",
        "model": h.model,
        "weights_digest": h.weights_digest.hex(),
        "numeric_mode": NumericMode(h.numeric_mode).name,
        "quality": h.quality,
        "width": h.width,
        "height": h.height,
        "padded_width": h.padded_width,
        "padded_height": h.padded_height,
        "fps": f"{h.fps_num}/{h.fps_den}",
        "gop": h.gop,
        "frame_count": h.frame_count,
        "matrix": h.matrix,
        "color_range": h.color_range,
        "file_size": reader.file_size,
        "frames_complete": len(reader.frames),
        "truncated": reader.truncated,
        "frames": [
            {"index": f.index, "type": f.frame_type.name, "quality": f.quality, "bytes": f.length, "offset": f.offset,
             "filter": f.filter.name}
            for f in reader.frames
        ],
    }

"""The nvc container (nvc.bitstream): round trips, refusals of damaged or hostile streams, atomic writes."""

from __future__ import annotations

import json
import struct
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvc import bitstream as bs
from nvc.errors import (
    BitstreamError,
    ChecksumError,
    NvcError,
    OutputExistsError,
    TruncatedStreamError,
    VersionError,
)

HEADER = bs.StreamHeader(
    model="nvc-lite",
    weights_digest=bytes(range(16)),
    numeric_mode=bs.NumericMode.FLOAT32_CPU,
    quality=3,
    width=100,
    height=60,
    padded_width=128,
    padded_height=64,
    fps_num=30000,
    fps_den=1001,
    gop=2,
)
# I P I P I, with payloads of various sizes (including empty)
FRAMES = [
    (bs.FrameType.I, 3, b"intra-0" * 5),
    (bs.FrameType.P, 3, b"p1"),
    (bs.FrameType.I, 4, b""),
    (bs.FrameType.P, 5, bytes(range(256))),
    (bs.FrameType.I, 3, b"x" * 7),
]
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def write_stream(path: Path, header: bs.StreamHeader = HEADER, frames=FRAMES, force: bool = False) -> bytes:
    with bs.open(path, "w", header=header, force=force) as w:
        for ft, q, p in frames:
            w.write(ft, q, p)
    return path.read_bytes()


def v1_stream(frames=FRAMES, header: bytes | None = None) -> bytes:
    """A 1.3 stream (nvc writes 5.0 and still reads 4.0, 3.0, 2.0 and 1.x), built from the 1.x construct declarations."""
    hb = header or bs.encode_header(replace(HEADER, version=(1, 3), frame_count=len(frames)))
    out, entries = bytearray(hb), []
    for i, (ft, q, p) in enumerate(frames):
        head = dict(sync=bs.FRAME_SYNC_V1, index=i, frame_type=ft.name, quality=q, flags=0, length=len(p))
        entries.append(dict(offset=len(out), length=len(p), frame_type=ft.name, quality=q))
        out += bs.FRAME_RECORD_V1.build(dict(body=dict(value=dict(head=head, payload=p)), crc=None))
    index = dict(magic=bs.INDEX_MAGIC, count=len(frames), entries=entries)
    trailer = dict(index_offset=len(out), frame_count=len(frames))
    out += bs.INDEX.build(dict(body=dict(value=index), crc=None))
    out += bs.TRAILER.build(dict(body=dict(value=trailer), crc=None, magic=bs.TRAILER_MAGIC))
    return bytes(out)


def reheader(data: bytes, **changes: int) -> bytes:
    """``data`` with fields of its header changed and the header CRC recomputed (a forger's stream)."""
    offsets = {"width": (28, "<I"), "height": (32, "<I"), "frame_count": (52, "<I"), "gop": (56, "<H"),
               "header_len": (6, "<H"), "major": (4, "<B"), "minor": (5, "<B"), "matrix": (26, "<B"),
               "numeric_mode": (24, "<B"), "model_len": (58, "<B")}
    hl = struct.unpack_from("<H", data, 6)[0]
    b = bytearray(data)
    for k, v in changes.items():
        off, fmt = offsets[k]
        struct.pack_into(fmt, b, off, v)
    struct.pack_into("<I", b, hl - 4, zlib.crc32(bytes(b[: hl - 4])))
    return bytes(b)


def v2_stream(path: Path, frames=FRAMES, major: int = 2) -> bytes:
    """A 2.0 (or 3.0, 4.0) stream: 5.0's header and records without a post-filter, whose bytes are 4.0's, 3.0's
    and 2.0's (payloads are opaque to the container), under major 2 (or 3, 4) (``path``: a scratch file, removed)."""
    data = reheader(write_stream(path, frames=frames), major=major)
    path.unlink()
    return data


@pytest.fixture(params=["5.0", "4.0", "3.0", "2.0", "1.3"])
def stream(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, bytes]:
    """The stream of FRAMES as this nvc writes it (5.0), and as the 4.0, 3.0, 2.0 and 1.3 writers did (still read)."""
    p = tmp_path / "s.nvc"
    if request.param == "5.0":
        return p, write_stream(p)
    if request.param == "1.3":
        p.write_bytes(v1_stream())
    else:
        p.write_bytes(v2_stream(tmp_path / "w.nvc", major=int(request.param[0])))
    return p, p.read_bytes()


@pytest.fixture
def stream_v3(tmp_path: Path) -> tuple[Path, bytes]:
    """The stream of FRAMES in the record layout of 5.x and 4.x (without post-filters that of 3.x and 2.x)."""
    p = tmp_path / "s.nvc"
    return p, write_stream(p)


@pytest.fixture
def stream_v1(tmp_path: Path) -> tuple[Path, bytes]:
    p = tmp_path / "s1.nvc"
    p.write_bytes(v1_stream())
    return p, p.read_bytes()


def load(tmp_path: Path, data: bytes, name: str = "x.nvc") -> bs.StreamReader:
    p = tmp_path / name
    p.write_bytes(data)
    return bs.StreamReader(p)


def read_everything(tmp_path: Path, data: bytes) -> None:
    """Opens ``data`` and reads every frame, gop_start and info; only NvcError may escape."""
    try:
        with load(tmp_path, data) as r:
            json.dumps(bs.info_dict(r))
            for i in range(len(r.frames)):
                try:
                    r.read(i)
                    r.gop_start(i)
                except NvcError:
                    pass
    except NvcError as e:
        assert "\n" not in str(e) and str(e)


# ---------------------------------------------------------------------------------------------- round trips


def test_module_does_not_import_torch_or_numpy() -> None:
    import subprocess

    code = "import sys, nvc.bitstream; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_header_roundtrip_and_layout() -> None:
    b = bs.encode_header(HEADER)
    assert b[:4] == bs.MAGIC and b[4:6] == bytes(bs.FORMAT_VERSION)
    assert len(b) == struct.unpack_from("<H", b, 6)[0] == 59 + len("nvc-lite") + 4
    assert struct.unpack_from("<I", b, len(b) - 4)[0] == zlib.crc32(b[:-4])
    h = bs.decode_header(b + b"trailing bytes are not the header's")
    assert h == HEADER and isinstance(h.numeric_mode, bs.NumericMode)


@st.composite
def headers(draw: st.DrawFn) -> bs.StreamHeader:
    w = draw(st.integers(1, 16384))
    h = draw(st.integers(1, 16384))
    return bs.StreamHeader(
        model=draw(st.text(st.characters(min_codepoint=32, max_codepoint=126), min_size=1, max_size=64)),
        weights_digest=draw(st.binary(min_size=16, max_size=16)),
        numeric_mode=draw(st.sampled_from(list(bs.NumericMode))),
        quality=draw(st.integers(0, 255)),
        width=w,
        height=h,
        padded_width=draw(st.integers(w, 16384)),
        padded_height=draw(st.integers(h, 16384)),
        fps_num=draw(st.integers(1, 2**32 - 1)),
        fps_den=draw(st.integers(1, 2**32 - 1)),
        gop=draw(st.integers(1, 65535)),
        frame_count=draw(st.integers(0, 2**24)),
        matrix="bt709",
        color_range=draw(st.sampled_from(["limited", "full"])),
    )


@FAST
@given(headers())
def test_header_property_roundtrip(h: bs.StreamHeader) -> None:
    assert bs.decode_header(bs.encode_header(h)) == h


VERSIONS = [(5, 0), (4, 0), (3, 0), (2, 0), (1, 3)]


@FAST
@given(
    st.lists(st.integers(0, 65535), max_size=4).map(tuple),
    st.lists(st.binary(max_size=64), max_size=16),
    st.sampled_from(VERSIONS),
)
def test_payload_property_roundtrip(shape: tuple[int, ...], strings: list[bytes], version: tuple[int, int]) -> None:
    p = bs.FramePayload(shape=shape, strings=strings)
    assert bs.decode_payload(bs.encode_payload(p, version), version) == p


def test_payload_layouts() -> None:
    """3.x: ndim (3 bits) and count (5 bits) in one byte, LEB128 shape values and every length but the last;
    2.x: u8 ndim, u8 count, then LEB128 shape values and lengths; 1.x: u16 shape values, u32 lengths."""
    p = bs.FramePayload((3, 300), [b"y" * 200, b"zz", b""])
    assert bs.encode_payload(p) == bytes([2 << 5 | 3, 3, 0xAC, 0x02, 0xC8, 0x01, 2]) + b"y" * 200 + b"zz"
    assert bs.encode_payload(bs.FramePayload((), [b"", b"one string"])) == b"\x02\x00one string"
    assert bs.encode_payload(bs.FramePayload((), [b"only"])) == b"\x01only"
    assert bs.encode_payload(bs.FramePayload((), [])) == b"\x00"
    assert bs.encode_payload(p, (2, 0)) == bytes([2, 3, 3, 0xAC, 0x02, 0xC8, 0x01, 2, 0]) + b"y" * 200 + b"zz"
    assert bs.encode_payload(p, (1, 3)) == struct.pack("<BBHHIII", 2, 3, 3, 300, 200, 2, 0) + b"y" * 200 + b"zz"


@pytest.mark.parametrize("version", VERSIONS)
def test_payload_refusals(version: tuple[int, int]) -> None:
    good = bs.encode_payload(bs.FramePayload((4, 6), [b"yyyy", b"zz"]), version)
    cut = (good[:-1], good + b"!") if version[0] < 3 else ()  # 3.x: the last substream is what is left
    for bad in (*cut, good[:3], b"", b"\x05\x00", b"\x00\x11", b"\x00\x01\xff\xff\xff\xff"):
        with pytest.raises(BitstreamError):
            bs.decode_payload(bad, version)
    if version[0] >= 3:  # a cut or extended payload changes its last substream: the model refuses that
        assert bs.decode_payload(good[:-1], version).strings == [b"yyyy", b"z"]
        assert bs.decode_payload(good + b"!", version).strings == [b"yyyy", b"zz!"]
    for p in (bs.FramePayload((1, 2, 3, 4, 5), []), bs.FramePayload((70000,), []), bs.FramePayload((), [b""] * 17)):
        with pytest.raises(BitstreamError):
            bs.encode_payload(p, version)
    with pytest.raises(VersionError):
        bs.decode_payload(good, (6, 0))


def test_payload_refuses_non_shortest_varints() -> None:
    assert bs.decode_payload(b"\x01\x01\x05\x02zz", (2, 0)) == bs.FramePayload((5,), [b"zz"])
    for bad in (b"\x01\x01\x85\x00\x02zz", b"\x01\x01\x05\x82\x00zz", b"\x01\x00\xf0\xa2\x04"):  # 5, 2; 70000
        with pytest.raises(BitstreamError):
            bs.decode_payload(bad, (2, 0))
    assert bs.decode_payload(b"\x22\x05\x02zzy") == bs.FramePayload((5,), [b"zz", b"y"])
    for bad in (b"\x22\x85\x00\x02zzy", b"\x22\x05\x82\x00zzy", b"\x20\xf0\xa2\x04"):  # 5, 2; 70000
        with pytest.raises(BitstreamError):
            bs.decode_payload(bad)


@FAST
@given(st.binary(max_size=80), st.sampled_from(VERSIONS))
def test_payload_random_bytes(b: bytes, version: tuple[int, int]) -> None:
    try:
        bs.decode_payload(b, version)
    except BitstreamError as e:
        assert "\n" not in str(e)


def test_stream_roundtrip(stream: tuple[Path, bytes]) -> None:
    path, data = stream
    with bs.open(path) as r:
        assert isinstance(r, bs.StreamReader)
        assert r.truncated is None
        assert replace(r.header, version=bs.FORMAT_VERSION) == replace(HEADER, frame_count=len(FRAMES))
        assert [(f.frame_type, f.quality, f.length) for f in r.frames] == [(t, q, len(p)) for t, q, p in FRAMES]
        for f, (_, _, p) in zip(r.frames, FRAMES):
            assert data[f.offset : f.offset + f.length] == p
        recs = list(r)
        assert [(x.index, x.frame_type, x.quality, x.payload) for x in recs] == [(i, *f) for i, f in enumerate(FRAMES)]
        assert {x.version for x in recs} == {r.header.version}
        assert r.read(3).payload == bytes(range(256))
        assert [r.gop_start(i) for i in range(5)] == [0, 0, 2, 2, 4]
        with pytest.raises(IndexError):
            r.read(5)
        info = bs.info_dict(r)
    assert json.loads(json.dumps(info)) == info
    assert info["version"] == "{}.{}".format(*r.header.version) and info["fps"] == "30000/1001" and info["weights_digest"] == bytes(range(16)).hex()
    assert info["file_size"] == len(data) and info["truncated"] is None and info["frame_count"] == 5
    assert info["frames"][1] == {"index": 1, "type": "P", "quality": 3, "bytes": 2, "offset": r.frames[1].offset,
                                 "filter": "OFF"}
    assert info["model"] == "nvc-lite" and info["matrix"] == "bt709" and info["color_range"] == "limited"


def test_whole_file_matches_the_construct_declaration(stream_v3: tuple[Path, bytes]) -> None:
    _, data = stream_v3
    s = bs.NVC_STREAM.parse(data)
    assert s.header.body.value.fields.frame_count == 5 == len(s.frames)
    assert [r.body.value.data for r in s.frames] == [p for _, _, p in FRAMES]
    assert [r.body.value.head.seq for r in s.frames] == [0, 1, 2, 3, 4]
    # 4.0 records without a post-filter (and 3.0's, 2.0's): 2 sync + type + quality + seq + LEB128 length +
    # payload + CRC; nothing after them
    hl = struct.unpack_from("<H", data, 6)[0]
    assert len(data) == hl + sum(5 + (1 if len(p) < 128 else 2) + len(p) + 4 for _, _, p in FRAMES)
    assert data[hl : hl + 6] == b"Nf\x00\x03\x00\x23"  # frame 0: I, quality 3, seq 0, 35 bytes


def test_whole_3x_file_matches_its_construct_declaration(tmp_path: Path) -> None:
    data = v2_stream(tmp_path / "v3.nvc", major=3)
    s = bs.NVC_STREAM_V3.parse(data)
    assert [r.body.value.payload for r in s.frames] == [p for _, _, p in FRAMES]
    assert [int(r.body.value.head.frame_type) for r in s.frames] == [int(t) for t, _, _ in FRAMES]


def test_record_data_limit_counts_the_filter(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(bs, "MAX_PAYLOAD", 100)
    with bs.open(tmp_path / "l.nvc", "w", header=HEADER) as w:
        w.write(bs.FrameType.I, 3, b"x" * 100)  # a payload at the limit, no filter: fits
        with pytest.raises(BitstreamError, match="record data of 103 bytes"):
            w.write(bs.FrameType.P, 3, b"x" * 100, bs.FilterMode.NEW, b"ab")
        w.write(bs.FrameType.P, 3, b"x" * 97, bs.FilterMode.NEW, b"ab")
    with bs.open(tmp_path / "l.nvc") as r:
        assert r.truncated is None and r.read(1).payload == b"x" * 97


def test_whole_1x_file_matches_its_construct_declaration(stream_v1: tuple[Path, bytes]) -> None:
    _, data = stream_v1
    s = bs.NVC_STREAM_V1.parse(data)
    assert s.header.body.value.fields.frame_count == 5 == len(s.frames) == s.index.body.value.count
    assert [r.body.value.payload for r in s.frames] == [p for _, _, p in FRAMES]
    assert s.trailer.body.value.index_offset == len(data) - 20 - (8 + 14 * 5 + 4)


def test_empty_stream_and_payload_through_stream(tmp_path: Path) -> None:
    p = tmp_path / "e.nvc"
    write_stream(p, frames=[])
    with bs.open(p) as r:
        assert r.frames == [] and r.truncated is None and r.header.frame_count == 0 and list(r) == []
    payload = bs.encode_payload(bs.FramePayload((3, 5), [b"y" * 10, b"z"]))
    p2 = tmp_path / "f.nvc"
    write_stream(p2, frames=[(bs.FrameType.I, 0, payload)])
    with bs.open(p2) as r:
        assert bs.decode_payload(r.read(0).payload) == bs.FramePayload((3, 5), [b"y" * 10, b"z"])


def test_writer_refusals(tmp_path: Path) -> None:
    p = tmp_path / "w.nvc"
    for bad in (
        replace(HEADER, width=16385),
        replace(HEADER, padded_width=99),
        replace(HEADER, model="é"),
        replace(HEADER, model="m" * 65),
        replace(HEADER, model=""),
        replace(HEADER, weights_digest=b"short"),
        replace(HEADER, gop=0),
        replace(HEADER, fps_den=0),
        replace(HEADER, matrix="bt601"),
        replace(HEADER, color_range="tv"),
        replace(HEADER, numeric_mode=7),
    ):
        with pytest.raises(BitstreamError):
            bs.StreamWriter(p, bad)
        assert list(tmp_path.iterdir()) == []
    with bs.open(p, "w", header=HEADER) as w:
        with pytest.raises(BitstreamError, match="I frame"):
            w.write(bs.FrameType.P, 3, b"")
        with pytest.raises(BitstreamError):
            w.write(bs.FrameType.I, 256, b"")
        with pytest.raises(BitstreamError):
            w.write(7, 3, b"")
        w.write(bs.FrameType.I, 3, b"ok")
    with pytest.raises(BitstreamError):
        w.write(bs.FrameType.P, 3, b"")
    with bs.open(p) as r:
        assert len(r.frames) == 1 and r.truncated is None


# ---------------------------------------------------------------------------------------------- atomic writes


def test_writer_not_ok_leaves_nothing(tmp_path: Path) -> None:
    p = tmp_path / "a.nvc"
    w = bs.StreamWriter(p, HEADER)
    w.write(bs.FrameType.I, 3, b"data")
    assert not p.exists() and len(list(tmp_path.iterdir())) == 1  # the temporary file
    w.close(ok=False)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with bs.open(p, "w", header=HEADER) as w:
            w.write(bs.FrameType.I, 3, b"data")
            raise RuntimeError("encoder failed")
    assert list(tmp_path.iterdir()) == []


def test_existing_target_refused_without_force(stream: tuple[Path, bytes]) -> None:
    path, data = stream
    with pytest.raises(OutputExistsError):
        bs.open(path, "w", header=HEADER)
    assert path.read_bytes() == data and len(list(path.parent.iterdir())) == 1
    write_stream(path, frames=FRAMES[:1], force=True)
    with bs.open(path) as r:
        assert len(r.frames) == 1


# ---------------------------------------------------------------------------------------------- refusals


def test_bad_magic(tmp_path: Path, stream: tuple[Path, bytes]) -> None:
    _, data = stream
    for bad in (b"RIFF" + data[4:], b"", b"\x00", b"hello world, this is text" * 4):
        with pytest.raises(BitstreamError):
            load(tmp_path, bad)
    with pytest.raises(TruncatedStreamError):
        load(tmp_path, bs.MAGIC[:3])


def test_unknown_major_version(tmp_path: Path, stream: tuple[Path, bytes]) -> None:
    _, data = stream
    for major in (0, 6, 255):
        with pytest.raises(VersionError, match=rf"version {major}\.\d+ is not supported"):
            load(tmp_path, reheader(data, major=major))
        # refused from the version bytes alone, before anything else is looked at
        with pytest.raises(VersionError):
            load(tmp_path, bs.MAGIC + bytes([major, 0]) + b"\xff" * 2)
        with pytest.raises(VersionError):
            load(tmp_path, bs.MAGIC + bytes([major, 0]))


@pytest.mark.parametrize("version", [(5, 7), (4, 7), (3, 7), (2, 7), (1, 7)])
def test_newer_minor_version_is_readable(tmp_path: Path, version: tuple[int, int]) -> None:
    newer = replace(HEADER, version=version, frame_count=len(FRAMES))
    hb = bs.encode_header(newer, extra=b"future fields")
    assert len(hb) == len(bs.encode_header(HEADER)) + 13
    assert bs.decode_header(hb) == newer
    if version[0] == 1:
        data = v1_stream(header=hb)
    else:  # the longer header in front of a 5.0 stream's records (they hold no offsets; 4.x's, 3.x's, 2.x's are the same)
        old = write_stream(tmp_path / "n.nvc")
        data = hb + old[struct.unpack_from("<H", old, 6)[0] :]
    with load(tmp_path, data) as r:
        assert r.truncated is None and r.header.version == version
        assert [x.payload for x in r] == [f[2] for f in FRAMES]
        assert bs.info_dict(r)["version"] == "{}.7".format(version[0])


def test_header_crc_flip(tmp_path: Path, stream: tuple[Path, bytes]) -> None:
    _, data = stream
    hl = struct.unpack_from("<H", data, 6)[0]
    for off in range(8, hl):  # every byte after magic/version/length (those are refused on their own)
        bad = bytearray(data)
        bad[off] ^= 0x10
        with pytest.raises(BitstreamError):
            load(tmp_path, bytes(bad))
    bad = bytearray(data)
    bad[30] ^= 1  # width
    with pytest.raises(ChecksumError, match="header"):
        load(tmp_path, bytes(bad))


def test_frame_crc_flip_names_the_frame(tmp_path: Path, stream: tuple[Path, bytes]) -> None:
    path, data = stream
    with bs.open(path) as r:
        f3 = r.frames[3]
    bad = bytearray(data)
    bad[f3.offset + 100] ^= 0x01
    with load(tmp_path, bytes(bad)) as r:
        assert r.truncated is None and len(r.frames) == 5
        assert r.read(2).payload == b""
        with pytest.raises(ChecksumError, match=r"^frame 3: CRC mismatch"):
            r.read(3)
        with pytest.raises(ChecksumError, match="frame 3"):
            list(r)
    bad = bytearray(data)
    bad[f3.offset + f3.length] ^= 0x80  # the stored CRC itself
    with load(tmp_path, bytes(bad)) as r, pytest.raises(ChecksumError, match="frame 3"):
        r.read(3)


def test_truncation_at_every_offset(tmp_path: Path, stream: tuple[Path, bytes]) -> None:
    path, data = stream
    with bs.open(path) as r:
        ends = [f.offset + f.length + 4 for f in r.frames]
        hl = r.header_size
    t0 = time.perf_counter()
    for cut in range(len(data)):
        if cut < hl:
            with pytest.raises(BitstreamError):
                load(tmp_path, data[:cut])
            continue
        v1 = r.header.version[0] == 1
        with load(tmp_path, data[:cut]) as r:
            complete = sum(e <= cut for e in ends)
            assert len(r.frames) == complete, cut
            assert r.truncated and "\n" not in r.truncated
            assert [x.payload for x in r] == [f[2] for f in FRAMES[:complete]]
            if complete < len(FRAMES):
                assert "truncated" in r.truncated
                last_end = ends[complete - 1] if complete else hl
                if cut > last_end + (4 if v1 else 0):
                    assert f"in frame {complete}" in r.truncated, (cut, r.truncated)
                elif not v1:  # cut at a record boundary
                    assert r.truncated == f"stream truncated after {complete} frames (header announces 5)"
            else:
                assert v1 and r.truncated == "index missing", (cut, r.truncated)
    assert time.perf_counter() - t0 < 10


def test_truncation_message(tmp_path: Path, stream: tuple[Path, bytes]) -> None:
    path, data = stream
    with bs.open(path) as r:
        f3 = r.frames[3]
    with load(tmp_path, data[: f3.offset + 56]) as r:
        assert r.truncated == "stream truncated in frame 3 (payload needs 260 bytes, 56 left)"
        assert bs.info_dict(r)["truncated"] == r.truncated
    with load(tmp_path, data[: f3.record_offset]) as r:
        assert r.truncated == "stream truncated after 3 frames (header announces 5)"


def test_damaged_index_falls_back_to_scanning(tmp_path: Path, stream_v1: tuple[Path, bytes]) -> None:
    _, data = stream_v1
    index_offset = struct.unpack_from("<Q", data, len(data) - 20)[0]
    for off in (index_offset + 5, index_offset + 20, len(data) - 10, len(data) - 1):
        bad = bytearray(data)
        bad[off] ^= 0x04
        with load(tmp_path, bytes(bad)) as r:
            assert len(r.frames) == 5 and r.truncated and "index" in r.truncated
            assert [x.payload for x in r] == [f[2] for f in FRAMES]


def _record_starts(path: Path) -> list[int]:
    with bs.open(path) as r:
        return [f.record_offset for f in r.frames]


def test_lying_header_fields_refused(tmp_path: Path, stream: tuple[Path, bytes]) -> None:
    _, data = stream
    # header fields (CRC recomputed, so only the limits can catch them)
    for field, value in (("width", 2**32 - 1), ("height", 16385), ("frame_count", 2**32 - 1), ("frame_count", 2**24 + 1),
                         ("gop", 0), ("header_len", 0xFFFF), ("model_len", 255), ("model_len", 0), ("matrix", 9),
                         ("numeric_mode", 200), ("header_len", 10)):
        with pytest.raises(BitstreamError):
            load(tmp_path, reheader(data, **{field: value}))


def _with_head(data: bytes, start: int, **head: int) -> bytes:
    """A 4.0 (or 3.0, 2.0) stream with the record head at ``start`` rewritten (fields in ``head``; "raw_length": the
    length's bytes as given), its payload and CRC left as they are."""
    old_len = data[start + 5 :]
    n = next(k for k, b in enumerate(old_len) if b < 0x80) + 1
    fixed = bytearray(data[start : start + 5])
    for k, off in (("frame_type", 2), ("quality", 3), ("seq", 4)):
        if k in head:
            fixed[off] = head[k]
    raw = head.get("raw_length")
    if raw is None:
        raw = bs.cs.VarInt.build(head["length"]) if "length" in head else data[start + 5 : start + 5 + n]
    return data[:start] + bytes(fixed) + raw + data[start + 5 + n :]


def test_lying_record_heads_refused_quickly(tmp_path: Path, stream_v3: tuple[Path, bytes]) -> None:
    """4.0 (and 3.0, 2.0): a record head that lies stops the scan there; the frames before it survive."""
    path, data = stream_v3
    starts = _record_starts(path)
    t0 = time.perf_counter()
    for head, why in (({"length": 2**32 - 1}, "limit"), ({"length": 2**20}, "truncated in frame 2"),
                      ({"raw_length": b"\x82\x80\x00"}, "shortest form"),  # 2 in three bytes
                      ({"raw_length": b"\xff" * 5 + b"\x01"}, "longer than 5 bytes"),
                      ({"seq": 7}, "numbered 7"), ({"frame_type": 3}, "frame type: unknown code 3"),
                      ({"frame_type": 0x11}, "reserved flag bits"),
                      ({"frame_type": 0x0D}, "post-filter mode: unknown code 3")):
        with load(tmp_path, _with_head(data, starts[2], **head)) as r:
            assert len(r.frames) == 2 and why in r.truncated, (head, r.truncated)
    bad = bytearray(data)
    bad[starts[2]] = ord("X")
    with load(tmp_path, bytes(bad)) as r:
        assert len(r.frames) == 2 and r.truncated == f"frame 2: bad sync marker at offset {starts[2]}"
    with load(tmp_path, data + b"Nf\x01\x03\x05\x00" + bytes(4)) as r:  # a record the header does not announce
        assert len(r.frames) == 6 and r.truncated == "stream has 6 frames, its header announces 5"
    assert time.perf_counter() - t0 < 5


def test_frames_past_the_limit_are_reported(tmp_path: Path, stream_v3: tuple[Path, bytes], monkeypatch) -> None:
    _, data = stream_v3
    monkeypatch.setattr(bs, "MAX_FRAMES", 3)
    with load(tmp_path, reheader(data, frame_count=3)) as r:
        assert len(r.frames) == 3 and r.truncated == "bytes after frame 2, the limit of 3 frames"


def test_lying_lengths_refused_quickly(tmp_path: Path, stream_v1: tuple[Path, bytes]) -> None:
    path, data = stream_v1
    starts = _record_starts(path)
    t0 = time.perf_counter()
    # a payload length of 2**32-1 in frame 2, index gone: the scan stops there, frames 0-1 survive
    bad = bytearray(data[: struct.unpack_from("<Q", data, len(data) - 20)[0]])
    struct.pack_into("<I", bad, starts[2] + 12, 2**32 - 1)
    with load(tmp_path, bytes(bad)) as r:
        assert len(r.frames) == 2 and "frame 2" in r.truncated and "limit" in r.truncated
    struct.pack_into("<I", bad, starts[2] + 12, 2**20)  # under the limit, but past the end of the file
    with load(tmp_path, bytes(bad)) as r:
        assert len(r.frames) == 2 and r.truncated.startswith("stream truncated in frame 2")
    # the same lie with the index intact: refused when the frame is read
    bad = bytearray(data)
    struct.pack_into("<I", bad, starts[2] + 12, 2**32 - 1)
    with load(tmp_path, bytes(bad)) as r:
        assert r.truncated is None
        with pytest.raises(BitstreamError, match="frame 2"):
            r.read(2)
    # a trailer announcing 2**32-1 frames (CRC valid) / a huge index offset: index ignored, frames scanned
    for index_offset, count in ((struct.unpack_from("<Q", data, len(data) - 20)[0], 2**32 - 1), (2**64 - 1, 5)):
        bad = bytearray(data)
        struct.pack_into("<QI", bad, len(data) - 20, index_offset, count)
        struct.pack_into("<I", bad, len(data) - 8, zlib.crc32(bytes(bad[-20:-8])))
        with load(tmp_path, bytes(bad)) as r:
            assert len(r.frames) == 5 and "index" in r.truncated
    assert time.perf_counter() - t0 < 5


def test_missing_file_is_an_nvc_error(tmp_path: Path) -> None:
    with pytest.raises(NvcError):
        bs.open(tmp_path / "nope.nvc")
    with pytest.raises(NvcError):
        bs.open(tmp_path)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_random_bytes(tmp_path: Path, b: bytes) -> None:
    t0 = time.perf_counter()
    read_everything(tmp_path, b)
    read_everything(tmp_path, bs.MAGIC + b"\x01\x00" + b)
    read_everything(tmp_path, bs.MAGIC + b"\x02\x00" + b)
    read_everything(tmp_path, bs.MAGIC + b"\x03\x00" + b)
    read_everything(tmp_path, bs.MAGIC + b"\x04\x00" + b)
    assert time.perf_counter() - t0 < 1


_VALID: dict[str, bytes] = {}


def _valid_stream(version: str) -> bytes:
    if version not in _VALID:
        import tempfile

        with tempfile.TemporaryDirectory() as d:
            make = {"5.0": write_filtered, "4.0": lambda p: reheader(write_filtered(p), major=4),
                    "3.0": lambda p: v2_stream(p, major=3),
                    "2.0": v2_stream}.get(version, lambda _: v1_stream())
            _VALID[version] = make(Path(d) / "v.nvc")
    return _VALID[version]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data(), st.sampled_from(["5.0", "4.0", "3.0", "2.0", "1.3"]))
def test_random_damage(tmp_path: Path, data: st.DataObject, version: str) -> None:
    b = bytearray(_valid_stream(version))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(b) - 1))
        b[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(b)))
    t0 = time.perf_counter()
    read_everything(tmp_path, bytes(b[:cut]))
    assert time.perf_counter() - t0 < 1


# ---------------------------------------------------------------------------------------------- 4.x post-filter

# frames with every post-filter mode: (type, quality, payload, mode, parameters)
FILTERED = [
    (bs.FrameType.I, 3, b"intra-0", bs.FilterMode.NEW, b"\x80params"),
    (bs.FrameType.P, 3, b"p1", bs.FilterMode.KEEP, b""),
    (bs.FrameType.P, 3, b"", bs.FilterMode.OFF, b""),
    (bs.FrameType.P, 4, b"p3", bs.FilterMode.NEW, bytes(255)),
    (bs.FrameType.I, 3, b"x" * 200, bs.FilterMode.OFF, b""),
]


def write_filtered(path: Path, frames=FILTERED) -> bytes:
    with bs.open(path, "w", header=HEADER) as w:
        for ft, q, p, mode, params in frames:
            w.write(ft, q, p, mode, params)
    return path.read_bytes()


def test_post_filter_round_trip_and_layout(tmp_path: Path) -> None:
    data = write_filtered(tmp_path / "f.nvc")
    with bs.open(tmp_path / "f.nvc") as r:
        got = [(x.frame_type, x.quality, x.payload, x.filter, x.filter_params) for x in r]
        assert got == FILTERED and r.truncated is None
        assert [f["filter"] for f in bs.info_dict(r)["frames"]] == ["NEW", "KEEP", "OFF", "NEW", "OFF"]
    s = bs.NVC_STREAM.parse(data)
    assert [int(r.body.value.head.flags.filter) for r in s.frames] == [2, 1, 0, 2, 0]
    hl = struct.unpack_from("<H", data, 6)[0]
    # frame 0: sync, flags (filter NEW = 2 in bits 3..2, type I), quality 3, seq 0, 15 bytes: length byte, parameters
    assert data[hl : hl + 7] == b"Nf\x08\x03\x00\x0f\x07" and data[hl + 7 : hl + 14] == b"\x80params"
    assert data[hl + 14 : hl + 21] == b"intra-0"


@FAST
@given(st.lists(st.tuples(st.sampled_from(list(bs.FilterMode)), st.binary(min_size=1, max_size=255),
                          st.binary(max_size=40)), min_size=1, max_size=6))
def test_post_filter_property_round_trip(tmp_path: Path, frames: list) -> None:
    rows = []
    for i, (mode, params, payload) in enumerate(frames):
        ft = bs.FrameType.I if i == 0 else bs.FrameType.P
        if ft == bs.FrameType.I and mode == bs.FilterMode.KEEP:
            mode = bs.FilterMode.OFF
        rows.append((ft, 1, payload, mode, params if mode == bs.FilterMode.NEW else b""))
    p = tmp_path / "h.nvc"
    p.unlink(missing_ok=True)
    write_filtered(p, rows)
    with bs.open(p) as r:
        assert [(x.frame_type, x.quality, x.payload, x.filter, x.filter_params) for x in r] == rows


def test_post_filter_refusals(tmp_path: Path) -> None:
    with bs.open(tmp_path / "w.nvc", "w", header=HEADER) as w:
        for ft, mode, params, why in ((bs.FrameType.I, bs.FilterMode.KEEP, b"", "no current post-filter"),
                                      (bs.FrameType.I, bs.FilterMode.NEW, b"", "1..255 bytes"),
                                      (bs.FrameType.I, bs.FilterMode.NEW, bytes(256), "1..255 bytes"),
                                      (bs.FrameType.I, bs.FilterMode.OFF, b"x", "1..255 bytes"),
                                      (bs.FrameType.I, 3, b"", "unknown post-filter mode")):
            with pytest.raises(BitstreamError, match=why):
                w.write(ft, 3, b"p", mode, params)
        w.write(bs.FrameType.I, 3, b"p")
    data = write_filtered(tmp_path / "f.nvc")
    start = _record_starts(tmp_path / "f.nvc")[0]
    # the NEW filter's length byte says 0, or more than the record holds (CRC recomputed): refused on reading
    for n, why in ((0, "without parameters"), (200, "post-filter parameters")):
        bad = bytearray(data)
        bad[start + 6] = n
        end = start + 6 + 15
        struct.pack_into("<I", bad, end, zlib.crc32(bytes(bad[start:end])))
        with load(tmp_path, bytes(bad)) as r:
            with pytest.raises(BitstreamError, match=why):
                r.read(0)
            r.read(1)  # the scan is not affected: the record's length is intact
    # an I frame that keeps a filter (flags 0x04: KEEP, I), CRC recomputed
    bad = bytearray(write_stream(tmp_path / "k.nvc", frames=FRAMES))
    start = _record_starts(tmp_path / "k.nvc")[0]
    bad[start + 2] = 0x04
    end = start + 6 + len(FRAMES[0][2])
    struct.pack_into("<I", bad, end, zlib.crc32(bytes(bad[start:end])))
    with load(tmp_path, bytes(bad)) as r:
        with pytest.raises(BitstreamError, match="no current post-filter"):
            r.read(0)

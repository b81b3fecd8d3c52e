"""Conformance streams in formats/vectors/: decode each and compare the MD5 of the decoded yuv.

Regenerate them (after a change of weights, of the encoder's choices, or of the format, which must then bump
its version) with:

    NVC_REGEN_GOLDEN=1 python -m pytest tests/test_conformance.py

Streams of earlier format versions a decoder must still read stay in formats/vectors/<version>/ with their
own manifest (never regenerated): they decode to the same MD5s with today's decoder, given the weights they were
coded with (the manifest's ``weights``: taken from the git history when they are no longer the shipped ones).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from nvc import api, bitstream, errors

VECTORS = Path(__file__).resolve().parents[1] / "formats" / "vectors"
MANIFEST = VECTORS / "manifest.json"
LEGACY = sorted(p.parent for p in VECTORS.glob("*/manifest.json"))
REGEN = os.environ.get("NVC_REGEN_GOLDEN") == "1"

# name, description, crop (w, h), frames, quality, gop, flat quality (else the encoder's default ladder)
SPECS = [
    ("intra-q0-96x64", "one I frame, lowest quality", (96, 64), 1, 0, 1, True),
    ("ipip-q6-128x96", "I P I P (GoP 2), middle quality", (128, 96), 4, 6, 2, True),
    ("odd-q10-67x45", "odd display size (padding and 4:2:0 rounding), I P P, highest quality", (67, 45), 3, 10, 32, True),
    ("gop3-q1-64x64", "two GoPs (I P P I P), low quality, seek target", (64, 64), 5, 1, 3, True),
    ("ladder-q2-64x64", "per-frame qualities 5 2 2 2 3 2 (I +3, 4th P +1; quality 2)", (64, 64), 6, 2, 32, False),
    ("classes-q6-352x288", "the whole sample picture, I P: several luma post-filters by activity class (5.0)",
     (352, 288), 2, 6, 32, True),
    ("chroma-q0-96x64", "I P P, lowest quality, remuxed: the I frame sends a chroma-only post-filter (5.0; U and V "
     "fitted on its decoded picture) and the P frames keep it; the encoder sends one only where the weights make it "
     "the best choice, so the vector does not leave it to them", (96, 64), 3, 0, 32, True),
]
REMUX = {"chroma-q0-96x64"}  # vectors whose post-filters _chroma_only rewrites after encoding


def _source(path: Path, crop: tuple[int, int], frames: int) -> Path:
    from nvc.io import Frame, VideoInfo
    from nvc.io import open as open_video
    from nvc.sample import SAMPLE_FPS, sample_frames

    w, h = crop
    cw, ch = (w + 1) // 2, (h + 1) // 2
    with open_video(path, "w", info=VideoInfo(w, h, SAMPLE_FPS, frames), force=True) as out:
        for f in sample_frames(frames):
            out.write(Frame(f.y[:h, :w].copy(), f.u[:ch, :cw].copy(), f.v[:ch, :cw].copy()))
    return path


def _md5(p: Path) -> str:
    return hashlib.md5(p.read_bytes()).hexdigest()


def _chroma_only(stream: Path, src: Path, tmp: Path) -> None:
    """Rewrites ``stream`` with the encoder's payloads, its I frame sending a chroma-only post-filter (U and V
    fitted, as the encoder fits them, on the unfiltered decoded picture against ``src``) and every P frame keeping
    it."""
    from nvc import postfilter
    from nvc.io import open as open_video

    with bitstream.open(stream) as r:
        header, records = r.header, list(r)
    plain, out = tmp / f"{stream.stem}-plain.nvc", tmp / f"{stream.stem}-plain.y4m"
    with bitstream.open(plain, "w", header=header) as w:
        for rec in records:
            w.write(rec.frame_type, rec.quality, rec.payload)  # every post-filter OFF
    api.decode(plain, out, device="cpu", force=True)
    with open_video(out) as dec, open_video(src) as ref:
        fitted = postfilter.fit(next(iter(dec)), next(iter(ref)))
    chroma = postfilter.PostFilter(u=fitted.u, v=fitted.v)
    assert not chroma.empty, f"{stream.name}: no chroma filter brings the I frame closer to its source"
    with bitstream.open(stream, "w", header=header, force=True) as w:
        for rec in records:
            intra = rec.frame_type == bitstream.FrameType.I
            w.write(rec.frame_type, rec.quality, rec.payload, bitstream.FilterMode.NEW if intra else
                    bitstream.FilterMode.KEEP, postfilter.pack(chroma) if intra else b"")


def _encode(name: str, src: Path, stream: Path, tmp: Path) -> None:
    """The vector ``name``'s stream from its source, as SPECS and REMUX describe it."""
    _, _, _, _, q, gop, flat = next(s for s in SPECS if s[0] == name)
    api.encode(src, stream, quality=q, gop=gop, device="cpu", force=True, flat_quality=flat)
    if name in REMUX:
        _chroma_only(stream, src, tmp)


def _regenerate(tmp: Path) -> None:
    VECTORS.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, desc, crop, frames, q, gop, flat in SPECS:
        src = _source(tmp / f"{name}.y4m", crop, frames)
        stream = VECTORS / f"{name}.nvc"
        _encode(name, src, stream, tmp)
        out = tmp / f"{name}.yuv"
        api.decode(stream, out, device="cpu", force=True)
        entries.append({"name": name, "description": desc, "stream": stream.name, "width": crop[0],
                        "height": crop[1], "frames": frames, "quality": q, "gop": gop, "expect": "ok",
                        "stream_sha256": hashlib.sha256(stream.read_bytes()).hexdigest(), "decoded_md5": _md5(out)})
    # A damaged stream: one payload byte flipped in frame 1; a decoder must refuse it naming the frame.
    good = (VECTORS / "ipip-q6-128x96.nvc").read_bytes()
    with bitstream.open(VECTORS / "ipip-q6-128x96.nvc") as rd:
        off = rd.frames[1].offset
    bad = bytearray(good)
    bad[off + 2] ^= 0x01
    (VECTORS / "damaged-crc-frame1.nvc").write_bytes(bytes(bad))
    entries.append({"name": "damaged-crc-frame1", "description": "ipip-q6-128x96 with one bit flipped in frame 1",
                    "stream": "damaged-crc-frame1.nvc", "expect": "ChecksumError", "decoded_frames": 1,
                    "stream_sha256": hashlib.sha256(bytes(bad)).hexdigest()})
    version = ".".join(map(str, bitstream.FORMAT_VERSION))
    MANIFEST.write_text(json.dumps({"format_version": version, "vectors": entries}, indent=1) + "\n")


def _manifest() -> dict:
    return json.loads(MANIFEST.read_text())


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    if REGEN:
        _regenerate(tmp_path_factory.mktemp("regen"))
    if not MANIFEST.exists():
        pytest.fail("formats/vectors/manifest.json is missing; run NVC_REGEN_GOLDEN=1 pytest tests/test_conformance.py")
    return _manifest()


def test_manifest_matches_format_version(manifest):
    assert manifest["format_version"] == ".".join(map(str, bitstream.FORMAT_VERSION)), (
        "conformance streams were made for another format version: regenerate them"
    )


@pytest.mark.parametrize("name", [s[0] for s in SPECS] + ["damaged-crc-frame1"])
def test_vector_decodes_to_expected(manifest, name, tmp_path):
    v = next(e for e in manifest["vectors"] if e["name"] == name)
    stream = VECTORS / v["stream"]
    assert hashlib.sha256(stream.read_bytes()).hexdigest() == v["stream_sha256"]
    with bitstream.open(stream) as r:  # exact mode: the expected MD5s hold on every device and machine
        assert r.header.numeric_mode == bitstream.NumericMode.EXACT
    _expect(v, stream, tmp_path / "out.yuv")


def _expect(v: dict, stream: Path, out: Path, checkpoint: Path | None = None) -> None:
    """Decodes ``stream`` as the manifest entry ``v`` expects: its MD5, or the named error at frame 1."""
    if v["expect"] == "ok":
        api.decode(stream, out, device="auto", checkpoint=checkpoint)
        assert _md5(out) == v["decoded_md5"]
    else:
        with pytest.raises(getattr(errors, v["expect"]), match="frame 1"):
            api.decode(stream, out, device="cpu", checkpoint=checkpoint)
        assert out.stat().st_size == v["decoded_frames"] * 128 * 96 * 3 // 2


@pytest.mark.parametrize("folder", LEGACY, ids=[p.name for p in LEGACY])
def test_earlier_versions_still_decode(folder, tmp_path):
    """Streams an earlier nvc wrote (format 1.3: 16-byte records, an index; 2.0: the payload's fields in
    full; 3.0: no post-filter) decode as they did then."""
    legacy = json.loads((folder / "manifest.json").read_text())
    assert legacy["format_version"] == folder.name != manifest_version()
    checkpoint = _weights(legacy["weights"], tmp_path)
    for v in legacy["vectors"]:
        stream = folder / v["stream"]
        assert hashlib.sha256(stream.read_bytes()).hexdigest() == v["stream_sha256"]
        with bitstream.open(stream) as r:
            assert ".".join(map(str, r.header.version)) == folder.name
            assert r.header.weights_digest.hex().startswith(legacy["weights"]["digest"])
        _expect(v, stream, tmp_path / f"{v['name']}.yuv", checkpoint)


def _weights(w: dict, tmp: Path) -> Path | None:
    """The weights a legacy manifest names: None if they are the shipped ones, else a copy taken from the git
    history (the test skips where this checkout has none, as an installed package)."""
    from nvc.models import load

    if load(w["model"]).weights_digest.hex().startswith(w["digest"]):
        return None
    root = Path(__file__).resolve().parents[1]
    try:
        data = subprocess.run(["git", "-C", str(root), "show", f"{w['commit']}:nvc/weights/nvc-lite.safetensors"],
                              capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip(f"the weights these streams were coded with ({w['digest']}) come from the git history, "
                    "which this checkout lacks")
    path = tmp / "legacy-weights.safetensors"
    path.write_bytes(data)
    return path


def manifest_version() -> str:
    return ".".join(map(str, bitstream.FORMAT_VERSION))


@pytest.mark.parametrize("name", [s[0] for s in SPECS])
def test_encoder_reproduces_vector_bytes(manifest, name, tmp_path):
    """Same source + same weights -> the same bytes. If this fails, either the encoder's choices changed
    (regenerate the vectors, see the module docstring: they still decode as before) or the format did, which
    must then bump its version."""
    _, _, crop, frames, *_ = next(s for s in SPECS if s[0] == name)
    out = tmp_path / "again.nvc"
    _encode(name, _source(tmp_path / "src.y4m", crop, frames), out, tmp_path)
    assert out.read_bytes() == (VECTORS / f"{name}.nvc").read_bytes()


def test_seek_into_second_gop(manifest, tmp_path):
    """--start 4 of gop3-q1-64x64 decodes from its I frame 3; frame 4 equals frame 4 of a full decode."""
    from nvc.io import frame_bytes

    full, part = tmp_path / "full.yuv", tmp_path / "part.yuv"
    api.decode(VECTORS / "gop3-q1-64x64.nvc", full, device="cpu")
    r = api.decode(VECTORS / "gop3-q1-64x64.nvc", part, start=4, frames=1, device="cpu")
    fb = frame_bytes(64, 64)
    assert r.first == 3 and part.read_bytes() == full.read_bytes()[4 * fb : 5 * fb]


def test_vectors_use_every_post_filter_mode(manifest):
    """Every mode, and (5.0) a new filter with several luma filters, by class."""
    from nvc import postfilter

    modes, luma_filters = set(), set()
    for name, *_ in SPECS:
        with bitstream.open(VECTORS / f"{name}.nvc") as r:
            for rec in r:
                modes.add(rec.filter)
                if rec.filter == bitstream.FilterMode.NEW:
                    luma_filters.add(len(postfilter.unpack(rec.filter_params, rec.version).luma_filters()))
    assert modes == set(bitstream.FilterMode)
    assert max(luma_filters) > 1 and 0 in luma_filters


def test_ladder_vector_carries_per_frame_qualities(manifest):
    with bitstream.open(VECTORS / "ladder-q2-64x64.nvc") as r:
        assert r.header.quality == 2
        assert [f.quality for f in r.frames] == [5, 2, 2, 2, 3, 2]

"""nvc.anchors: x264/x265 (and SVT-AV1 when built in) encode and decode in-process through PyAV."""

from __future__ import annotations

import numpy as np
import pytest

from nvc.anchors import ANCHORS, available, encode_decode
from nvc.errors import InputError, NvcError
from nvc.io import Frame
from nvc.metrics import psnr_planes


def clip(n: int = 4, w: int = 64, h: int = 64, seed: int = 0) -> list[Frame]:
    rng = np.random.RandomState(seed)
    tex = np.kron(rng.randint(30, 220, (h // 4 + 1, w // 4 + n)), np.ones((4, 4)))
    yy, xx = np.mgrid[0:h, 0:w]
    out = []
    for t in range(n):
        y = np.clip(0.7 * tex[:h, t : t + w] + 25 * np.sin((xx + 3 * t) / 6.0) + 20, 16, 235).astype(np.uint8)
        u = np.clip(128 + 30 * np.sin(xx[::2, ::2] / 5.0 + t), 16, 240).astype(np.uint8)
        v = np.clip(128 + 30 * np.cos(yy[::2, ::2] / 4.0 - t), 16, 240).astype(np.uint8)
        out.append(Frame(y, u, v))
    return out


@pytest.mark.parametrize("name", ["x264", "x265"])
def test_anchor_roundtrip_and_rate_order(name, tmp_path):
    frames = clip()
    lo, hi = ANCHORS[name].default_crfs[0], ANCHORS[name].default_crfs[-1]
    fine = encode_decode(iter(frames), name, lo, gop=4, stream_path=tmp_path / "s.bin")
    coarse = encode_decode(iter(frames), name, hi, gop=4)
    for r in (fine, coarse):
        assert len(r.frames) == len(frames)
        assert all(f.y.shape == (64, 64) and f.u.shape == (32, 32) for f in r.frames)
        assert r.bytes == sum(r.packet_bytes) > 0 and r.bits == 8 * r.bytes
        assert r.encode_seconds > 0 and r.decode_seconds > 0
    assert coarse.bytes < fine.bytes
    q_fine = np.mean([psnr_planes(a, b)["psnr_y"] for a, b in zip(frames, fine.frames)])
    q_coarse = np.mean([psnr_planes(a, b)["psnr_y"] for a, b in zip(frames, coarse.frames)])
    assert q_fine > q_coarse and q_fine > 30
    assert (tmp_path / "s.bin").stat().st_size == fine.bytes


def test_max_frames_and_single_frame():
    r = encode_decode(iter(clip(6)), "x264", 30, max_frames=3)
    assert len(r.frames) == 3
    assert len(encode_decode(clip(1), "x264", 30).frames) == 1


@pytest.mark.skipif(not available("svtav1"), reason="no libsvtav1/dav1d in this PyAV")
def test_svtav1_optional():
    r = encode_decode(clip(2), "svtav1", 40, gop=8)
    assert len(r.frames) == 2 and r.bytes > 0


def test_anchor_errors():
    with pytest.raises(InputError):
        encode_decode(clip(1), "vp9", 30)
    with pytest.raises(InputError):
        encode_decode(clip(1), "x264", 99)
    with pytest.raises(InputError):
        encode_decode([], "x264", 30)
    with pytest.raises(InputError) as e:
        encode_decode([], "x265", 30)
    assert "\n" not in str(e.value) and isinstance(e.value, NvcError)


@pytest.mark.parametrize("name", ["x264", "x265"])
def test_odd_sizes_are_padded_then_cropped(name):
    """yuv420p encoders need even sides: an odd frame is coded with its last column / row repeated, decoded
    back to its own size."""
    frames = clip(2, w=63, h=33)
    r = encode_decode(iter(frames), name, ANCHORS[name].default_crfs[0], gop=4)
    assert [(f.y.shape, f.u.shape) for f in r.frames] == [((33, 63), (17, 32))] * 2
    assert np.mean([psnr_planes(a, b)["psnr_y"] for a, b in zip(frames, r.frames)]) > 30

"""The shipped default really compresses: carphone at every quality, bpp < 1 and PSNR-YUV >= 28 dB (the lowest
quality, lambda 0.000125 since run 21, codes it at about 29.4 dB), >= 35 dB at the default quality, monotone.

Skips when ../shared is absent (as on a user's machine). To keep CI fast: 16 frames with GoP 32, the default
encoder (its refinement included) in float32 mode (the same rate-distortion as EXACT within 0.1 %, faster); the
model card has the full-clip figures in the default EXACT mode (benchmarks/model_card_eval.py).
"""

from __future__ import annotations

from nvc.models import load
from nvc.models.base import model_default_quality

from .conftest import load_script


def test_carphone_rate_quality(shared):
    mod = load_script("model_card_eval")
    rows = mod.evaluate(shared / "data" / "eval" / "carphone_176x144_30fps_420_8bit.y4m", 32, 16, "nvc-lite", None,
                        numeric="fast")
    bpp = [r["bpp"] for r in rows]
    psnr = [r["psnr_yuv"] for r in rows]
    assert len(rows) >= 4
    assert all(b < 1.0 for b in bpp), bpp
    assert all(p >= 28.0 for p in psnr), psnr
    assert psnr[model_default_quality(load("nvc-lite"))] >= 35.0, psnr
    assert bpp == sorted(bpp) and psnr == sorted(psnr), (bpp, psnr)

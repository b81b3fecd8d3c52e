"""The shipped default really compresses: carphone at every quality, bpp < 1 and PSNR-YUV >= 30 dB, monotone.

Skips when ../shared is absent (as on a user's machine). 32 frames with GoP 32 to keep CI fast; the model
card has the full-clip figures (benchmarks/model_card_eval.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path


def test_carphone_rate_quality(shared):
    spec = importlib.util.spec_from_file_location(
        "model_card_eval", Path(__file__).resolve().parents[1] / "benchmarks" / "model_card_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    rows = mod.evaluate(shared / "data" / "eval" / "carphone_176x144_30fps_420_8bit.y4m", 32, 32, "nvc-lite", None)
    bpp = [r["bpp"] for r in rows]
    psnr = [r["psnr_yuv"] for r in rows]
    assert len(rows) >= 4
    assert all(b < 1.0 for b in bpp), bpp
    assert all(p >= 30.0 for p in psnr), psnr
    assert bpp == sorted(bpp) and psnr == sorted(psnr), (bpp, psnr)

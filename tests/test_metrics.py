"""nvc.metrics: PSNR/MS-SSIM against hand-computed values, BD-rate against published numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nvc.errors import InputError, NvcError
from nvc.io import Frame
from nvc.metrics import (
    MetricAccumulator, bd_rate, frame_metrics, ms_ssim, psnr_from_mse, psnr_planes, psnr_rgb,
)


def flat(w: int, h: int, y: int, u: int = 128, v: int = 128) -> Frame:
    cw, ch = (w + 1) // 2, (h + 1) // 2
    return Frame(np.full((h, w), y, np.uint8), np.full((ch, cw), u, np.uint8), np.full((ch, cw), v, np.uint8))


def test_psnr_planes_hand_computed():
    ref = flat(16, 8, 100, 120, 130)
    rec = flat(16, 8, 110, 120, 125)  # Y off by 10 (MSE 100), U exact, V off by 5 (MSE 25)
    m = psnr_planes(ref, rec)
    y = 10 * math.log10(255**2 / 100)  # 28.1308 dB
    v = 10 * math.log10(255**2 / 25)  # 34.1514 dB
    assert m["psnr_y"] == pytest.approx(28.130803608679106, abs=1e-9) == pytest.approx(y)
    assert m["psnr_u"] == 100.0  # identical: capped
    assert m["psnr_v"] == pytest.approx(v)
    assert m["psnr_yuv"] == pytest.approx((6 * y + 100.0 + v) / 8)


def test_psnr_mixed_errors():
    ref = flat(4, 2, 50)
    rec = flat(4, 2, 50)
    rec.y[0, 0] = 58  # one pixel off by 8 of 8: MSE = 64 / 8 = 8
    assert psnr_planes(ref, rec)["psnr_y"] == pytest.approx(10 * math.log10(255**2 / 8))


def test_psnr_from_mse_cap():
    assert psnr_from_mse(0.0) == 100.0
    assert psnr_from_mse(1.0) == pytest.approx(48.13080360867911)
    assert psnr_from_mse(0.01, peak=1.0) == pytest.approx(20.0)


def test_psnr_rgb_gray_frames_hand_computed():
    # neutral chroma: R = G = B = (Y - 16) / 219 exactly, so a Y error d gives PSNR 20 log10(219 / d)
    import torch

    from nvc.color import yuv420_to_rgb

    a, b = flat(32, 32, 100), flat(32, 32, 110)
    ra, rb = (yuv420_to_rgb(f.y, f.u, f.v) for f in (a, b))
    assert psnr_rgb(ra, rb) == pytest.approx(20 * math.log10(219 / 10), abs=1e-4)
    assert frame_metrics(a, b, msssim=False)["psnr_rgb"] == pytest.approx(20 * math.log10(219 / 10), abs=1e-4)
    assert psnr_rgb(ra, ra) == 100.0
    assert isinstance(ra, torch.Tensor)


def test_ms_ssim_small_frames_are_padded():
    rng = np.random.RandomState(0)
    y = rng.randint(16, 236, (64, 48)).astype(np.uint8)
    ref = Frame(y, np.full((32, 24), 128, np.uint8), np.full((32, 24), 128, np.uint8))
    noisy = Frame(np.clip(y.astype(int) + rng.randint(-20, 21, y.shape), 0, 255).astype(np.uint8), ref.u, ref.v)
    same = frame_metrics(ref, ref)
    assert same["ms_ssim"] == pytest.approx(1.0, abs=1e-6)
    worse = frame_metrics(ref, noisy)["ms_ssim"]
    assert 0.0 < worse < 0.999


def test_ms_ssim_large_frames_unpadded_match_library():
    import torch
    from pytorch_msssim import ms_ssim as lib

    g = torch.Generator().manual_seed(0)
    a = torch.rand(1, 3, 176, 176, generator=g)
    b = (a + 0.05 * torch.randn(1, 3, 176, 176, generator=g)).clamp(0, 1)
    assert ms_ssim(a, b) == pytest.approx(float(lib(a, b, data_range=1.0)), abs=1e-7)


def test_accumulator_averages_per_frame_psnr():
    ref = flat(8, 8, 100)
    acc = MetricAccumulator(msssim=False)
    acc.add(ref, flat(8, 8, 101))  # MSE 1   -> 48.13 dB
    acc.add(ref, flat(8, 8, 110))  # MSE 100 -> 28.13 dB
    r = acc.result()
    assert r["frames"] == 2
    assert r["psnr_y"] == pytest.approx((48.13080360867911 + 28.130803608679106) / 2)
    # not the PSNR of the mean MSE (50.5 -> 31.10 dB)
    assert abs(r["psnr_y"] - 10 * math.log10(255**2 / 50.5)) > 1
    with pytest.raises(InputError):
        MetricAccumulator().result()


def test_size_mismatch_is_input_error():
    with pytest.raises(InputError):
        frame_metrics(flat(8, 8, 1), flat(16, 8, 1))


# JCTVC-E137 example data (kbit/s, dB), as used by Netflix VMAF's BD-rate tests and Android CTS:
# the JCT-VC CTC spreadsheet (PCHIP) gives -0.00465215420752807, i.e. -0.465215420752807 %.
E137_A = ([108048.8736, 61279.976, 33905.6656, 18883.6928], [43.6471, 40.3953, 37.247, 34.2911])
E137_B = ([108061.2784, 61299.9936, 33928.7472, 18910.912], [43.6768, 40.4232, 37.2761, 34.3147])


def test_bd_rate_published_pchip_value():
    got = bd_rate(*E137_A, *E137_B, method="pchip")
    assert got == pytest.approx(-0.465215420752807, abs=1e-9)


def _vceg_m33_bd_rate(ra, da, rb, db):
    """Bjontegaard's VCEG-M33 procedure written out: cubic fit of log10(rate) over PSNR, integrated."""
    pa = np.polyfit(da, np.log10(ra), 3)
    pb = np.polyfit(db, np.log10(rb), 3)
    lo, hi = max(min(da), min(db)), min(max(da), max(db))
    ia, ib = np.polyint(pa), np.polyint(pb)
    avg = ((np.polyval(ib, hi) - np.polyval(ib, lo)) - (np.polyval(ia, hi) - np.polyval(ia, lo))) / (hi - lo)
    return (10**avg - 1) * 100


def test_bd_rate_cubic_is_vceg_m33():
    # the bjontegaard package README example (x265 presets), anchor vs test
    ra, da = [9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851]
    rb, db = [9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987]
    got = bd_rate(ra, da, rb, db, method="cubic")
    assert got == pytest.approx(_vceg_m33_bd_rate(ra, da, rb, db), abs=1e-9)
    assert got == pytest.approx(-4.4205, abs=1e-3)
    assert bd_rate(*E137_A, *E137_B, method="cubic") == pytest.approx(_vceg_m33_bd_rate(*E137_A, *E137_B), abs=1e-9)


@pytest.mark.parametrize("method", ["akima", "pchip", "cubic"])
@pytest.mark.parametrize("k", [0.5, 0.8, 1.25])
def test_bd_rate_uniform_scaling_is_exact(method, k):
    ra, da = E137_A
    assert bd_rate(ra, da, [r * k for r in ra], da, method=method) == pytest.approx((k - 1) * 100, abs=1e-8)


def test_bd_rate_default_is_akima_and_accepts_unequal_counts():
    ra, da = E137_A
    assert bd_rate(*E137_A, *E137_B) == bd_rate(*E137_A, *E137_B, method="akima")
    rb = [r * 0.9 for r in [110000, 80000, 60000, 40000, 25000, 18000]]
    db = list(np.interp(np.log10([110000, 80000, 60000, 40000, 25000, 18000])[::-1],
                        np.log10(ra)[::-1], np.array(da)[::-1]))[::-1]
    assert bd_rate(ra, da, rb, db) == pytest.approx(-10.0, abs=1.5)  # roughly: the same curve with 10% fewer bits


def test_bd_rate_errors():
    ra, da = E137_A
    with pytest.raises(InputError):
        bd_rate(ra, [43.0, 44.0, 37.0, 34.0], ra, da)  # quality falls as rate rises
    with pytest.raises(InputError):
        bd_rate(ra[:1], da[:1], ra, da)
    with pytest.raises(InputError):
        bd_rate(ra, da, ra, da, method="linear")
    assert math.isnan(bd_rate(ra, da, ra, [d + 40 for d in da]))  # no overlap
    with pytest.raises(NvcError) as e:
        bd_rate([0.0, 1.0], [1.0, 2.0], ra, da)
    assert "\n" not in str(e.value)

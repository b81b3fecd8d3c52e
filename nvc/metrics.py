"""Quality metrics for the benchmark: PSNR (Y, U, V, YUV, RGB), MS-SSIM, and BD-rate.

Protocol (the one common in learned video coding, e.g. the DCVC papers and CompressAI's video eval):

- Every metric is computed **per frame**, then **averaged over frames** (arithmetic mean of per-frame PSNRs,
  not PSNR of the mean MSE). :class:`MetricAccumulator` does this.
- PSNR-Y/U/V: on the 8-bit planes as coded (4:2:0), peak 255.
- PSNR-YUV: ``(6 * PSNR-Y + PSNR-U + PSNR-V) / 8`` per frame (the JVET/CTC weighting).
- PSNR-RGB: both frames converted with :func:`nvc.color.yuv420_to_rgb` (BT.709 limited range, bilinear
  chroma upsampling) to float RGB in [0, 1]; MSE over all three channels; peak 1.0.
- MS-SSIM: ``pytorch_msssim.ms_ssim`` on the same RGB tensors, ``data_range=1``, the standard five scales
  and weights. That implementation needs the shorter side to be > 160 px; smaller frames are
  **replicate-padded** (right/bottom, both frames identically) up to 161 px. Padding adds perfectly matching
  border pixels, so MS-SSIM of tiny frames is biased upward and not comparable with published numbers; it
  exists so tests and the 352x288 sample run at all (every benchmark dataset is 1080p, where no padding occurs).
- Identical inputs: PSNR is capped at 100 dB (MSE floored at 1e-10 of peak²).
- BD-rate: :func:`bd_rate` uses the ``bjontegaard`` package with **Akima** interpolation by default
  (``method="akima"``; "pchip" is the JCT-VC/JVET CTC spreadsheet's, "cubic" is VCEG-M33's original
  polynomial fit), integrating log10(rate) over the overlapping quality interval. Result in percent:
  negative means the test codec needs fewer bits than the anchor for the same quality.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import InputError
from .io import Frame

__all__ = [
    "PSNR_CAP", "METRICS", "psnr_from_mse", "plane_mse", "psnr_planes", "psnr_rgb", "ms_ssim",
    "frame_metrics", "MetricAccumulator", "bd_rate", "DEFAULT_BD_METHOD", "MSSSIM_MIN_SIDE",
]

PSNR_CAP = 100.0
MSSSIM_MIN_SIDE = 161  # pytorch_msssim asserts min(H, W) > (11 - 1) * 2**4 = 160
DEFAULT_BD_METHOD = "akima"
METRICS = ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "psnr_rgb", "ms_ssim")


def psnr_from_mse(mse: float, peak: float = 255.0) -> float:
    """10·log10(peak² / MSE) in dB, capped at :data:`PSNR_CAP` (identical data)."""
    if mse <= 1e-10 * peak * peak:
        return PSNR_CAP
    return min(PSNR_CAP, 10.0 * math.log10(peak * peak / mse))


def plane_mse(a: np.ndarray, b: np.ndarray) -> float:
    """Mean squared error of two uint8 planes of the same shape."""
    if a.shape != b.shape:
        raise InputError(f"plane shapes differ: {a.shape} vs {b.shape}")
    d = a.astype(np.int32) - b.astype(np.int32)
    return float(np.mean(d * d))


def psnr_planes(ref: Frame, rec: Frame) -> dict[str, float]:
    """PSNR-Y, -U, -V (peak 255) and PSNR-YUV = (6Y + U + V) / 8 of one frame."""
    y, u, v = (psnr_from_mse(plane_mse(a, b)) for a, b in ((ref.y, rec.y), (ref.u, rec.u), (ref.v, rec.v)))
    return {"psnr_y": y, "psnr_u": u, "psnr_v": v, "psnr_yuv": (6.0 * y + u + v) / 8.0}


def _rgb(frame: Frame, device: Any = "cpu") -> Any:
    from .color import yuv420_to_rgb

    return yuv420_to_rgb(frame.y, frame.u, frame.v, device=device)


def psnr_rgb(ref_rgb: Any, rec_rgb: Any) -> float:
    """PSNR of two RGB tensors in [0, 1] (peak 1.0), MSE over all channels and pixels."""
    mse = float(((ref_rgb.double() - rec_rgb.double()) ** 2).mean())
    return psnr_from_mse(mse, peak=1.0)


def ms_ssim(ref_rgb: Any, rec_rgb: Any) -> float:
    """MS-SSIM of two RGB tensors (N, 3, H, W) in [0, 1]; frames under 161 px are replicate-padded."""
    import torch.nn.functional as F
    from pytorch_msssim import ms_ssim as _ms_ssim

    h, w = ref_rgb.shape[-2:]
    if min(h, w) < MSSSIM_MIN_SIDE:
        ph, pw = max(0, MSSSIM_MIN_SIDE - h), max(0, MSSSIM_MIN_SIDE - w)
        ref_rgb = F.pad(ref_rgb, (0, pw, 0, ph), mode="replicate")
        rec_rgb = F.pad(rec_rgb, (0, pw, 0, ph), mode="replicate")
    return float(_ms_ssim(ref_rgb.float(), rec_rgb.float(), data_range=1.0, size_average=True))


def frame_metrics(ref: Frame, rec: Frame, device: Any = "cpu", *, msssim: bool = True) -> dict[str, float]:
    """All metrics of one frame: psnr_y/u/v/yuv, psnr_rgb and (unless ``msssim=False``) ms_ssim."""
    import torch

    if (ref.width, ref.height) != (rec.width, rec.height):
        raise InputError(f"frame sizes differ: {ref.width}x{ref.height} vs {rec.width}x{rec.height}")
    out = psnr_planes(ref, rec)
    with torch.no_grad():
        a, b = _rgb(ref, device), _rgb(rec, device)
        out["psnr_rgb"] = psnr_rgb(a, b)
        if msssim:
            out["ms_ssim"] = ms_ssim(a, b)
    return out


class MetricAccumulator:
    """Running per-frame metrics; :meth:`result` gives their arithmetic means over frames.

    >>> acc = MetricAccumulator()
    >>> for ref, rec in zip(source, decoded): acc.add(ref, rec)
    >>> acc.result()  # {'frames': n, 'psnr_y': ..., ..., 'ms_ssim': ...}
    """

    def __init__(self, device: Any = "cpu", *, msssim: bool = True) -> None:
        self.device, self.msssim = device, msssim
        self.sums: dict[str, float] = {}
        self.frames = 0

    def add(self, ref: Frame, rec: Frame) -> dict[str, float]:
        m = frame_metrics(ref, rec, self.device, msssim=self.msssim)
        for k, v in m.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.frames += 1
        return m

    def result(self) -> dict[str, float]:
        if not self.frames:
            raise InputError("no frames were compared")
        return {"frames": self.frames, **{k: v / self.frames for k, v in self.sums.items()}}


def bd_rate(
    rates_a: Sequence[float], dists_a: Sequence[float], rates_b: Sequence[float], dists_b: Sequence[float],
    method: str = DEFAULT_BD_METHOD,
) -> float:
    """BD-rate of curve B (test) against curve A (anchor), in percent (negative: B saves bits).

    Rates in any positive unit (bpp, kbps: the result is the same); distortions are quality values
    (higher is better: PSNR in dB, MS-SSIM). Points are sorted by rate; quality must increase with rate.
    Curves need at least 2 points each and may have different numbers of points. Returns NaN when the
    quality ranges do not overlap. Interpolation: ``method`` of the ``bjontegaard`` package ("akima" by
    default, "pchip", or "cubic" = VCEG-M33's original).
    """
    import bjontegaard

    curves = []
    for label, r, d in (("anchor", rates_a, dists_a), ("test", rates_b, dists_b)):
        r, d = np.asarray(r, dtype=np.float64), np.asarray(d, dtype=np.float64)
        if r.shape != d.shape or r.ndim != 1:
            raise InputError(f"BD-rate: {label} has {r.size} rates but {d.size} quality values")
        if r.size < 2:
            raise InputError(f"BD-rate: {label} needs at least 2 rate-distortion points, has {r.size}")
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d))) or np.any(r <= 0):
            raise InputError(f"BD-rate: {label} has non-finite values or rates <= 0")
        o = np.argsort(r)
        r, d = r[o], d[o]
        if np.any(np.diff(d) <= 0):
            raise InputError(f"BD-rate: {label} curve is not monotonic (quality does not rise with rate)")
        curves += [r, d]
    if method not in ("akima", "pchip", "cubic"):
        raise InputError(f"BD-rate: unknown interpolation {method!r}; use akima, pchip or cubic")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # insufficient-overlap warnings; no overlap gives NaN below
        value = bjontegaard.bd_rate(*curves, method=method, require_matching_points=False)
    return float(value)

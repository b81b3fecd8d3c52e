"""Colour conversion between 8-bit yuv420p planes and RGB float in [0, 1], and frame padding.

Matrix and range: ITU-R BT.709, limited ("TV") range: Y in [16, 235], Cb/Cr in [16, 240].

Chroma resampling (documented in formats/nvc-bitstream.md):
- 4:2:0 -> 4:4:4: bilinear interpolation with centre-sited chroma (``F.interpolate(..., mode="bilinear",
  align_corners=False)``, scale 2), edges replicated, then cropped to the luma size;
- 4:4:4 -> 4:2:0: the mean of each 2x2 block (odd sizes: the last row/column is replicated first).
Values are rounded to nearest and clamped to [0, 255] when going back to 8 bits.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

KR, KB = 0.2126, 0.0722
KG = 1.0 - KR - KB


def yuv420_to_rgb(y: np.ndarray, u: np.ndarray, v: np.ndarray, device: str | torch.device = "cpu") -> Tensor:
    """Planes (H, W), (ceil(H/2), ceil(W/2)) x2 as uint8 -> RGB tensor (1, 3, H, W) float32 in [0, 1]."""
    h, w = y.shape
    yt = torch.from_numpy(np.require(y, np.uint8, ["C", "W"])).to(device).float()[None, None]
    uv = torch.from_numpy(np.stack([u, v])).to(device).float()[None]
    uv = F.interpolate(uv, scale_factor=2, mode="bilinear", align_corners=False)[..., :h, :w]
    yn = (yt - 16.0) / 219.0
    pb = (uv[:, :1] - 128.0) / 224.0
    pr = (uv[:, 1:] - 128.0) / 224.0
    r = yn + 2.0 * (1.0 - KR) * pr
    b = yn + 2.0 * (1.0 - KB) * pb
    g = yn - (2.0 * (1.0 - KB) * KB / KG) * pb - (2.0 * (1.0 - KR) * KR / KG) * pr
    return torch.cat([r, g, b], dim=1).clamp_(0.0, 1.0)


def luma(rgb: Tensor) -> Tensor:
    """BT.709 luma (N, 1, H, W) of RGB (N, 3, H, W), in the range of the input."""
    r, g, b = rgb[:, 0:1], rgb[:, 1:2], rgb[:, 2:3]
    return KR * r + KG * g + KB * b


def rgb_to_yuv420(rgb: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """RGB tensor (1, 3, H, W) in [0, 1] -> uint8 planes Y (H, W), U and V (ceil(H/2), ceil(W/2))."""
    rgb = rgb.float().clamp(0.0, 1.0)
    r, b = rgb[:, 0:1], rgb[:, 2:3]
    yl = luma(rgb)
    pb = (b - yl) / (2.0 * (1.0 - KB))
    pr = (r - yl) / (2.0 * (1.0 - KR))
    h, w = rgb.shape[-2:]
    c = torch.cat([pb, pr], dim=1)
    if h % 2 or w % 2:
        c = F.pad(c, (0, w % 2, 0, h % 2), mode="replicate")
    c = F.avg_pool2d(c, 2)
    y8 = (16.0 + 219.0 * yl).round_().clamp_(0, 255).to(torch.uint8)
    c8 = (128.0 + 224.0 * c).round_().clamp_(0, 255).to(torch.uint8)
    c8 = c8.cpu().numpy()
    return y8[0, 0].cpu().numpy(), c8[0, 0], c8[0, 1]


def padded_size(width: int, height: int, alignment: int) -> tuple[int, int]:
    """The size a frame is padded to: each side rounded up to a multiple of ``alignment``."""
    return -(-width // alignment) * alignment, -(-height // alignment) * alignment


def pad(x: Tensor, alignment: int) -> Tensor:
    """Replicate-pads (right and bottom) to a multiple of ``alignment``."""
    h, w = x.shape[-2:]
    pw, ph = padded_size(w, h, alignment)
    if (pw, ph) == (w, h):
        return x
    return F.pad(x, (0, pw - w, 0, ph - h), mode="replicate")


# Rows/columns over which pad_from_reference fades the edge difference to zero (chosen on training clips:
# 4..16 all save 5-12 % of P-frame bits on 176x144 crops; 8 loses the least PSNR, under 0.07 dB). BD-rate
# against replicate padding: benchmarks/results/padding-from-reference.json.
PAD_FADE = 8


def pad_from_reference(x: Tensor, ref: Tensor, fade: int = PAD_FADE) -> Tensor:
    """Pads ``x`` to the size of ``ref`` (a reconstructed, padded frame) for inter coding.

    The padding is the encoder's free choice (the decoder crops it away). Replicating the edge makes
    the padding differ from the reference's, and inter coding pays for that difference. Here the
    padding is the reference's own, plus the edge's difference from the reference, replicated
    outwards and faded linearly to zero over ``fade`` samples. The residual is then continuous at the
    edge and zero beyond the fade.
    """
    h, w = x.shape[-2:]
    ph, pw = ref.shape[-2:]
    if (ph, pw) == (h, w):
        return x
    d = F.pad(x - ref[..., :h, :w], (0, pw - w, 0, ph - h), mode="replicate")
    ramp = lambda n, size: (1 - (torch.arange(size, device=x.device, dtype=x.dtype) - n + 1)  # noqa: E731
                            .clamp(min=0) / fade).clamp(min=0)
    out = (ref + d * ramp(h, ph)[:, None] * ramp(w, pw)[None, :]).clamp(0.0, 1.0)
    out[..., :h, :w] = x
    return out

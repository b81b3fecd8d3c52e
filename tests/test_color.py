from __future__ import annotations

import numpy as np
import torch

from nvc.color import KB, KR, PAD_FADE, luma, pad, pad_from_reference, padded_size, rgb_to_yuv420, yuv420_to_rgb

from .conftest import make_frames


def test_roundtrip_is_close():
    f = make_frames(1, 64, 48)[0]
    rgb = yuv420_to_rgb(f.y, f.u, f.v)
    assert rgb.shape == (1, 3, 48, 64) and 0.0 <= rgb.min() and rgb.max() <= 1.0
    y, u, v = rgb_to_yuv420(rgb)
    assert np.abs(y.astype(int) - f.y).max() <= 2
    assert np.abs(u.astype(int) - f.u).mean() < 2 and np.abs(v.astype(int) - f.v).mean() < 2


def test_bt709_reference_colours():
    # BT.709 limited range: white, black and pure red.
    rgb = torch.tensor([1.0, 0.0, 1.0, 0.0]).view(1, 1, 1, 4).repeat(1, 3, 2, 1)
    rgb[0, 1:, :, 2] = 0.0  # red at x=2..3 -> only column 2 red
    y, _, _ = rgb_to_yuv420(rgb)
    assert y[0, 0] == 235 and y[0, 1] == 16 and y[0, 2] == round(16 + 219 * 0.2126)


def test_odd_sizes():
    f = make_frames(1, 37, 21)[0]
    rgb = yuv420_to_rgb(f.y, f.u, f.v)
    y, u, v = rgb_to_yuv420(rgb)
    assert y.shape == (21, 37) and u.shape == (11, 19) and v.shape == (11, 19)


def test_pad_replicates():
    x = torch.arange(12.0).view(1, 1, 3, 4)
    p = pad(x, 8)
    assert p.shape == (1, 1, 8, 8)
    assert torch.equal(p[..., :3, :4], x) and torch.all(p[..., 7, 7] == x[..., 2, 3])
    assert padded_size(1920, 1080, 64) == (1920, 1088)


def test_pad_from_reference_keeps_picture_and_reference_far_out():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 45, 67)
    ref = torch.rand(1, 3, 64, 128)
    p = pad_from_reference(x, ref)
    assert p.shape == ref.shape
    assert torch.equal(p[..., :45, :67], x)
    # beyond the fade the padding is the reference's own: the inter residual there is zero
    assert torch.equal(p[..., 45 + PAD_FADE - 1:, :], ref[..., 45 + PAD_FADE - 1:, :])
    assert torch.equal(p[..., :, 67 + PAD_FADE - 1:], ref[..., :, 67 + PAD_FADE - 1:])
    # next to the edge the residual continues the edge's residual, fading
    d_edge = x[..., -1, :] - ref[..., 44, :67]
    d_next = p[..., 45, :67] - ref[..., 45, :67]
    assert torch.allclose(d_next, (d_edge * (1 - 1 / PAD_FADE)).clamp(-ref[..., 45, :67], 1 - ref[..., 45, :67]),
                          atol=1e-6)
    assert p.min() >= 0 and p.max() <= 1


def test_pad_from_reference_aligned_is_identity():
    x = torch.rand(1, 3, 64, 64)
    assert pad_from_reference(x, torch.rand(1, 3, 64, 64)) is x


def test_luma_is_bt709_and_the_y_plane():
    primaries = torch.eye(3).view(3, 3, 1, 1)  # red, green, blue
    assert torch.allclose(luma(primaries).flatten(), torch.tensor([KR, 1 - KR - KB, KB]))
    assert torch.allclose(luma(torch.ones(1, 3, 2, 2)), torch.ones(1, 1, 2, 2))
    rgb = torch.rand(1, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    y8 = (16.0 + 219.0 * luma(rgb)).round().clamp(0, 255).to(torch.uint8)[0, 0].numpy()
    assert np.array_equal(rgb_to_yuv420(rgb)[0], y8)

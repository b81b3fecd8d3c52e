"""benchmarks/synthesis_capacity.py: its grown synthesis variants start as the shipped one, and their cost."""

from __future__ import annotations

import torch

from .conftest import load_script


def test_grown_variants_start_as_the_original(lite) -> None:
    mod = load_script("synthesis_capacity")
    y = torch.randn(2, lite.config["m"], 4, 6)
    with torch.no_grad():
        want = lite.i_g_s(y)
        for grown in (mod.widen(lite.i_g_s, 96), mod.deepen(lite.i_g_s, 2)):
            assert torch.equal(grown(y), want)
    wide = mod.widen(lite.i_g_s, 96)
    assert [getattr(m, "out_channels", None) for m in wide][:3] == [96, None, 96]
    assert wide[-1].out_channels == 3 and wide[0].in_channels == lite.config["m"]


def test_kmac_counts_the_layers(lite) -> None:
    mod = load_script("synthesis_capacity")
    n, m = lite.config["n"], lite.config["m"]
    # deconvs at 1/16 -> 1/2 resolution (input pixels x out channels x 25), GDN as a 1x1 conv at 1/8 .. 1/2
    want = (m / 256 * n + n / 64 * n + n / 16 * n + n / 4 * 3) * 25 + n * n * (1 / 64 + 1 / 16 + 1 / 4)
    assert abs(mod.kmac(lite.i_g_s, m) - want / 1000) < 1e-6
    # two residual blocks of two 3x3 convolutions at half resolution
    assert abs(mod.kmac(mod.deepen(lite.i_g_s, 2), m) - mod.kmac(lite.i_g_s, m) - 4 * n * n * 9 / 4 / 1000) < 1e-6


def test_latents_are_rounded_in_the_gained_domain(lite) -> None:
    mod = load_script("synthesis_capacity")
    x = torch.rand(1, 3, 64, 64)
    q = lite.qualities - 1
    steps = lite.i_y_gain.inverse[q].abs()[None, :, None, None]  # the inverse gains are learned apart
    levels = mod.latents(lite, x, q) / steps
    assert torch.allclose(levels, levels.round(), atol=1e-4) and levels.abs().max() > 1

"""DHVC 1.0 against the official layout and reference vectors (shared/reference/dhvc-1.0)."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import REFERENCE, fill_reference_weights
from nvc.models.dhvc import DHVC

REF_DIR = REFERENCE
DHVC_REF = REF_DIR / "dhvc-1.0"

needs_reference = pytest.mark.skipif(
    not (DHVC_REF / "state_dict.json").is_file() or not (DHVC_REF / "vectors.npz").is_file(),
    reason=f"DHVC reference vectors not found under {DHVC_REF} (the shared/ checkout is absent)",
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model() -> DHVC:
    return DHVC().eval()


@needs_reference
def test_state_dict_matches_official_layout(model: DHVC) -> None:
    ref = json.loads((DHVC_REF / "state_dict.json").read_text())
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert ours == ref["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_parameters"]


@pytest.fixture(scope="module")
def filled(model: DHVC) -> DHVC:
    fill_reference_weights(model)
    return model


@needs_reference
def test_reference_vectors(filled: DHVC) -> None:
    vec = np.load(DHVC_REF / "vectors.npz")
    frames = [torch.from_numpy(vec[f"frame{i}"]) for i in range(3)]
    with torch.no_grad():
        z = filled.get_temp_bias(frames[0])
        z_lists = [z, z]
        for i, x in enumerate(frames):
            stats = filled.forward_frame(x, z_lists, get_latent=True, return_rec=True)
            z_lists = [z_lists[-1], stats["z"]]
            ref_x = torch.from_numpy(vec[f"x_hat{i}"])
            assert stats["im_hat"].shape == ref_x.shape
            diff = (stats["im_hat"] - ref_x).abs().max().item()
            assert diff < 1e-4, f"frame {i}: max |x_hat - ref| = {diff:.3g}"
            ref_bpp = float(vec[f"bpp{i}"])
            assert stats["bpp"] == pytest.approx(ref_bpp, rel=1e-3), f"frame {i}: bpp {stats['bpp']} vs {ref_bpp}"


def test_frame_coding_roundtrip(filled: DHVC) -> None:
    """compress_frame / decompress_frame agree bit for bit over a GoP start and two inter frames.

    Uses the fill-rule weights (no reference files needed): a fresh model's zero-initialised heads
    would make every latent trivial."""
    filled.update(force=True)
    g = torch.Generator().manual_seed(0)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 8, 16, generator=g), size=(64, 128), mode="bicubic")
    frames = [torch.roll(base, i, dims=3).clamp(0, 1) for i in range(3)]
    enc_ctx = dec_ctx = None
    for x in frames:
        strings, shape, x_hat, enc_ctx = filled.compress_frame(x, enc_ctx, 0)
        assert len(strings) == 5 and all(isinstance(s, bytes) for s in strings)
        assert shape == (1, 2)
        y_hat, dec_ctx = filled.decompress_frame(strings, shape, dec_ctx, 0)
        assert torch.equal(x_hat, y_hat)
        for a, b in zip(enc_ctx[0] + enc_ctx[1], dec_ctx[0] + dec_ctx[1]):
            assert torch.equal(a, b)
    # the coded reconstruction equals the eval-mode forward pass on the same context
    with torch.no_grad():
        z = filled.get_temp_bias(frames[0])
        st = filled.forward_frame(frames[0], [z, z], get_latent=True, return_rec=True)
        _, _, x_hat0, _ = filled.compress_frame(frames[0], None, 0)
    assert torch.allclose(st["im_hat"].clamp(0, 1), x_hat0, atol=1e-6)
    with pytest.raises(ValueError):
        filled.compress_frame(frames[0], None, 1)


def test_contract_attributes() -> None:
    assert DHVC.alignment == 64 and DHVC.qualities == 1 and DHVC.name == "dhvc-1.0"

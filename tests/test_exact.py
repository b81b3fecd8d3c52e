"""Exact (device-independent) numeric mode: fixed-point convolutions give the same bits in any
summation order, so the entropy parameters and the reference do not depend on the device."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from nvc import models
from nvc.bitstream import NumericMode
from nvc.codec import Decoder, Encoder
from nvc.errors import InputError, ModelError
from nvc.models import exact, layers

from .conftest import make_frames


@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=1, max_size=50))
@settings(max_examples=50, deadline=None)
def test_quantize_lands_on_the_grid_and_saturates(values):
    q = exact.quantize(torch.tensor(values, dtype=torch.float64))
    ints = q * 2.0**exact.ACT_FRAC
    assert torch.equal(ints, ints.round())
    assert bool((ints.abs() < 2**exact.ACT_BITS).all())
    # grid values survive float32: what feeds the entropy coder has no hidden rounding
    assert torch.equal(q.float().double(), q)


def _layers() -> list[nn.Module]:
    torch.manual_seed(0)
    return [nn.Conv2d(48, 16, 5, 2, 2), nn.ConvTranspose2d(48, 16, 5, 2, 2, 1), nn.Conv2d(48, 8, 1)]


@pytest.mark.parametrize("layer", _layers(), ids=["conv5x5", "deconv5x5", "conv1x1"])
def test_convolution_does_not_depend_on_summation_order(layer):
    x = torch.randn(1, 48, 12, 10) * 20
    ref = exact.conv(layer, x)
    # a different order of the channel sum: permute the input channels of the data and of the weights
    perm = torch.randperm(48)
    moved = type(layer)(48, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
                        *((layer.output_padding,) if isinstance(layer, nn.ConvTranspose2d) else ()))
    with torch.no_grad():
        moved.weight.copy_(layer.weight[perm] if isinstance(layer, nn.ConvTranspose2d) else layer.weight[:, perm])
        moved.bias.copy_(layer.bias)
    assert torch.equal(exact.conv(moved, x[:, perm]), ref)
    # and it stays close to the float32 layer
    assert (ref - layer(x).double()).abs().max() < 1e-2


def test_convolution_equals_integer_arithmetic():
    layer = nn.Conv2d(4, 3, 3, 1, 1)
    x = torch.randn(1, 4, 5, 5) * 3
    out = exact.conv(layer, x)
    xq = exact.quantize(x)
    w, b = exact._fixed_weight(layer.weight, layer.bias, exact.ACT_FRAC, exact.ACT_BITS, 0, 36)
    # the same sum with Python integers (arbitrary precision), scaled back
    xi = (xq * 2**exact.ACT_FRAC).long()
    xi = F.pad(xi, (1, 1, 1, 1))
    for o in range(3):
        e = int(torch.frexp(w[o].abs().max())[1]) - 60  # a grid fine enough for every weight of channel o
        wi = (w[o] * 2.0**-e).long()
        bi = int(round(float(b[o]) * 2.0 ** (exact.ACT_FRAC - e)))
        for i, j in [(0, 0), (2, 3), (4, 4)]:
            acc = sum(int(xi[0, c, i + di, j + dj]) * int(wi[c, di, dj]) for c in range(4) for di in range(3) for dj in range(3))
            assert float(out[0, o, i, j]) == (acc + bi) * 2.0 ** (e - exact.ACT_FRAC)


def _reverse_order_conv2d(x, w, b=None, *args):
    """conv2d that sums the channels in reverse order (a stand-in for another device's kernel)."""
    return F.conv2d(x.flip(1), w.flip(1), b, *args)


def _split_conv2d(x, w, b=None, *args):
    """conv2d computed as two half-channel convolutions added afterwards (another summation order)."""
    h = x.shape[1] // 2
    if h == 0:
        return F.conv2d(x, w, b, *args)
    return F.conv2d(x[:, :h], w[:, :h], b, *args) + F.conv2d(x[:, h:], w[:, h:], None, *args)


def _code(model, frames, quality, numeric="exact"):
    enc = Encoder(model, quality=quality, gop=8, width=frames[0].width, height=frames[0].height, numeric=numeric)
    return [enc.encode(f) for f in frames]


def _decode(model, coded, w, h, exact_mode=True):
    dec = Decoder(model, width=w, height=h, exact=exact_mode)
    return [dec.decode(c.record(i)) for i, c in enumerate(coded)]


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, p), getattr(b, p)) for p in "yuv")


@pytest.mark.parametrize("other", [_reverse_order_conv2d, _split_conv2d], ids=["reversed", "split"])
def test_stream_decodes_identically_with_other_convolution_kernels(lite, monkeypatch, other):
    frames = make_frames(3, 72, 40, seed=5)
    coded = _code(lite, frames, quality=4)
    assert [c.frame_type.name for c in coded] == ["I", "P", "P"]

    class _Other:  # nvc.models.exact's F with conv2d replaced
        def __getattr__(self, name):
            return other if name == "conv2d" else getattr(F, name)

    monkeypatch.setattr(exact, "F", _Other())
    for out, c in zip(_decode(lite, coded, 72, 40), coded):
        assert _same(out, c.recon)


def test_exact_mode_does_not_depend_on_thread_count(lite):
    frames = make_frames(2, 64, 64, seed=9)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _code(lite, frames, quality=2)
        torch.set_num_threads(2)
        two = _code(lite, frames, quality=2)
        dec = _decode(lite, one, 64, 64)
    finally:
        torch.set_num_threads(before)
    assert [c.payload for c in one] == [c.payload for c in two]
    assert all(_same(a, c.recon) for a, c in zip(dec, one))


def test_exact_is_the_default_and_costs_little_rate(lite):
    frames = make_frames(3, 128, 64, seed=2)
    enc = Encoder(lite, quality=3, gop=8, width=128, height=64)
    assert enc.numeric_mode == NumericMode.EXACT
    ex = _code(lite, frames, quality=3)
    fa = _code(lite, frames, quality=3, numeric="fast")
    bits_ex = sum(len(c.payload) for c in ex)
    bits_fa = sum(len(c.payload) for c in fa)
    assert abs(bits_ex - bits_fa) <= 0.02 * bits_fa + 16
    def mse(coded):
        return np.mean([np.mean((c.recon.y.astype(float) - f.y) ** 2) for c, f in zip(coded, frames)])

    assert abs(mse(ex) - mse(fa)) <= 0.02 * mse(fa)


def test_fast_stream_is_not_decodable_in_exact_mode(lite):
    frames = make_frames(2, 64, 64, seed=1)
    fa = _code(lite, frames, quality=3, numeric="fast")
    out = _decode(lite, fa, 64, 64, exact_mode=False)
    assert all(_same(a, c.recon) for a, c in zip(out, fa))


def test_models_without_exact_mode_refuse_it():
    class _Model:
        name, alignment, qualities = "toy", 64, 1

    with pytest.raises(InputError, match="no exact numeric mode"):
        Encoder(_Model(), quality=0, gop=1, width=64, height=64, numeric="exact")
    with pytest.raises(InputError, match="unknown --numeric"):
        Encoder(_Model(), quality=0, gop=1, width=64, height=64, numeric="int8")


def test_shipped_weights_carry_their_entropy_tables(monkeypatch):
    monkeypatch.setattr(models.create("nvc-lite").__class__, "update",
                        lambda self, force=True: (_ for _ in ()).throw(AssertionError("recomputed tables")))
    m = models.load("nvc-lite")  # loads the stored tables, never recomputes them
    assert m.i_y.gaussian_conditional._quantized_cdf.shape[0] == 64


def test_malformed_entropy_tables_are_refused(tmp_path):
    from safetensors.torch import save_file

    state, cfg = models.load_state(models.shipped_weights("nvc-lite"))
    import json

    bad = dict(state)
    cdf = bad["i_y.gaussian_conditional._quantized_cdf"].clone()
    cdf[3, 2] = -7  # inside the valid part: not monotone
    bad["i_y.gaussian_conditional._quantized_cdf"] = cdf
    save_file(bad, str(tmp_path / "bad.safetensors"), metadata={"config": json.dumps(cfg)})
    with pytest.raises(ModelError, match="malformed entropy table"):
        models.load("nvc-lite", tmp_path / "bad.safetensors")
    del bad["p_z.entropy_bottleneck._offset"]
    save_file(bad, str(tmp_path / "part.safetensors"), metadata={"config": json.dumps(cfg)})
    with pytest.raises(ModelError, match="incomplete entropy tables"):
        models.load("nvc-lite", tmp_path / "part.safetensors")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cpu_and_cuda_streams_cross_decode():
    cpu = models.load("nvc-lite", device="cpu")
    gpu = models.load("nvc-lite", device="cuda")
    frames = make_frames(3, 96, 64, seed=4)
    for enc_model, dec_model, dev_e, dev_d in ((cpu, gpu, "cpu", "cuda"), (gpu, cpu, "cuda", "cpu")):
        enc = Encoder(enc_model, quality=3, gop=8, width=96, height=64, device=torch.device(dev_e))
        coded = [enc.encode(f) for f in frames]
        dec = Decoder(dec_model, width=96, height=64, device=torch.device(dev_d), exact=True)
        with contextlib.nullcontext():
            outs = [dec.decode(c.record(i)) for i, c in enumerate(coded)]
        assert all(_same(a, c.recon) for a, c in zip(outs, coded))


@pytest.mark.parametrize("layer", _layers() + [nn.ConvTranspose2d(48, 4, 3, 2, 1, 1), nn.Conv2d(48, 4, 3, 2, 1)],
                         ids=["conv5x5", "deconv5x5", "conv1x1", "deconv3x3", "conv3x3s2"])
def test_stripes_give_the_same_bits_as_one_pass(layer, monkeypatch):
    x = torch.randn(1, 48, 13, 9) * 10
    whole = exact.conv(layer, x)
    monkeypatch.setattr(exact, "STRIPE_BYTES", 1)  # one output row per stripe
    assert torch.equal(exact.conv(layer, x), whole)
    # and one whole-frame float64 convolution of the same fixed-point operands gives the same bits
    w, b, _ = exact._conv_weights(layer)
    args = (layer.stride, layer.padding) + ((layer.output_padding,) if isinstance(layer, nn.ConvTranspose2d) else ())
    fn = F.conv_transpose2d if isinstance(layer, nn.ConvTranspose2d) else F.conv2d
    assert torch.equal(fn(exact.quantize(x), w, b, *args), whole)


def test_decoding_in_one_row_stripes_gives_the_same_frames(lite, monkeypatch):
    frames = make_frames(2, 64, 64, seed=7)
    coded = _code(lite, frames, quality=1)
    monkeypatch.setattr(exact, "STRIPE_BYTES", 1)
    assert all(_same(a, c.recon) for a, c in zip(_decode(lite, coded, 64, 64), coded))


@pytest.mark.parametrize("k,s,p,op", [(5, 2, 2, 1), (3, 2, 1, 1), (4, 2, 1, 0), (1, 2, 0, 1), (2, 3, 0, 2),
                                      (5, 3, 2, 0), (3, 1, 1, 0)])
def test_transposed_convolution_by_phases_gives_the_same_bits(k, s, p, op, monkeypatch):
    """A transposed convolution runs as one ordinary convolution per output phase (kernels smaller than the
    stride leave phases with the bias alone): the same bits as one float64 transposed convolution, in any
    stripes."""
    torch.manual_seed(k * 10 + s)
    layer = nn.ConvTranspose2d(6, 5, k, s, p, op)
    x = torch.randn(1, 6, 7, 5) * 10
    w, b, _ = exact._conv_weights(layer)
    whole = F.conv_transpose2d(exact.quantize(x), w, b, s, p, op)
    assert exact._phases(layer, w) is not None
    assert torch.equal(exact.conv(layer, x), whole)
    monkeypatch.setattr(exact, "STRIPE_BYTES", 1)  # one input row (s output rows) per stripe
    assert torch.equal(exact.conv(layer, x), whole)
    last = min(9, whole.shape[2])
    rows = exact._conv_stripes(layer, exact.quantize(x), lambda y: y, torch.float64, rows=(3, last))
    assert torch.equal(rows, whole[:, :, 3:last])


def test_cpu_stripes_stay_cache_sized():
    """On a CPU a 720p layer's stripes hold a few MiB of unfolded input, not the 64 MiB memory bound."""
    x = torch.zeros(1, 1, 1, 1)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert exact._budget(x) == min(exact.STRIPE_BYTES, 2 * layers.CACHE_BYTES) <= 8 << 20
        assert exact._rows_per_stripe(32 * 9, 1280, 32, exact._budget(x)) <= 2
    finally:
        torch.set_num_threads(before)

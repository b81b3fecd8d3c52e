"""nvc.entropy: the same parameters, tables, likelihoods, gradients and bits as CompressAI's entropy models
(so that shipped and official weights keep their meaning), without importing the compressai package."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from nvc.entropy import EntropyBottleneck, GaussianConditional, extension
from nvc.models.layers import GDN, scale_table

em = pytest.importorskip("compressai.entropy_models")

DERIVED = ("_offset", "_quantized_cdf", "_cdf_length")


def _pair_bottleneck(channels: int = 16) -> tuple[torch.nn.Module, EntropyBottleneck]:
    torch.manual_seed(0)
    theirs = em.EntropyBottleneck(channels)
    torch.manual_seed(0)
    ours = EntropyBottleneck(channels)
    return theirs, ours


def test_bottleneck_same_parameters_tables_and_strings() -> None:
    theirs, ours = _pair_bottleneck()
    assert theirs.state_dict().keys() == ours.state_dict().keys()
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in theirs.state_dict().items())  # same init, same RNG use
    with torch.no_grad():  # a density that is not the initial one
        for p in ours.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    theirs.load_state_dict({k: v for k, v in ours.state_dict().items() if k not in DERIVED}, strict=False)
    theirs.update(force=True)
    ours.update(force=True)
    for k in DERIVED:
        assert torch.equal(getattr(theirs, k), getattr(ours, k)), k
    x = torch.randn(2, 16, 5, 7) * 4
    strings = ours.compress(x)
    assert strings == theirs.compress(x)
    assert torch.equal(ours.decompress(strings, (5, 7)), theirs.decompress(strings, (5, 7)))
    assert torch.equal(ours.decompress(strings, (5, 7)), torch.round(x - ours.medians()) + ours.medians())


def test_bottleneck_training_pass_and_gradients_match() -> None:
    theirs, ours = _pair_bottleneck()
    x = torch.randn(2, 16, 6, 6) * 4
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(1)
    va, la = theirs(xa, training=True)
    torch.manual_seed(1)
    vb, lb = ours(xb, training=True)
    assert torch.equal(va, vb) and torch.equal(la, lb)
    assert all(torch.equal(u, v) for u, v in zip(theirs(x, training=False), ours(x, training=False)))
    (-la.log2().sum() + theirs.loss()).backward()
    (-lb.log2().sum() + ours.loss()).backward()
    assert torch.equal(xa.grad, xb.grad)
    for (na, pa), (nb, pb) in zip(theirs.named_parameters(), ours.named_parameters()):
        assert na == nb and torch.equal(pa.grad, pb.grad), na


def test_gaussian_conditional_tables_indexes_likelihoods_and_strings() -> None:
    theirs, ours = em.GaussianConditional(None), GaussianConditional()
    assert theirs.state_dict().keys() == ours.state_dict().keys()
    table = scale_table()
    theirs.update_scale_table(table.tolist(), force=True)
    ours.update_scale_table(table, force=True)
    for k in (*DERIVED, "scale_table"):
        assert torch.equal(getattr(theirs, k), getattr(ours, k)), k
    scales = torch.rand(2, 8, 5, 5) * 12
    means, y = torch.randn(2, 8, 5, 5), torch.randn(2, 8, 5, 5) * 6
    idx = ours.indexes(scales)
    assert torch.equal(idx, theirs.build_indexes(scales))
    strings = ours.compress(y, idx, means)
    assert strings == theirs.compress(y, idx, means=means)
    assert torch.equal(ours.decompress(strings, idx), torch.round(y - means).int())
    sa, sb = scales.clone().requires_grad_(), scales.clone().requires_grad_()
    torch.manual_seed(2)
    va, la = theirs(y, sa, means=means, training=True)
    torch.manual_seed(2)
    vb, lb = ours(y, sb, means, training=True)
    assert torch.equal(va, vb) and torch.equal(la, lb)
    la.log().sum().backward()
    lb.log().sum().backward()
    assert torch.equal(sa.grad, sb.grad)
    assert torch.equal(ours.likelihood(vb, scales, means), lb)  # what refinement evaluates at chosen values


def test_reader_reads_a_string_in_parts() -> None:
    """A string coded at once decodes part by part, each part with its own tables (checkerboard order)."""
    gc = GaussianConditional()
    gc.update_scale_table(scale_table(), force=True)
    torch.manual_seed(3)
    sym, idx = torch.randint(-9, 10, (1, 300)), torch.randint(0, 64, (1, 300))
    rd = gc.reader(gc.encode(sym, idx)[0])
    parts = [rd.read(idx[:, :120]), rd.read(idx[:, 120:].reshape(1, 9, 20))]
    assert torch.equal(torch.cat([parts[0], parts[1].reshape(1, -1)], dim=1), sym.int())


def test_parts_of_several_models_share_one_string() -> None:
    """encode_parts codes symbols of two models' tables in one string (one flush instead of two); a reader
    over the same named tables reads them back in order, and each part alone would cost more in total."""
    from nvc.entropy import SymbolReader, encode_parts

    gc = GaussianConditional()
    gc.update_scale_table(scale_table(), force=True)
    _, eb = _pair_bottleneck()
    eb.update(force=True)
    torch.manual_seed(4)
    z_sym, z_idx = torch.randint(-3, 4, (48,)).tolist(), [i % 16 for i in range(48)]
    y_sym, y_idx = torch.randint(-9, 10, (200,)).tolist(), torch.randint(0, 64, (200,)).tolist()
    tables = {"z": eb.tables(), "y": gc.tables()}
    s = encode_parts([("z", tables["z"], z_sym, z_idx), ("y", tables["y"], y_sym, y_idx)])
    rd = SymbolReader(s, tables)
    assert rd.read(torch.tensor(z_idx), "z").tolist() == z_sym
    assert rd.read(torch.tensor(y_idx[:50]), "y").tolist() == y_sym[:50]
    assert rd.read(torch.tensor(y_idx[50:]).reshape(10, 15), "y").reshape(-1).tolist() == y_sym[50:]
    apart = len(eb.encode(torch.tensor([z_sym]), torch.tensor([z_idx]))[0]) + len(gc.encode(torch.tensor([y_sym]), torch.tensor([y_idx]))[0])
    assert len(s) <= apart - 8


def test_bottleneck_likelihood_of_given_values() -> None:
    _, ours = _pair_bottleneck()
    x = torch.randn(2, 16, 3, 4) * 4
    values, lik = ours(x, training=False)
    v = values.detach().requires_grad_()
    assert torch.equal(ours.likelihood(v), lik)
    ours.likelihood(v).log().sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0


@pytest.mark.parametrize("inverse", [False, True])
def test_gdn_matches_compressai(inverse: bool) -> None:
    from compressai.layers import GDN as TheirGDN

    theirs, ours = TheirGDN(8, inverse=inverse), GDN(8, inverse=inverse)
    with torch.no_grad():
        ours.gamma.add_(torch.rand_like(ours.gamma) * 0.1)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(1, 8, 4, 4)
    assert torch.equal(theirs(x), ours(x))


def test_table_cache_follows_the_buffers() -> None:
    """Tables loaded in place (load_state_dict copies into the buffers) are used, not a stale cache."""
    a, b = EntropyBottleneck(4), EntropyBottleneck(4)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():  # another density with the same quantiles: tables of the same shapes
        for bias in b.biases:
            bias.add_(1.5)
    a.update(force=True)
    b.update(force=True)
    x = torch.randn(1, 4, 3, 3) * 3
    assert a.compress(x) != b.compress(x)  # and caches a's tables
    a.load_state_dict(b.state_dict())  # same shapes: copied into a's buffers in place
    assert a.compress(x) == b.compress(x)


def test_tables_must_be_built() -> None:
    with pytest.raises(ValueError, match="update"):
        GaussianConditional().compress(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2, dtype=torch.int32),
                                       torch.zeros(1, 1, 2, 2))


def test_extension_is_the_coder() -> None:
    ans = extension("ans")
    assert hasattr(ans, "RansEncoder") and hasattr(ans, "RansDecoder")
    assert hasattr(extension("_CXX"), "pmf_to_quantized_cdf")


def test_coding_does_not_import_the_compressai_package(tmp_path) -> None:
    """An encode and a decode of the default model load only the coder, not compressai (torchvision, scipy)."""
    code = (
        "import sys, nvc.api as api\n"
        f"api.encode(None, {str(tmp_path / 'a.nvc')!r}, sample=True, frames=2)\n"
        f"api.decode({str(tmp_path / 'a.nvc')!r}, {str(tmp_path / 'a.y4m')!r})\n"
        "print(sorted(m for m in ('compressai', 'torchvision', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"

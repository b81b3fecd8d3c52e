"""DVC against the official layout and reference vectors (shared/reference/dvc), plus its coding contract."""

from __future__ import annotations

import json
import math
import zlib
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from .conftest import REFERENCE, fill_reference_weights
from nvc.models.dvc import DVC, rename_legacy_state_dict

REF_DIR = REFERENCE
DVC_REF = REF_DIR / "dvc"

needs_reference = pytest.mark.skipif(
    not (DVC_REF / "state_dict.json").is_file() or not (DVC_REF / "vectors.npz").is_file(),
    reason=f"DVC reference vectors not found under {DVC_REF} (the shared/ checkout is absent)",
)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def filled() -> DVC:
    model = DVC()
    fill_reference_weights(model)
    return model.eval()


@pytest.fixture(scope="module")
def vectors() -> dict[str, np.ndarray]:
    with np.load(DVC_REF / "vectors.npz") as d:
        return {k: d[k] for k in d.files}


@needs_reference
def test_state_dict_matches_official_layout() -> None:
    ref = json.loads((DVC_REF / "state_dict.json").read_text())
    model = DVC()
    ours = [[k, list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()]
    assert ours == ref["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == ref["num_parameters"]
    assert model.entropy_hyper_mv is model.entropy_bottleneck


@needs_reference
def test_forward_reproduces_reference_vectors(filled: DVC, vectors: dict[str, np.ndarray]) -> None:
    cur, ref = torch.from_numpy(vectors["cur"]), torch.from_numpy(vectors["ref"])
    with torch.no_grad():
        out = filled(cur, ref)
    np.testing.assert_allclose(out["x_hat"].numpy(), vectors["x_hat"], rtol=0, atol=1e-4)
    for key in ("mse", "warp_mse", "inter_mse"):
        np.testing.assert_allclose(float(out[key]), float(vectors[key]), rtol=1e-4, err_msg=key)
    for key in ("bpp_res", "bpp_resprior", "bpp_mv", "bpp"):
        np.testing.assert_allclose(float(out[key]), float(vectors[key]), rtol=1e-3, err_msg=key)
    assert set(out["likelihoods"]) == {"mv", "mvprior", "res", "resprior"}


def test_rename_legacy_state_dict() -> None:
    legacy = OrderedDict([
        ("entropy_bottleneck._matrix0", torch.ones(64, 3, 1)),
        ("entropy_bottleneck._bias4", torch.ones(64, 1, 1)),
        ("entropy_hyper_res._factor3", torch.ones(64, 3, 1)),
        ("entropy_hyper_res._matrix12", torch.ones(1)),
        ("entropy_hyper_res.quantiles", torch.ones(64, 1, 3)),
        ("resEncoder.conv1.weight", torch.ones(1)),
    ])
    renamed = rename_legacy_state_dict(legacy)
    assert list(renamed) == [
        "entropy_bottleneck.matrices.0",
        "entropy_bottleneck.biases.4",
        "entropy_hyper_res.factors.3",
        "entropy_hyper_res.matrices.12",
        "entropy_hyper_res.quantiles",
        "resEncoder.conv1.weight",
    ]
    assert all(renamed[n] is legacy[o] for n, o in zip(renamed, legacy))
    # Current names pass through untouched.
    assert list(rename_legacy_state_dict(renamed)) == list(renamed)


def test_load_legacy_checkpoint_round_trip() -> None:
    """A CompressAI 1.1.x-style checkpoint (old names, built CDF tables) loads into a fresh model."""
    torch.manual_seed(1)
    src = DVC()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01 * torch.randn_like(p))
    src.update(force=True)
    legacy = OrderedDict()
    for k, v in src.state_dict().items():
        for old, new in (("_matrix", "matrices."), ("_bias", "biases."), ("_factor", "factors.")):
            head, sep, idx = k.rpartition("." + new)
            if sep and idx.isdigit():
                k = f"{head}.{old}{idx}"
        legacy[k] = v.clone()
    assert any("._matrix0" in k for k in legacy)
    dst = DVC()
    dst.load_state_dict(legacy)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def _frames(h: int = 64, w: int = 128) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8 + 1, generator=g), (h, w + 8),
                                           mode="bicubic", align_corners=False).clamp(0, 1)
    return base[..., 2:w + 2].contiguous(), base[..., :w].contiguous()


def test_compress_decompress_bit_exact() -> None:
    torch.manual_seed(0)
    model = DVC().eval()
    with torch.no_grad():
        for p in model.parameters():  # away from the identity init so all paths carry signal
            p.add_(0.02 * torch.randn_like(p))
    model.update(force=True)
    cur, ref = _frames()
    strings, shape, x_hat, ctx = model.compress_frame(cur, ref, 0)
    assert len(strings) == 4 and all(isinstance(s, bytes) and s for s in strings)
    assert shape == (1, 2) and ctx is x_hat
    x_dec, ctx_dec = model.decompress_frame(strings, shape, ref, 0)
    assert torch.equal(x_hat, x_dec) and torch.equal(ctx_dec, x_dec)
    assert x_hat.shape == cur.shape and float(x_hat.min()) >= 0.0 and float(x_hat.max()) <= 1.0
    with torch.no_grad():
        fwd = model(cur, ref)
    # Entropy coding is lossless: the coded reconstruction is the eval forward's, up to float noise.
    assert float((fwd["x_hat"] - x_hat).abs().max()) < 1e-5


def test_contract_rejects_other_qualities() -> None:
    model = DVC().eval()
    model.update(force=True)
    assert model.alignment == 64 and model.qualities == 1
    cur, ref = _frames()
    with pytest.raises(ValueError):
        model.compress_frame(cur, ref, 1)
    with pytest.raises(ValueError):
        model.compress_frame(cur, None, 1)


# ---------------------------------------------------------------------------------------------------------
# I frames (nvc intra / x265 intra) and whole streams through nvc.api


def _random_checkpoint(path: Path, seed: int) -> Path:
    """A random-initialised DVC (perturbed away from the init) saved as a torch state_dict checkpoint."""
    from nvc.models import trainable_state

    torch.manual_seed(seed)
    m = DVC()
    with torch.no_grad():
        for p in m.parameters():
            p.add_(0.02 * torch.randn_like(p))
    torch.save({"state_dict": trainable_state(m), "config": m.config}, path)
    return path


@pytest.fixture(scope="module")
def dvc_ckpt(tmp_path_factory) -> Path:
    return _random_checkpoint(tmp_path_factory.mktemp("dvc") / "dvc_random.pt", 0)


@pytest.fixture(scope="module")
def clip_y4m(tmp_path_factory) -> Path:
    from .conftest import make_frames, write_y4m

    return write_y4m(tmp_path_factory.mktemp("clip") / "clip.y4m", make_frames(3, 96, 64))


def _planes(path: Path) -> list[bytes]:
    from nvc.io import open as open_video

    with open_video(path, "r") as r:
        return [f.tobytes() for f in r]


INTRA_CASES = [
    ({}, (0, 6)),  # nvc-lite's default quality (6 of 0..10: lambda 0.0075)
    ({"intra": "nvc", "intra_quality": 1}, (0, 1)),
    ({"intra": "x265", "intra_qp": 37}, (1, 37)),
    ({"intra": "x265"}, (1, 27)),
]


@pytest.mark.parametrize("options,tag", INTRA_CASES, ids=["nvc-default", "nvc-q1", "x265-qp37", "x265-default"])
def test_stream_ipp_round_trip_bit_exact(tmp_path, dvc_ckpt, clip_y4m, options, tag) -> None:
    from nvc import api, bitstream
    from nvc.bitstream import FrameType

    out, rec, dec = tmp_path / "s.nvc", tmp_path / "rec.y4m", tmp_path / "dec.y4m"
    r = api.encode(clip_y4m, out, model="dvc", checkpoint=dvc_ckpt, quality=0, gop=8, device="cpu", recon=rec,
                   model_options=options)
    assert r.frames == 3 and r.model == "dvc"
    with bitstream.open(out, "r") as reader:
        records = [reader.read(i) for i in range(3)]
    assert [x.frame_type for x in records] == [FrameType.I, FrameType.P, FrameType.P]
    first = bitstream.decode_payload(records[0].payload)
    assert first.strings[0] == bytes(tag)  # the intra coder's tag substream
    assert len(first.strings) == (3 if tag[0] == 0 else 2) and tuple(first.shape) == ()  # 3.0: derived, (1, 2)
    assert len(bitstream.decode_payload(records[1].payload).strings) == 4
    d = api.decode(out, dec, checkpoint=dvc_ckpt, device="cpu")
    assert d.frames == 3
    assert _planes(dec) == _planes(rec)  # decoder == encoder reconstruction, bit for bit
    assert r.psnr_yuv > 10


def test_digest_covers_intra_weights(dvc_ckpt) -> None:
    from nvc.models import load, trainable_state, weights_digest

    x265 = load("dvc", dvc_ckpt, intra="x265")
    nvc = load("dvc", dvc_ckpt)
    assert x265.weights_digest == weights_digest(trainable_state(x265))  # DVC weights only
    assert nvc.weights_digest != x265.weights_digest  # + the nvc-lite weights that code its I frames
    assert load("dvc", dvc_ckpt, intra="nvc", intra_quality=5).weights_digest == nvc.weights_digest


def test_refused_with_other_weights(tmp_path, dvc_ckpt, clip_y4m) -> None:
    from nvc import api, bitstream
    from nvc.codec import Decoder
    from nvc.errors import WeightsMismatchError
    from nvc.models import load

    other = _random_checkpoint(tmp_path / "other.pt", 1)
    for options in ({"intra": "x265", "intra_qp": 32}, {}):
        out = tmp_path / f"s{len(options)}.nvc"
        api.encode(clip_y4m, out, model="dvc", checkpoint=dvc_ckpt, quality=0, device="cpu", frames=2,
                   model_options=options)
        with pytest.raises(WeightsMismatchError, match="other dvc weights"):
            api.decode(out, tmp_path / "d.y4m", checkpoint=other, device="cpu", force=True)
    # Same DVC weights, other intra (nvc-lite) weights: the nvc-intra stream is refused too.
    with bitstream.open(tmp_path / "s0.nvc", "r") as reader:
        header = reader.header
    model = load("dvc", dvc_ckpt)
    lite = model._lite_model()
    with torch.no_grad():
        next(lite.parameters()).add_(1e-3)
    from nvc.models import trainable_state, weights_digest

    lite.weights_digest = weights_digest(trainable_state(lite))
    with pytest.raises(WeightsMismatchError):
        Decoder.for_stream(model, header, torch.device("cpu"))
    # ... while the x265 stream does not depend on them.
    with bitstream.open(tmp_path / "s2.nvc", "r") as reader:
        assert Decoder.for_stream(model, reader.header, torch.device("cpu")) is not None


def test_intra_tag_must_match_the_header(dvc_ckpt) -> None:
    from nvc.models import load

    enc = load("dvc", dvc_ckpt, intra="x265", intra_qp=40)
    cur, _ = _frames()
    strings, shape, x_hat, _ = enc.compress_frame(cur, None, 0)
    dec = load("dvc", dvc_ckpt)
    assert dec.accept_stream_digest(enc.weights_digest)
    x_dec, _ = dec.decompress_frame(strings, shape, None, 0)
    assert torch.equal(x_dec, x_hat)
    assert dec.accept_stream_digest(load("dvc", dvc_ckpt).weights_digest)  # now an nvc-intra stream
    with pytest.raises(ValueError, match="header names nvc"):
        dec.decompress_frame(strings, shape, None, 0)
    with pytest.raises(ValueError):
        dec.decompress_frame([b"\x01\x1b", b"not hevc"], shape, None, 0)


def test_intra_options_validated(dvc_ckpt) -> None:
    from nvc.errors import ModelError
    from nvc.models import load

    with pytest.raises(ModelError, match="applies to --intra x265"):
        load("dvc", dvc_ckpt, intra_qp=22)
    with pytest.raises(ModelError, match="applies to --intra nvc"):
        load("dvc", dvc_ckpt, intra="x265", intra_quality=2)
    with pytest.raises(ModelError, match="unknown intra"):
        load("dvc", dvc_ckpt, intra="jpeg")
    with pytest.raises(ModelError, match="0..51"):
        load("dvc", dvc_ckpt, intra="x265", intra_qp=60)
    n = load("nvc-lite").qualities
    with pytest.raises(ModelError, match=f"0..{n - 1}"):
        load("dvc", dvc_ckpt, intra_quality=n)
    with pytest.raises(ModelError, match="does not take --intra"):
        load("nvc-lite", intra="x265")


def test_cli_intra_options(tmp_path, dvc_ckpt, clip_y4m) -> None:
    from typer.testing import CliRunner

    from nvc.cli import app

    runner = CliRunner()
    out = tmp_path / "c.nvc"
    r = runner.invoke(app, ["encode", str(clip_y4m), "-o", str(out), "--model", "dvc", "--checkpoint",
                            str(dvc_ckpt), "-q", "0", "-n", "2", "--intra", "x265", "--intra-qp", "32",
                            "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["decode", str(out), "-o", str(tmp_path / "d.y4m"), "--checkpoint", str(dvc_ckpt),
                            "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["encode", str(clip_y4m), "-o", str(tmp_path / "x.nvc"), "-q", "0", "--intra", "x265",
                            "--quiet", "--device", "cpu"])
    assert r.exit_code == 2 and "does not take --intra" in r.output and len(r.output.strip().splitlines()) == 1


def test_registered_in_model_zoo() -> None:
    from nvc import models

    assert isinstance(models.create("dvc"), DVC)

"""Block motion (nvc.models.motion): estimation, compensation, the motion-field coder, and nvc-lite with motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nvc import bitstream, models
from nvc.codec import Decoder, Encoder
from nvc.color import luma
from nvc.entropy import extension
from nvc.errors import ModelError
from nvc.models import motion

from .conftest import make_frames


def _texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, h // 4 + 1, w // 4 + 1, generator=g)
    return torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)


def test_estimate_finds_a_global_shift_and_keeps_static_blocks_at_zero():
    ref = _texture(64, 96)
    assert not motion.estimate(ref, ref, 8, 4).any()
    cur = torch.roll(ref, shifts=(2, -3), dims=(2, 3))  # cur[y, x] = ref[y - 2, x + 3]
    mv = motion.estimate(cur, ref, 8, 4)
    inner = mv[0, :, 1:-1, 1:-1]  # away from the wrapped borders
    assert bool((inner[0] == -2).all()) and bool((inner[1] == 3).all())
    pred = motion.compensate(ref, mv, 8)
    assert torch.equal(pred[..., 8:-8, 8:-8], cur[..., 8:-8, 8:-8])


def test_wide_search_goes_coarse_to_fine_and_finds_a_long_shift():
    ref = _texture(128, 128, seed=2)
    cur = torch.roll(ref, shifts=(9, -13), dims=(2, 3))
    mv = motion.estimate(cur, ref, 16, 16)  # radius 16 > FULL_SEARCH_RADIUS: coarse, then refined
    inner = mv[0, :, 1:-1, 1:-1]
    assert bool((inner[0] == -9).all()) and bool((inner[1] == 13).all())
    assert int(mv.abs().max()) <= 16
    full = motion.estimate(cur, ref, 16, 16, full=16)  # every displacement within 16 (nvc-lite's small frames)
    assert torch.equal(full[0, :, 1:-1, 1:-1], inner)


@pytest.mark.parametrize("n,h,w,block,radius,stripe", [(2, 48, 64, 16, 16, None), (1, 64, 96, 8, 3, None),
                                                        (3, 32, 32, 4, 4, 1)])
def test_full_search_errors_equal_one_candidate_at_a_time(n, h, w, block, radius, stripe, monkeypatch):
    """The full search pools every horizontal shift of a row offset at once (in chunks): each candidate's error is
    bit for bit that of differencing and pooling it alone, in the shortest-first order."""
    if stripe is not None:
        monkeypatch.setattr(motion, "STRIPE_PIXELS", stripe)  # one horizontal shift per pass
    g = torch.Generator().manual_seed(n * h + radius)
    cur = torch.rand(n, 1, h, w, generator=g)
    ref = (cur + 0.05 * torch.randn(n, 1, h, w, generator=g)).roll(3, -1)
    errs, vecs = motion._full_search(cur, ref, block, radius)
    padded = torch.nn.functional.pad(ref, (radius,) * 4, mode="replicate")
    cands = motion._by_length(radius)
    assert vecs.view(-1, 2).tolist() == [list(c) for c in cands]
    one = torch.stack([torch.nn.functional.avg_pool2d(
        (padded[..., radius + dy:radius + dy + h, radius + dx:radius + dx + w] - cur) ** 2, block)[:, 0]
        for dy, dx in cands], dim=1)
    assert torch.equal(errs, one)


def test_full_search_finds_a_small_object_that_coarse_to_fine_misses():
    """A 16x16 patch moves 11 pixels over a flat background: in 4x downscaled luma it is a 4x4 blur the coarse
    level places wrongly, the full search does not."""
    ref = torch.full((1, 3, 64, 64), 0.5)
    g = torch.Generator().manual_seed(3)
    patch = torch.rand(1, 3, 16, 16, generator=g)
    ref[..., 8:24, 8:24] = patch
    cur = torch.full_like(ref, 0.5)
    cur[..., 8:24, 19:35] = patch  # moved 11 pixels right: the block at (8, 16) is predicted from 5 left of it
    coarse = motion.estimate(cur, ref, 8, 16, penalty=0.0)  # radius 16 > FULL_SEARCH_RADIUS
    assert not torch.equal(motion.compensate(ref, coarse, 8), cur)
    full = motion.estimate(cur, ref, 8, 16, penalty=0.0, full=16)
    assert torch.equal(motion.compensate(ref, full, 8), cur)


def test_compensate_copies_values_with_clamped_coordinates():
    ref = torch.arange(2 * 16 * 16, dtype=torch.float32).view(1, 2, 16, 16)
    mv = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    mv[0, :, 0, 0] = torch.tensor([-5, -5])  # top-left block reads above and left of the frame
    mv[0, :, 1, 1] = torch.tensor([1, 2])
    out = motion.compensate(ref, mv, 8)
    assert torch.equal(out[..., 8:, :8], ref[..., 8:, :8]) and torch.equal(out[..., :8, 8:], ref[..., :8, 8:])
    assert torch.equal(out[0, :, 0, 0], ref[0, :, 0, 0]) and torch.equal(out[0, :, 7, 7], ref[0, :, 2, 2])
    assert torch.equal(out[0, :, 8, 8], ref[0, :, 9, 10]) and torch.equal(out[0, :, 15, 15], ref[0, :, 15, 15])
    with pytest.raises(ValueError, match="does not fit"):
        motion.compensate(ref, mv[..., :1], 8)


def test_half_pixel_compensation_averages_neighbours_exactly():
    ref = torch.rand(1, 3, 16, 16, dtype=torch.float64)
    ref32 = ref.float()
    mv = torch.zeros(1, 2, 2, 2, dtype=torch.long)
    mv[0, :, 0, 1] = torch.tensor([0, 3])  # +1.5 px right
    mv[0, :, 1, 0] = torch.tensor([-1, 0])  # -0.5 px up
    mv[0, :, 1, 1] = torch.tensor([1, -1])  # +0.5 down, -0.5 left: four neighbours
    for r in (ref, ref32):
        out = motion.compensate(r, mv, 8, precision=2)
        assert torch.equal(out[..., :8, :8], r[..., :8, :8])
        assert torch.equal(out[0, :, 2, 9], (r[0, :, 2, 10] + r[0, :, 2, 11]) * 0.5)
        assert torch.equal(out[0, :, 2, 15], (r[0, :, 2, 15] + r[0, :, 2, 15]) * 0.5)  # clamped at the edge
        assert torch.equal(out[0, :, 9, 3], (r[0, :, 9, 3] + r[0, :, 8, 3]) * 0.5)
        four = ((r[0, :, 10, 12] + r[0, :, 10, 13]) * 0.5 + (r[0, :, 11, 12] + r[0, :, 11, 13]) * 0.5) * 0.5
        assert torch.equal(out[0, :, 10, 13], four)
    # whole-pixel vectors in half-pixel units are the whole-pixel prediction
    assert torch.equal(motion.compensate(ref, mv * 2, 8, precision=2), motion.compensate(ref, mv, 8))
    with pytest.raises(ValueError, match="precision"):
        motion.compensate(ref, mv, 8, precision=4)


def test_half_pixel_search_finds_a_half_pixel_shift():
    g = torch.Generator().manual_seed(5)
    fine = torch.nn.functional.interpolate(torch.rand(1, 3, 34, 50, generator=g), size=(136, 200), mode="bilinear",
                                           align_corners=False)
    ref, cur = fine[..., 0:128:2, 0:192:2], fine[..., 3:131:2, 4:196:2]  # cur = ref 1.5 px down, 2 px right
    mv = motion.estimate(cur, ref, 8, 4, penalty=1e-7, precision=2)
    inner = mv[0, :, 1:-1, 1:-1]
    assert bool((inner[0] == 3).float().mean() > 0.9) and bool((inner[1] == 4).float().mean() > 0.9)
    whole = motion.compensate(ref, motion.estimate(cur, ref, 8, 4, penalty=1e-7), 8)
    half = motion.compensate(ref, mv, 8, precision=2)
    assert ((half - cur)[..., 8:-8, 8:-8] ** 2).mean() < 0.5 * ((whole - cur)[..., 8:-8, 8:-8] ** 2).mean()


def test_overlapped_compensation_blends_neighbours_near_edges_only():
    g = torch.Generator().manual_seed(7)
    ref = torch.rand(1, 3, 32, 48, generator=g)
    mv = torch.randint(-6, 7, (1, 2, 2, 3), generator=g)
    plain = motion.compensate(ref, mv, 16, 2)
    for overlap, band in ((1, 2), (2, 4), (3, 8)):
        out = motion.compensate(ref, mv, 16, 2, overlap)
        inside = slice(band, 16 - band)
        assert torch.equal(out[..., inside, inside], plain[..., inside, inside])
        assert not torch.equal(out[..., :band, :], plain[..., :band, :])
    # one pixel by the spec's formula: row 14 of block (0, 1) (k = 14: t = 3, w = (8 - 3) / 16, below),
    # column 17 (k = 1: t = 3, w = 5/16, left); overlap 2 on 16-blocks: L = 4
    out = motion.compensate(ref, mv, 16, 2, 2)
    pred = {}
    for i, j in ((0, 1), (0, 0), (1, 1), (1, 0)):
        one = mv[:, :, i:i + 1, j:j + 1].expand(1, 2, 2, 3).contiguous()
        pred[i, j] = motion.compensate(ref, one, 16, 2)[0, :, 14, 17]
    wx = wy = 5 / 16
    top = pred[0, 1] + (pred[0, 0] - pred[0, 1]) * wx
    bottom = pred[1, 1] + (pred[1, 0] - pred[1, 1]) * wx
    assert torch.equal(out[0, :, 14, 17], top + (bottom - top) * wy)
    # a uniform field is the plain prediction, exactly; float64 agrees with float32 to its rounding
    same = torch.full((1, 2, 2, 3), 3)
    assert torch.equal(motion.compensate(ref, same, 16, 2, 2), motion.compensate(ref, same, 16, 2))
    assert (motion.compensate(ref.double(), mv, 16, 2, 2).float() - out).abs().max() < 1e-6
    with pytest.raises(ValueError, match="overlap"):
        motion.compensate(ref, mv, 16, 2, 4)


@pytest.mark.parametrize("block,precision,overlap", [(8, 1, 0), (8, 2, 2), (16, 2, 3), (16, 1, 1)])
def test_stripes_compute_the_whole_frames_result_bit_for_bit(monkeypatch, block, precision, overlap):
    """compensate and the search's block errors run a stripe of block rows at a time: any stripe height
    gives the whole frame's prediction, and the errors are those of compensate's prediction exactly."""
    g = torch.Generator().manual_seed(block + precision + overlap)
    ref = torch.rand(2, 3, 5 * block, 3 * block, generator=g)
    cur = luma(torch.rand(2, 3, 5 * block, 3 * block, generator=g))
    mv = torch.randint(-9 * precision, 9 * precision + 1, (2, 2, 5, 3), generator=g)
    fields = [mv, torch.zeros_like(mv), mv.flip(0)]
    whole = motion.compensate(ref, mv, block, precision, overlap)
    errs = motion._block_errors(cur, luma(ref), fields, block, precision)
    for f, e in zip(fields, errs.unbind(1)):
        pred = motion.compensate(luma(ref), f, block, precision)
        assert torch.equal(e, torch.nn.functional.avg_pool2d((pred - cur) ** 2, block)[:, 0])
    monkeypatch.setattr(motion, "STRIPE_PIXELS", 1)  # one block row per stripe
    assert torch.equal(motion.compensate(ref, mv, block, precision, overlap), whole)
    assert torch.equal(motion._block_errors(cur, luma(ref), fields, block, precision), errs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 6), st.integers(2, 6), st.sampled_from(motion.BLOCKS), st.sampled_from(motion.PRECISIONS),
       st.sampled_from(motion.OVERLAPS), st.integers(0, 2**31 - 1), st.sampled_from([0, 1, 3, 64]))
def test_field_round_trip(bh, bw, block, precision, overlap, seed, spread):
    g = torch.Generator().manual_seed(seed)
    spread *= precision
    mv = torch.randint(-spread, spread + 1, (1, 2, bh, bw), generator=g)
    data = motion.encode_field(mv, block, precision, overlap)
    f = motion.decode_field(data, bh * block, bw * block, motion.BLOCKS)
    assert (f.block, f.precision, f.overlap) == (block, precision, overlap) and torch.equal(f.mv, mv)


@pytest.mark.parametrize("precision", motion.PRECISIONS)
def test_tables_are_the_exact_rational_definition(precision):
    """The residual tables (part of the format) equal their definition in exact rationals, term by term."""
    from fractions import Fraction

    span = motion._SPAN * precision
    n = 2 * span + 1
    cdfs, lengths, offsets = motion._tables(precision)
    for num, cdf in zip(motion._THETA, cdfs):
        theta = Fraction(num, 1 << 16)
        weights = [theta ** abs(v) for v in range(-span, span + 1)]
        total = sum(weights)
        freq = [max(1, int(w * ((1 << 16) - 1 - n) / total)) for w in weights]
        freq[span] += (1 << 16) - 1 - sum(freq)
        assert list(np.diff(cdf)) == freq + [1] and cdf[0] == 0 and cdf[-1] == 1 << 16
    assert lengths == [n + 2] * len(motion._THETA) and offsets == [-span] * len(motion._THETA)


def test_smooth_fields_are_cheap():
    still = torch.zeros(1, 2, 40, 48, dtype=torch.long)
    pan = still.clone()
    pan[:, 1] = -7
    assert len(motion.encode_field(still, 8)) < 24 and len(motion.encode_field(pan, 8)) < 40  # 1,920 vectors


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_fields_fail_cleanly(data):
    try:
        f = motion.decode_field(data, 64, 128, motion.BLOCKS)
    except ValueError:
        return
    assert f.mv.shape == (1, 2, 64 // f.block, 128 // f.block) and f.precision in motion.PRECISIONS
    assert int(f.mv.abs().max()) <= motion.MAX_RADIUS * f.precision and f.overlap in motion.OVERLAPS


def test_hostile_field_strings_never_read_out_of_bounds():
    from .test_fuzz import _hostile_substreams

    refused = 0
    for data in _hostile_substreams(2, 30):
        try:
            motion.decode_field(b"\x03\x00\x00" + data, 128, 128, motion.BLOCKS)
        except ValueError:
            refused += 1
    assert refused > 0  # and, above all, the process is still alive
    with pytest.raises(ValueError, match="too long"):
        motion.decode_field(b"\x03\x00\x00" + bytes(10_000), 64, 64, motion.BLOCKS)


def test_bad_field_headers_and_vectors():
    with pytest.raises(ValueError, match="too short"):
        motion.decode_field(b"\x03", 64, 64, (8,))
    with pytest.raises(ValueError, match="block size"):
        motion.decode_field(b"\x05\x00\x00", 64, 64, (8, 16))
    with pytest.raises(ValueError, match="precision"):
        motion.decode_field(b"\x23\x00\x00", 64, 64, (8,))  # quarter pixels: not (yet) a stream's choice
    with pytest.raises(ValueError, match="table"):
        motion.decode_field(b"\x03\x00\x63", 64, 64, (8,))
    with pytest.raises(ValueError, match="over"):
        motion.encode_field(torch.full((1, 2, 2, 2), 65), 8)
    with pytest.raises(ValueError, match="over"):
        motion.encode_field(torch.full((1, 2, 2, 2), 129), 8, precision=2)
    with pytest.raises(ValueError, match="blocks or more"):  # would overflow CompressAI's encoder buffer
        motion.encode_field(torch.full((1, 2, 1, 2), 128), 8, precision=2)
    far = torch.full((1, 2, 2, 2), -128)
    assert torch.equal(motion.decode_field(motion.encode_field(far, 8, 2), 16, 16, (8,))[0], far)
    # a residual of +100 on the first vector is codable but leaves the vector range
    cdfs, lengths, offsets = motion._tables()
    data = extension("ans").RansEncoder().encode_with_indexes([100, 0], [0, 0], cdfs, lengths, offsets)
    with pytest.raises(ValueError, match="over"):
        motion.decode_field(b"\x03\x00\x00" + data, 8, 8, (8,))


def _motion_model(seed: int = 0):
    torch.manual_seed(seed)
    m = models.create("nvc-lite", n=16, m=16, c=8, motion=8).eval()
    m.update(force=True)
    m.weights_digest = models.weights_digest(m.state_dict())
    return m


def test_model_config_checks():
    with pytest.raises(ModelError, match="block size"):
        models.create("nvc-lite", n=16, m=16, c=8, motion=4)
    with pytest.raises(ModelError, match="radius"):
        models.create("nvc-lite", n=16, m=16, c=8, motion=8, motion_radius=65)
    m = models.create("nvc-lite", n=16, m=16, c=8)
    assert [m.substream_count(v) for v in (3, 2, 1)] == [1, 1, 2] and (m.substreams, m.legacy_substreams) == (1, 2)
    m = models.create("nvc-lite", n=16, m=16, c=8, motion=16)
    assert [m.substream_count(v) for v in (3, 2, 1)] == [1, 2, 3] and m.config["motion"] == 16


@pytest.mark.parametrize("numeric", ["exact", "fast"])
def test_encoder_and_decoder_agree_with_motion(numeric):
    m = _motion_model()
    frames = make_frames(4, 72, 40, seed=3)
    enc = Encoder(m, quality=2, gop=8, width=72, height=40, numeric=numeric)
    dec = Decoder(m, width=72, height=40, exact=numeric == "exact")
    for i, f in enumerate(frames):
        cf = enc.encode(f)
        p = bitstream.decode_payload(cf.payload)
        assert len(p.strings) == 1  # format 3.0: the field (P frames), z and y in one string
        out = dec.decode(cf.record(i))
        for a, b in ((out.y, cf.recon.y), (out.u, cf.recon.u), (out.v, cf.recon.v)):
            assert np.array_equal(a, b)


def test_decoder_refuses_misplaced_motion_fields():
    from nvc.errors import BitstreamError

    m = _motion_model()
    frames = make_frames(2, 64, 64, seed=1)
    enc = Encoder(m, quality=1, gop=8, width=64, height=64, numeric="exact")
    coded = [enc.encode(f) for f in frames]
    i_string = bitstream.decode_payload(coded[0].payload).strings[0]
    p_header = motion.code_field(torch.zeros(1, 2, 4, 4, dtype=torch.long), 16).header
    # format 2.0 carried the field's header apart: an I frame must have none
    bad = bitstream.encode_payload(bitstream.FramePayload(shape=(1, 1), strings=[p_header, i_string]), (2, 0))
    dec = Decoder(m, width=64, height=64, exact=True)
    with pytest.raises(BitstreamError, match="motion field"):
        dec.decode(bitstream.FrameRecord(index=0, frame_type=coded[0].frame_type, quality=coded[0].quality,
                                         payload=bad, version=(2, 0)))
    # format 3.0 has no place for one: two substreams are refused by their count
    bad = bitstream.encode_payload(bitstream.FramePayload(shape=(), strings=[p_header, i_string]))
    with pytest.raises(BitstreamError, match="2 substreams, expected 1"):
        dec.decode(bitstream.FrameRecord(index=0, frame_type=coded[0].frame_type, quality=coded[0].quality,
                                         payload=bad))


@pytest.mark.parametrize("exact", [True, False])
def test_joint_and_legacy_layouts_decode_alike(exact):
    """Format 3.0's one string (the motion field's header and vectors, z, y) and 1.x's three decode to the
    same frame (2.0's layout: the streams in formats/vectors/2.0/, tests/test_conformance.py); the one string
    is shorter by the two rANS flushes it saves."""
    m = _motion_model()
    f0, f1 = (torch.rand(1, 3, 64, 128) for _ in range(2))
    _, _, _, ctx = m.compress_frame(f0, None, 2, exact=exact, refine=0)
    joint, shape, x_hat, _ = m.compress_frame(f1, ctx, 2, exact=exact, refine=0)
    legacy, shape_l, x_hat_l, _ = m.compress_frame(f1, ctx, 2, exact=exact, refine=0, joint=False)
    assert torch.equal(x_hat, x_hat_l) and shape == shape_l
    assert len(joint) == 1 and len(legacy) == 3
    assert len(joint[0]) <= sum(map(len, legacy)) - 8
    for strings in (joint, legacy):
        out, _ = m.decompress_frame(strings, shape, ctx, 2, exact=exact)
        assert torch.equal(out, x_hat)
    with pytest.raises(ValueError, match="substreams"):
        m.decompress_frame([*legacy, b""], shape, ctx, 2, exact=exact)


def test_training_loss_with_motion_runs_and_backpropagates():
    m = models.create("nvc-lite", n=16, m=16, c=8, motion=8)
    clip = torch.rand(2, 3, 3, 64, 64)
    out = m.training_loss(clip, torch.tensor([0, 3]))
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and m.p_g_a[0].weight.grad is not None

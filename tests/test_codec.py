"""Encoder/decoder sessions: exact reconstruction, determinism, GoP structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nvc import bitstream
from nvc.bitstream import FrameRecord, FrameType
from nvc.codec import Decoder, Encoder
from nvc.errors import BitstreamError, InputError
from nvc.ladder import DEFAULT_HYPER_REFINE, DEFAULT_INTER_REFINE, DEFAULT_INTRA_REFINE, DEFAULT_LADDER, FLAT

from .conftest import make_frames, spy_threads


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, p), getattr(b, p)) for p in "yuv")


def _encode(model, frames, quality=2, gop=2):
    enc = Encoder(model, quality=quality, gop=gop, width=frames[0].width, height=frames[0].height)
    return [enc.encode(f) for f in frames]


def test_decoder_equals_encoder_bit_for_bit(lite):
    frames = make_frames(4, 70, 50)  # odd padding, I P I P
    coded = _encode(lite, frames)
    assert [c.frame_type for c in coded] == [FrameType.I, FrameType.P, FrameType.I, FrameType.P]
    dec = Decoder(lite, width=70, height=50)
    for i, c in enumerate(coded):
        out = dec.decode(c.record(i))
        assert _same(out, c.recon), f"frame {i} differs"


def test_encoding_is_deterministic(lite):
    frames = make_frames(3, 64, 64, seed=3)
    a = [c.payload for c in _encode(lite, frames, gop=8)]
    b = [c.payload for c in _encode(lite, frames, gop=8)]
    assert a == b


def test_thread_count_does_not_change_bytes(lite):
    """The same bytes with 1, 2 or 3 threads, refinement and block motion included (I and P frames, padding).
    A stand-in: a flip needs a latent within oneDNN's 1e-6 of a rounding boundary, so the mechanism itself is
    tested in test_models (test_encoder_choices_run_on_one_thread)."""
    frames = make_frames(3, 100, 70, seed=5)
    n = torch.get_num_threads()
    coded = []
    try:
        for threads in (1, 2, 3):
            torch.set_num_threads(threads)
            coded.append([c.payload for c in _encode(lite, frames, gop=8)])
    finally:
        torch.set_num_threads(n)
    assert coded[0] == coded[1] == coded[2]


def test_where_the_model_runs(lite, monkeypatch):
    """Float32 streams run the model on one CPU thread at both ends (oneDNN's sums follow the thread count: a
    carphone stream coded with 2 threads drifted from frame 5 when decoded with 1); EXACT ones keep the caller's
    threads; the post-filter choice (float32 sums) takes one thread in both."""
    seen = spy_threads(monkeypatch, lite, "compress_frame", "decompress_frame")
    filter_seen = spy_threads(monkeypatch, Encoder, "_choose_filter")
    frames = make_frames(2, 64, 64, seed=4)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        for numeric, model_threads in (("fast", 1), ("exact", 2)):
            seen.clear(), filter_seen.clear()
            enc = Encoder(lite, quality=2, gop=8, width=64, height=64, numeric=numeric)
            coded = [enc.encode(f) for f in frames]
            dec = Decoder(lite, width=64, height=64, exact=numeric == "exact")
            for i, c in enumerate(coded):
                assert _same(dec.decode(c.record(i)), c.recon)
            assert set(seen + filter_seen) == {("compress_frame", model_threads), ("decompress_frame", model_threads),
                                               ("_choose_filter", 1)}, numeric
            assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)


def test_float32_streams_decode_with_any_thread_count(lite):
    frames = make_frames(3, 100, 70, seed=6)
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        enc = Encoder(lite, quality=2, gop=8, width=100, height=70, numeric="fast")
        coded = [enc.encode(f) for f in frames]
        for threads in (1, 3):
            torch.set_num_threads(threads)
            dec = Decoder(lite, width=100, height=70, exact=False)
            for i, c in enumerate(coded):
                assert _same(dec.decode(c.record(i)), c.recon), f"{threads} threads: frame {i} differs"
    finally:
        torch.set_num_threads(n)


def test_lowest_quality_is_smallest(lite):
    from nvc.sample import sample_frames

    frames = [next(iter(sample_frames(1)))]
    sizes = [len(_encode(lite, frames, quality=q)[0].payload) for q in (0, lite.qualities - 1)]
    assert sizes[0] < sizes[1], sizes


def test_errors(lite):
    with pytest.raises(InputError, match="quality"):
        Encoder(lite, quality=99, gop=4, width=16, height=16)
    with pytest.raises(InputError, match="gop"):
        Encoder(lite, quality=0, gop=0, width=16, height=16)
    coded = _encode(lite, make_frames(2, 32, 32), gop=4)
    dec = Decoder(lite, width=32, height=32)
    with pytest.raises(BitstreamError, match="without a preceding I"):
        dec.decode(FrameRecord(1, FrameType.P, coded[1].quality, coded[1].payload))
    bad = bitstream.encode_payload(bitstream.FramePayload(shape=(9, 9), strings=[b"", b""]))
    with pytest.raises(BitstreamError, match="latent shape"):
        dec.decode(FrameRecord(0, FrameType.I, 0, bad))


def test_payload_shape_is_derived_in_format_3(lite):
    """3.0 leaves out a shape the model derives from the frame size; a written one must match it, and 2.0
    payloads must carry it."""
    from types import SimpleNamespace

    coded = _encode(lite, make_frames(1, 32, 32), gop=4)[0]
    p = bitstream.decode_payload(coded.payload)
    assert p.shape == () and lite.latent_shape(64, 64) == (1, 1)
    ref = Decoder(lite, width=32, height=32).decode(FrameRecord(0, FrameType.I, coded.quality, coded.payload))
    written = bitstream.encode_payload(bitstream.FramePayload(shape=(1, 1), strings=p.strings))
    out = Decoder(lite, width=32, height=32).decode(FrameRecord(0, FrameType.I, coded.quality, written))
    assert np.array_equal(out.y, ref.y) and len(written) == len(coded.payload) + 2
    v2 = bitstream.encode_payload(bitstream.FramePayload(shape=(), strings=p.strings), (2, 0))
    with pytest.raises(BitstreamError, match="latent shape"):
        Decoder(lite, width=32, height=32).decode(FrameRecord(0, FrameType.I, coded.quality, v2, (2, 0)))
    stub = Decoder(SimpleNamespace(name="stub", alignment=64), width=64, height=64, exact=False)
    with pytest.raises(BitstreamError, match="does not derive"):
        stub._check_shape(0, (), 1, (3, 0))
    assert stub._check_shape(0, (2, 3), 1, (3, 0)) == (2, 3)


def test_bounded_memory_float_path_decodes_like_the_encoder(lite, monkeypatch):
    """Large frames (here: every frame) run the float path in bounded memory (here the encoder's analysis in
    stripes of a row or two); the decoder still matches."""
    import nvc.models.layers
    import nvc.models.lite

    monkeypatch.setattr(nvc.models.lite, "LIGHT_PIXELS", 0)
    monkeypatch.setattr(nvc.models.layers, "CACHE_BYTES", 1)
    frames = make_frames(3, 96, 80, seed=11)
    enc = Encoder(lite, quality=3, gop=8, width=96, height=80, numeric="fast")
    coded = [enc.encode(f) for f in frames]
    dec = Decoder(lite, width=96, height=80, exact=False)
    for i, c in enumerate(coded):
        assert _same(dec.decode(c.record(i)), c.recon)


def test_quality_ladder(lite):
    """By default I frames get 3 more quality and every 4th P frame 1 more, capped at the top; the decoder
    reads each frame's quality from its record and reconstructs exactly."""
    frames = make_frames(6, 64, 64, seed=7)
    enc = Encoder(lite, quality=3, gop=32, width=64, height=64)
    assert enc.ladder == DEFAULT_LADDER
    coded = [enc.encode(f) for f in frames]
    assert [c.quality for c in coded] == [6, 3, 3, 3, 4, 3]
    dec = Decoder(lite, width=64, height=64)
    for i, c in enumerate(coded):
        assert _same(dec.decode(c.record(i)), c.recon)
    hi = lite.qualities - 1
    top = Encoder(lite, quality=hi, gop=2, width=64, height=64)
    assert [top.encode(f).quality for f in frames[:3]] == [hi, hi, hi]  # I P I: capped
    flat = Encoder(lite, quality=3, gop=32, width=64, height=64, ladder=FLAT)
    assert {flat.encode(f).quality for f in frames} == {3}


def _cost(model, frames, coded, quality):
    """The frames' rate-distortion cost as refinement measures it (real bytes, PSNR of RGB)."""
    from nvc.color import padded_size, yuv420_to_rgb

    w, h = frames[0].width, frames[0].height
    pw, ph = padded_size(w, h, model.alignment)
    lam = float(model.lambdas[quality]) * 255.0**2
    cost = 0.0
    for f, c in zip(frames, coded):
        x = yuv420_to_rgb(f.y, f.u, f.v, torch.device("cpu"))
        r = yuv420_to_rgb(c.recon.y, c.recon.u, c.recon.v, torch.device("cpu"))
        cost += lam * float(((x - r) ** 2).sum()) / (3 * pw * ph) + 8 * len(c.payload) / (pw * ph)
    return cost


def test_refinement_decodes_bit_for_bit_and_lowers_the_cost(lite, monkeypatch):
    """Encoder-side refinement changes only what the encoder writes: any decoder reconstructs the
    encoder's frames exactly, the frames cost less, and the same input gives the same bytes. Small
    frames are refined by default (``NvcLite.intra_refine`` / ``inter_refine`` steps); ``refine`` sets the
    steps of every frame, 0 none."""
    from nvc.sample import sample_frames

    frames = list(sample_frames(2))
    w, h = frames[0].width, frames[0].height
    assert (lite.intra_refine, lite.inter_refine) == (DEFAULT_INTRA_REFINE, DEFAULT_INTER_REFINE)
    assert lite.hyper_refine == DEFAULT_HYPER_REFINE
    enc = Encoder(lite, quality=2, gop=8, width=w, height=h, ladder=FLAT)
    default = [enc.encode(f) for f in frames]
    plain = Encoder(lite, quality=2, gop=8, width=w, height=h, ladder=FLAT, refine=0)
    base = [plain.encode(f) for f in frames]
    assert _cost(lite, frames[:1], default[:1], 2) < _cost(lite, frames[:1], base[:1], 2)
    assert _cost(lite, frames, default, 2) < _cost(lite, frames, base, 2)
    monkeypatch.setattr(lite, "inter_refine", 0)  # the defaults are the model's attributes
    assert Encoder(lite, quality=2, gop=8, width=w, height=h, ladder=FLAT).encode(frames[0]).payload == default[0].payload
    monkeypatch.setattr(lite, "intra_refine", 0)
    monkeypatch.setattr(lite, "hyper_refine", 0)  # refine=0 turns the hyper-latent's refinement off too
    assert Encoder(lite, quality=2, gop=8, width=w, height=h, ladder=FLAT).encode(frames[0]).payload == base[0].payload
    monkeypatch.undo()
    enc = Encoder(lite, quality=2, gop=8, width=w, height=h, ladder=FLAT, refine=4)
    coded = [enc.encode(f) for f in frames]
    dec = Decoder(lite, width=w, height=h)
    for i, c in enumerate(coded):
        assert _same(dec.decode(c.record(i)), c.recon)
    assert _cost(lite, frames[:1], coded[:1], 2) < _cost(lite, frames[:1], base[:1], 2)
    again = Encoder(lite, quality=2, gop=8, width=w, height=h, ladder=FLAT, refine=4)
    assert [again.encode(f).payload for f in frames] == [c.payload for c in coded]
    assert coded[0].payload != default[0].payload  # I frames: 4 steps, not the default's 10
    small = make_frames(3, 70, 50, seed=2)  # float32 mode, odd padding
    fast = Encoder(lite, quality=4, gop=8, width=70, height=50, numeric="fast", refine=3)
    dec = Decoder(lite, width=70, height=50, exact=False)
    for i, f in enumerate(small):
        c = fast.encode(f)
        assert _same(dec.decode(c.record(i)), c.recon)


def test_refinement_errors(lite):
    from types import SimpleNamespace

    for bad in (-1, 1001, True):
        with pytest.raises(InputError, match="--refine must be"):
            Encoder(lite, quality=0, gop=4, width=16, height=16, refine=bad)
    with pytest.raises(InputError, match="up to 1920x1088"):
        Encoder(lite, quality=0, gop=4, width=3840, height=2160, refine=3)
    Encoder(lite, quality=0, gop=4, width=1920, height=1080, refine=3)
    other = SimpleNamespace(name="other", qualities=1, alignment=16)
    with pytest.raises(InputError, match="no encoder-side refinement"):
        Encoder(other, quality=0, gop=4, width=16, height=16, numeric="fast", refine=3)

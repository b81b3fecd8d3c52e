"""nvc.api: whole files through encode -> .nvc -> decode, seeking, damage, mismatches."""

from __future__ import annotations

import numpy as np
import pytest

from nvc import api, bitstream, io
from nvc.errors import (BitstreamError, ChecksumError, InputError, OutputExistsError, TruncatedStreamError,
                        WeightsMismatchError)

from .conftest import make_frames, write_y4m, write_yuv


@pytest.fixture(scope="module")
def coded(tmp_path_factory, lite):
    d = tmp_path_factory.mktemp("api")
    frames = make_frames(5, 72, 40)
    src = write_y4m(d / "src.y4m", frames)
    r = api.encode(src, d / "a.nvc", quality=1, gop=2, device="cpu", recon=d / "recon.yuv")
    return d, frames, r


def _read(path, size):
    with io.open(path, size=size) as rd:
        return list(rd)


def test_roundtrip_matches_encoder_recon(coded):
    d, frames, r = coded
    assert r.frames == 5 and r.width == 72 and r.bytes == (d / "a.nvc").stat().st_size
    assert r.bpp > 0 and 10 < r.psnr_yuv < 100
    api.decode(d / "a.nvc", d / "out.yuv", device="cpu")
    assert (d / "out.yuv").read_bytes() == (d / "recon.yuv").read_bytes()
    h = api.info(d / "a.nvc")
    assert h["frame_count"] == 5 and [f["type"] for f in h["frames"]] == ["I", "P", "I", "P", "I"]


def test_seek_start_frames(coded):
    d, _, _ = coded
    full = _read(d / "recon.yuv", (72, 40))
    api.decode(d / "a.nvc", d / "part.y4m", start=3, frames=2, device="cpu")
    part = _read(d / "part.y4m", None)
    assert len(part) == 2
    for a, b in zip(part, full[3:5]):
        assert np.array_equal(a.y, b.y) and np.array_equal(a.v, b.v)
    with pytest.raises(InputError, match="past the last frame"):
        api.decode(d / "a.nvc", d / "x.yuv", start=9, device="cpu")


def test_truncated_stream_keeps_complete_frames(coded, tmp_path):
    d, _, _ = coded
    data = (d / "a.nvc").read_bytes()
    with bitstream.open(d / "a.nvc") as rd:
        cut = rd.frames[3].offset + 5  # inside frame 3's payload
    t = tmp_path / "t.nvc"
    t.write_bytes(data[:cut])
    with pytest.raises(TruncatedStreamError, match="wrote 3 complete frames"):
        api.decode(t, tmp_path / "t.yuv", device="cpu")
    assert (tmp_path / "t.yuv").stat().st_size == 3 * io.frame_bytes(72, 40)


def test_crc_failure_names_frame(coded, tmp_path):
    d, _, _ = coded
    data = bytearray((d / "a.nvc").read_bytes())
    with bitstream.open(d / "a.nvc") as rd:
        data[rd.frames[2].offset + 3] ^= 0x10
    t = tmp_path / "c.nvc"
    t.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match="frame 2"):
        api.decode(t, tmp_path / "c.yuv", device="cpu")


def test_other_weights_are_refused(coded, tmp_path):
    import torch

    from nvc import models

    d, _, _ = coded
    m = models.load("nvc-lite")
    state = models.trainable_state(m)
    state["i_g_s.6.bias"] = state["i_g_s.6.bias"] + 0.01
    ck = tmp_path / "other.pt"
    torch.save({"state_dict": state, "config": m.config}, ck)  # the config: eight qualities, block motion
    with pytest.raises(WeightsMismatchError, match="other nvc-lite weights"):
        api.decode(d / "a.nvc", tmp_path / "w.yuv", checkpoint=ck, device="cpu")
    assert not (tmp_path / "w.yuv").exists()


def test_numeric_mode_mismatch_is_refused(coded, tmp_path):
    d, _, _ = coded
    with bitstream.open(d / "a.nvc") as rd:
        h = rd.header
        records = list(rd)
    from dataclasses import replace

    t = tmp_path / "cuda.nvc"
    with bitstream.open(t, "w", header=replace(h, numeric_mode=int(bitstream.NumericMode.FLOAT32_CUDA))) as w:
        for rec in records:
            w.write(rec.frame_type, rec.quality, rec.payload)
    with pytest.raises(WeightsMismatchError, match="numeric fast on cuda: only a cuda decode"):
        api.decode(t, tmp_path / "m.yuv", device="cpu")


def test_outputs_that_exist_or_are_folders_are_refused(tmp_path):
    """One check for every output: an existing file needs ``force`` (an OutputExistsError, also a FileExistsError),
    a folder is refused even with it, before anything is read or coded."""
    src = write_yuv(tmp_path / "c_32x32.yuv", make_frames(1, 32, 32))
    (tmp_path / "exists.nvc").write_bytes(b"keep")
    for call in (lambda: api.encode(src, tmp_path / "exists.nvc"),
                 lambda: api.decode(tmp_path / "missing.nvc", tmp_path / "exists.nvc"),
                 lambda: api.open(tmp_path / "exists.nvc", "w", width=32, height=32)):
        with pytest.raises(FileExistsError):
            call()
    with pytest.raises(OutputExistsError, match="already exists"):
        api.encode(src, tmp_path / "exists.nvc")
    folder = tmp_path / "out"
    folder.mkdir()
    for call in (lambda: api.encode(src, folder, force=True),
                 lambda: api.decode(tmp_path / "exists.nvc", folder, force=True),
                 lambda: api.open(folder, "w", width=32, height=32, force=True)):
        with pytest.raises(InputError, match="is a folder"):
            call()
    assert (tmp_path / "exists.nvc").read_bytes() == b"keep" and not any(folder.iterdir())


def test_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        api.encode(tmp_path / "none.y4m", tmp_path / "o.nvc")
    src = write_yuv(tmp_path / "c_32x32.yuv", make_frames(1, 32, 32))
    (tmp_path / "exists.nvc").write_bytes(b"keep")
    with pytest.raises(InputError, match="already exists"):
        api.encode(src, tmp_path / "exists.nvc")
    assert (tmp_path / "exists.nvc").read_bytes() == b"keep"
    with pytest.raises(InputError, match="--frames"):
        api.encode(src, tmp_path / "o.nvc", frames=0)
    junk = tmp_path / "junk.nvc"
    junk.write_bytes(b"not a stream at all" * 10)
    with pytest.raises(BitstreamError):
        api.decode(junk, tmp_path / "j.yuv")
    assert not (tmp_path / "o.nvc").exists()


def test_open_streams_frame_by_frame(coded, tmp_path):
    """nvc.api.open: the frame-level API behind encode/decode gives the same bytes and frames."""
    d, frames, _ = coded
    out = tmp_path / "o.nvc"
    with api.open(out, "w", width=72, height=40, fps=25, quality=1, gop=2, device="cpu") as s:
        assert isinstance(s, api.OutputStream)
        recon = [s.write(f).recon for f in frames]
        assert s.frames == 5 and not out.exists()  # the file appears when closed
    assert out.read_bytes() == (d / "a.nvc").read_bytes()
    with api.open(out, device="cpu") as s:
        assert isinstance(s, api.InputStream) and len(s) == 5 and s.truncated is None
        assert (s.header.width, s.header.height, s.header.gop) == (72, 40, 2)
        got = list(s)
        part = list(s.decode(start=3, frames=1))
    assert all(np.array_equal(a.y, b.y) and np.array_equal(a.u, b.u) for a, b in zip(got, recon))
    assert len(part) == 1 and np.array_equal(part[0].y, recon[3].y)
    # a failure inside the block leaves no file; a cut stream yields its complete frames, then raises
    with pytest.raises(InputError, match="frame 1 is"):
        with api.open(tmp_path / "bad.nvc", "w", width=72, height=40, device="cpu") as s:
            s.write(frames[0])
            s.write(make_frames(1, 48, 32)[0])
    assert not (tmp_path / "bad.nvc").exists()
    cut = tmp_path / "cut.nvc"
    cut.write_bytes(out.read_bytes()[:-3])
    seen = []
    with api.open(cut, device="cpu") as s, pytest.raises(TruncatedStreamError):
        for f in s:
            seen.append(f)
    assert len(seen) == 4
    with pytest.raises(InputError, match="already exists"):
        api.open(out, "w", width=72, height=40)
    with pytest.raises(InputError, match="reads a file"):
        api.open("-")
    with pytest.raises(ValueError, match="mode"):
        api.open(out, "a")


def test_encode_start_skips_input_frames(tmp_path):
    frames = make_frames(5, 48, 32)
    a, b = write_y4m(tmp_path / "all.y4m", frames), write_y4m(tmp_path / "tail.y4m", frames[2:4])
    r = api.encode(a, tmp_path / "a.nvc", start=2, frames=2, quality=0, device="cpu")
    api.encode(b, tmp_path / "b.nvc", quality=0, device="cpu")
    assert r.frames == 2 and (tmp_path / "a.nvc").read_bytes() == (tmp_path / "b.nvc").read_bytes()
    with pytest.raises(InputError, match="no frames to encode from frame 5 on"):  # a Y4M does not say its length
        api.encode(a, tmp_path / "c.nvc", start=5, device="cpu")
    with pytest.raises(InputError, match="--start 5 is past the last frame"):  # a raw .yuv does
        api.encode(write_yuv(tmp_path / "all_48x32.yuv", frames), tmp_path / "c.nvc", start=5, device="cpu")
    with pytest.raises(InputError, match="--start must be"):
        api.encode(a, tmp_path / "c.nvc", start=-1, device="cpu")
    assert not (tmp_path / "c.nvc").exists()


def test_output_that_is_the_input_is_refused(tmp_path):
    """As FFmpeg does, even with force: writing over the file being read would lose it."""
    src = write_y4m(tmp_path / "a.y4m", make_frames(2, 48, 32))
    before = src.read_bytes()
    for kw in ({"output": src}, {"output": tmp_path / "o.nvc", "recon": tmp_path / "." / "a.y4m"}):
        with pytest.raises(InputError, match="is the input file"):
            api.encode(src, force=True, device="cpu", **kw)
    assert src.read_bytes() == before and not (tmp_path / "o.nvc").exists()
    stream = tmp_path / "s.y4m"  # a stream under a video's name
    api.encode(src, stream, device="cpu", refine=0)
    with pytest.raises(InputError, match="is the input file"):
        api.decode(stream, stream, force=True, device="cpu")
    assert stream.read_bytes()[:3] == b"NVC"


def test_threads_option_is_scoped(tmp_path):
    import torch

    src = write_y4m(tmp_path / "a.y4m", make_frames(2, 48, 32))
    before = torch.get_num_threads()
    api.encode(src, tmp_path / "a.nvc", device="cpu", refine=0, threads=1)
    api.decode(tmp_path / "a.nvc", tmp_path / "one.yuv", device="cpu", threads=1)
    api.decode(tmp_path / "a.nvc", tmp_path / "two.yuv", device="cpu", threads=2)
    assert torch.get_num_threads() == before  # restored after each call
    assert (tmp_path / "one.yuv").read_bytes() == (tmp_path / "two.yuv").read_bytes()
    with pytest.raises(InputError, match="--threads must be at least 1"):
        api.encode(src, tmp_path / "b.nvc", threads=0)
    assert not (tmp_path / "b.nvc").exists()

from __future__ import annotations

import io as pyio
import sys
from fractions import Fraction

import av
import numpy as np
import pytest

from nvc import io
from nvc.errors import InputError, NvcError, OutputExistsError, UnsupportedFormatError

from .conftest import make_frames, write_y4m, write_yuv


def _same(a, b) -> bool:
    return all(np.array_equal(getattr(a, p), getattr(b, p)) for p in "yuv")


def test_raw_yuv_roundtrip_and_name_parsing(tmp_path):
    frames = make_frames(3, 48, 32)
    p = write_yuv(tmp_path / "clip_48x32_50fps.yuv", frames)
    with io.open(p) as r:
        assert (r.info.width, r.info.height, r.info.fps, r.info.frames) == (48, 32, Fraction(50), 3)
        got = list(r)
    assert len(got) == 3 and all(_same(a, b) for a, b in zip(frames, got))


def test_raw_yuv_odd_size(tmp_path):
    frames = make_frames(2, 37, 21)
    p = write_yuv(tmp_path / "odd.yuv", frames)
    with io.open(p, size=(37, 21)) as r:
        got = list(r)
    assert got[0].u.shape == (11, 19) and _same(frames[1], got[1])


def test_size_of_a_container_must_match_it(tmp_path):
    """--size describes raw yuv420p; a Y4M states its size, and a different --size is refused, not ignored."""
    p = write_y4m(tmp_path / "c.y4m", make_frames(2, 48, 32))
    with io.open(p, size=(48, 32)) as r:
        assert (r.info.width, r.info.height) == (48, 32)
    with pytest.raises(InputError, match="--size 32x32 does not match the video's 48x32"):
        io.open(p, size=(32, 32))


def test_raw_yuv_errors(tmp_path):
    p = write_yuv(tmp_path / "noname.yuv", make_frames(2, 32, 32))
    with pytest.raises(InputError, match="--size"):
        io.open(p)
    with pytest.raises(InputError, match="not a whole number"):
        io.open(p, size=(30, 32))
    empty = tmp_path / "e_16x16.yuv"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="empty"):
        io.open(empty)
    with pytest.raises(InputError, match="no such file"):
        io.open(tmp_path / "missing.y4m")
    with pytest.raises(InputError):
        io.parse_size("12by4")
    with pytest.raises(InputError):
        io.parse_size("0x4")
    with pytest.raises(InputError):
        io.parse_fps("-3")


def test_name_parsing():
    assert io.size_from_name("Beauty_1920x1080_120fps_420_8bit_YUV.yuv") == (1920, 1080)
    assert io.fps_from_name("Beauty_1920x1080_120fps_420_8bit_YUV.yuv") == Fraction(120)
    assert io.fps_from_name("CiscoVT2people_320x192_9f_420_8bit.yuv") is None
    assert io.parse_fps("30000/1001") == Fraction(30000, 1001)
    assert io.parse_fps("29.97") == Fraction(2997, 100)


def test_y4m_roundtrip(tmp_path):
    frames = make_frames(3, 40, 24)
    p = write_y4m(tmp_path / "a.y4m", frames, Fraction(30000, 1001))
    with io.open(p) as r:
        assert r.info.fps == Fraction(30000, 1001)
        got = list(r)
    assert all(_same(a, b) for a, b in zip(frames, got))


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_lossless_containers(tmp_path, ext):
    frames = make_frames(3, 64, 48)
    p = write_y4m(tmp_path / f"a{ext}", frames)
    with io.open(p) as r:
        got = list(r)
    assert len(got) == 3 and all(_same(a, b) for a, b in zip(frames, got))


def test_odd_sizes_and_mp4(tmp_path):
    """.mkv, .y4m and numbered images keep an odd size; .mp4's x264 cannot, and says so before writing."""
    frames = make_frames(2, 33, 17)
    info = io.VideoInfo(33, 17, Fraction(25), 2)
    assert all(_same(a, b) for a, b in zip(frames, list(io.open(write_y4m(tmp_path / "a.mkv", frames)))))
    with pytest.raises(UnsupportedFormatError, match="even width and height.*33x17"):
        io.open(tmp_path / "a.mp4", "w", info=info)
    assert not list(tmp_path.glob("*.mp4*")) and not list(tmp_path.glob(".a.mp4*"))


def test_ten_bit_input_is_converted(tmp_path):
    p = tmp_path / "ten.mkv"
    with av.open(str(p), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p10le"
        for i in range(2):
            f = av.VideoFrame.from_ndarray(np.full((48, 32), 512 + i, np.uint16), format="yuv420p10le")
            for pkt in s.encode(f):
                c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)
    with io.open(p) as r:
        got = list(r)
    assert len(got) == 2 and got[0].y.dtype == np.uint8 and abs(int(got[0].y[0, 0]) - 128) <= 1


def test_unreadable_file(tmp_path):
    p = tmp_path / "junk.mp4"
    p.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(UnsupportedFormatError):
        io.open(p)


def test_atomic_writer(tmp_path):
    frames = make_frames(1, 16, 16)
    info = io.VideoInfo(16, 16, Fraction(25), 1)
    target = tmp_path / "out.yuv"
    with pytest.raises(RuntimeError):
        with io.open(target, "w", info=info) as w:
            w.write(frames[0])
            raise RuntimeError("boom")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with io.open(target, "w", info=info) as w:
        w.write(frames[0])
    with pytest.raises(OutputExistsError):
        io.open(target, "w", info=info)
    assert isinstance(OutputExistsError("x"), NvcError)
    with io.open(target, "w", info=info, force=True) as w:
        w.write(frames[0])
        w.write(frames[0])
    assert target.stat().st_size == 2 * io.frame_bytes(16, 16)


def test_streaming_reader_does_not_load_everything(tmp_path):
    frames = make_frames(2, 16, 16)
    p = write_yuv(tmp_path / "s_16x16.yuv", frames * 50)
    with io.open(p) as r:
        it = iter(r)
        first = next(it)
    assert _same(first, frames[0])


class _Pipe(pyio.TextIOWrapper):
    """A standard stream over bytes that is not a terminal (as in a shell pipe)."""

    def __init__(self, data: bytes = b"") -> None:
        super().__init__(pyio.BytesIO(data))


def test_stdin_y4m_and_probed_formats(tmp_path, monkeypatch):
    frames = make_frames(3, 40, 24)
    for name in ("a.y4m", "a.mkv"):
        p = write_y4m(tmp_path / name, frames, Fraction(30000, 1001))
        monkeypatch.setattr(sys, "stdin", _Pipe(p.read_bytes()))
        with io.open(io.STDIO) as r:
            assert (r.info.width, r.info.height, r.info.fps) == (40, 24, Fraction(30000, 1001))
            got = list(r)
        assert len(got) == 3 and all(_same(a, b) for a, b in zip(frames, got)), name
    monkeypatch.setattr(sys, "stdin", _Pipe(p.read_bytes()))
    with io.open("-", fps=Fraction(50)) as r:
        assert r.info.fps == 50
    monkeypatch.setattr(sys, "stdin", _Pipe(b"\x00garbage" * 100))
    with pytest.raises(UnsupportedFormatError, match="^stdin: not a video"):
        io.open("-")


def test_stdin_raw_yuv(tmp_path, monkeypatch):
    frames = make_frames(3, 37, 21)
    raw = b"".join(f.tobytes() for f in frames)
    monkeypatch.setattr(sys, "stdin", _Pipe(raw))
    with io.open("-", size=(37, 21)) as r:
        assert r.info.frames is None and r.info.fps == io.DEFAULT_RAW_FPS
        got = list(r)
    assert len(got) == 3 and all(_same(a, b) for a, b in zip(frames, got))
    monkeypatch.setattr(sys, "stdin", _Pipe(raw[:-5]))  # a size that does not divide the bytes: refused at the end
    with io.open("-", size=(37, 21)) as r, pytest.raises(InputError, match="bytes after the last whole 37x21"):
        list(r)
    y4m = write_y4m(tmp_path / "b.y4m", frames).read_bytes()
    monkeypatch.setattr(sys, "stdin", _Pipe(y4m))
    with io.open("-", size=(37, 21)) as r, pytest.raises(InputError, match="Y4M stream.*drop --size"):
        list(r)


def test_stdout_y4m_and_terminals(tmp_path, monkeypatch):
    frames = make_frames(2, 40, 24)
    info = io.VideoInfo(40, 24, Fraction(25), 2)
    out = _Pipe()
    monkeypatch.setattr(sys, "stdout", out)
    with io.open("-", "w", info=info) as w:
        for f in frames:
            w.write(f)
    assert out.buffer.getvalue() == write_y4m(tmp_path / "c.y4m", frames).read_bytes()
    assert list(tmp_path.iterdir()) == [tmp_path / "c.y4m"]  # no temporary file for stdout

    class Terminal(_Pipe):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    with pytest.raises(InputError, match="stdout is a terminal"):
        io.open("-", "w", info=info)
    monkeypatch.setattr(sys, "stdin", Terminal())
    with pytest.raises(InputError, match="stdin is a terminal"):
        io.open("-")


def _write_png(path, img) -> None:
    fmt = "gray" if img.ndim == 2 else "rgb24"
    with av.open(str(path), "w", format="image2") as c:
        s = c.add_stream("png", rate=25)
        s.width, s.height, s.pix_fmt = img.shape[1], img.shape[0], fmt
        for pkt in s.encode(av.VideoFrame.from_ndarray(img, format=fmt)):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


@pytest.mark.parametrize("names,pattern", [
    ("x1.png x2.png x10.png", "x%d.png"),
    ("x01.png x02.png x10.png", "x%02d.png"),
    ("motion01.512.png motion02.512.png", "motion%02d.512.png"),
    ("a%1.png a%2.png", "a%%%d.png"),
    ("one7.jpg notes.txt", "one%d.jpg"),
    ("x01.png x2.png", None),  # 01 and 2 are not printed alike
    ("a1.png b1.png", None),  # two names
    ("a1b1.png a1b2.png a2b1.png", None),  # two numbers vary
    ("nonumber.png", None),
    ("clip.mp4", None),
])
def test_image_sequence_pattern(tmp_path, names, pattern):
    for n in names.split():
        (tmp_path / n).write_bytes(b"")
    assert io.image_sequence_pattern(tmp_path) == pattern
    assert pattern is None or io.is_image_pattern(tmp_path / pattern)


def test_is_image_pattern():
    assert io.is_image_pattern("dir/img%04d.png") and io.is_image_pattern("img%d.JPG")
    assert not io.is_image_pattern("img%04d.mp4")  # not an image
    assert not io.is_image_pattern("img%04d_%d.png") and not io.is_image_pattern("img%s.png")
    assert not io.is_image_pattern("img100%%.png")  # a literal % only


def test_numbered_images_read_as_frames(tmp_path):
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (18, 22), np.uint8) for _ in range(4)]
    for k, img in zip((3, 4, 5, 7), imgs):  # a gap after 5: the sequence is 3..5, as FFmpeg reads it
        _write_png(tmp_path / f"f{k:03d}.png", img)
    with io.open(tmp_path / "f%03d.png") as r:
        assert (r.info.width, r.info.height, r.info.frames, r.info.fps) == (22, 18, 3, Fraction(25))
        got = list(r)
    assert len(got) == 3
    for img, f in zip(imgs, got):  # grey: limited-range luma, neutral chroma
        assert np.abs(f.y.astype(int) - (16 + img.astype(int) * 219 / 255)).max() <= 1
        assert (f.u == 128).all() and (f.v == 128).all()
    with io.open(str(tmp_path / "f%03d.png"), fps=Fraction(30000, 1001)) as r:
        assert r.info.fps == Fraction(30000, 1001)
    _write_png(tmp_path / "w1.png", imgs[0][:16, :16].copy())  # rows without padding: FFmpeg's planes read-only
    with io.open(tmp_path / "w%d.png") as r:
        assert [(f.y.shape, int(f.u.max()), int(f.v.min())) for f in r] == [((16, 16), 128, 128)]
    _write_png(tmp_path / "rgb01.png", rng.integers(0, 256, (8, 8, 3), np.uint8))
    for bad, words in ((tmp_path / "f%04d.png", "no image matches"), (tmp_path / "g%d.png", "no image matches")):
        with pytest.raises(InputError, match=words):
            io.open(bad)
    seq = tmp_path / "seq"
    seq.mkdir()
    _write_png(seq / "a1.png", imgs[0])
    with pytest.raises(InputError) as e:  # a folder: the error names the pattern to give
        io.open(seq)
    assert str(e.value) == f"{seq}: is a folder; give its numbered images' pattern, {seq / 'a%d.png'}"


def test_numbered_images_written(tmp_path):
    frames = make_frames(3, 20, 12)
    info = io.VideoInfo(20, 12, Fraction(25), 3)
    pattern = tmp_path / "out%03d.png"
    with io.open(pattern, "w", info=info) as w:
        for f in frames:
            w.write(f)
        assert not list(tmp_path.glob("out*.png"))  # the images appear only when the writer closes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out001.png", "out002.png", "out003.png"]
    from nvc._atomic import output_mode

    assert (tmp_path / "out001.png").stat().st_mode & 0o777 == output_mode()  # not mkstemp's 0600
    with av.open(str(tmp_path / "out002.png")) as c:
        rgb = next(c.decode(video=0)).to_ndarray(format="rgb24")
    assert np.array_equal(rgb, frames[1].to_rgb())  # nvc.color's RGB, stored losslessly
    with pytest.raises(OutputExistsError, match="out001.png: already exists"):
        io.open(pattern, "w", info=info)
    (tmp_path / "out000.png").write_bytes(b"")  # stale frames of the pattern go with --force
    (tmp_path / "out007.png").write_bytes(b"")
    (tmp_path / "keep.png").write_bytes(b"")
    with io.open(pattern, "w", info=info, force=True) as w:
        w.write(frames[2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.png", "out001.png"]
    with pytest.raises(RuntimeError), io.open(tmp_path / "err%d.png", "w", info=info) as w:
        w.write(frames[0])
        raise RuntimeError("failed mid-way")
    assert not list(tmp_path.glob("*err*"))  # nothing left: no image, no temporary file
    with pytest.raises(InputError, match="lossless"):
        io.open(tmp_path / "x%03d.jpg", "w", info=info)


def test_size_change_is_refused(tmp_path):
    rng = np.random.default_rng(1)
    _write_png(tmp_path / "s1.png", rng.integers(0, 256, (16, 16), np.uint8))
    _write_png(tmp_path / "s2.png", rng.integers(0, 256, (16, 32), np.uint8))
    with io.open(tmp_path / "s%d.png") as r, pytest.raises(InputError) as e:
        list(r)
    assert str(e.value) == ("s%d.png: frame 1 is 32x16, not the video's 16x16 (nvc does not scale: encode the parts "
                            "apart, or scale them first)")

"""nvc.datasets: discovery of the standard test sets, folders of clips, and the sample."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from nvc.datasets import DATASETS, find_sequences
from nvc.errors import InputError, NvcError
from nvc.io import Frame, VideoInfo, frame_bytes
from nvc.io import open as open_video


def fake_raw(path: Path, w: int, h: int, frames: int = 2) -> Path:
    """A sparse raw file of the right length (no data written, so 1080p costs nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:
        f.truncate(frame_bytes(w, h) * frames)
    return path


def write_y4m(path: Path, w: int = 32, h: int = 16, n: int = 2, fps: Fraction = Fraction(25)) -> Path:
    with open_video(path, "w", info=VideoInfo(w, h, fps, n)) as wr:
        for _ in range(n):
            wr.write(Frame(np.zeros((h, w), np.uint8), np.full((h // 2, w // 2), 128, np.uint8),
                           np.full((h // 2, w // 2), 128, np.uint8)))
    return path


def test_uvg_found_recursively_case_insensitive_with_decoys(tmp_path):
    for s in DATASETS["uvg"].sequences:
        fake_raw(tmp_path / "uvg" / "1080p" / f"{s.upper() if s == 'Jockey' else s}_1920x1080_120fps_420_8bit_YUV.yuv",
                 1920, 1080)
    fake_raw(tmp_path / "uvg" / "4k" / "Beauty_3840x2160_120fps_420_8bit_YUV.yuv", 64, 64)  # wrong size: ranked last
    fake_raw(tmp_path / "uvg" / "Beauty_1920x1080_120fps_420_10bit_YUV.yuv", 64, 64)  # 10-bit raw: skipped
    (tmp_path / "uvg" / "Beauty_1920x1080.txt").write_text("not a clip")
    seqs = find_sequences("UVG", tmp_path)
    assert [s.name for s in seqs] == list(DATASETS["uvg"].sequences)
    beauty = seqs[0]
    assert beauty.path.name == "Beauty_1920x1080_120fps_420_8bit_YUV.yuv"
    assert (beauty.width, beauty.height, beauty.fps, beauty.frames) == (1920, 1080, Fraction(120), 2)
    assert seqs[3].path.name.startswith("JOCKEY")


def test_hevc_b_frame_rates_from_names(tmp_path):
    rates = {"BQTerrace": 60, "BasketballDrive": 50, "Cactus": 50, "Kimono1": 24, "ParkScene": 24}
    for s, r in rates.items():
        fake_raw(tmp_path / f"{s}_1920x1080_{r}.yuv", 1920, 1080, 1)
    fake_raw(tmp_path / "CactusFoo_1920x1080_50.yuv", 1920, 1080, 1)  # prefix must end at a separator
    seqs = find_sequences("hevc-b", tmp_path)
    assert {s.name: s.fps for s in seqs} == {k: Fraction(v) for k, v in rates.items()}
    assert next(s for s in seqs if s.name == "Cactus").path.name == "Cactus_1920x1080_50.yuv"


def test_mcl_jcv_subset_and_y4m(tmp_path):
    write_y4m(tmp_path / "videoSRC07_1920x1080_30.y4m")
    fake_raw(tmp_path / "videoSRC12_1920x1080_30.yuv", 1920, 1080, 1)
    seqs = find_sequences("mcl-jcv", tmp_path, ["videosrc07", "videoSRC12"])
    assert [s.name for s in seqs] == ["videoSRC07", "videoSRC12"]
    assert (seqs[0].width, seqs[0].height, seqs[0].fps) == (32, 16, Fraction(25))  # from the y4m header


def test_missing_sequences_one_line_with_url(tmp_path):
    fake_raw(tmp_path / "Beauty_1920x1080_120fps_420_8bit_YUV.yuv", 1920, 1080, 1)
    with pytest.raises(InputError) as e:
        find_sequences("uvg", tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "HoneyBee" in msg and str(tmp_path) in msg and "https://ultravideo.fi" in msg
    assert "Beauty," not in msg  # only the missing ones are listed
    with pytest.raises(InputError) as e:
        find_sequences("mcl-jcv", tmp_path)
    assert "mcl.usc.edu" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(InputError) as e:
        find_sequences("hevc-b", None)
    assert "--root" in str(e.value)
    with pytest.raises(InputError):
        find_sequences("hevc-b", tmp_path / "nope")
    with pytest.raises(InputError):
        find_sequences("uvg", tmp_path, ["Nope"])


def test_folder_dataset(tmp_path):
    fake_raw(tmp_path / "a_64x32_50.yuv", 64, 32, 3)
    write_y4m(tmp_path / "b.y4m")
    (tmp_path / "notes.txt").write_text("x")
    seqs = find_sequences(str(tmp_path))
    assert [(s.name, s.width, s.height, s.fps, s.frames) for s in seqs] == [
        ("a_64x32_50", 64, 32, Fraction(50), 3), ("b", 32, 16, Fraction(25), 2)]
    assert find_sequences(str(tmp_path), sequences=["b"])[0].name == "b"
    fake_raw(tmp_path / "c.yuv", 64, 32, 1)
    with pytest.raises(InputError) as e:
        find_sequences(str(tmp_path))
    assert "size" in str(e.value) and "\n" not in str(e.value)


def test_folder_errors(tmp_path):
    with pytest.raises(InputError):
        find_sequences(str(tmp_path))  # empty
    with pytest.raises(NvcError) as e:
        find_sequences(str(tmp_path / "missing"))
    assert "uvg" in str(e.value)
    (tmp_path / "bad_64x64.yuv").write_bytes(b"\0" * 100)
    with pytest.raises(InputError):
        find_sequences(str(tmp_path))


def test_sample_uses_write_sample(tmp_path, monkeypatch):
    import nvc.sample

    calls = []

    def fake_write_sample(path, *a, **k):
        calls.append(Path(path))
        return write_y4m(Path(path), 48, 32, 3, Fraction(30))

    monkeypatch.setattr(nvc.sample, "write_sample", fake_write_sample)
    seqs = find_sequences("sample", tmp_path)
    assert [(s.name, s.width, s.height, s.frames) for s in seqs] == [("sample", 48, 32, 3)]
    assert calls == [tmp_path / "sample.y4m"]
    find_sequences("sample", tmp_path)
    assert len(calls) == 1  # written once, reused


def test_folder_with_numbered_images_and_avi(tmp_path):
    import av

    write_y4m(tmp_path / "b.y4m")
    seq = tmp_path / "walk"
    seq.mkdir()
    for k in range(1, 4):
        with av.open(str(seq / f"walk.{k:02d}.png"), "w", format="image2") as c:
            s = c.add_stream("png", rate=25)
            s.width, s.height, s.pix_fmt = 16, 8, "gray"
            for pkt in [*s.encode(av.VideoFrame.from_ndarray(np.full((8, 16), k, np.uint8), format="gray")),
                        *s.encode()]:
                c.mux(pkt)
    (tmp_path / "empty").mkdir()  # no images: not a sequence
    with av.open(str(tmp_path / "c.avi"), "w") as c:
        s = c.add_stream("ffv1", rate=10)
        s.width, s.height, s.pix_fmt = 16, 16, "yuv420p"
        for pkt in [*s.encode(av.VideoFrame.from_ndarray(np.zeros((24, 16), np.uint8), format="yuv420p")),
                    *s.encode()]:
            c.mux(pkt)
    seqs = find_sequences(str(tmp_path))
    assert [(s.name, s.width, s.height, s.frames) for s in seqs] == [
        ("b", 32, 16, 2), ("c", 16, 16, 1), ("walk", 16, 8, 3)]
    assert seqs[2].path == seq / "walk.%02d.png"
    only = find_sequences(str(seq))  # the folder of images itself
    assert [(s.name, s.frames) for s in only] == [("walk", 3)]
    with open_video(only[0].path) as r:
        assert np.allclose([int(f.y[0, 0]) for f in r], [16 + k * 219 / 255 for k in range(1, 4)], atol=1)


def test_folder_order_is_by_file_name(tmp_path):
    write_y4m(tmp_path / "a.y4m")
    write_y4m(tmp_path / "a-1.y4m")  # '-' sorts before '.': a-1.y4m comes first, as the files are named
    assert [s.name for s in find_sequences(str(tmp_path))] == ["a-1", "a"]

"""benchmarks/device_kit.py: clips cut for the device machine keep exactly the frames training reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .conftest import load_script, make_frames, write_y4m

kit = load_script("device_kit")


def _clip(path: Path, n: int) -> Path:
    return write_y4m(path, make_frames(n, 64, 48))  # the suffix picks the container (.mkv: FFV1)


def _decoded(path: Path) -> list[np.ndarray]:
    import av

    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def test_long_clip_is_cut_to_its_first_frames_without_reencoding(tmp_path):
    src = _clip(tmp_path / "long.mkv", 12)
    assert kit.cut(src, tmp_path / "cut.mkv", 5) == 5
    full, cut = _decoded(src), _decoded(tmp_path / "cut.mkv")
    assert len(cut) == 5
    assert all(np.array_equal(a, b) for a, b in zip(full[:5], cut))


def test_short_clip_is_copied_byte_for_byte(tmp_path):
    src = _clip(tmp_path / "short.mkv", 4)
    assert kit.cut(src, tmp_path / "copy.mkv", 5) == 4
    assert (tmp_path / "copy.mkv").read_bytes() == src.read_bytes()


def test_a_cut_clip_is_cut_shorter_to_fit(tmp_path):
    src = _clip(tmp_path / "long.mkv", 12)
    dst = tmp_path / "cut.mkv"
    kit.cut(src, dst, 10)
    size = dst.stat().st_size
    n = kit.cut_to_fit(src, dst, 10, size // 2)
    assert 1 <= n < 10 and dst.stat().st_size <= size - size // 2
    full, cut = _decoded(src), _decoded(dst)
    assert len(cut) == n and all(np.array_equal(a, b) for a, b in zip(full[:n], cut))


def test_the_limit_is_the_samplers():
    assert kit.max_frames() == 400


def test_a_folder_of_frames_loses_its_last_frames_to_fit(tmp_path):
    for i in range(6):
        (tmp_path / f"f{i:02d}.png").write_bytes(b"x" * 5000)
    assert kit.trim_folder(tmp_path, 2 * kit.disk_bytes(tmp_path / "f00.png")) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"f{i:02d}.png" for i in range(4)]
    assert kit.trim_folder(tmp_path, 10**9) == 2  # never below two frames

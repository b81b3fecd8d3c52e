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


def test_the_kit_is_cut_until_it_fits(tmp_path, monkeypatch):
    """Sources shrink, the largest first and at most half at a time, until kit + tracked files fit with the margin;
    each may be cut again (the first version stopped after one cut of each, over the limit)."""
    import json
    import sys

    data = tmp_path / "train" / "video"
    data.mkdir(parents=True)
    for name, n in (("a.mkv", 40), ("b.mkv", 20)):
        _clip(data / name, n)
    frames = data / "seq"
    frames.mkdir()
    for i in range(10):
        (frames / f"{i:02d}.png").write_bytes(bytes(range(256)) * 40)
    monkeypatch.setattr(kit, "download", lambda dest: (dest.mkdir(parents=True), (dest / "w.whl").write_bytes(b"w")))
    monkeypatch.setattr(kit, "tracked_bytes", lambda: 0)
    out = tmp_path / "kit"
    full = sum(kit.disk_bytes(p) for p in data.rglob("*") if p.is_file())
    monkeypatch.setattr(kit, "MARGIN", 4096)
    monkeypatch.setattr(kit, "CARRY_LIMIT", full // 4 + 4096)  # three quarters must go: two halvings of some source
    monkeypatch.setattr(sys, "argv", ["device_kit", "--data", str(tmp_path / "train"), "--out", str(out)])
    assert kit.main() == 0
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["travels_bytes"] <= kit.CARRY_LIMIT - kit.MARGIN
    assert kit.tree_bytes(out) <= kit.CARRY_LIMIT
    assert all("to fit the limit" in v for v in manifest["videos"].values())
    full_a = _decoded(data / "a.mkv")
    cut_a = _decoded(out / "data" / "video" / "a.mkv")
    assert 1 <= len(cut_a) < 40 and all(np.array_equal(x, y) for x, y in zip(full_a, cut_a))

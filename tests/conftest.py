"""Shared fixtures: tiny synthetic clips, the shared data folder (skipped when absent)."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NVC_SHARED", REPO.parent / "shared"))


def make_frames(n: int, width: int, height: int, seed: int = 0) -> list:
    """Smooth moving synthetic frames (yuv420p planes) for tests."""
    from nvc.io import Frame

    rng = np.random.RandomState(seed)
    cw, ch = (width + 1) // 2, (height + 1) // 2
    yy, xx = np.mgrid[0:height, 0:width]
    base = rng.randint(0, 255, (height // 8 + 2, width // 8 + 2)).astype(np.float64)
    frames = []
    for t in range(n):
        big = np.kron(base, np.ones((8, 8)))
        y = (0.6 * big[:height, t : t + width] if big.shape[1] >= width + t else 0.6 * big[:height, :width])
        y = np.clip(y + 40 + 30 * np.sin((xx + 2 * t) / 7.0) , 16, 235).astype(np.uint8)
        u = np.clip(128 + 20 * np.sin(np.arange(cw)[None, :] / 5.0 + t / 3) + 0 * np.zeros((ch, 1)), 16, 240).astype(np.uint8)
        v = np.clip(128 + 20 * np.cos(np.arange(ch)[:, None] / 4.0 + t / 5) + 0 * np.zeros((1, cw)), 16, 240).astype(np.uint8)
        frames.append(Frame(y, u, v))
    return frames


def write_yuv(path: Path, frames: list) -> Path:
    with path.open("wb") as f:
        for fr in frames:
            f.write(fr.tobytes())
    return path


def write_y4m(path: Path, frames: list, fps: Fraction = Fraction(25)) -> Path:
    from nvc.io import VideoInfo
    from nvc.io import open as open_video

    info = VideoInfo(frames[0].width, frames[0].height, fps, len(frames))
    with open_video(path, "w", info=info) as w:
        for fr in frames:
            w.write(fr)
    return path


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "data").is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent (set NVC_SHARED)")
    return SHARED


@pytest.fixture(scope="session")
def lite():
    """The shipped default model (loaded once)."""
    import torch

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    from nvc.models import load

    return load("nvc-lite")

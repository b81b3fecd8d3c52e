"""Shared fixtures: tiny synthetic clips, the shared data folder (skipped when absent)."""

from __future__ import annotations

import importlib.util
import math
import os
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NVC_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"


def load_script(name: str):
    """``benchmarks/<name>.py`` imported as a module (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fill_reference_weights(model) -> None:
    """The fill rule of shared/reference/README.md, in state_dict order: every floating, non-empty entry
    except names ending in ``bound`` or containing ``scale_table`` / ``scale_bound`` / ``.quantiles`` gets
    ``randn(shape, seed=crc32(name), float64).float() * scale`` (``scale = 1/sqrt(prod(shape[1:]))`` for 2+
    dims, else 0.05; ``+1`` for ``*norm.weight``). Aliased entries share storage, so the later name's
    values stay, as in the reference."""
    import torch

    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point() or t.numel() == 0:
                continue
            if name.endswith("bound") or any(s in name for s in ("scale_table", "scale_bound", ".quantiles")):
                continue
            shape = tuple(t.shape)
            scale = 1.0 / math.sqrt(math.prod(shape[1:])) if len(shape) >= 2 else 0.05
            g = torch.Generator().manual_seed(zlib.crc32(name.encode()))
            v = torch.randn(shape, generator=g, dtype=torch.float64).float() * scale
            if name.endswith("norm.weight"):
                v += 1.0
            t.copy_(v)


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


def spy_threads(monkeypatch, owner, *names: str) -> list[tuple[str, int]]:
    """Wraps ``owner``'s callables ``names`` (for the test) so that each call records its name and torch's CPU thread
    count at the call; returns the list they append to."""
    import torch

    seen: list[tuple[str, int]] = []
    for name in names:
        def wrapped(*a, _real=getattr(owner, name), _name=name, **k):
            seen.append((_name, torch.get_num_threads()))
            return _real(*a, **k)
        monkeypatch.setattr(owner, name, wrapped)
    return seen


@pytest.fixture(scope="module")
def one_thread():
    """Runs a module's tests with one torch thread (big models; keeps the 2-core machine responsive)."""
    import torch

    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


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

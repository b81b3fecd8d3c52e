"""The built-in sample clip, generated procedurally (no third-party media ships with nvc).

A 352x288 (CIF) clip at 30 fps: a textured landscape-like background (sums of oriented sinusoids and
smoothed noise) that pans slowly, with two textured discs moving across it and a gentle brightness drift.
Deterministic: the same frames on every machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from .io import Frame, VideoInfo, VideoReader

SAMPLE_SIZE = (352, 288)
SAMPLE_FPS = Fraction(30)
SAMPLE_FRAMES = 16


def _smooth_noise(rng: np.random.RandomState, h: int, w: int, cell: int) -> np.ndarray:
    g = rng.rand(h // cell + 3, w // cell + 3)
    ys = np.arange(h) / cell
    xs = np.arange(w) / cell
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    fy, fx = fy * fy * (3 - 2 * fy), fx * fx * (3 - 2 * fx)
    a = g[y0][:, x0]
    b = g[y0][:, x0 + 1]
    c = g[y0 + 1][:, x0]
    d = g[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def _canvas(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    lum = np.zeros((height, width))
    for cell, amp in ((64, 0.5), (24, 0.25), (8, 0.15), (3, 0.08)):
        lum += amp * _smooth_noise(rng, height, width, cell)
    for _ in range(4):
        theta, freq, phase = rng.uniform(0, np.pi), rng.uniform(0.05, 0.3), rng.uniform(0, 2 * np.pi)
        lum += 0.05 * np.sin(freq * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)
    lum = (lum - lum.min()) / (lum.max() - lum.min())
    hue = _smooth_noise(rng, height, width, 48)[..., None]
    ground = hue * np.array([0.35, 0.55, 0.2]) + (1 - hue) * np.array([0.6, 0.45, 0.3])
    base = ground * (0.35 + 0.9 * lum[..., None])
    horizon = 0.35 * height + 12 * np.sin(xx / 37.0)
    sky = np.clip((horizon - yy) / 6.0, 0, 1)[..., None]
    sky_col = np.array([0.55, 0.7, 0.95]) * (0.85 + 0.15 * lum[..., None])
    return np.clip(base * (1 - sky) + sky_col * sky, 0.02, 0.98)


def sample_frames(n: int = SAMPLE_FRAMES, size: tuple[int, int] = SAMPLE_SIZE, seed: int = 2024) -> Iterator[Frame]:
    """Yields the sample's frames (yuv420p, BT.709 limited)."""
    from .color import rgb_to_yuv420
    import torch

    w, h = size
    margin = 4 * n + 8
    canvas = _canvas(w + margin, h + 8, seed)
    rng = np.random.RandomState(seed + 1)
    disc_tex = [_canvas(96, 96, seed + 2 + i) for i in range(2)]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    starts = [(rng.uniform(40, w - 120), rng.uniform(120, h - 60)), (rng.uniform(60, w - 60), rng.uniform(90, h - 90))]
    vel = [(3.0, -0.7), (-2.2, 1.1)]
    for t in range(n):
        ox = int(round(2.5 * t))
        img = canvas[4 : 4 + h, ox : ox + w].copy()
        for i, ((sx, sy), (vx, vy), r) in enumerate(zip(starts, vel, (30, 22))):
            cx, cy = sx + vx * t, sy + vy * t
            d = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
            alpha = np.clip(r + 0.5 - d, 0, 1)[..., None]
            tex = disc_tex[i]
            ty = np.clip((yy - cy + 48).astype(int), 0, 95)
            tx = np.clip((xx - cx + 48).astype(int), 0, 95)
            img = img * (1 - alpha) + tex[ty, tx] * alpha * 0.8 + alpha * np.array([0.2, 0.05, 0.0]) * (i == 0)
        img = np.clip(img * (1.0 + 0.004 * t), 0, 1)
        rgb = torch.from_numpy(img.transpose(2, 0, 1)[None].astype(np.float32))
        yield Frame(*rgb_to_yuv420(rgb))


class SampleReader(VideoReader):
    """A reader over the built-in sample, usable wherever a file reader is."""

    def __init__(self, frames: int = SAMPLE_FRAMES) -> None:
        self.info = VideoInfo(SAMPLE_SIZE[0], SAMPLE_SIZE[1], SAMPLE_FPS, frames)
        self.path = Path("sample.y4m")

    def __iter__(self) -> Iterator[Frame]:
        return sample_frames(self.info.frames or SAMPLE_FRAMES)


def write_sample(path: str | Path, frames: int = SAMPLE_FRAMES, force: bool = False) -> Path:
    """Writes the sample clip (by extension: .y4m, .yuv, .mkv, .mp4) and returns its path."""
    from .io import open as open_video

    p = Path(path)
    reader = SampleReader(frames)
    with open_video(p, "w", info=reader.info, force=force) as w:
        for f in reader:
            w.write(f)  # type: ignore[union-attr]
    return p

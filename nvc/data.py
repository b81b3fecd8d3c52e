"""Training data: short clips cut from real videos and pseudo-video made by moving over photos.

A *clip* is a float tensor (T, 3, S, S) in [0, 1]. Two sources:

- real clips (any file PyAV reads, or a folder of numbered PNGs), split at scene cuts, decoded once
  into memory as uint8 (downscaled so the longer side is at most ``max_side``);
- photos, turned into pseudo-video by a random pan (up to ``max_shift`` px/frame), zoom, small rotation
  and brightness drift, sampled with bilinear ``grid_sample``.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .io import CLIP_EXTS

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}  # photos, and frames of image folders (read with PIL)
VIDEO_EXTS = set(CLIP_EXTS)


def _load_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _resize_max(frame: np.ndarray, max_side: int) -> np.ndarray:
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    k = max_side / max(h, w)
    t = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
    t = F.interpolate(t, size=(round(h * k), round(w * k)), mode="area")
    return t[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()


def _split_cuts(frames: list[np.ndarray], threshold: float = 40.0) -> list[np.ndarray]:
    """Splits a list of frames where the mean absolute difference jumps (a scene cut)."""
    shots, start = [], 0
    for i in range(1, len(frames)):
        diff = np.abs(frames[i].astype(np.int16) - frames[i - 1].astype(np.int16)).mean()
        if diff > threshold:
            shots.append(np.stack(frames[start:i]))
            start = i
    shots.append(np.stack(frames[start:]))
    return [s for s in shots if len(s) >= 2]


def load_video_frames(path: Path, max_side: int, max_frames: int) -> list[np.ndarray]:
    """Decodes up to ``max_frames`` RGB frames from a video file or a folder of images."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)[:max_frames]
        return [_resize_max(_load_image(p), max_side) for p in files]
    from .io import open as nvc_open

    frames = []
    with nvc_open(path, "r") as reader:
        for frame in reader:
            frames.append(_resize_max(frame.to_rgb(), max_side))
            if len(frames) >= max_frames:
                break
    return frames


def photo_files(root: str | Path) -> list[Path]:
    """The photos of a training folder: image files under a folder named ``images``, sorted."""
    root = Path(root)
    return [p for p in sorted(root.rglob("*"))
            if p.is_file() and p.suffix.lower() in IMAGE_EXTS and "images" in p.relative_to(root).parts]


def video_sources(root: str | Path) -> list[Path]:
    """The videos of a training folder, sorted: video files anywhere, and folders of numbered images under ``video``."""
    root = Path(root)
    return [p for p in sorted(root.rglob("*"))
            if (p.is_file() and p.suffix.lower() in VIDEO_EXTS)
            or (p.is_dir() and "video" in p.relative_to(root).parts
                and any(c.suffix.lower() in IMAGE_EXTS for c in p.iterdir()))]


@dataclass
class ClipSampler:
    """Draws random training clips; see the module docstring."""

    shots: list[np.ndarray]
    photos: list[np.ndarray]
    photo_prob: float = 0.5
    max_shift: float = 6.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @classmethod
    def from_folder(cls, root: str | Path, max_side: int = 720, max_frames: int = 400, **kw: object) -> ClipSampler:
        photos = [_load_image(p) for p in photo_files(root)]
        shots = [s for p in video_sources(root) for s in _split_cuts(load_video_frames(p, max_side, max_frames))]
        return cls(shots=shots, photos=photos, **kw)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ sampling
    def clip(self, frames: int, size: int) -> Tensor:
        use_photo = self.photos and (not self.shots or self.rng.random() < self.photo_prob)
        out = self._photo_clip(frames, size) if use_photo else self._real_clip(frames, size)
        if self.rng.random() < 0.5:
            out = out.flip(-1)
        if self.rng.random() < 0.5:  # play backwards: as valid a motion as forwards
            out = out.flip(0)
        return out

    def batch(self, batch: int, frames: int, size: int) -> Tensor:
        return torch.stack([self.clip(frames, size) for _ in range(batch)])

    def _real_clip(self, frames: int, size: int) -> Tensor:
        candidates = [s for s in self.shots if len(s) >= frames]
        shot = self.rng.choice(candidates)
        stride = self.rng.choice([1, 1, 2]) if len(shot) >= 2 * frames else 1
        t0 = self.rng.randrange(0, len(shot) - stride * (frames - 1))
        seq = shot[t0 : t0 + stride * frames : stride]
        h, w = seq.shape[1:3]
        scale = self.rng.uniform(1.0, min(2.0, min(h, w) / size)) if min(h, w) > size else 1.0
        crop = max(size, int(size * scale))
        crop_h, crop_w = min(crop, h), min(crop, w)
        y = self.rng.randrange(0, h - crop_h + 1)
        x = self.rng.randrange(0, w - crop_w + 1)
        t = torch.from_numpy(np.ascontiguousarray(seq[:, y : y + crop_h, x : x + crop_w])).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(size, size), mode="area") if (crop_h, crop_w) != (size, size) else t
        if t.shape[-1] < size or t.shape[-2] < size:
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        return (t / 255.0).clamp(0, 1)

    def _photo_clip(self, frames: int, size: int) -> Tensor:
        img = self.rng.choice(self.photos)
        h, w = img.shape[:2]
        margin = size + 2 * math.ceil(self.max_shift * frames) + 8
        # Random downscale first (k >= 1), so the clip is not always at the photo's native detail.
        k = self.rng.uniform(1.0, max(1.0, min(2.5, min(h, w) / margin)))
        side = min(int(margin * k), h, w)
        y = self.rng.randrange(0, h - side + 1)
        x = self.rng.randrange(0, w - side + 1)
        src = torch.from_numpy(np.ascontiguousarray(img[y : y + side, x : x + side])).permute(2, 0, 1)[None].float()
        src = src / 255.0
        angle = math.radians(self.rng.uniform(-1.0, 1.0))
        zoom = self.rng.uniform(-0.03, 0.03)
        bright = self.rng.uniform(-0.02, 0.02)
        vx = self.rng.uniform(-self.max_shift, self.max_shift)
        vy = self.rng.uniform(-self.max_shift, self.max_shift)
        thetas = []
        px = 2.0 / side  # one source pixel in normalized coordinates
        base = size * (side / margin) / side  # fraction of the source the output covers
        for t in range(frames):
            a = base / ((1.0 + zoom) ** t)
            c, s = math.cos(angle * t), math.sin(angle * t)
            thetas.append([[a * c, -a * s, vx * t * px * (side / margin)], [a * s, a * c, vy * t * px * (side / margin)]])
        theta = torch.tensor(thetas, dtype=torch.float32)
        grid = F.affine_grid(theta, [frames, 3, size, size], align_corners=False)
        out = F.grid_sample(src.expand(frames, -1, -1, -1), grid, mode="bilinear", align_corners=False)
        gains = torch.tensor([(1.0 + bright) ** t for t in range(frames)]).view(frames, 1, 1, 1)
        return (out * gains).clamp(0, 1)


VIMEO_LIST = "sep_trainlist.txt"


def is_vimeo(root: str | Path) -> bool:
    """True for a Vimeo-90k septuplet folder: ``sep_trainlist.txt`` and ``sequences/``."""
    r = Path(root)
    return (r / VIMEO_LIST).is_file() and (r / "sequences").is_dir()


@dataclass
class VimeoSampler:
    """Clips from Vimeo-90k septuplets (``sequences/xxxxx/xxxx/im1..im7.png``, listed in ``sep_trainlist.txt``).

    Each clip is ``frames`` consecutive frames (``frames <= 7``) from a random start, a random
    ``size`` x ``size`` crop (same place in every frame), random horizontal flip and time reversal. The
    PNGs are read on demand (the dataset does not fit in memory).
    """

    root: Path
    sequences: list[str]
    seed: int = 0

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    @classmethod
    def from_folder(cls, root: str | Path, seed: int = 0, **_: object) -> VimeoSampler:
        r = Path(root)
        seqs = [s.strip() for s in (r / VIMEO_LIST).read_text().splitlines() if s.strip()]
        if not seqs:
            raise ValueError(f"{r / VIMEO_LIST}: no sequences listed")
        return cls(root=r, sequences=seqs, seed=seed)

    def clip(self, frames: int, size: int) -> Tensor:
        if not 1 <= frames <= 7:
            raise ValueError(f"Vimeo septuplets have 7 frames; cannot draw {frames}")
        seq = self.root / "sequences" / self.rng.choice(self.sequences)
        t0 = self.rng.randrange(0, 7 - frames + 1)
        imgs = np.stack([_load_image(seq / f"im{t0 + i + 1}.png") for i in range(frames)])
        h, w = imgs.shape[1:3]
        y = self.rng.randrange(0, max(h - size, 0) + 1)
        x = self.rng.randrange(0, max(w - size, 0) + 1)
        t = torch.from_numpy(np.ascontiguousarray(imgs[:, y : y + size, x : x + size])).permute(0, 3, 1, 2).float()
        if t.shape[-2:] != (size, size):  # frames smaller than the crop: upscale
            t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
        t = (t / 255.0).clamp(0, 1)
        if self.rng.random() < 0.5:
            t = t.flip(-1)
        if self.rng.random() < 0.5:
            t = t.flip(0)
        return t

    def batch(self, batch: int, frames: int, size: int) -> Tensor:
        return torch.stack([self.clip(frames, size) for _ in range(batch)])


def open_sampler(root: str | Path, *, photo_prob: float, seed: int) -> ClipSampler | VimeoSampler:
    """The training clip source for a data folder: Vimeo-90k septuplets when it is laid out as such,
    otherwise any folder of videos / images (:class:`ClipSampler`, pseudo-motion over photos)."""
    if is_vimeo(root):
        return VimeoSampler.from_folder(root, seed=seed)
    return ClipSampler.from_folder(root, photo_prob=photo_prob, seed=seed)

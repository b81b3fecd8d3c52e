#!/usr/bin/env python
"""Speed and memory of nvc (end to end, through ``nvc.api``) against x264 on the same frames, in one run.

    python benchmarks/speed.py --sizes cif,720p,1080p:2 --frames 4 --json benchmarks/results/speed-cpu.json
    python benchmarks/speed.py --sizes none --flat 24,96 --size cif      # memory flatness only

What it measures, per frame size (CIF 352x288, 720p, 1080p, or any WxH; ``NAME:N`` overrides ``--frames``):

- **clip**: the first frames of ``../shared/data/eval/carphone_176x144_30fps_420_8bit.y4m`` when present,
  else nvc's built-in sample, each converted to RGB (``nvc.color``), resized with torch bicubic
  (``align_corners=False``, aspect ratio not kept), and converted back to yuv420p; written to a temporary
  .y4m (not timed);
- **nvc**: ``nvc.api.encode`` (.y4m -> .nvc) and ``nvc.api.decode`` (.nvc -> .yuv), the model loaded once
  before timing (``nvc.models.load`` is memoised for the run). fps = frames / wall time of the API call.
  The time is split, with timers monkeypatched in by this script, into: ``network`` (the analysis,
  synthesis, hyper, temporal-prior and fusion nets: every ``nn.Sequential`` of the model), ``entropy``
  (CompressAI's ``GaussianConditional``/``EntropyBottleneck`` ``compress``/``decompress``: rANS plus the
  symbol/index preparation they do; for the one string per frame (formats 2.0 and 3.0), ``nvc.entropy.encode_parts`` and
  ``SymbolReader.read``: rANS alone), ``model_other`` (the rest of ``compress_frame``/``decompress_frame``:
  gains, index building, padding of the rANS strings, clamps), ``colour`` (``nvc.color``: yuv420<->RGB,
  padding), ``io`` (video reader/writer, .nvc writer/reader, payload (de)serialisation), ``psnr`` (the
  encoder's per-frame PSNR bookkeeping in ``nvc.api``) and ``other`` (the remainder). Per-frame times give
  an I-frame time, a mean P-frame time and a GoP-weighted fps (one I + gop-1 P).
  ``codec`` time = wall - io - psnr - other, i.e. what is comparable to the anchors' codec-call timings;
- **x264** on the same frames via PyAV (``nvc.anchors``): ``x264-zl`` = nvc's anchor config
  (``preset=medium tune=zerolatency``, no B-frames, keyint = GoP, CRF ``--crf``) and ``x264-medium``
  (``preset=medium`` with its default tune: 3 B-frames, lookahead; keyint = GoP). Timings are the FFmpeg
  encode/decode calls only;
- **ratios**: nvc seconds per frame / x264 seconds per frame (end to end, and codec-only);
- **memory**: peak RSS sampled every 10 ms from /proc/self/statm during each phase, and the process
  ``ru_maxrss``; on CUDA ``torch.cuda.max_memory_allocated``;
- **complexity**: MACs counted with forward hooks on every Conv2d/ConvTranspose2d (and, separately, GDN)
  for one intra and one inter frame, encode and decode, at a 256x192 frame (a multiple of the model's
  alignment, so every feature map scales exactly with the padded area); reported per padded pixel (kMAC/px)
  and per frame at each size. Parameter counts: the whole model and the conv/GDN layers a decode runs.

``--flat N1,N2`` (with ``--size``): encodes and decodes clips of N1, N2, ... frames and reports each run's
peak RSS, the RSS after each frame and its slope, to show memory does not grow with clip length.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

CARPHONE = REPO.parent / "shared" / "data" / "eval" / "carphone_176x144_30fps_420_8bit.y4m"
NAMED_SIZES = {"qcif": (176, 144), "cif": (352, 288), "480p": (854, 480), "720p": (1280, 720), "1080p": (1920, 1080)}
SPLIT_KEYS = ("network", "entropy", "model_other", "colour", "io", "psnr", "other")
MAC_SIZE = (256, 192)  # multiple of nvc-lite's alignment (64): MACs scale exactly with the padded area
SCHEMA_VERSION = 1


# ------------------------------------------------------------------------------------------ sizes
def parse_size(text: str) -> tuple[str, int, int]:
    t = text.strip().lower()
    if t in NAMED_SIZES:
        return (t, *NAMED_SIZES[t])
    from nvc.io import parse_size as _ps

    w, h = _ps(t)
    return t, w, h


def parse_sizes(text: str, frames: int) -> list[tuple[str, int, int, int]]:
    """``cif,720p,1080p:2`` -> [(name, w, h, frames)]; ``none`` -> []."""
    if text.strip().lower() in ("", "none"):
        return []
    out = []
    for item in text.split(","):
        name, _, n = item.partition(":")
        nm, w, h = parse_size(name)
        if w % 2 or h % 2:
            raise SystemExit(f"--sizes: {nm} must have an even width and height (yuv420p)")
        out.append((nm, w, h, int(n) if n else frames))
    return out


# ------------------------------------------------------------------------------------------ memory
def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return ru_maxrss_bytes()


def ru_maxrss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


class RssSampler:
    """A daemon thread sampling the resident set every ``interval`` s; ``window()`` gives a phase's peak."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self._peak = _rss_bytes()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            r = _rss_bytes()
            with self._lock:
                if r > self._peak:
                    self._peak = r

    @contextlib.contextmanager
    def window(self, out: dict[str, Any], key: str = "peak_rss_mb") -> Iterator[None]:
        start = _rss_bytes()
        with self._lock:
            self._peak = start
        try:
            yield
        finally:
            end = _rss_bytes()
            with self._lock:
                peak = max(self._peak, end)
            out[key] = round(peak / 2**20, 1)
            out["rss_start_mb"] = round(start / 2**20, 1)

    def close(self) -> None:
        self._stop.set()
        self._t.join(timeout=1)


# ------------------------------------------------------------------------------------------ timers
class Timers:
    """Accumulates seconds per category; nested entries of one category count once (outermost)."""

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync
        self.enabled = False
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._depth: dict[str, int] = defaultdict(int)
        self._start: dict[str, float] = {}

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def enter(self, cat: str) -> None:
        if not self.enabled:
            return
        self._depth[cat] += 1
        if self._depth[cat] == 1:
            if self.sync:
                self.sync()
            self._start[cat] = time.perf_counter()

    def exit(self, cat: str) -> None:
        if not self.enabled or self._depth[cat] == 0:
            return
        self._depth[cat] -= 1
        if self._depth[cat] == 0:
            if self.sync:
                self.sync()
            self.seconds[cat] += time.perf_counter() - self._start.pop(cat)
            self.calls[cat] += 1

    def wrap(self, fn: Callable[..., Any], cat: str) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            self.enter(cat)
            try:
                return fn(*a, **k)
            finally:
                self.exit(cat)

        timed.__wrapped__ = fn  # type: ignore[attr-defined]
        return timed

    def wrap_iter(self, fn: Callable[..., Iterator[Any]], cat: str) -> Callable[..., Iterator[Any]]:
        def timed_iter(*a: Any, **k: Any) -> Iterator[Any]:
            self.enter(cat)
            try:
                it = iter(fn(*a, **k))
            finally:
                self.exit(cat)
            while True:
                self.enter(cat)
                try:
                    item = next(it)
                except StopIteration:
                    return
                finally:
                    self.exit(cat)
                yield item

        return timed_iter


class Patches:
    """setattr with undo; restores inherited attributes by deleting the override."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def set(self, obj: Any, name: str, value: Any) -> None:
        own = name in vars(obj) if isinstance(obj, type) else hasattr(obj, name)
        old = vars(obj)[name] if isinstance(obj, type) and own else getattr(obj, name, None)
        setattr(obj, name, value)
        self._undo.append((lambda: setattr(obj, name, old)) if own else (lambda: delattr(obj, name)))

    def add(self, undo: Callable[[], None]) -> None:
        self._undo.append(undo)

    def restore(self) -> None:
        while self._undo:
            self._undo.pop()()


def instrument(model: Any, timers: Timers) -> Patches:
    """Monkeypatches the timers into nvc.entropy, nvc.color (as nvc.codec sees it), nvc.io, nvc.bitstream, nvc.api."""
    from torch import nn

    import nvc.entropy as em

    import nvc.api
    import nvc.bitstream
    import nvc.codec
    import nvc.io

    import nvc.models.lite

    p = Patches()
    for cls in (em.GaussianConditional, em.EntropyBottleneck):
        for name in ("compress", "decompress"):
            p.set(cls, name, timers.wrap(getattr(cls, name), "entropy"))
    # one string per frame (formats 2.0 and 3.0): coded by encode_parts, read by SymbolReader
    p.set(em.SymbolReader, "read", timers.wrap(em.SymbolReader.read, "entropy"))
    for mod in (em, nvc.models.lite):
        p.set(mod, "encode_parts", timers.wrap(em.encode_parts, "entropy"))
    for name in ("yuv420_to_rgb", "rgb_to_yuv420", "pad"):
        p.set(nvc.codec, name, timers.wrap(getattr(nvc.codec, name), "colour"))
    # the model: whole frame calls, and every nn.Sequential (the networks) with forward hooks
    for name in ("compress_frame", "decompress_frame"):
        fn = getattr(model, name)
        object.__setattr__(model, name, timers.wrap(fn, "model"))
        p.add(lambda name=name: model.__dict__.pop(name, None))
    for m in model.modules():
        if isinstance(m, nn.Sequential):
            h1 = m.register_forward_pre_hook(lambda *_: timers.enter("network"))
            h2 = m.register_forward_hook(lambda *_: timers.exit("network"))
            p.add(h1.remove)
            p.add(h2.remove)
    # inference helpers that run the networks without nn.Sequential.forward (nested entries count once):
    # exact mode (nvc.models.exact) and nvc-lite's memory-light float path
    import nvc.models.exact
    import nvc.models.lite

    for name in ("run", "run_rows"):
        p.set(nvc.models.exact, name, timers.wrap(getattr(nvc.models.exact, name), "network"))
    for name in ("run_light", "row_stripes"):
        p.set(nvc.models.lite, name, timers.wrap(getattr(nvc.models.lite, name), "network"))
    # I/O: video readers/writers, the .nvc container, payload (de)serialisation
    p.set(nvc.api, "open_video", timers.wrap(nvc.api.open_video, "io"))
    for cls in (nvc.io.AvReader, nvc.io.RawYuvReader):
        p.set(cls, "__iter__", timers.wrap_iter(vars(cls)["__iter__"], "io"))
    for cls in (nvc.io.RawYuvWriter, nvc.io.Y4mWriter, nvc.io.AvWriter):
        p.set(cls, "write", timers.wrap(vars(cls)["write"], "io"))
    p.set(nvc.io.VideoWriter, "close", timers.wrap(vars(nvc.io.VideoWriter)["close"], "io"))
    p.set(nvc.io.AvWriter, "close", timers.wrap(vars(nvc.io.AvWriter)["close"], "io"))
    for cls, names in ((nvc.bitstream.StreamWriter, ("write", "close")), (nvc.bitstream.StreamReader, ("read", "close"))):
        for name in names:
            p.set(cls, name, timers.wrap(vars(cls)[name], "io"))
    for name in ("open", "encode_payload", "decode_payload"):
        p.set(nvc.bitstream, name, timers.wrap(getattr(nvc.bitstream, name), "io"))
    p.set(nvc.api, "psnr_planes", timers.wrap(nvc.api.psnr_planes, "psnr"))
    return p


def split_of(timers: Timers, wall: float) -> dict[str, float]:
    s = timers.seconds
    net, ent = s.get("network", 0.0), s.get("entropy", 0.0)
    model = s.get("model", 0.0)
    out = {
        "network": net, "entropy": ent, "model_other": max(0.0, model - net - ent),
        "colour": s.get("colour", 0.0), "io": s.get("io", 0.0), "psnr": s.get("psnr", 0.0),
    }
    out["other"] = max(0.0, wall - model - out["colour"] - out["io"] - out["psnr"])
    return {k: round(v, 4) for k, v in out.items()}


# ------------------------------------------------------------------------------------------ clips
def _source_frames(n: int) -> tuple[str, Iterator[Any]]:
    """n frames of the source clip (ping-pong when it is shorter), and its name."""
    from nvc.io import open as open_video

    if CARPHONE.is_file():
        with open_video(CARPHONE, "r") as r:
            base = [f for _, f in zip(range(min(n, 300)), r)]
        name = CARPHONE.name
    else:
        from nvc.sample import sample_frames

        base = list(sample_frames(min(n, 16)))
        name = "nvc.sample"

    def gen() -> Iterator[Any]:
        period = max(1, 2 * len(base) - 2)
        for i in range(n):
            j = i % period
            yield base[j if j < len(base) else period - j]

    return name, gen()


def resized(frames: Iterator[Any], width: int, height: int) -> Iterator[Any]:
    """yuv420p -> RGB -> torch bicubic resize -> yuv420p (nvc.color), one frame at a time."""
    import torch
    import torch.nn.functional as F

    from nvc.color import rgb_to_yuv420, yuv420_to_rgb
    from nvc.io import Frame

    for f in frames:
        if (f.width, f.height) == (width, height):
            yield f
            continue
        with torch.inference_mode():
            rgb = F.interpolate(yuv420_to_rgb(f.y, f.u, f.v), size=(height, width), mode="bicubic", align_corners=False)
            yield Frame(*rgb_to_yuv420(rgb.clamp_(0.0, 1.0)))


def write_clip(path: Path, width: int, height: int, n: int) -> str:
    from nvc.io import VideoInfo
    from nvc.io import open as open_video

    name, src = _source_frames(n)
    with open_video(path, "w", info=VideoInfo(width, height, Fraction(30), n), force=True) as w:
        for f in resized(src, width, height):
            w.write(f)  # type: ignore[union-attr]
    return name


def read_clip(path: Path) -> Iterator[Any]:
    from nvc.io import open as open_video

    with open_video(path, "r") as r:
        yield from r


# ------------------------------------------------------------------------------------------ model
def memoise_load(device: str) -> tuple[Any, float, Patches]:
    """Loads nvc-lite once and makes ``nvc.models.load`` return it for the rest of the run."""
    import nvc.models

    orig = nvc.models.load
    t0 = time.perf_counter()
    model = orig("nvc-lite", None, device=device)
    seconds = time.perf_counter() - t0
    cache = {("nvc-lite", None, device): model}

    def load(name: str = "nvc-lite", checkpoint: Any = None, device: str = "cpu", **options: Any) -> Any:
        if options:  # model options: not memoised
            return orig(name, checkpoint, device=device, **options)
        key = (name, str(checkpoint) if checkpoint else None, device)
        if key not in cache:
            cache[key] = orig(name, checkpoint, device=device)
        return cache[key]

    p = Patches()
    p.set(nvc.models, "load", load)
    return model, seconds, p


def count_macs(model: Any, device: Any, quality: int, size: tuple[int, int] = MAC_SIZE) -> dict[str, Any]:
    """MACs of Conv2d/ConvTranspose2d (and GDN) per padded pixel, for intra/inter encode/decode at ``size``."""
    import torch
    from torch import nn

    from nvc.color import pad, yuv420_to_rgb
    from nvc.models.layers import GDN

    w, h = size
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    touched: dict[str, set[int]] = defaultdict(set)
    phase = [""]

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        x = inp[0]
        if isinstance(m, nn.ConvTranspose2d):
            k = x.numel() // x.shape[0] * (m.out_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            counts[phase[0]]["conv"] += k * x.shape[0]
        elif isinstance(m, nn.Conv2d):
            k = out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
            counts[phase[0]]["conv"] += k
        else:  # GDN: a 1x1 C->C convolution of x^2 plus the elementwise ops
            counts[phase[0]]["gdn"] += out.numel() * out.shape[1]
        touched[phase[0]].add(id(m))

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, GDN))]
    _, src = _source_frames(2)
    frames = list(resized(src, w, h))
    try:
        with torch.inference_mode():
            xs = [pad(yuv420_to_rgb(f.y, f.u, f.v, device), model.alignment) for f in frames]
            phase[0] = "encode_intra"
            s0, sh0, _, ctx0 = model.compress_frame(xs[0], None, quality)
            phase[0] = "encode_inter"
            s1, sh1, _, _ = model.compress_frame(xs[1], ctx0, quality)
            phase[0] = "decode_intra"
            _, dctx = model.decompress_frame(s0, sh0, None, quality)
            phase[0] = "decode_inter"
            model.decompress_frame(s1, sh1, dctx, quality)
    finally:
        for hk in hooks:
            hk.remove()
    px = xs[0].shape[-1] * xs[0].shape[-2]
    modules = {id(m): m for m in model.modules()}
    out: dict[str, Any] = {"measured_at": f"{w}x{h}", "per": "padded pixel"}
    for ph, c in counts.items():
        out[ph] = {"kmac_per_px": round(c["conv"] / px / 1e3, 3), "kmac_per_px_with_gdn": round((c["conv"] + c["gdn"]) / px / 1e3, 3)}
    dec_ids = touched["decode_intra"] | touched["decode_inter"]
    out["params"] = sum(p.numel() for p in model.parameters())
    out["decode_layer_params"] = sum(p.numel() for i in dec_ids for p in modules[i].parameters(recurse=False))
    out["encode_layer_params"] = sum(
        p.numel() for i in touched["encode_intra"] | touched["encode_inter"] for p in modules[i].parameters(recurse=False)
    )
    return out


# ------------------------------------------------------------------------------------------ x264
def _x264_anchors() -> dict[str, Callable[..., Any]]:
    import nvc.anchors as anchors

    class _Medium(anchors.Anchor):
        """x264 preset medium, default tune (B-frames, lookahead); keyint = GoP like nvc's anchor."""

        def options(self, crf: int, gop: int, preset: str | None = None) -> dict[str, str]:
            return {"crf": str(crf), "preset": preset or self.preset,
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=3"}

    def zl(frames: Any, crf: int, gop: int) -> Any:
        return anchors.encode_decode(frames, "x264", crf, gop=gop, preset="medium")

    def medium(frames: Any, crf: int, gop: int) -> Any:
        a = anchors.ANCHORS["x264"]
        anchors.ANCHORS["x264-medium"] = _Medium("x264-medium", a.encoder, a.decoders, a.default_crfs, "medium", a.crf_range)
        try:
            return anchors.encode_decode(frames, "x264-medium", crf, gop=gop, preset="medium")
        finally:
            anchors.ANCHORS.pop("x264-medium", None)

    return {"x264-zl": zl, "x264-medium": medium}


# ------------------------------------------------------------------------------------------ runs
def _per_frame(stamps: list[float], t0: float) -> list[float]:
    out, last = [], t0
    for s in stamps:
        out.append(s - last)
        last = s
    return out


def _gop_fps(times: list[float], gop: int) -> float | None:
    if len(times) < 2:
        return None
    ti, tp = times[0], float(np.mean(times[1:]))
    return round(gop / (ti + (gop - 1) * tp), 4)


def _phase(wall: float, n: int, timers: Timers, stamps: list[float], t0: float, gop: int) -> dict[str, Any]:
    split = split_of(timers, wall)
    times = _per_frame(stamps, t0)
    codec = wall - split["io"] - split["psnr"] - split["other"]
    return {
        "frames": n, "seconds": round(wall, 4), "fps": round(n / wall, 4),
        "codec_seconds": round(codec, 4), "codec_fps": round(n / codec, 4) if codec > 0 else None,
        "frame_seconds": [round(t, 4) for t in times],
        "i_frame_seconds": round(times[0], 4) if times else None,
        "p_frame_seconds": round(float(np.mean(times[1:])), 4) if len(times) > 1 else None,
        "gop_weighted_fps": _gop_fps(times, gop),
        "split_seconds": split,
        "split_pct": {k: round(100 * v / wall, 1) for k, v in split.items()},
        "calls": dict(timers.calls),
    }


def nvc_run(src: Path, work: Path, n: int, args: argparse.Namespace, timers: Timers, sampler: RssSampler,
            gpu: bool, progress_rss: list[int] | None = None) -> dict[str, Any]:
    """One nvc encode (src -> .nvc) and decode (.nvc -> .yuv) through nvc.api, timed and split."""
    import torch

    import nvc.api

    stream, out = work / "clip.nvc", work / "decoded.yuv"
    res: dict[str, Any] = {}
    for what in ("encode", "decode"):
        stamps: list[float] = []
        rss_trace: list[int] = []

        def progress(done: int, total: int | None, stamps: list[float] = stamps, rss: list[int] = rss_trace) -> None:
            stamps.append(time.perf_counter())
            if progress_rss is not None:
                rss.append(_rss_bytes())

        mem: dict[str, Any] = {}
        if gpu:
            torch.cuda.reset_peak_memory_stats()
        timers.reset()
        timers.enabled = True
        with sampler.window(mem):
            t0 = time.perf_counter()
            if what == "encode":
                rep = nvc.api.encode(src, stream, quality=args.quality, gop=args.gop, frames=n, device=args.device,
                                     force=True, progress=progress, numeric=args.numeric)
            else:
                nvc.api.decode(stream, out, device=args.device, force=True, progress=progress)
            wall = time.perf_counter() - t0
        timers.enabled = False
        ph = _phase(wall, n, timers, stamps, t0, args.gop)
        ph.update(mem)
        if gpu:
            ph["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if progress_rss is not None:
            ph["rss_per_frame_mb"] = [round(r / 2**20, 1) for r in rss_trace]
        if what == "encode":
            res.update(bytes=rep.bytes, bpp=round(rep.bpp, 5), psnr_yuv=round(rep.psnr_yuv, 3),
                       api_encode_seconds=round(rep.seconds, 4))
        res[what] = ph
    return res


def warmup(src: Path, work: Path, args: argparse.Namespace, n: int) -> float:
    """Untimed encode of ``n`` frames at this size (first-call allocations and oneDNN primitive creation)."""
    import nvc.api

    t0 = time.perf_counter()
    nvc.api.encode(src, work / "warm.nvc", quality=args.quality, gop=args.gop, frames=n, device=args.device, force=True,
                   numeric=args.numeric)
    nvc.api.decode(work / "warm.nvc", work / "warm.yuv", device=args.device, force=True)
    return time.perf_counter() - t0


def x264_run(src: Path, n: int, args: argparse.Namespace, sampler: RssSampler) -> dict[str, Any]:
    out: dict[str, Any] = {}
    w = h = 0
    for name, fn in _x264_anchors().items():
        mem: dict[str, Any] = {}
        with sampler.window(mem):
            r = fn(read_clip(src), args.crf, args.gop)
        w, h = r.frames[0].width, r.frames[0].height
        out[name] = {
            "crf": args.crf, "frames": len(r.frames), "bytes": r.bytes, "bpp": round(r.bits / (len(r.frames) * w * h), 5),
            "encode_seconds": round(r.encode_seconds, 4), "decode_seconds": round(r.decode_seconds, 4),
            "encode_fps": round(len(r.frames) / r.encode_seconds, 3), "decode_fps": round(len(r.frames) / r.decode_seconds, 3),
            **mem,
        }
        del r
    return out


def ratios(nvc: dict[str, Any], x264: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name, a in x264.items():
        n = a["frames"]
        e_x, d_x = a["encode_seconds"] / n, a["decode_seconds"] / n
        out[name] = {
            "encode": round(nvc["encode"]["seconds"] / nvc["encode"]["frames"] / e_x, 1),
            "decode": round(nvc["decode"]["seconds"] / nvc["decode"]["frames"] / d_x, 1),
            "encode_codec_only": round(nvc["encode"]["codec_seconds"] / nvc["encode"]["frames"] / e_x, 1),
            "decode_codec_only": round(nvc["decode"]["codec_seconds"] / nvc["decode"]["frames"] / d_x, 1),
        }
    return out


def device_info(dev: Any) -> dict[str, Any]:
    import importlib.metadata

    import av
    import torch

    name = None
    if dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.lower().startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        name = name or platform.processor() or platform.machine()
    return {
        "type": dev.type, "name": name, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        "torch": torch.__version__, "compressai": importlib.metadata.version("compressai"), "av": av.__version__,
        "python": platform.python_version(), "platform": platform.platform(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def flat_check(counts: list[int], size: tuple[str, int, int], args: argparse.Namespace, work: Path,
               timers: Timers, sampler: RssSampler, gpu: bool) -> dict[str, Any]:
    name, w, h = size
    runs = []
    for n in counts:
        src = work / f"flat_{n}.y4m"
        write_clip(src, w, h, n)
        r = nvc_run(src, work, n, args, timers, sampler, gpu, progress_rss=[])
        src.unlink()
        row: dict[str, Any] = {"frames": n}
        for what in ("encode", "decode"):
            ph = r[what]
            trace = ph.pop("rss_per_frame_mb")
            half = trace[len(trace) // 2:]
            slope = float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) >= 2 else 0.0
            row[what] = {
                "peak_rss_mb": ph["peak_rss_mb"], "rss_start_mb": ph["rss_start_mb"],
                "rss_after_first_frame_mb": trace[0] if trace else None, "rss_after_last_frame_mb": trace[-1] if trace else None,
                "rss_slope_kb_per_frame_second_half": round(slope * 1024, 2), "fps": ph["fps"],
            }
        print(f"flat {name} {n} frames: encode peak {row['encode']['peak_rss_mb']} MB, "
              f"decode peak {row['decode']['peak_rss_mb']} MB", flush=True)
        runs.append(row)
    peaks = [max(r["encode"]["peak_rss_mb"], r["decode"]["peak_rss_mb"]) for r in runs]
    return {"size": name, "width": w, "height": h, "runs": runs,
            "peak_rss_growth_mb": round(peaks[-1] - peaks[0], 1) if peaks else None,
            "ru_maxrss_mb": round(ru_maxrss_bytes() / 2**20, 1)}


# ------------------------------------------------------------------------------------------ output
def print_table(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(width=200)
    d, m = res["device"], res["model"]
    t = Table(title=f"nvc-lite q{res['quality']} ({res.get('numeric', 'exact')}) vs x264 CRF {res['crf']} on {d['name']} ({d['torch_threads']} torch threads)")
    for c in ("size", "n", "nvc fps enc/dec", "x264-zl fps enc/dec", "x264-med fps enc/dec", "nvc÷zl enc/dec",
              "nvc÷med enc/dec", "enc split %", "dec split %", "RSS MB enc/dec", "GMAC dec I/P"):
        t.add_column(c, justify="right")
    t.caption = "ratios = nvc s/frame ÷ x264 s/frame (end to end); split % = network/entropy/colour/io/rest"
    for s in res["sizes"]:
        n, x, r = s["nvc"], s["x264"], s["ratios"]

        def sp(ph: dict[str, Any]) -> str:
            p = ph["split_pct"]
            return "/".join(f"{p[k]:.0f}" for k in ("network", "entropy", "colour", "io")) + \
                f"/{p['model_other'] + p['psnr'] + p['other']:.0f}"

        t.add_row(
            f"{s['width']}x{s['height']}", str(s["frames"]), f"{n['encode']['fps']:.3g}/{n['decode']['fps']:.3g}",
            f"{x['x264-zl']['encode_fps']:.0f}/{x['x264-zl']['decode_fps']:.0f}",
            f"{x['x264-medium']['encode_fps']:.0f}/{x['x264-medium']['decode_fps']:.0f}",
            f"{r['x264-zl']['encode']:.0f}/{r['x264-zl']['decode']:.0f}",
            f"{r['x264-medium']['encode']:.0f}/{r['x264-medium']['decode']:.0f}",
            sp(n["encode"]), sp(n["decode"]),
            f"{n['encode']['peak_rss_mb']:.0f}/{n['decode']['peak_rss_mb']:.0f}",
            f"{s['gmac_per_frame']['decode_intra']:.1f}/{s['gmac_per_frame']['decode_inter']:.1f}",
        )
    if res["sizes"]:
        con.print(t)
    mac = m["macs"]
    con.print(f"model: {m['params'] / 1e6:.2f} M parameters ({mac['decode_layer_params'] / 1e6:.2f} M in decode layers); "
              f"decode kMAC/px intra {mac['decode_intra']['kmac_per_px']}, inter {mac['decode_inter']['kmac_per_px']} "
              f"(with GDN {mac['decode_intra']['kmac_per_px_with_gdn']}/{mac['decode_inter']['kmac_per_px_with_gdn']}); "
              f"encode intra {mac['encode_intra']['kmac_per_px']}, inter {mac['encode_inter']['kmac_per_px']}")
    if res.get("flat"):
        f = res["flat"]
        con.print(f"memory flatness at {f['size']}: " + ", ".join(
            f"{r['frames']} frames: peak {r['encode']['peak_rss_mb']:.0f}/{r['decode']['peak_rss_mb']:.0f} MB enc/dec, "
            f"slope {r['encode']['rss_slope_kb_per_frame_second_half']:.0f}/{r['decode']['rss_slope_kb_per_frame_second_half']:.0f} KB/frame"
            for r in f["runs"]))
    con.print(f"process peak RSS (ru_maxrss): {res['ru_maxrss_mb']:.0f} MB")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="cif,720p,1080p",
                    help="comma list: cif, 720p, 1080p, qcif, 480p or WxH; NAME:N codes N frames at that size; 'none' for none")
    ap.add_argument("--frames", type=int, default=8, help="frames per size (default 8)")
    ap.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--quality", type=int, default=3)
    ap.add_argument("--numeric", default="exact", choices=("exact", "fast"),
                    help="nvc's numeric mode (default exact, nvc's default; fast = float32, same-device streams)")
    ap.add_argument("--gop", type=int, default=32, help="GoP for nvc and x264 keyint (default 32)")
    ap.add_argument("--crf", type=int, default=27, help="x264 CRF (default 27)")
    ap.add_argument("--warmup", type=int, default=2,
                    help="frames encoded+decoded untimed at each size before timing (default 2: one I, one P; 0 = none)")
    ap.add_argument("--flat", default=None, help="memory flatness check: comma list of clip lengths, e.g. 24,96")
    ap.add_argument("--size", default="cif", help="frame size for --flat (default cif)")
    ap.add_argument("--mac-size", default="256x192",
                    help="frame size for the MAC count (default 256x192; a multiple of 64 keeps kMAC/px exact)")
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("--workdir", default=None, help="where the temporary clips and streams go (default: a temp dir)")
    return ap


def main(argv: list[str] | None = None) -> dict[str, Any]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    import torch

    from nvc.codec import resolve_device

    if args.threads:
        torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    args.device = str(dev)
    gpu = dev.type == "cuda"
    sizes = parse_sizes(args.sizes, args.frames)
    flat = [int(x) for x in args.flat.split(",")] if args.flat else []
    timers = Timers(sync=torch.cuda.synchronize if gpu else None)
    sampler = RssSampler()
    model, load_seconds, undo_load = memoise_load(args.device)
    patches = instrument(model, timers)
    res: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "command": shlex.join(["python", "benchmarks/speed.py", *argv]),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "device": device_info(dev),
        "source": CARPHONE.name if CARPHONE.is_file() else "nvc.sample",
        "resize": "nvc.color yuv420p->RGB, torch bicubic (align_corners=False), RGB->yuv420p",
        "quality": args.quality, "numeric": args.numeric, "gop": args.gop, "crf": args.crf, "warmup_frames": args.warmup,
        "split_keys": list(SPLIT_KEYS), "complete": False,
    }
    try:
        macs = count_macs(model, dev, args.quality, parse_size(args.mac_size)[1:])
        res["model"] = {"name": model.name, "load_seconds": round(load_seconds, 3), "params": macs["params"], "macs": macs}
        res["sizes"] = []
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            work = Path(tmp)
            for name, w, h, n in sizes:
                src = work / f"{name}.y4m"
                write_clip(src, w, h, n)
                entry: dict[str, Any] = {"name": name, "width": w, "height": h, "frames": n}
                from nvc.color import padded_size

                pw, ph = padded_size(w, h, model.alignment)
                entry["padded"] = [pw, ph]
                entry["gmac_per_frame"] = {k: round(macs[k]["kmac_per_px"] * pw * ph / 1e6, 3)
                                           for k in ("encode_intra", "encode_inter", "decode_intra", "decode_inter")}
                if args.warmup:
                    entry["warmup_seconds"] = round(warmup(src, work, args, min(args.warmup, n)), 3)
                mem: dict[str, Any] = {}
                with sampler.window(mem):
                    entry["nvc"] = nvc_run(src, work, n, args, timers, sampler, gpu)
                    entry["x264"] = x264_run(src, n, args, sampler)
                entry["peak_rss_mb"] = mem["peak_rss_mb"]
                entry["ratios"] = ratios(entry["nvc"], entry["x264"])
                res["sizes"].append(entry)
                save(res, args.json)
                e, d = entry["nvc"]["encode"], entry["nvc"]["decode"]
                print(f"{name} {w}x{h} x{n}: nvc encode {e['fps']:.3g} fps, decode {d['fps']:.3g} fps; "
                      f"x264-zl {entry['x264']['x264-zl']['encode_fps']:.3g}/{entry['x264']['x264-zl']['decode_fps']:.3g} fps; "
                      f"ratios {entry['ratios']}", flush=True)
                src.unlink()
            if flat:
                res["flat"] = flat_check(flat, parse_size(args.size), args, work, timers, sampler, gpu)
    finally:
        patches.restore()
        undo_load.restore()
        sampler.close()
    res["complete"] = True
    save(res, args.json)
    print_table(res)
    return res


def save(res: dict[str, Any], path: str | None) -> None:
    """Writes the JSON (also after each size, with ``complete: false``, so a stopped run keeps its results)."""
    res["ru_maxrss_mb"] = round(ru_maxrss_bytes() / 2**20, 1)
    if not path:
        return
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = out.with_suffix(out.suffix + ".tmp")
    tmp_out.write_text(json.dumps(res, indent=1) + "\n")
    os.replace(tmp_out, out)


if __name__ == "__main__":
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    main()

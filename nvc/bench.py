"""``nvc bench``: rate-distortion benchmark of an nvc model against x264/x265 (and SVT-AV1) anchors.

Protocol (see benchmarks/README.md for the full description and the results.json schema):

- for every sequence of the dataset, the first ``frames`` frames (default 96);
- nvc: every quality of the model (or ``qualities``), GoP ``gop``; a real .nvc bitstream is written to
  ``out/streams`` and decoded back with :func:`nvc.api.decode`; rate = the .nvc file size in bits;
- anchors: every CRF of each anchor (:mod:`nvc.anchors`, low delay, keyint = ``gop``); rate = packet bytes × 8;
- quality against the source frames (:mod:`nvc.metrics`): per-frame PSNR-Y/U/V, PSNR-YUV (6:1:1),
  PSNR-RGB (BT.709), MS-SSIM (RGB), each averaged over frames;
- BD-rate (Akima) of nvc against each anchor, per sequence, and its mean over sequences, for PSNR-RGB,
  PSNR-YUV and MS-SSIM, with bits per pixel as the rate;
- speed: frames / seconds spent in the encoder / decoder (nvc: as reported by nvc.api, model loading
  excluded; anchors: the FFmpeg encode/decode calls only);
- memory: peak resident memory of the worker process while the point's encode+decode runs, sampled from
  /proc/self/statm every 10 ms (``peak_rss_mb``) and its growth above the level at the start of the point
  (``rss_delta_mb``); on CUDA also ``torch.cuda.max_memory_allocated`` (``peak_gpu_mb``). Where /proc is
  missing, ru_maxrss (a process high-water mark) is used instead.

Every finished point is stored at once as ``out/points/<sequence>__<codec>__<q|crf><n>.json``; a rerun with
the same ``out`` skips them (resume). ``jobs`` runs points in parallel processes. Under torchrun (RANK and
WORLD_SIZE set) rank r takes the sequences i with i % WORLD_SIZE == r, and rank 0 waits for the others and
writes the merged results.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from .datasets import Sequence, find_sequences
from .errors import InputError, NvcError
from .ladder import ladder_for

__all__ = ["run_bench", "run_point", "BenchConfig", "Point", "BD_METRICS", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
BD_METRICS = ("psnr_rgb", "psnr_yuv", "ms_ssim")
PLOT_METRICS = ("psnr_y", "psnr_yuv", "psnr_rgb", "ms_ssim")
CSV_FIELDS = (
    "sequence", "codec", "param", "value", "frames", "width", "height", "fps", "bytes", "bits", "bpp", "kbps",
    "psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "psnr_rgb", "ms_ssim", "encode_seconds", "decode_seconds",
    "encode_fps", "decode_fps", "peak_rss_mb", "rss_delta_mb", "peak_gpu_mb", "device", "stream",
)
# protocol fields that must match for a rerun to reuse stored points
_RESUME_KEYS = ("version", "model", "checkpoint", "weights", "frames", "gop", "numeric", "quality_ladder", "refine",
                "postfilter", "encoder")
# what a protocol.json written before the key existed meant ("encoder": unrecorded, so never the same)
_RESUME_DEFAULTS = {"refine": None, "postfilter": False}  # format 3.0 had no post-filter


@dataclass(frozen=True)
class Point:
    """One rate point to measure: a codec at one quality (nvc) or CRF (anchors) on one sequence."""

    sequence: Sequence
    codec: str  # the nvc model name, or an anchor name
    param: str  # "quality" or "crf"
    value: int

    @property
    def key(self) -> str:
        tag = "q" if self.param == "quality" else "crf"
        return f"{_safe(self.sequence.name)}__{_safe(self.codec)}__{tag}{self.value}"


@dataclass
class BenchConfig:
    out: str
    model: str = "nvc-lite"
    checkpoint: str | None = None
    frames: int = 96
    gop: int = 32
    device: str = "auto"
    metrics_device: str = "auto"
    anchor_codecs: tuple[str, ...] = field(default_factory=tuple)
    numeric: str | None = None  # nvc's numeric mode (None: the model's default)
    flat_quality: bool = False  # every frame at its point's quality (else the encoder's quality ladder)
    refine: int | None = None  # nvc's encoder-side latent refinement steps per frame (None: the model's defaults)
    postfilter: bool = True  # nvc's post-filter (nvc.postfilter)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


# ------------------------------------------------------------------------------------------ memory
class _MemWatch:
    """Peak RSS of this process while the block runs (a 10 ms sampling thread), plus CUDA peak memory."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.peak_rss_mb: float | None = None
        self.rss_delta_mb: float | None = None
        self.peak_gpu_mb: float | None = None

    @staticmethod
    def _rss() -> int | None:
        try:
            with open("/proc/self/statm", "rb") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError, AttributeError):
            return None

    def _cuda(self) -> Any:
        import sys

        torch = sys.modules.get("torch")
        if torch is None or not torch.cuda.is_available() or not (self.device in ("auto", "cuda") or
                                                                   self.device.startswith("cuda")):
            return None
        return torch

    def __enter__(self) -> _MemWatch:
        self._base = self._rss()
        self._peak = self._base or 0
        self._stop = threading.Event()
        if self._base is not None:
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        else:
            import resource

            self._maxrss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        torch = self._cuda()
        if torch is not None:
            torch.cuda.reset_peak_memory_stats()
        return self

    def _poll(self) -> None:
        while not self._stop.wait(0.01):
            r = self._rss()
            if r is not None and r > self._peak:
                self._peak = r

    def __exit__(self, *exc: object) -> None:
        mb = 1 << 20
        if self._base is not None:
            self._stop.set()
            self._thread.join()
            r = self._rss()
            self._peak = max(self._peak, r or 0)
            self.peak_rss_mb = self._peak / mb
            self.rss_delta_mb = (self._peak - self._base) / mb
        else:
            import resource
            import sys

            scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
            m = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            self.peak_rss_mb = m * scale / mb
            self.rss_delta_mb = (m - self._maxrss0) * scale / mb
        torch = self._cuda()
        if torch is not None:
            self.peak_gpu_mb = torch.cuda.max_memory_allocated() / mb


# ------------------------------------------------------------------------------------------ points
def _open_source(seq: Sequence) -> Any:
    from .io import open as open_video

    if seq.is_raw:
        return open_video(seq.path, "r", size=(seq.width, seq.height), fps=seq.fps)
    return open_video(seq.path, "r")


def _metrics_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _compare(seq: Sequence, recon: Iterable[Any], n: int, cfg: BenchConfig) -> dict[str, float]:
    from .metrics import MetricAccumulator

    acc = MetricAccumulator(_metrics_device(cfg.metrics_device))
    with _open_source(seq) as src:
        it = iter(recon)
        for i, ref in enumerate(src):
            if i >= n:
                break
            rec = next(it, None)
            if rec is None:
                raise NvcError(f"{seq.name}: the decoded video has {i} frames, expected {n}")
            acc.add(ref, rec)
    if acc.frames != n:
        raise NvcError(f"{seq.name}: compared {acc.frames} frames, expected {n}")
    return acc.result()


def _record(p: Point, n: int, nbytes: int, enc_s: float, dec_s: float, q: dict[str, float], mem: _MemWatch,
            device: str, stream: str) -> dict[str, Any]:
    s = p.sequence
    bits = nbytes * 8
    rec: dict[str, Any] = {
        "sequence": s.name, "codec": p.codec, "param": p.param, "value": p.value, "frames": n,
        "width": s.width, "height": s.height, "fps": float(s.fps), "bytes": nbytes, "bits": bits,
        "bpp": bits / (n * s.width * s.height), "kbps": bits / (n / float(s.fps)) / 1000.0,
    }
    rec.update({k: q[k] for k in ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "psnr_rgb", "ms_ssim")})
    rec.update({
        "encode_seconds": enc_s, "decode_seconds": dec_s,
        "encode_fps": n / enc_s if enc_s > 0 else None, "decode_fps": n / dec_s if dec_s > 0 else None,
        "peak_rss_mb": mem.peak_rss_mb, "rss_delta_mb": mem.rss_delta_mb, "peak_gpu_mb": mem.peak_gpu_mb,
        "device": device, "stream": stream,
        "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    })
    return rec


def _nvc_point(p: Point, cfg: BenchConfig) -> dict[str, Any]:
    from . import api
    from .io import open as open_video

    out = Path(cfg.out)
    stream = out / "streams" / f"{p.key}.nvc"
    stream.parent.mkdir(parents=True, exist_ok=True)
    tmp = out / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    recon = tmp / f"{p.key}.{os.getpid()}.yuv"
    s = p.sequence
    kw: dict[str, Any] = {"model": cfg.model, "quality": p.value, "gop": cfg.gop, "frames": cfg.frames,
                          "device": cfg.device, "force": True, "numeric": cfg.numeric,
                          "flat_quality": cfg.flat_quality, "refine": cfg.refine, "postfilter": cfg.postfilter}
    dkw: dict[str, Any] = {"device": cfg.device, "force": True}
    if cfg.checkpoint:
        kw["checkpoint"] = dkw["checkpoint"] = cfg.checkpoint
    if s.is_raw:
        kw.update(size=(s.width, s.height), fps=s.fps)
    try:
        with _MemWatch(cfg.device) as mem:
            er = api.encode(str(s.path), str(stream), **kw)
            dr = api.decode(str(stream), str(recon), **dkw)
        n = int(er.frames)
        if int(dr.frames) != n:
            raise NvcError(f"{p.key}: encoded {n} frames but decoded {dr.frames}")
        with open_video(recon, "r", size=(s.width, s.height), fps=s.fps) as r:
            q = _compare(s, r, n, cfg)
        nbytes = stream.stat().st_size
        device = str(getattr(er, "device", cfg.device))
        return _record(p, n, nbytes, float(er.seconds), float(dr.seconds), q, mem, device,
                       str(stream.relative_to(out)))
    finally:
        recon.unlink(missing_ok=True)


_STREAM_EXT = {"x264": ".264", "x265": ".265", "svtav1": ".obu"}


def _anchor_point(p: Point, cfg: BenchConfig) -> dict[str, Any]:
    from .anchors import encode_decode

    out = Path(cfg.out)
    stream = out / "streams" / f"{p.key}{_STREAM_EXT.get(p.codec, '.bin')}"
    stream.parent.mkdir(parents=True, exist_ok=True)
    s = p.sequence
    with _open_source(s) as src, _MemWatch("cpu") as mem:
        res = encode_decode(src, p.codec, p.value, fps=s.fps, gop=cfg.gop, max_frames=cfg.frames,
                            stream_path=stream)
    n = len(res.frames)
    q = _compare(s, res.frames, n, cfg)
    return _record(p, n, res.bytes, res.encode_seconds, res.decode_seconds, q, mem, "cpu",
                   str(stream.relative_to(out)))


def run_point(p: Point, cfg: BenchConfig) -> dict[str, Any]:
    """Measures one point (encode, decode, metrics); returns its record (see benchmarks/README.md)."""
    if p.param == "quality":
        return _nvc_point(p, cfg)
    return _anchor_point(p, cfg)


def _point_path(out: Path, p: Point) -> Path:
    return out / "points" / f"{p.key}.json"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, Fraction):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o).__name__)


def _do_point(p: Point, cfg: BenchConfig) -> tuple[str, str | None]:
    """Runs and stores one point; returns (key, error message or None). Used in-process and in workers."""
    try:
        rec = run_point(p, cfg)
    except NvcError as e:
        return p.key, str(e).splitlines()[0] if str(e) else type(e).__name__
    except Exception as e:  # noqa: BLE001 - one broken point must not lose the others; reported at the end
        return p.key, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    _write_json(_point_path(Path(cfg.out), p), rec)
    return p.key, None


def _worker_init(threads: int) -> None:
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:  # pragma: no cover
        pass


# ------------------------------------------------------------------------------------------ summary
def _curve(points: list[dict[str, Any]], metric: str) -> tuple[list[float], list[float]]:
    pts = sorted((p for p in points if p.get(metric) is not None and p.get("bpp")), key=lambda p: p["bpp"])
    return [p["bpp"] for p in pts], [p[metric] for p in pts]


def _bd(anchor_pts: list[dict[str, Any]], test_pts: list[dict[str, Any]], metric: str) -> tuple[float | None, str]:
    """The BD-rate of ``test_pts`` against ``anchor_pts`` on ``metric``, or None and why there is none."""
    from .metrics import bd_rate

    ra, da = _curve(anchor_pts, metric)
    rt, dt = _curve(test_pts, metric)
    if len(ra) < 2 or len(rt) < 2:
        return None, "fewer than 2 rate points"
    try:
        v = bd_rate(ra, da, rt, dt)
    except (NvcError, ValueError, AssertionError) as e:
        return None, str(e).removeprefix("BD-rate: ")
    if math.isnan(v) or math.isinf(v):
        return None, "the curves' quality ranges do not overlap"
    return v, ""


def _average_curve(per_seq: dict[str, dict[str, list[dict[str, Any]]]], codec: str) -> list[dict[str, Any]]:
    """Mean bpp, kbps, metrics and speeds over sequences, per rate point present in every sequence."""
    by_value: dict[int, list[dict[str, Any]]] = {}
    seqs = [s for s in per_seq if per_seq[s].get(codec)]
    for s in seqs:
        for p in per_seq[s][codec]:
            by_value.setdefault(p["value"], []).append(p)
    out = []
    keys = ("bpp", "kbps", "psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "psnr_rgb", "ms_ssim", "encode_fps",
            "decode_fps", "peak_rss_mb", "peak_gpu_mb")
    for v, pts in sorted(by_value.items()):
        if len(pts) != len(seqs):
            continue
        row: dict[str, Any] = {"codec": codec, "param": pts[0]["param"], "value": v, "sequences": len(pts)}
        for k in keys:
            vals = [p[k] for p in pts if p.get(k) is not None]
            row[k] = sum(vals) / len(vals) if vals else None
        out.append(row)
    return sorted(out, key=lambda r: r["bpp"])


def _summarize(protocol: dict[str, Any], records: list[dict[str, Any]], nvc_codec: str, anchors: list[str],
               failures: list[dict[str, str]]) -> dict[str, Any]:
    per_seq: dict[str, dict[str, list[dict[str, Any]]]] = {s["name"]: {} for s in protocol["sequences"]}
    for r in records:
        per_seq.setdefault(r["sequence"], {}).setdefault(r["codec"], []).append(r)
    for codecs in per_seq.values():
        for pts in codecs.values():
            pts.sort(key=lambda r: r["bpp"])
    bd_seq: dict[str, dict[str, dict[str, float | None]]] = {}
    missing: dict[str, dict[str, dict[str, str]]] = {}  # anchor -> metric -> sequence -> why it has no BD-rate
    for s, codecs in per_seq.items():
        bd_seq[s] = {}
        for a in anchors:
            bd_seq[s][a] = {}
            for m in BD_METRICS:
                v, why = _bd(codecs.get(a, []), codecs.get(nvc_codec, []), m)
                bd_seq[s][a][m] = v
                if v is None and codecs.get(a) and codecs.get(nvc_codec):
                    missing.setdefault(a, {}).setdefault(m, {})[s] = why
    bd: dict[str, dict[str, float | None]] = {}
    bd_n: dict[str, dict[str, int]] = {}
    for a in anchors:
        bd[a], bd_n[a] = {}, {}
        for m in BD_METRICS:
            vals = [bd_seq[s][a][m] for s in bd_seq if bd_seq[s][a][m] is not None]
            bd[a][m] = sum(vals) / len(vals) if vals else None  # type: ignore[arg-type]
            bd_n[a][m] = len(vals)
    codecs_all = ([nvc_codec] if any(r["codec"] == nvc_codec for r in records) else []) + anchors
    return {
        "protocol": protocol,
        "sequences": per_seq,
        "average": {c: _average_curve(per_seq, c) for c in codecs_all},
        "bd_rate": bd,
        "bd_rate_sequences": bd_n,  # how many sequences each mean is over
        "bd_rate_per_sequence": bd_seq,
        "bd_rate_missing": missing,  # the sequences a mean leaves out, and why
        "failures": failures,
    }


def _write_csv(path: Path, records: list[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(CSV_FIELDS), extrasaction="ignore")
        w.writeheader()
        for r in sorted(records, key=lambda r: (r["sequence"], r["codec"], r["bpp"])):
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in CSV_FIELDS})
    os.replace(tmp, path)


def _plot(path: Path, results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    avg = results["average"]
    fig, axes = plt.subplots(1, len(PLOT_METRICS), figsize=(4.2 * len(PLOT_METRICS), 3.8))
    n_seq = len(results["sequences"])
    labels = {"psnr_y": "PSNR-Y (dB)", "psnr_yuv": "PSNR-YUV 6:1:1 (dB)", "psnr_rgb": "PSNR-RGB (dB)",
              "ms_ssim": "MS-SSIM (RGB)"}
    for ax, m in zip(axes, PLOT_METRICS):
        for codec, pts in avg.items():
            xs = [p["bpp"] for p in pts if p.get(m) is not None]
            ys = [p[m] for p in pts if p.get(m) is not None]
            if xs:
                ax.plot(xs, ys, marker="o", markersize=3, label=codec)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(labels[m])
        ax.grid(True, alpha=0.3)
    axes[0].legend(loc="best", fontsize="small")
    proto = results["protocol"]
    fig.suptitle(f"{proto['dataset']}: mean over {n_seq} sequence(s), {proto['frames']} frames, GoP {proto['gop']}")
    fig.tight_layout()
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _fmt(v: Any, nd: int = 2) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _print_tables(results: dict[str, Any], console: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    t = Table(title=f"RD points, mean over {len(results['sequences'])} sequence(s)")
    for col in ("codec", "setting", "bpp", "kbps", "PSNR-YUV", "PSNR-RGB", "MS-SSIM", "enc fps", "dec fps"):
        t.add_column(col, justify="left" if col in ("codec", "setting") else "right")
    for codec, pts in results["average"].items():
        for p in pts:
            t.add_row(codec, f"{'q' if p['param'] == 'quality' else 'crf '}{p['value']}", _fmt(p["bpp"], 4),
                      _fmt(p["kbps"], 1), _fmt(p["psnr_yuv"]), _fmt(p["psnr_rgb"]), _fmt(p["ms_ssim"], 4),
                      _fmt(p["encode_fps"], 1), _fmt(p["decode_fps"], 1))
    console.print(t)
    if results["bd_rate"]:
        b = Table(title=f"BD-rate of {results['protocol']['model']} vs anchors (%, negative = fewer bits)")
        per_seq = results["bd_rate_per_sequence"]
        total = len(per_seq)
        if total > 1:  # each sequence's, then their mean
            b.add_column("sequence")
        b.add_column("anchor")
        for m in BD_METRICS:
            b.add_column(m, justify="right")
        if total > 1:
            for s, anchors in per_seq.items():
                for a, row in anchors.items():
                    b.add_row(escape(s), a, *[_fmt(row.get(m)) for m in BD_METRICS])
            b.add_section()
        counts = results.get("bd_rate_sequences", {})
        for a, row in results["bd_rate"].items():
            n = counts.get(a, {})
            cells = [_fmt(row[m]) + (f" ({n[m]}/{total})" if n.get(m, total) < total else "") for m in BD_METRICS]
            b.add_row(*(["mean"] if total > 1 else []), a, *cells)
        console.print(b)
        for a, metrics in results.get("bd_rate_missing", {}).items():
            for m, seqs in metrics.items():
                for s, why in seqs.items():
                    console.print(f"{m} vs {a}: {s} left out of the mean ({why})", highlight=False, markup=False)
    for f in results["failures"]:
        console.print(f"[red]failed[/red] {escape(f['point'])}: {escape(f['error'])}", highlight=False)


# ------------------------------------------------------------------------------------------ driver
def _split(v: Any) -> list[Any]:
    """'a,b' or ['a', 'b,c'] -> ['a', 'b', 'c'] (CLI lists); other iterables pass through."""
    items = [v] if isinstance(v, str) else list(v)
    out: list[Any] = []
    for x in items:
        out += [s.strip() for s in x.split(",") if s.strip()] if isinstance(x, str) else [x]
    return out


def _shard() -> tuple[int, int]:
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError("RANK and WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"bad sharding: RANK={rank} WORLD_SIZE={world}")
    return rank, world


def _resolve_device(device: str) -> str:
    local = os.environ.get("LOCAL_RANK")
    if device == "auto" and local is not None:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(local) % torch.cuda.device_count()}"
    return device


def _model_info(model: str, checkpoint: str | None, refine: int | None = None) -> tuple[int, str, dict[str, Any] | None]:
    """The model's number of qualities, its weights digest (hex) and its encoder's choices (None if it
    states none), after checking it can ``refine``."""
    from .models import load

    from .codec import check_refine

    net = load(model, checkpoint=checkpoint)
    check_refine(net, refine)
    choices = net.encoder_choices() if hasattr(net, "encoder_choices") else None
    return int(net.qualities), bytes(net.weights_digest).hex(), choices


def _check_protocol(out: Path, protocol: dict[str, Any]) -> None:
    f = out / "protocol.json"
    if not f.is_file():
        return
    try:
        old = json.loads(f.read_text())
    except (OSError, ValueError):
        return
    diff = [k for k in _RESUME_KEYS if old.get(k, _RESUME_DEFAULTS.get(k)) != protocol.get(k)]
    if diff:
        raise InputError(
            f"{out} holds results of another protocol ({', '.join(f'{k}={old.get(k)!r}' for k in diff)}); "
            f"use another --out, or the same settings to resume"
        )


def run_bench(
    dataset: str,
    root: str | os.PathLike[str] | None = None,
    *,
    model: str = "nvc-lite",
    checkpoint: str | os.PathLike[str] | None = None,
    qualities: Iterable[int] | str | None = None,
    anchors: Iterable[str] | str = ("x264", "x265"),
    out: str | os.PathLike[str] | None = None,
    frames: int = 96,
    gop: int = 32,
    jobs: int = 1,
    device: str = "auto",
    progress: bool = True,
    crfs: dict[str, Iterable[int]] | None = None,
    sequences: Iterable[str] | str | None = None,
    metrics_device: str = "auto",
    numeric: str | None = None,
    flat_quality: bool = False,
    refine: int | None = None,
    postfilter: bool = True,
) -> dict[str, Any]:
    """Runs the benchmark and returns the results dict (also written to ``out/results.json``).

    ``qualities``: nvc qualities (default all of the model; ``[]`` runs the anchors only). ``anchors``:
    names from :data:`nvc.anchors.ANCHORS`, with ``crfs`` overriding their default CRF lists.
    ``sequences``: a subset of the dataset by name. Finished points in ``out`` are reused.
    ``numeric``: nvc's numeric mode, ``exact`` or ``fast`` (None: the model's default; the rate and
    distortion do not depend on it, the speed does). ``refine``: nvc's encoder-side latent refinement
    steps per frame (:meth:`nvc.models.lite.NvcLite.refine_latent`; 0: none; None: the model's defaults).
    ``postfilter``: nvc's post-filter (:mod:`nvc.postfilter`).
    """
    from . import anchors as anchor_mod

    if frames < 1:
        raise InputError(f"--frames must be at least 1, not {frames}")
    if not 1 <= gop <= 65535:
        raise InputError(f"--gop must be 1..65535, not {gop}")
    if jobs < 1:
        raise InputError(f"--jobs must be at least 1, not {jobs}")
    from .codec import check_numeric, check_refine, resolve_device

    check_refine(None, refine)  # the step count, also for a run of anchors only (the model is checked on load)
    if numeric is not None:  # before any point runs or the protocol is written
        check_numeric(numeric)
    resolve_device(device)
    anchors, sequences = _split(anchors), _split(sequences) if sequences is not None else None
    if isinstance(qualities, str):
        try:
            qualities = [int(q) for q in _split(qualities)]
        except ValueError:
            raise InputError(f"--qualities: expected integers like 0,2,4, not {qualities!r}") from None
    anchor_list = list(dict.fromkeys(a.strip().lower() for a in anchors if a.strip().lower() not in ("", "none")))
    for a in anchor_list:
        if a not in anchor_mod.ANCHORS:
            raise InputError(f"unknown anchor {a!r}; known: {', '.join(anchor_mod.ANCHORS)}")
        if not anchor_mod.available(a):
            raise InputError(f"anchor {a}: this PyAV/FFmpeg build lacks {anchor_mod.ANCHORS[a].encoder} or its decoder")
    crfs = crfs or {}
    crf_map = {a: sorted({int(c) for c in crfs.get(a, anchor_mod.ANCHORS[a].default_crfs)}) for a in anchor_list}
    for a, cs in crf_map.items():
        lo, hi = anchor_mod.ANCHORS[a].crf_range
        bad = [c for c in cs if not lo <= c <= hi]
        if bad:
            raise InputError(f"anchor {a}: CRF {bad[0]} outside {lo}..{hi}")

    label = dataset if dataset.lower() in ("uvg", "hevc-b", "mcl-jcv", "sample") else Path(dataset).name or "clips"
    out_dir = Path(out) if out is not None else Path("runs") / f"{_safe(label)}-{time.strftime('%Y%m%d-%H%M%S')}"
    out_dir.mkdir(parents=True, exist_ok=True)
    if dataset.strip().lower() == "sample" and root is None:
        root = out_dir / "data"
    seqs = find_sequences(dataset, root, list(sequences) if sequences else None)
    ckpt = str(checkpoint) if checkpoint is not None else None
    qs = sorted({int(q) for q in qualities}) if qualities is not None else None
    digest = choices = None
    if qs is None or qs:  # loading the model also checks the model name and checkpoint before any work
        n_q, digest, choices = _model_info(model, ckpt, refine)
        qs = list(range(n_q)) if qs is None else qs
        bad = [q for q in qs if not 0 <= q < n_q]
        if bad:
            raise InputError(f"--qualities: {model} has qualities 0..{n_q - 1}, not {bad[0]}")
    dev = _resolve_device(device)
    rank, world = _shard()

    protocol = {
        "version": PROTOCOL_VERSION, "dataset": dataset, "root": str(root) if root is not None else None,
        "model": model, "checkpoint": ckpt, "weights": digest, "qualities": qs, "anchors": crf_map, "frames": frames,
        "gop": gop, "numeric": numeric,
        "quality_ladder": ladder_for(flat_quality).describe(), "refine": refine, "postfilter": postfilter,
        "encoder": choices,
        "rate": "bpp = bits / (frames * width * height); nvc bits = .nvc file size * 8; anchor bits = packet bytes * 8",
        "metrics": "per-frame PSNR-Y/U/V (8-bit planes), PSNR-YUV=(6Y+U+V)/8, PSNR-RGB (BT.709, peak 1), "
                   "MS-SSIM (RGB, data_range 1), each averaged over frames",
        "bd_rate": "bjontegaard akima; log10(bpp) over the quality overlap; mean over sequences",
        "sequences": [s.to_json() for s in seqs],
    }
    _check_protocol(out_dir, protocol)
    if rank == 0:
        _write_json(out_dir / "protocol.json", protocol)

    cfg = BenchConfig(out=str(out_dir), model=model, checkpoint=ckpt, frames=frames, gop=gop, device=dev,
                      metrics_device=metrics_device, anchor_codecs=tuple(anchor_list), numeric=numeric,
                      flat_quality=flat_quality, refine=refine, postfilter=postfilter)
    all_points = [Point(s, model, "quality", q) for s in seqs for q in qs] + [
        Point(s, a, "crf", c) for s in seqs for a in anchor_list for c in crf_map[a]
    ]
    all_points.sort(key=lambda p: seqs.index(p.sequence))
    mine = [p for p in all_points if seqs.index(p.sequence) % world == rank]
    todo = [p for p in mine if not _point_path(out_dir, p).is_file()]

    failures = _execute(todo, cfg, jobs, progress, skipped=len(mine) - len(todo))
    if world > 1:
        _write_json(out_dir / "shards" / f"rank{rank}.json",
                    {"rank": rank, "world": world, "failures": failures, "time": time.time()})
        if rank != 0:
            return {"protocol": protocol, "rank": rank, "points": len(mine), "failures": failures}
        failures += _wait_for_shards(out_dir, all_points, world)

    records = []
    for p in all_points:
        f = _point_path(out_dir, p)
        if f.is_file():
            records.append(json.loads(f.read_text()))
    results = _summarize(protocol, records, model, anchor_list, failures)
    _write_json(out_dir / "results.json", results)
    _write_csv(out_dir / "results.csv", records)
    if records:
        _plot(out_dir / "rd.png", results)
    if progress:
        from rich.console import Console

        console = Console(stderr=True)
        _print_tables(results, console)
        console.print(f"results in {out_dir}/ (results.json, results.csv, rd.png)", highlight=False, markup=False)
    return results


def _execute(todo: list[Point], cfg: BenchConfig, jobs: int, progress: bool, skipped: int) -> list[dict[str, str]]:
    from contextlib import nullcontext

    failures: list[dict[str, str]] = []
    bar: Any = None
    if progress:
        from rich.markup import escape
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        bar = Progress(TextColumn("[bold]bench[/bold] {task.description}"), BarColumn(), MofNCompleteColumn(),
                       TimeElapsedColumn(), TimeRemainingColumn(), transient=False)
    with bar if bar is not None else nullcontext():
        task = bar.add_task(f"({skipped} done before)" if skipped else "", total=len(todo)) if bar else None

        def done(key: str, err: str | None) -> None:
            if err is not None:
                failures.append({"point": key, "error": err})
            if bar is not None:
                bar.update(task, advance=1, description=escape(key))

        if jobs == 1 or len(todo) <= 1:
            for p in todo:
                if bar is not None:
                    bar.update(task, description=escape(p.key))
                done(*_do_point(p, cfg))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            threads = max(1, (os.cpu_count() or 1) // jobs)
            with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                                     initializer=_worker_init, initargs=(threads,)) as ex:
                futs = {ex.submit(_do_point, p, cfg): p for p in todo}
                for fut in as_completed(futs):
                    try:
                        done(*fut.result())
                    except Exception as e:  # noqa: BLE001 - a crashed worker (e.g. killed for memory)
                        done(futs[fut].key, f"worker failed: {type(e).__name__}: {e}"[:300])
    return failures


def _wait_for_shards(out: Path, points: list[Point], world: int) -> list[dict[str, str]]:
    """Rank 0: waits until every point is stored, or every rank has reported (its failures are merged)."""
    timeout = float(os.environ.get("NVC_BENCH_MERGE_TIMEOUT", "0") or 0)  # 0: wait as long as it takes
    t0 = time.time()
    started = t0 - 600  # a rank's report older than this belongs to an earlier run
    while True:
        if all(_point_path(out, p).is_file() for p in points):
            break
        reports = [out / "shards" / f"rank{r}.json" for r in range(1, world)]
        if all(f.is_file() and f.stat().st_mtime >= started for f in reports):
            break
        if timeout and time.time() - t0 > timeout:
            raise NvcError(f"rank 0 gave up waiting for the other ranks after {timeout:.0f} s; "
                           f"rerun the same command (one process) with --out {out} to merge what is done")
        time.sleep(5)
    failures: list[dict[str, str]] = []
    for r in range(1, world):
        f = out / "shards" / f"rank{r}.json"
        if f.is_file():
            try:
                failures += json.loads(f.read_text()).get("failures", [])
            except (OSError, ValueError):
                pass
    return failures

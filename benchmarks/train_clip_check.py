"""Compares nvc-lite weights (or encoder settings) on crops of *training* clips, never the eval set.

This is how checkpoints are chosen without tuning on ``../shared/data/eval``: full frames of real clips
(not the training crops), GoP 32, float32 (``--numeric fast``; EXACT gives the same RD within 0.1 %),
every other quality and the top one (0/2/4/6/7 of nvc-lite's eight; 0/2/4/5 of six), BD-rate on PSNR-YUV (Akima) of each entry against the first.

    python benchmarks/train_clip_check.py shipped runs/train/nvc-lite-cont1/nvc-lite.safetensors
    python benchmarks/train_clip_check.py shipped shipped:replicate --size 176x144   # P-frame padding A/B
    python benchmarks/train_clip_check.py x264 shipped --gop 1     # the intra codec against x264's I frames
    python benchmarks/train_clip_check.py shipped:q=0/1 --clips bigbuckbunny_CG.mp4=720x1280 --frames 16   # 720p rates

An entry is ``shipped``, a weights path, optionally followed by ``:`` and comma-separated options, or ``x264``
(medium, zerolatency, keyint = GoP, CRF 17-42, through :mod:`nvc.anchors`: the gap to the goal on the same
frames). Options: ``replicate`` (replicate padding for P frames instead of :func:`nvc.color.pad_from_reference`),
``flat`` (every frame at its quality) or ``ladder=I/P/B`` (I frames +I, every P-th P frame +B; the encoder's
default is :data:`nvc.ladder.DEFAULT_LADDER`), ``q=0/1/2`` (the qualities to code; default every other one and the top one), ``refine=N``
(encoder-side latent refinement, N steps on every frame, 0: none: ``nvc encode --refine``; default: the model's
``intra_refine`` / ``inter_refine``); for weights with block motion,
``precision=1/2`` (whole- or half-pixel vectors), ``block=8/16`` (the encoder's block size), ``overlap=0..3``
(overlapped compensation over block/8, /4, /2 pixels of each edge; 0: none) and ``penalty=K``
(the motion search's cost per unit of vector distance, times lambda: ``NvcLite.motion_penalty_k``);
``nosettle`` (code the latent positions that cover only padding as the analysis made them, not at their
means: ``NvcLite.settle_padding``), ``margin=K`` (settle only positions K or more positions past the visible
part: ``NvcLite.settle_margin``) ``irefine=N`` (refinement steps for I frames: ``NvcLite.intra_refine``) and ``prefine=N`` (for P frames:
``NvcLite.inter_refine``), ``full=R`` (the motion search tries every displacement within R pixels on frames up
to ``LIGHT_PIXELS``, coarse to fine past it: ``NvcLite.motion_full_radius``; 8 was the search before 2026-12-02),
``zrefine=N`` (hyper-latent refinement steps on every frame: ``NvcLite.hyper_refine``), ``nofilter`` (no
post-filter: ``nvc encode --no-postfilter``).

    python benchmarks/train_clip_check.py shipped:flat shipped shipped:ladder=1/0/0,q=0/1/2/3/4/5
    python benchmarks/train_clip_check.py OLD.safetensors:flat,q=2 shipped:flat,q=2 --per-frame   # drift over a GoP

``--split`` also stores each quality's bits per frame type and substream (where a stream's bits go: format
3.0 codes the motion field, z and y in one rANS string, so the split is header (the payload's own fields) /
rANS, and 4.0 adds filter (the post-filter's parameters); 2.0 had the motion field's header apart, 1.x y, z and the motion field); every
nvc entry's ``encode_s`` (seconds to code all its qualities) is stored too, comparable within one idle run:

    python benchmarks/train_clip_check.py shipped:q=0 --clips bigbuckbunny_CG.mp4=720x1280 --frames 8 --split

``--rgb`` also measures PSNR-RGB (BT.709, the decoded 4:2:0 converted as the bench does) and its BD-rate, for
the nvc entries: the issue's metric, where a change to the chroma planes shows more than in PSNR-YUV's 6:1:1.

``--reuse CHECK.json`` takes the entries already measured in an earlier check's JSON (the same entry string, clip,
crop, ``--frames`` and ``--gop``, and whatever ``--rgb`` / ``--per-frame`` / ``--split`` ask for) from it instead of
coding them again: about 6 minutes an entry here. It is only sound while the encoder and the weights that entry
names are unchanged since that check (same-machine float32 encodes repeat bit for bit); entries it lacks are coded:

    python benchmarks/train_clip_check.py runs/train/nvc-lite-intra3/step-800.safetensors runs/train/nvc-lite-intra3/step-1700.safetensors \
        --frames 16 --rgb --reuse benchmarks/results/check-nvc-lite-intra3.json

``--ship-below PCT`` applies the shipping rule the training runs set before they start and prints its verdict
(stored as ``verdict`` in the JSON): of the entries after the first (the candidates, each against the first, the
shipped weights), the one with the lowest mean BD-rate over the clips (PSNR-RGB with ``--rgb``, else PSNR-YUV) ships
if that mean is below PCT and no clip is worse than ``--worst-clip`` (default +1 %). Run 26 showed why PCT should
not be 0: a mean of -0.19 % on the training clips was noise, and the eval bench got worse.

    python benchmarks/train_clip_check.py runs/train/nvc-lite-intra6/avg-400-800.safetensors \
        runs/train/nvc-lite-intra7/step-700.safetensors --frames 16 --rgb \
        --reuse benchmarks/results/check-nvc-lite-intra7.json --ship-below -0.5

``--ceiling`` prints instead what the intra transforms reach with no quantization at all (``g_s(g_a(x))``
on the first frame, PSNR-RGB): the upper bound of the intra codec at any rate. With ``--fit-latents N`` it also
fits the top quality's latents to the frame by N Adam steps on the synthesis' MSE (no rate, no quantization):
what the synthesis alone can reach, whatever an analysis or an encoder's search gave it.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

CLIPS = {"bikes.mp4": (256, 352), "vtest.avi": (288, 352), "tree.avi": (144, 176)}
# entry options that set one of the encoder's choices on the model (NvcLite's attribute of that name)
ENCODER_OPTIONS = {"precision": "motion_precision", "block": "motion", "overlap": "motion_overlap",
                   "penalty": "motion_penalty_k", "margin": "settle_margin", "irefine": "intra_refine",
                   "prefine": "inter_refine", "full": "motion_full_radius", "zrefine": "hyper_refine"}


def crops(path: Path, h: int, w: int, n: int) -> list:
    import nvc.io as nio
    from nvc.io import Frame

    out = []
    with nio.open(str(path)) as r:
        for i, f in enumerate(r):
            if i >= n:
                break
            hh, ww = f.y.shape
            t, left = (hh - h) // 4 * 2, (ww - w) // 4 * 2
            c = (slice(t // 2, t // 2 + h // 2), slice(left // 2, left // 2 + w // 2))
            out.append(Frame(f.y[t:t + h, left:left + w].copy(), f.u[c].copy(), f.v[c].copy()))
    return out


def spread(n: int) -> tuple[int, ...]:
    """The qualities a check codes by default: every other one from 0, and the top one."""
    return tuple(sorted(set(range(0, n, 2)) | {n - 1}))


# nvc-lite's substreams in format 3.0: one rANS string of the motion field (P frames), z and y (format 2.0 had
# the motion field's header apart, 1.x y, z and the motion field: the committed split-bbb720-q0-32f.json was
# made then)
SUBSTREAMS = ("rans",)


def rd_points(model, frames: list, h: int, w: int, qualities: tuple[int, ...], gop: int = 32,
              ladder=None, per_frame: dict | None = None, refine: int | None = None,
              split: dict | None = None, postfilter: bool = True, rgb: list | None = None) -> list[tuple[float, float]]:
    """Mean (bpp, PSNR-YUV) per quality; ``rgb`` (if given) gets the mean (bpp, PSNR-RGB) per quality (as the
    bench measures it: BT.709, 4:2:0 to RGB by :mod:`nvc.color`); ``per_frame`` (if given) gets each quality's per-frame pairs,
    ``split`` (if given) each quality's bpp per frame type (I, P) and substream (:data:`SUBSTREAMS`, plus
    the payload's own framing as ``header``), averaged over the frames of that type."""
    from nvc import bitstream
    from nvc.codec import Encoder
    from nvc.color import yuv420_to_rgb
    from nvc.ladder import DEFAULT_LADDER
    from nvc.metrics import psnr_planes, psnr_rgb

    pts = []
    src_rgb = [yuv420_to_rgb(f.y, f.u, f.v) for f in frames] if rgb is not None else []
    for q in qualities:
        enc = Encoder(model, quality=q, gop=gop, width=w, height=h, numeric="fast",
                      ladder=DEFAULT_LADDER if ladder is None else ladder, refine=refine, postfilter=postfilter)
        bits, psnr, prgb = [], [], []
        parts: dict[str, dict[str, float]] = {}
        counts: dict[str, int] = {}
        for i, f in enumerate(frames):
            cf = enc.encode(f)  # the encoder's reconstruction is the decoder's, bit for bit
            bits.append(8 * cf.size)  # the record's data: payload and post-filter
            psnr.append(psnr_planes(f, cf.recon)["psnr_yuv"])
            if rgb is not None:
                prgb.append(psnr_rgb(src_rgb[i], yuv420_to_rgb(cf.recon.y, cf.recon.u, cf.recon.v)))
            if split is not None:
                kind = cf.frame_type.name
                counts[kind] = counts.get(kind, 0) + 1
                row = parts.setdefault(kind, {})
                strings = bitstream.decode_payload(cf.payload).strings
                for name, s in zip(SUBSTREAMS, strings):
                    row[name] = row.get(name, 0.0) + 8 * len(s)
                row["header"] = row.get("header", 0.0) + 8 * (len(cf.payload) - sum(len(s) for s in strings))
                row["filter"] = row.get("filter", 0.0) + 8 * (cf.size - len(cf.payload))
        pts.append((sum(bits) / (len(frames) * h * w), float(np.mean(psnr))))
        if rgb is not None:
            rgb.append((pts[-1][0], float(np.mean(prgb))))
        if split is not None:
            split[q] = {k: {n: round(v / (counts[k] * h * w), 5) for n, v in row.items()} for k, row in parts.items()}
        if per_frame is not None:
            per_frame[q] = [(round(b / (h * w), 4), round(float(p), 2)) for b, p in zip(bits, psnr)]
    return pts


def x264_points(frames: list, h: int, w: int, gop: int = 32) -> list[tuple[float, float]]:
    """x264's RD points on the same frames (bits of the elementary stream, mean per-frame PSNR-YUV)."""
    from nvc.anchors import encode_decode
    from nvc.metrics import psnr_planes

    pts = []
    for crf in (17, 22, 27, 32, 37, 42):
        r = encode_decode(frames, "x264", crf, gop=gop)
        psnr = [psnr_planes(f, g)["psnr_yuv"] for f, g in zip(frames, r.frames)]
        pts.append((8 * r.bytes / (len(frames) * h * w), float(np.mean(psnr))))
    return pts


def parse_entry(entry: str) -> tuple[str, dict]:
    """``path[:opt,opt=value,...]`` -> (path, options); see the module docstring."""
    from nvc.ladder import FLAT, QualityLadder

    ck, _, rest = entry.partition(":")
    opts: dict = {}
    for o in filter(None, rest.split(",")):
        key, _, value = o.partition("=")
        if key in ("replicate", "nosettle", "nofilter"):
            opts[key] = True
        elif key == "flat":
            opts["ladder"] = FLAT
        elif key == "ladder":
            opts["ladder"] = QualityLadder(*(int(v) for v in value.split("/")))
        elif key == "q":
            opts["q"] = tuple(int(v) for v in value.split("/"))
        elif key == "refine":
            opts["refine"] = int(value)
        elif key in ENCODER_OPTIONS:
            opts[key] = float(value) if key == "penalty" else int(value)
        else:
            raise SystemExit(f"{entry}: unknown option {key!r}")
    return ck, opts


def reusable(clip: dict | None, entry: str, size: str, rgb: bool, per_frame: bool, split: bool) -> dict | None:
    """An entry's stored results in an earlier check's clip record (points, and points_rgb / per_frame / split_bpp
    / encode_s where stored), or None if that record lacks the entry, the crop, or what this check asks for."""
    if not clip or clip.get("size") != size or entry not in clip.get("points", {}):
        return None
    nvc = entry != "x264"  # x264 entries store points only
    wanted = {"points_rgb": rgb and nvc, "per_frame": per_frame and nvc, "split_bpp": split and nvc}
    if any(need and entry not in clip.get(key, {}) for key, need in wanted.items()):
        return None
    keys = ["points", "encode_s"] + [k for k, need in wanted.items() if need]
    return {k: clip[k][entry] for k in keys if entry in clip.get(k, {})}


def verdict(clips: dict, candidates: list[str], metric: str, below: float, worst: float = 1.0) -> dict:
    """The shipping rule over a check's ``clips``: the candidate with the lowest mean ``bd_rate_<metric>`` ships if
    that mean is below ``below`` and no clip is worse than ``worst`` (percent). A candidate without a BD-rate on
    every clip cannot ship."""
    key = f"bd_rate_{metric}"
    means = {}
    for c in candidates:
        vals = [clip.get(key, {}).get(c) for clip in clips.values()]
        if vals and all(v is not None for v in vals):
            means[c] = sum(vals) / len(vals)
    out: dict = {"metric": metric, "below": below, "worst": worst,
                 "means": {c: round(m, 2) for c, m in means.items()}, "best": None, "ship": None}
    if not means:
        out["reason"] = "no candidate has a BD-rate on every clip"
        return out
    best = min(means, key=lambda c: means[c])
    worst_clip = max(clip[key][best] for clip in clips.values())
    out.update(best=best, worst_clip=worst_clip)
    if means[best] >= below:
        out["reason"] = f"mean {means[best]:+.2f} % is not below {below:+.2f} %"
    elif worst_clip > worst:
        out["reason"] = f"a clip is {worst_clip:+.2f} %, worse than {worst:+.2f} %"
    else:
        out["ship"] = best
        out["reason"] = f"mean {means[best]:+.2f} % < {below:+.2f} %, worst clip {worst_clip:+.2f} % <= {worst:+.2f} %"
    return out


def _intra_input(model, frame):
    """The frame as the intra branch sees it: RGB in [0, 1], padded to the model's alignment."""
    import torch

    from nvc.color import pad, yuv420_to_rgb

    return pad(yuv420_to_rgb(frame.y, frame.u, frame.v, torch.device("cpu")), model.alignment)


def ceiling(model, frame, h: int, w: int, qualities: tuple[int, ...]) -> list[float]:
    """PSNR-RGB of ``g_s(g_a(x))`` (intra branch, gains applied and inverted, no quantization) per quality."""
    import torch

    x = _intra_input(model, frame)
    out = []
    with torch.inference_mode():
        for q in qualities:
            qt = torch.tensor([q])
            y = model.i_y_gain(model.i_g_a(x), qt)
            x_hat = model.i_g_s(model.i_y_gain.invert(y, qt)).clamp(0, 1)
            out.append(float(-10 * torch.log10(((x_hat - x)[..., :h, :w] ** 2).mean())))
    return out


def fitted_ceiling(model, frame, h: int, w: int, steps: int, lr: float = 0.01) -> float:
    """PSNR-RGB of the intra synthesis at the top quality with its latents fitted to the frame: ``steps`` Adam
    steps on the MSE of ``g_s`` from the analysis' latents (no rate, no quantization); the model is unchanged."""
    import torch

    x = _intra_input(model, frame)
    q = torch.tensor([model.qualities - 1])
    with torch.no_grad():
        y = model.i_y_gain(model.i_g_a(x), q)
    y.requires_grad_(True)
    opt = torch.optim.Adam([y], lr=lr)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            opt.zero_grad()
            ((model.i_g_s(model.i_y_gain.invert(y, q)) - x)[..., :h, :w] ** 2).mean().backward()
            opt.step()
        with torch.no_grad():
            x_hat = model.i_g_s(model.i_y_gain.invert(y, q)).clamp(0, 1)
    finally:
        for p in frozen:
            p.requires_grad_(True)
    return float(-10 * torch.log10(((x_hat - x)[..., :h, :w] ** 2).mean()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("entries", nargs="+", help="'shipped' or weights paths, optionally ':replicate'")
    ap.add_argument("--data", default="../shared/data/train/video")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--gop", type=int, default=32, help="GoP (1: intra frames only)")
    ap.add_argument("--size", default=None, help="HxW crop for every clip (default: per clip)")
    ap.add_argument("--clips", default=None, help="comma-separated clips of --data, each NAME or NAME=HxW (the crop; "
                    "needed for clips other than the default three), e.g. bigbuckbunny_CG.mp4=720x1280")
    ap.add_argument("--ceiling", action="store_true", help="intra transforms without quantization (see above)")
    ap.add_argument("--fit-latents", type=int, default=0, metavar="N",
                    help="with --ceiling: also the synthesis with the top quality's latents fitted by N Adam steps")
    ap.add_argument("--per-frame", action="store_true", help="also print and store each frame's (bpp, PSNR-YUV)")
    ap.add_argument("--split", action="store_true", help="also print and store each quality's bpp per frame type "
                    "(I, P) and substream (y, z, motion, header)")
    ap.add_argument("--rgb", action="store_true", help="also measure PSNR-RGB (nvc entries) and its BD-rate")
    ap.add_argument("--reuse", default=None, help="an earlier check's JSON whose matching entries are taken, not coded")
    ap.add_argument("--json", default=None)
    ap.add_argument("--ship-below", type=float, default=None, metavar="PCT",
                    help="apply the shipping rule: the candidate (entries after the first) with the lowest mean "
                         "BD-rate ships if that mean is below PCT, e.g. -0.5 (see above)")
    ap.add_argument("--worst-clip", type=float, default=1.0, metavar="PCT",
                    help="with --ship-below: no clip of the shipped candidate may be worse than PCT (default 1.0)")
    a = ap.parse_args()
    earlier = json.loads(Path(a.reuse).read_text()) if a.reuse else {}
    if earlier and (earlier.get("frames"), earlier.get("gop")) != (a.frames, a.gop):
        ap.error(f"--reuse: {a.reuse} was measured with --frames {earlier.get('frames')} --gop {earlier.get('gop')}")

    from nvc.errors import NvcError
    from nvc.metrics import bd_rate
    from nvc.models import load

    chosen = dict(CLIPS)
    if a.clips:
        chosen = {}
        for item in a.clips.split(","):
            name, _, hw = item.partition("=")
            if not hw and name not in CLIPS:
                ap.error(f"--clips: give {name}'s crop as {name}=HxW")
            chosen[name] = tuple(int(v) for v in hw.split("x")) if hw else CLIPS[name]
    sizes = {k: tuple(int(s) for s in a.size.split("x")) if a.size else v for k, v in chosen.items()}
    results: dict[str, dict] = {}
    for clip, (h, w) in sizes.items():
        frames = crops(Path(a.data) / clip, h, w, 1 if a.ceiling else a.frames)
        res = results.setdefault(clip, {"size": f"{h}x{w}", "points": {}, "bd_rate_psnr_yuv": {}})
        if a.ceiling:
            for entry in (e for e in a.entries if e != "x264"):
                model = load("nvc-lite", checkpoint=None if entry == "shipped" else parse_entry(entry)[0])
                qs = spread(model.qualities)
                res.setdefault("ceiling_psnr_rgb", {})[entry] = c = ceiling(model, frames[0], h, w, qs)
                res.setdefault("ceiling_qualities", {})[entry] = list(qs)
                print(clip, entry, f"ceiling PSNR-RGB (q{', q'.join(map(str, qs))}):", [round(v, 2) for v in c], flush=True)
                if a.fit_latents:
                    fit = fitted_ceiling(model, frames[0], h, w, a.fit_latents)
                    res.setdefault("fitted_ceiling_psnr_rgb", {})[entry] = fit
                    res["fitted_ceiling_steps"] = a.fit_latents
                    print(clip, entry, f"synthesis with fitted latents (q{qs[-1]}, {a.fit_latents} steps):",
                          round(fit, 2), flush=True)
            continue
        for entry in a.entries:
            stored = reusable(earlier.get("clips", {}).get(clip), entry, f"{h}x{w}", a.rgb, a.per_frame, a.split)
            if stored is not None:
                pts = stored.pop("points")
                for key, value in stored.items():
                    res.setdefault(key, {})[entry] = value
                print(clip, entry, f"(from {a.reuse})", [(round(r, 4), round(p, 2)) for r, p in pts], flush=True)
            elif entry == "x264":
                pts = x264_points(frames, h, w, a.gop)
            else:
                ck, opts = parse_entry(entry)
                model = load("nvc-lite", checkpoint=None if ck == "shipped" else ck)
                model.context_is_frame = "replicate" not in opts
                for key, attr in ENCODER_OPTIONS.items():
                    if key in opts:
                        setattr(model, attr, opts[key])
                if "nosettle" in opts:
                    model.settle_padding = False
                frame_pts = res.setdefault("per_frame", {}).setdefault(entry, {}) if a.per_frame else None
                split = res.setdefault("split_bpp", {}).setdefault(entry, {}) if a.split else None
                rgb = res.setdefault("points_rgb", {}).setdefault(entry, []) if a.rgb else None
                t0 = time.perf_counter()
                pts = rd_points(model, frames, h, w, opts.get("q", spread(model.qualities)), a.gop, opts.get("ladder"), frame_pts,
                                opts.get("refine"), split, "nofilter" not in opts, rgb)
                res.setdefault("encode_s", {})[entry] = round(time.perf_counter() - t0, 1)
                for q, row in (frame_pts or {}).items():
                    print(clip, entry, f"q{q} per frame:", row, flush=True)
                for q, row in (split or {}).items():
                    print(clip, entry, f"q{q} bpp per frame type and substream:", row, flush=True)
                if rgb is not None:
                    print(clip, entry, "PSNR-RGB", [(round(r, 4), round(p, 2)) for r, p in rgb], flush=True)
            res["points"][entry] = pts
            print(clip, entry, [(round(r, 4), round(p, 2)) for r, p in pts], flush=True)
        for metric, points in (("psnr_yuv", res["points"]), ("psnr_rgb", res.get("points_rgb", {}))):
            base = points.get(a.entries[0], [])
            for entry in a.entries[1:] if len(base) > 1 else []:  # one quality (--per-frame at q=2): no curve
                if entry not in points:  # x264 has no PSNR-RGB here
                    continue
                o = points[entry]
                out = res.setdefault(f"bd_rate_{metric}", {})
                try:
                    r = bd_rate([x for x, _ in base], [y for _, y in base], [x for x, _ in o], [y for _, y in o])
                except NvcError as e:  # e.g. a quality that broke down (more bits, less PSNR): keep the points
                    out[entry] = None
                    print(f"  BD-rate {metric} {entry} vs {a.entries[0]}: none ({e})", flush=True)
                    continue
                out[entry] = round(float(r), 2)
                print(f"  BD-rate ({metric}) {entry} vs {a.entries[0]}: {r:+.2f} %", flush=True)
    rule = None
    if a.ship_below is not None and not a.ceiling:
        rule = verdict(results, [e for e in a.entries[1:] if e != "x264"], "psnr_rgb" if a.rgb else "psnr_yuv",
                       a.ship_below, a.worst_clip)
        print(f"verdict: {'ship ' + rule['ship'] if rule['ship'] else 'keep ' + a.entries[0]} "
              f"(best {rule['best']}: {rule['reason']})", flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps({"entries": a.entries, "frames": a.frames, "gop": a.gop, "reuse": a.reuse,
                                         "clips": results, **({"verdict": rule} if rule else {})}, indent=1))


if __name__ == "__main__":
    main()

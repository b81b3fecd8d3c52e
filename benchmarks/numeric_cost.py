"""What the device-independent numeric mode costs: exact vs fast (float32) on the same clips.

    python benchmarks/numeric_cost.py ../shared/data/eval --frames 32 --gop 32 \
        --json benchmarks/results/numeric-cost.json

For each clip (.y4m, .yuv with WxH in its name, or anything FFmpeg reads) and quality: encode with
``--numeric exact`` and ``--numeric fast``, decode both back (CPU), and report bpp, PSNR-YUV (of the clip's
mean MSE), encode/decode fps, and the BD-rate (PSNR-YUV, Akima) of exact against fast per clip.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

VIDEO = {".y4m", ".yuv", ".mp4", ".mkv", ".avi", ".mov", ".webm"}


def evaluate(clip: Path, frames: int, gop: int) -> dict:
    from nvc import api
    from nvc.metrics import bd_rate
    from nvc.models import load

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for q in range(load("nvc-lite").qualities):
            for mode in ("fast", "exact"):
                s = Path(d) / f"{mode}{q}.nvc"
                r = api.encode(clip, s, quality=q, gop=gop, frames=frames, device="cpu", numeric=mode)
                dec = api.decode(s, Path(d) / f"{mode}{q}.yuv", device="cpu")
                rows.append({"quality": q, "numeric": mode, "frames": r.frames, "bytes": r.bytes,
                             "bpp": round(r.bpp, 5), "psnr_yuv": round(r.psnr_yuv, 4),
                             "encode_fps": round(r.encode_fps, 3), "decode_fps": round(dec.decode_fps, 3)})
                print(json.dumps(rows[-1]), flush=True)
    curve = {m: ([r["bpp"] for r in rows if r["numeric"] == m], [r["psnr_yuv"] for r in rows if r["numeric"] == m])
             for m in ("fast", "exact")}
    bd = bd_rate(*curve["fast"], *curve["exact"])
    fps = {m: {k: sum(r[k] for r in rows if r["numeric"] == m) / len(curve[m][0]) for k in ("encode_fps", "decode_fps")}
           for m in ("fast", "exact")}
    return {"clip": clip.name, "bd_rate_psnr_yuv_exact_vs_fast_pct": round(bd, 3), "mean_fps": fps, "rows": rows}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("path", type=Path, help="a clip or a folder of clips")
    ap.add_argument("--frames", type=int, default=32)
    ap.add_argument("--gop", type=int, default=32)
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args(argv)
    clips = sorted(p for p in a.path.iterdir() if p.suffix.lower() in VIDEO) if a.path.is_dir() else [a.path]
    results = [evaluate(c, a.frames, a.gop) for c in clips]
    for r in results:
        print(f"{r['clip']}: BD-rate exact vs fast {r['bd_rate_psnr_yuv_exact_vs_fast_pct']:+.3f} %; "
              f"decode fps fast {r['mean_fps']['fast']['decode_fps']:.2f}, exact {r['mean_fps']['exact']['decode_fps']:.2f}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        cmd = "python benchmarks/numeric_cost.py " + " ".join(argv if argv is not None else sys.argv[1:])
        a.json.write_text(json.dumps({"command": cmd, "frames": a.frames, "gop": a.gop, "clips": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

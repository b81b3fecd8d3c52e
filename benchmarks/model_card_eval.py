"""Measures the shipped model on a clip at every quality (real streams, decoded back) for the model card.

    python benchmarks/model_card_eval.py ../shared/data/eval/carphone_176x144_30fps_420_8bit.y4m \
        --gop 32 --json benchmarks/results/model-card-carphone.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path


def evaluate(clip: Path, gop: int, frames: int | None, model: str, checkpoint: str | None,
             numeric: str | None = None) -> list[dict]:
    """Every quality of ``model`` on ``clip``, encoded and decoded back (``numeric``: None, the model's
    default mode, ``exact`` or ``fast``; the rate and distortion barely depend on it, the speed does)."""
    from nvc import api
    from nvc.models import load

    rows = []
    qualities = load(model, checkpoint).qualities
    with tempfile.TemporaryDirectory() as d:
        for q in range(qualities):
            out = Path(d) / f"q{q}.nvc"
            r = api.encode(clip, out, model=model, checkpoint=checkpoint, quality=q, gop=gop, frames=frames,
                           device="cpu", numeric=numeric)
            dec = api.decode(out, Path(d) / f"q{q}.yuv", checkpoint=checkpoint, device="cpu")
            rows.append({"quality": q, "frames": r.frames, "bpp": round(r.bpp, 4), "kbps": round(r.kbps, 1),
                         "psnr_y": round(r.psnr_y, 2), "psnr_u": round(r.psnr_u, 2), "psnr_v": round(r.psnr_v, 2),
                         "psnr_yuv": round(r.psnr_yuv, 2), "encode_fps": round(r.encode_fps, 2),
                         "decode_fps": round(dec.decode_fps, 2)})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clip", type=Path)
    ap.add_argument("--gop", type=int, default=32)
    ap.add_argument("--frames", type=int, default=None)
    ap.add_argument("--model", default="nvc-lite")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--numeric", choices=("exact", "fast"), default=None, help="default: the model's mode")
    ap.add_argument("--json", type=Path, default=None)
    a = ap.parse_args()
    rows = evaluate(a.clip, a.gop, a.frames, a.model, a.checkpoint, a.numeric)
    print("| quality | frames | bpp | kbps | PSNR-Y | PSNR-U | PSNR-V | PSNR-YUV | enc fps | dec fps |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(str(v) for v in r.values()) + " |")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"command": " ".join(["python"] + sys.argv), "clip": a.clip.name,
                                      "gop": a.gop, "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a training data folder gives the clip sampler: frames, shots and each source's share of real clips.

    python benchmarks/data_mix.py ../shared/data/train .devkit/data --frames 6 --json mix.json

It walks a folder as ``nvc.data.ClipSampler.from_folder`` does (the same sources, decoding, downscaling and scene-cut
split; photos are not counted) and reports, per video source, the frames decoded, the shots, and the share of
``--frames``-frame real clips drawn from it: the sampler picks a shot uniformly among those long enough, so a
source's share is its long-enough shots over all of them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nvc.data import _split_cuts, load_video_frames, video_sources


def mix(root: Path, frames: int, max_side: int = 720, max_frames: int = 400) -> dict[str, dict[str, object]]:
    """Per video source under ``root``: frames, shots, shots of at least ``frames``, and its share of clips."""
    out: dict[str, dict[str, object]] = {}
    for p in video_sources(root):
        decoded = load_video_frames(p, max_side, max_frames)
        shots = _split_cuts(decoded)
        h, w = decoded[0].shape[:2] if decoded else (0, 0)
        out[str(p.relative_to(root))] = {
            "frames": len(decoded), "size": f"{w}x{h}", "shots": len(shots),
            "usable_shots": sum(len(s) >= frames for s in shots),
            "shot_frames": [len(s) for s in shots],
        }
    usable = sum(int(v["usable_shots"]) for v in out.values()) or 1  # type: ignore[call-overload]
    for v in out.values():
        v["clip_share"] = round(int(v["usable_shots"]) / usable, 4)  # type: ignore[call-overload]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("roots", nargs="+", help="training data folders (a config's `data`)")
    ap.add_argument("--frames", type=int, default=6, help="the clip length of the stage (default 6)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    a = ap.parse_args()
    roots = [Path(r) for r in a.roots]
    for root in roots:  # every folder checked before any is decoded
        if not root.is_dir():
            print(f"error: {root}: no such folder", file=sys.stderr)
            return 2
    result = {}
    for root in roots:
        result[str(root)] = m = mix(root, a.frames)
        print(f"{root}  ({a.frames}-frame clips)")
        for name, v in m.items():
            print(f"  {name:26} {v['size']:>8} {v['frames']:4} frames {v['shots']:2} shots "
                  f"({v['usable_shots']} usable)  share {float(v['clip_share']):.1%}")  # type: ignore[arg-type]
    if a.json:
        Path(a.json).write_text(json.dumps({"frames": a.frames, "roots": result}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Uniform average of one training run's exports (weights averaging), entropy tables recomputed.

    python benchmarks/average_exports.py runs/train/R/step-2200.safetensors ... -o averaged.safetensors

Compare the result with ``train_clip_check.py`` before shipping it, like any export.
"""

from __future__ import annotations

import argparse
import sys

from nvc.errors import NvcError
from nvc.train import average_exports


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("weights", nargs="+", help="two or more .safetensors exports of one run")
    ap.add_argument("-o", "--output", required=True, help="the averaged .safetensors to write (must not exist)")
    ap.add_argument("--model", default="nvc-lite")
    a = ap.parse_args()
    try:
        out = average_exports(a.weights, a.output, a.model)
    except NvcError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Does a bigger intra synthesis lift nvc-lite's ceiling? A decoder-only experiment on fixed latents.

The encoder side is frozen: each training crop's latents come from the shipped analysis at one of the upper
qualities, rounded to integers and inverse-gained, exactly what ``i_g_s`` is handed (the rate is therefore
fixed; only the reconstruction can change). Each variant of the synthesis then trains on these latents for
the same number of Adam steps on MSE (RGB in [0, 1]):

- ``tune``: the shipped ``i_g_s`` itself (the control: what more training alone gives);
- ``wide``: ``i_g_s`` grown from 64 to ``--wide`` channels, the new channels' outgoing weights zero, so it
  starts as the shipped synthesis exactly;
- ``deep``: the shipped ``i_g_s`` with ``--blocks`` residual blocks (two 3x3 convolutions, leaky ReLU, the
  second starting at zero) inserted at half resolution before its last layer; it starts as the shipped one too.

The photos of ``--data`` (resized to at most 512 px) are split: every sixth is held out. Reported, before
training and every ``--eval-every`` steps: PSNR-RGB at qualities ``--eval-q`` on the held-out photos (256x256
centre crops) and on the first frames of the three training clips ``train_clip_check.py --ceiling`` measures
(which no variant trains on), with each variant's parameters and kMAC per pixel. With ``--video N`` half the
training crops come from frames of the other training clips (every fourth of their first 4N frames).

    python benchmarks/synthesis_capacity.py --steps 600 --json benchmarks/results/synthesis-capacity.json
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_clip_check import CLIPS, _intra_input, crops  # noqa: E402

from nvc.data import load_video_frames, photo_files, video_sources  # noqa: E402
from nvc.models import load  # noqa: E402
from nvc.models.layers import GDN, count_macs  # noqa: E402

CROP = 256


def load_photo(path: Path, max_side: int = 512) -> Tensor:
    """A photo as (3, H, W) float RGB in [0, 1], its long side at most ``max_side`` (area resampling)."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        k = max_side / max(im.size)
        if k < 1:
            im = im.resize((round(im.width * k), round(im.height * k)), Image.BOX)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255


def latents(model, x: Tensor, q: int) -> Tensor:
    """What ``i_g_s`` gets for ``x`` at quality ``q``: the gained analysis rounded, then inverse-gained."""
    qt = torch.full((x.shape[0],), q, dtype=torch.long)
    with torch.no_grad():
        return model.i_y_gain.invert(torch.round(model.i_y_gain(model.i_g_a(x), qt)), qt)


def widen(g_s: nn.Sequential, n: int) -> nn.Sequential:
    """``g_s`` with its hidden width grown to ``n``: old weights kept, new channels fresh, every weight reading a
    new channel zero and GDN's old rows blind to new channels, so the output is unchanged at first."""
    old = g_s[0].out_channels
    layers = []
    for i, mod in enumerate(g_s):
        if isinstance(mod, nn.ConvTranspose2d):
            cin = mod.in_channels if i == 0 else n
            cout = mod.out_channels if i == len(g_s) - 1 else n
            new = nn.ConvTranspose2d(cin, cout, mod.kernel_size, mod.stride, mod.padding, mod.output_padding)
            with torch.no_grad():
                if i > 0:
                    new.weight[old:].zero_()  # weights reading the new input channels (in, out, k, k)
                new.weight[:mod.in_channels, :mod.out_channels] = mod.weight
                new.bias[:mod.out_channels] = mod.bias
            layers.append(new)
        else:
            gdn = GDN(n, inverse=mod.inverse)
            with torch.no_grad():
                gdn.beta[:old] = mod.beta
                gdn.gamma[:old, :old] = mod.gamma
                gdn.gamma[:old, old:] = gdn.gamma_reparam.init(torch.zeros(old, n - old))
                gdn.gamma[old:, :old] = gdn.gamma_reparam.init(torch.zeros(n - old, old))
            layers.append(gdn)
    return nn.Sequential(*layers)


class _Block(nn.Module):
    """A residual block, ``x + b(leaky_relu(a(x)))``, ``b`` starting at zero (the identity at first)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.a = nn.Conv2d(n, n, 3, padding=1)
        self.b = nn.Conv2d(n, n, 3, padding=1)
        nn.init.zeros_(self.b.weight)
        nn.init.zeros_(self.b.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.b(nn.functional.leaky_relu(self.a(x)))


def deepen(g_s: nn.Sequential, blocks: int) -> nn.Sequential:
    """``g_s`` with ``blocks`` residual blocks before its last layer (at half resolution); unchanged at first."""
    n = g_s[-1].in_channels
    return nn.Sequential(*copy.deepcopy(list(g_s[:-1])), *[_Block(n) for _ in range(blocks)], copy.deepcopy(g_s[-1]))


def kmac(g_s: nn.Sequential, m: int) -> float:
    """Multiply-accumulates per output pixel (thousands) of ``g_s`` (GDN counted as a 1x1 convolution)."""
    with torch.no_grad():
        return count_macs(g_s.modules(), lambda: g_s(torch.zeros(1, m, 16, 16))) / 256**2 / 1000


def psnr(a: Tensor, b: Tensor) -> float:
    return float(-10 * torch.log10(((a.clamp(0, 1) - b) ** 2).mean()))


def evaluate(g_s: nn.Sequential, sets: dict[str, list[tuple[Tensor, Tensor, tuple[int, int]]]]) -> dict[str, float]:
    """Mean PSNR-RGB per evaluation set (each item: latents, target, the size to measure)."""
    out = {}
    with torch.no_grad():
        for name, items in sets.items():
            out[name] = float(np.mean([psnr(g_s(y)[..., :h, :w], x[..., :h, :w]) for y, x, (h, w) in items]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/train")
    ap.add_argument("--variants", default="tune,wide,deep")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--crops", type=int, default=800, help="training crops (each at one random upper quality)")
    ap.add_argument("--video", type=int, default=0, metavar="N",
                    help="also train on every 4th of the first 4N frames of each training clip but the three measured "
                         "(half the crops then come from them)")
    ap.add_argument("--train-q", default="5-10", help="the qualities training crops are drawn at")
    ap.add_argument("--eval-q", default="5,8,10")
    ap.add_argument("--eval-every", type=int, default=200)
    ap.add_argument("--wide", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    variants = a.variants.split(",")
    if not set(variants) <= {"tune", "wide", "deep"}:
        ap.error(f"--variants: choose from tune, wide, deep, not {a.variants!r}")
    photos = photo_files(a.data)
    if not photos or not all((Path(a.data) / "video" / clip).exists() for clip in CLIPS):
        ap.error(f"--data: {a.data} needs training photos under images/ and {', '.join(CLIPS)} under video/")
    torch.manual_seed(a.seed)
    gen = np.random.default_rng(a.seed)
    model = load("nvc-lite")
    lo, hi = (int(v) for v in a.train_q.split("-"))
    eval_q = [int(v) for v in a.eval_q.split(",")]

    held = photos[::6]
    train = [p for p in photos if p not in held]
    t0 = time.time()
    images = [load_photo(p) for p in train]
    images = [im for im in images if min(im.shape[1:]) >= CROP]
    frames = []
    if a.video:
        for src in video_sources(Path(a.data)):
            if src.name not in CLIPS:
                frames += [torch.from_numpy(f.copy()).permute(2, 0, 1).float() / 255
                           for f in load_video_frames(src, 512, 4 * a.video)[::4]]
        frames = [f for f in frames if min(f.shape[1:]) >= CROP]
    xs, ys = [], []
    for i in range(a.crops):
        pool = frames if frames and i % 2 else images
        im = pool[gen.integers(len(pool))]
        t, left = gen.integers(im.shape[1] - CROP + 1), gen.integers(im.shape[2] - CROP + 1)
        x = im[None, :, t:t + CROP, left:left + CROP]
        xs.append(x)
        ys.append(latents(model, x, int(gen.integers(lo, hi + 1))))
    xs, ys = torch.cat(xs), torch.cat(ys)
    targets: dict[str, list] = {"photos": []}  # each evaluation set's frames (and the size measured), read once
    for p in held:
        im = load_photo(p)
        h, w = min(CROP, im.shape[1] // 64 * 64), min(CROP, im.shape[2] // 64 * 64)
        if h and w:
            t, left = (im.shape[1] - h) // 2, (im.shape[2] - w) // 2
            targets["photos"].append((im[None, :, t:t + h, left:left + w], (h, w)))
    for clip, (h, w) in CLIPS.items():
        targets[clip.split(".")[0]] = [(_intra_input(model, crops(Path(a.data) / "video" / clip, h, w, 1)[0]), (h, w))]
    sets = {f"{name} q{q}": [(latents(model, x, q), x, hw) for x, hw in items]
            for q in eval_q for name, items in targets.items()}
    print(f"{len(train)} training photos ({len(images)} of at least {CROP} px), {len(held)} held out, "
          f"{len(frames)} video frames; {a.crops} crops, latents in {time.time() - t0:.0f} s", flush=True)

    results: dict = {"command": " ".join(sys.argv), "steps": a.steps, "batch": a.batch, "lr": a.lr, "crops": a.crops,
                     "train_q": a.train_q, "held_out_photos": len(held), "video_frames": len(frames), "variants": {}}
    m = model.config["m"]
    for name in variants:
        base = model.i_g_s
        g_s = {"tune": lambda: copy.deepcopy(base), "wide": lambda: widen(base, a.wide),
               "deep": lambda: deepen(base, a.blocks)}[name]()
        res = {"params": sum(p.numel() for p in g_s.parameters()), "kmac_per_px": round(kmac(g_s, m), 2),
               "evals": {0: evaluate(g_s, sets)}}
        opt = torch.optim.Adam(g_s.parameters(), lr=a.lr)
        order = torch.Generator().manual_seed(a.seed)
        t0 = time.time()
        for step in range(1, a.steps + 1):
            idx = torch.randint(len(xs), (a.batch,), generator=order)
            loss = ((g_s(ys[idx]) - xs[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % a.eval_every == 0 or step == a.steps:
                res["evals"][step] = evaluate(g_s, sets)
                print(name, step, f"{time.time() - t0:.0f} s", {k: round(v, 2) for k, v in res["evals"][step].items()},
                      flush=True)
        res["train_s"] = round(time.time() - t0, 1)
        res["gain_db"] = {k: round(v - res["evals"][0][k], 3) for k, v in res["evals"][a.steps].items()}
        print(name, res["params"], "params", res["kmac_per_px"], "kMAC/px, gain", res["gain_db"], flush=True)
        results["variants"][name] = res
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()

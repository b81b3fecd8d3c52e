"""Training: ``nvc train --config configs/nvc-lite.toml`` (checkpoints, resumes, exports safetensors).

Each step draws a batch of short clips (see :mod:`nvc.data`), codes frame 0 as intra and the rest as
inter frames, each predicted from the previous *reconstruction* (cascaded, gradients flow through the
chain), every sample at a random quality. The loss is the mean over frames and samples of
``lambda[q] * 255^2 * MSE + bpp``. Stages raise the clip length (the curriculum) and lower the rate.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import InputError
from .models import create, trainable_state


@dataclass
class Stage:
    steps: int
    frames: int
    lr: float


@dataclass
class TrainConfig:
    model: str = "nvc-lite"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: str = "../shared/data/train"
    out: str = "runs/train/nvc-lite"
    seed: int = 0
    batch: int = 8
    crop: int = 128
    bf16: bool = True
    aux_lr: float = 1e-3
    clip_grad: float = 1.0
    photo_prob: float = 0.5
    checkpoint_every: int = 250
    export_every: int = 1000
    log_every: int = 25
    threads: int = 0
    stages: list[Stage] = field(default_factory=lambda: [Stage(100, 2, 1e-3)])

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    def stage_at(self, step: int) -> Stage:
        acc = 0
        for s in self.stages:
            acc += s.steps
            if step < acc:
                return s
        return self.stages[-1]

    @classmethod
    def from_toml(cls, path: str | Path) -> TrainConfig:
        p = Path(path)
        if not p.is_file():
            raise InputError(f"{p}: config file not found")
        try:
            raw = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as e:
            raise InputError(f"{p}: invalid TOML ({e})") from None
        stages = [Stage(int(s["steps"]), int(s["frames"]), float(s["lr"])) for s in raw.pop("stages", [])]
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise InputError(f"{p}: unknown config keys {sorted(unknown)}")
        cfg = cls(**raw)
        if stages:
            cfg.stages = stages
        return cfg


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_safetensors(model: torch.nn.Module, path: Path, meta: dict[str, str]) -> None:
    """Writes the trainable weights (fp32) with the model config as metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in trainable_state(model).items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"config": json.dumps(model.config), **meta})
    os.replace(tmp, path)


def clip_loss(model: torch.nn.Module, clip: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
    """Cascaded loss over a (B, T, 3, H, W) clip: intra frame 0, inter frames 1..T-1."""
    b, t, _, h, w = clip.shape
    lam = model.lambdas[q] * 255.0**2
    ref = None
    total = clip.new_zeros(())
    bpp_sum, mse_sum = clip.new_zeros(()), clip.new_zeros(())
    for i in range(t):
        x = clip[:, i]
        out = model(x, ref=ref, quality=q)
        x_hat = out["x_hat"].float()
        mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
        bpp = sum((-torch.log2(lik)).sum(dim=(1, 2, 3)) for lik in out["likelihoods"].values()) / (h * w)
        total = total + (lam * mse + bpp).mean()
        bpp_sum = bpp_sum + bpp.mean().detach()
        mse_sum = mse_sum + mse.mean().detach()
        ref = x_hat.clamp(0, 1)
    return {"loss": total / t, "bpp": bpp_sum / t, "mse": mse_sum / t}


def train(cfg: TrainConfig, on_log: Callable[[dict[str, Any]], None] | None = None,
          max_steps: int | None = None) -> Path:
    """Runs (or resumes) training; returns the path of the exported safetensors."""
    from .data import ClipSampler

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    model = create(cfg.model, **cfg.model_args)
    aux_names = {n for n, _ in model.named_parameters() if n.endswith(".quantiles")}
    params = [p for n, p in model.named_parameters() if n not in aux_names]
    aux = [p for n, p in model.named_parameters() if n in aux_names]
    opt = torch.optim.Adam(params, lr=cfg.stages[0].lr)
    aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr)
    step = 0
    ckpt = out / "last.pt"
    history: list[dict[str, Any]] = []
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        aux_opt.load_state_dict(state["aux_opt"])
        step = int(state["step"])
        history = json.loads(state.get("history", "[]"))
        torch.manual_seed(cfg.seed + step)
    if not Path(cfg.data).exists():
        raise InputError(f"{cfg.data}: training data folder not found")
    sampler = ClipSampler.from_folder(cfg.data, photo_prob=cfg.photo_prob, seed=cfg.seed + step)
    (out / "config.json").write_text(json.dumps({**cfg.__dict__, "stages": [s.__dict__ for s in cfg.stages]}, indent=1))
    model.train()
    end = cfg.total_steps if max_steps is None else min(cfg.total_steps, step + max_steps)
    log_f = (out / "log.jsonl").open("a")
    t0, acc, n = time.time(), {"loss": 0.0, "bpp": 0.0, "psnr": 0.0}, 0
    while step < end:
        stage = cfg.stage_at(step)
        for g in opt.param_groups:
            g["lr"] = stage.lr
        clip = sampler.batch(cfg.batch, stage.frames, cfg.crop)
        q = torch.randint(0, model.qualities, (cfg.batch,))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16):
            res = clip_loss(model, clip, q)
        opt.zero_grad(set_to_none=True)
        res["loss"].backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        opt.step()
        aux_opt.zero_grad(set_to_none=True)
        model.aux_loss().backward()
        aux_opt.step()
        step += 1
        if math.isfinite(res["loss"].item()):
            acc["loss"] += res["loss"].item()
            acc["bpp"] += res["bpp"].item()
            acc["psnr"] += -10 * math.log10(max(res["mse"].item(), 1e-10))
            n += 1
        if step % cfg.log_every == 0 or step == end:
            rec = {"step": step, "frames": stage.frames, "lr": stage.lr, "seconds": round(time.time() - t0, 1),
                   **{k: round(v / max(n, 1), 4) for k, v in acc.items()}}
            history.append(rec)
            log_f.write(json.dumps(rec) + "\n")
            log_f.flush()
            if on_log:
                on_log({**rec, "total": cfg.total_steps})
            acc, n = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0}, 0
        if step % cfg.checkpoint_every == 0 or step == end:
            _atomic_save({"model": model.state_dict(), "opt": opt.state_dict(), "aux_opt": aux_opt.state_dict(),
                          "step": step, "history": json.dumps(history)}, ckpt)
        if step % cfg.export_every == 0 or step == end:
            export_safetensors(model, out / f"{cfg.model}.safetensors", {"steps": str(step)})
    log_f.close()
    return out / f"{cfg.model}.safetensors"


if __name__ == "__main__":  # python -m nvc.train CONFIG
    import sys

    train(TrainConfig.from_toml(sys.argv[1]), on_log=lambda r: print(json.dumps(r), flush=True))

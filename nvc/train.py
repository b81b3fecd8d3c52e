"""Training: ``nvc train --config configs/nvc-lite.toml`` (checkpoints, resumes, exports safetensors).

Each step draws a batch of short clips (see :mod:`nvc.data`: Vimeo-90k septuplets, or any folder of
videos / photos) and a random quality per sample, and asks the *model* for its loss:
``model.training_loss(clip, quality, stage)`` -> ``{"loss", "bpp", "mse"}``. nvc-lite codes frame 0 as
intra and the rest as inter frames, each predicted from the previous reconstruction, with the loss
``lambda[q] * 255^2 * MSE + bpp``; DVC and DHVC-1.0 have their published losses (``configs/dvc.toml``,
``configs/dhvc.toml``). Stages set the clip length, the learning rate and, optionally, a model-specific
``loss`` (DVC's ``"flow"`` warm-up).

Distributed data parallel: run under ``torchrun`` (``WORLD_SIZE > 1``) and each process joins the
process group (nccl on CUDA, gloo on CPU), trains a DDP replica on ``batch`` clips of its own random
stream (seeded by rank), and rank 0 alone writes logs, checkpoints and exports::

    torchrun --nproc_per_node=8 -m nvc.train configs/dvc.toml            # one machine, 8 GPUs
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=8 --master_addr=HOST --master_port=29500 \
        -m nvc.train configs/dvc.toml                                     # each node (node_rank 0, 1)

Resuming reads ``<out>/last.pt`` on every rank, so with several nodes ``out`` must be on shared storage.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import os
import random
import shutil
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .codec import check_device
from .errors import InputError, ModelError
from .models import architecture, coding_state, create


@dataclass
class Stage:
    steps: int
    frames: int
    lr: float
    loss: str = "rd"  # model-specific objective of the stage ("flow": DVC's motion warm-up)
    # Up to this many frames are coded first without gradient (a uniform draw of 0..prefix per step), so
    # the loss also sees P frames deep in a GoP, predicted from references that have drifted.
    prefix: int = 0
    # The I frame is always in the loss, with gradient, also behind a prefix (else the intra branch trains
    # only on steps whose prefix is 0); it is coded ``intra_offset`` qualities higher than the P frames, up
    # to the top, as the encoder's ladder codes I frames (nvc.ladder).
    intra: bool = False
    intra_offset: int = 0
    # P frames at GoP positions ``boost_period``, 2 * ``boost_period``, ... (frame 0 is the I frame, the
    # prefix counts) are coded ``boost`` qualities higher, up to the top, as the encoder's ladder codes them
    # (nvc.ladder.QualityLadder's period and boost); 0: every P frame at the sample's quality.
    boost_period: int = 0
    boost: int = 0


# each stage key's type, from Stage's fields (their annotations are strings here: postponed evaluation)
STAGE_TYPES: dict[str, type] = {f.name: {"int": int, "float": float, "str": str, "bool": bool}[str(f.type)]
                                for f in dataclasses.fields(Stage)}
STAGE_KEYS = set(STAGE_TYPES)
# The model argument that the config's ``lambda`` sets (single-rate models trained once per lambda).
LAMBDA_ARGS = {"dvc": "lmbda", "dhvc-1.0": "lmb"}


def _check_type(path: Path, key: str, value: Any, kind: type) -> None:
    """Refuses a config value not of ``kind`` (a float takes an integer too; a bool is not a number)."""
    ok = (isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float
          else isinstance(value, int) and not isinstance(value, bool) if kind is int
          else isinstance(value, kind))
    if not ok:
        what = {int: "an integer", float: "a number", bool: "true or false", str: "a string", list: "a list",
                dict: "a table"}.get(kind, kind.__name__)
        raise InputError(f"{path}: {key} must be {what}, not {value!r}")


@dataclass
class TrainConfig:
    model: str = "nvc-lite"
    model_args: dict[str, Any] = field(default_factory=dict)
    data: str = "../shared/data/train"
    out: str = "runs/train/nvc-lite"
    init: str = ""  # weights (.safetensors / state_dict) to start from when <out>/last.pt does not exist
    init_widen: bool = False  # init has fewer latent channels: embed it (the model's ``embed``), same output
    # init was trained for other qualities (the lambdas in its config): map its gains onto model_args' lambdas
    # (the model's ``requalify``: same lambdas copied, new ones extrapolated)
    init_lambdas: bool = False
    # hex prefix (8+ digits) of the init weights' digest (nvc.models.weights_digest, as in stream headers and
    # bench protocols): training refuses other weights, so a config names exactly what it continued from
    init_digest: str = ""
    # name prefixes of the only parameters trained (e.g. ["i_ctx.", "p_ctx."]: a new module on a frozen model);
    # empty: all of them
    train_only: list[str] = field(default_factory=list)
    # relative sampling weight of each quality (one per quality of the model); empty: uniform
    # (e.g. more samples for a quality just added in front of trained ones)
    quality_weights: list[float] = field(default_factory=list)
    # learning-rate multipliers by parameter-name substring (TOML table, e.g. {"_gain." = 10.0}: the
    # per-quality gain vectors, nearly frozen at a fine-tuning lr, move at 10x the stage's lr); first match wins
    lr_scales: dict[str, float] = field(default_factory=dict)
    seed: int = 0
    batch: int = 8
    # gradient accumulation: each step's ``batch`` clips go through the model in this many equal parts, one
    # backward pass each, then one optimizer step: the same step as one pass over the whole batch (the loss is
    # a mean over samples), in a part's memory (a CPU that thrashes at batch 16 of 256x256 crops runs 4 x 4)
    accumulate: int = 1
    crop: int = 128
    bf16: bool = True
    aux_lr: float = 1e-3
    clip_grad: float = 1.0
    photo_prob: float = 0.5
    checkpoint_every: int = 250
    export_every: int = 1000
    # also keep every export as <out>/step-<N>.safetensors (checkpoints to compare; <out>/<model> is the last)
    keep_exports: bool = False
    log_every: int = 25
    threads: int = 0
    lmbda: float | None = None  # TOML key ``lambda``; models in LAMBDA_ARGS only; ``{lambda}`` in ``out``
    device: str = "auto"  # auto (cuda when available), cpu, cuda
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
        raw = _read_config(p)
        stages = []
        raw_stages = raw.pop("stages", [])
        if not isinstance(raw_stages, list) or not all(isinstance(s, dict) for s in raw_stages):
            raise InputError(f"{p}: stages must be [[stages]] tables")
        for i, s in enumerate(raw_stages):
            extra = set(s) - STAGE_KEYS
            if extra:
                raise InputError(f"{p}: unknown stage keys {sorted(extra)}")
            missing = [k for k in ("steps", "frames", "lr") if k not in s]
            if missing:
                raise InputError(f"{p}: stage {i + 1} lacks {', '.join(missing)}")
            for key, value in s.items():
                _check_type(p, f"stage {i + 1} {key}", value, STAGE_TYPES[key])
            stage = Stage(**{k: float(v) if STAGE_TYPES[k] is float else v for k, v in s.items()})
            for key in ("prefix", "intra_offset", "boost_period", "boost"):
                if getattr(stage, key) < 0:
                    raise InputError(f"{p}: stage {key} must be 0 or more, not {getattr(stage, key)}")
            for key in ("steps", "frames"):
                if getattr(stage, key) < 1:
                    raise InputError(f"{p}: stage {i + 1} {key} must be at least 1, not {getattr(stage, key)}")
            if not stage.lr > 0:
                raise InputError(f"{p}: stage {i + 1} lr must be above 0, not {stage.lr}")
            if bool(stage.boost) != bool(stage.boost_period):
                raise InputError(f"{p}: a stage's boost and boost_period go together (both 0, or both set)")
            stages.append(stage)
        if "lambda" in raw:
            _check_type(p, "lambda", raw["lambda"], float)
            raw["lmbda"] = float(raw.pop("lambda"))
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(raw) - known
        if unknown:
            raise InputError(f"{p}: unknown config keys {sorted(unknown)}")
        defaults = cls()
        for key, value in raw.items():  # each key of the type its default has (lambda, checked above: a number)
            default = getattr(defaults, key)
            if default is not None:
                _check_type(p, key, value, type(default))
        cfg = cls(**raw)
        architecture(cfg.model)  # an unknown model name: refused here, before any training output
        if stages:
            cfg.stages = stages
        for key in ("batch", "crop", "checkpoint_every", "export_every", "log_every"):
            if getattr(cfg, key) < 1:
                raise InputError(f"{p}: {key} must be at least 1, not {getattr(cfg, key)}")
        if cfg.threads < 0 or not cfg.aux_lr > 0 or cfg.clip_grad < 0 or not 0 <= cfg.photo_prob <= 1:
            raise InputError(f"{p}: threads and clip_grad must be 0 or more, aux_lr above 0, photo_prob 0..1")
        try:
            check_device(cfg.device)
        except InputError as e:
            raise InputError(f"{p}: {e}") from None
        if cfg.accumulate < 1 or cfg.batch % cfg.accumulate:
            raise InputError(f"{p}: accumulate must divide batch ({cfg.batch}) into equal parts, not {cfg.accumulate}")
        if cfg.init_digest:
            d = cfg.init_digest.lower()
            if not cfg.init:
                raise InputError(f"{p}: init_digest without init")
            if len(d) < 8 or len(d) > 32 or any(ch not in "0123456789abcdef" for ch in d):
                raise InputError(f"{p}: init_digest must be 8 to 32 hex digits, not {cfg.init_digest!r}")
            cfg.init_digest = d
        if cfg.lr_scales:
            sc = cfg.lr_scales
            if not isinstance(sc, dict) or not all(isinstance(v, (int, float)) and v > 0 for v in sc.values()):
                raise InputError(f"{p}: lr_scales must be a table of name substrings to numbers > 0")
            cfg.lr_scales = {str(k): float(v) for k, v in sc.items()}
        if cfg.quality_weights:
            w = cfg.quality_weights
            if not isinstance(w, list) or not all(isinstance(v, (int, float)) and v >= 0 for v in w) or sum(w) <= 0:
                raise InputError(f"{p}: quality_weights must be a list of numbers >= 0 with a positive sum")
            cfg.quality_weights = [float(v) for v in w]
        return cfg


def _read_config(p: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One config's TOML with its ``extends`` chain resolved (base first, this file's keys on top).

    ``extends = "other.toml"`` (relative to this file's folder) reads that config first; a key set here
    replaces the base's, except tables (``model_args``, ``lr_scales``), which merge key by key. ``stages``
    is a list and so is replaced whole: a stage-only change restates the stages.
    """
    if not p.is_file():
        by = f" (extended by {chain[-1]})" if chain else ""
        raise InputError(f"{p}: config file not found{by}")
    try:
        raw = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InputError(f"{p}: invalid TOML ({e})") from None
    base_name = raw.pop("extends", None)
    if base_name is None:
        return raw
    if not isinstance(base_name, str) or not base_name:
        raise InputError(f"{p}: extends must be the path of another config")
    base = p.parent / base_name
    here = chain + (p.resolve(),)
    if base.resolve() in here:
        raise InputError(f"{p}: extends {base_name} loops back to a config already in the chain")
    merged = _read_config(base, here)
    for k, v in raw.items():
        old = merged.get(k)
        merged[k] = {**old, **v} if isinstance(v, dict) and isinstance(old, dict) else v
    return merged


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def export_safetensors(model: torch.nn.Module, path: Path, meta: dict[str, str]) -> None:
    """Writes the weights (fp32) and the entropy tables (computed on the CPU) with the config as metadata."""
    from safetensors.torch import save_file

    cpu = copy.deepcopy(model).cpu().eval()
    cpu.update(force=True)
    # clone (coding_state): aliased modules (DVC's entropy_hyper_mv is entropy_bottleneck) must not share storage
    state = coding_state(cpu)
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata={"config": json.dumps(model.config), **meta})
    os.replace(tmp, path)


def average_exports(paths: Sequence[str | Path], out: str | Path, model: str = "nvc-lite") -> Path:
    """Writes the uniform average of exported weights of architecture ``model`` (one config) to ``out``.

    Floating-point tensors are averaged (others must agree); the entropy coders' tables are not averaged but
    recomputed from the averaged parameters, as every export computes them. Returns ``out``."""
    from .models import _TABLES, create, load_state

    out = Path(out)
    if len(paths) < 2:
        raise InputError("averaging needs two or more weights files")
    if out.exists():
        raise InputError(f"{out}: already exists (nothing is overwritten)")
    loaded = [load_state(p) for p in paths]
    cfg = loaded[0][1]
    if any(c != cfg for _, c in loaded[1:]):
        raise InputError("the weights files have different model configs; only exports of one run average")
    states = [{k: v for k, v in st.items() if not k.endswith(_TABLES)} for st, _ in loaded]
    first = states[0]
    for p, st in zip(paths[1:], states[1:]):
        if st.keys() != first.keys() or any(st[k].shape != first[k].shape or st[k].dtype != first[k].dtype
                                            or (not first[k].is_floating_point() and not torch.equal(st[k], first[k]))
                                            for k in first):
            raise InputError(f"{p}: its tensors do not match {paths[0]}'s")
    mean = {k: torch.stack([st[k].double() for st in states]).mean(0).to(t.dtype) if t.is_floating_point() else t
            for k, t in first.items()}
    net = create(model, **cfg)
    missing, unexpected = net.load_state_dict(mean, strict=False)
    if unexpected or [k for k in missing if not k.endswith(_TABLES)]:
        raise ModelError(f"averaged weights do not fit {model!r} (missing {missing[:3]}, unexpected {unexpected[:3]})")
    export_safetensors(net, out, {"average_of": json.dumps([Path(p).name for p in paths])})
    return out


def clip_loss(model: torch.nn.Module, clip: torch.Tensor, q: torch.Tensor) -> dict[str, torch.Tensor]:
    """nvc-lite's cascaded loss over a (B, T, 3, H, W) clip (kept for callers; see ``training_loss``)."""
    return model.training_loss(clip, q, None)


def shard_seed(seed: int, rank: int) -> int:
    """The random seed of data-parallel rank ``rank`` (rank 0 keeps ``seed``: single-process runs are
    unchanged); ranks draw different clips, noise and qualities."""
    return seed + 1_000_003 * rank


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    enabled: bool = False  # a process group was initialised (by us)

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> Dist:
    """Joins the ``torchrun`` process group when ``WORLD_SIZE > 1`` (or ``NVC_DDP=1``, for tests):
    nccl on CUDA, gloo on CPU. Single process otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and os.environ.get("NVC_DDP", "") != "1":
        return Dist()
    import torch.distributed as dist

    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local, True)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(name)


def accumulate_backward(loss_fn: Callable[..., dict[str, torch.Tensor]], clip: torch.Tensor, q: torch.Tensor,
                        stage: Stage, parts: int, device_type: str = "cpu", bf16: bool = False,
                        no_sync: Callable[[], Any] | None = None) -> dict[str, torch.Tensor]:
    """Backpropagates the batch's mean loss in ``parts`` equal slices of the batch (gradient accumulation);
    returns the batch's detached ``{"loss", "bpp", "mse"}``, each the mean of the slices'. ``no_sync``: DDP's,
    so that only the last slice's backward pass reduces the gradients across ranks."""
    res: dict[str, torch.Tensor] = {}
    for i, (c, qq) in enumerate(zip(clip.chunk(parts), q.chunk(parts))):
        last = i == parts - 1
        with (contextlib.nullcontext() if last or no_sync is None else no_sync()):
            with torch.autocast(device_type, dtype=torch.bfloat16, enabled=bf16):
                out = loss_fn(c, qq, stage)
            (out["loss"] / parts).backward()
        for k in ("loss", "bpp", "mse"):
            res[k] = res.get(k, 0.0) + out[k].detach().float() / parts
    return res


class _Loss(torch.nn.Module):
    """Routes ``training_loss`` through ``forward`` so DDP sees (and synchronises) the pass."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, clip: torch.Tensor, q: torch.Tensor, stage: Stage) -> dict[str, torch.Tensor]:
        return self.model.training_loss(clip, q, stage)


def train(cfg: TrainConfig, on_log: Callable[[dict[str, Any]], None] | None = None,
          max_steps: int | None = None, on_start: Callable[[int], None] | None = None) -> Path:
    """Runs (or resumes) training; returns the path of the exported safetensors.

    ``on_start(step)``: called once the model, its weights and the data are ready, with the step training
    starts (or resumes) at; errors in the config, weights or data come before it. ``on_log(record)``: every
    ``log_every`` steps. Both on the main process only."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = _resolve_device(cfg.device, local)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    args = dict(cfg.model_args)
    out_name = cfg.out
    if cfg.lmbda is not None:
        if cfg.model not in LAMBDA_ARGS:
            raise InputError(f"model {cfg.model!r} takes no `lambda` (nvc-lite: per-quality `lambdas` in model_args)")
        args[LAMBDA_ARGS[cfg.model]] = float(cfg.lmbda)
        out_name = out_name.replace("{lambda}", f"{cfg.lmbda:g}")
    if not Path(cfg.data).exists():
        raise InputError(f"{cfg.data}: training data folder not found")
    dist = setup_distributed(device)
    try:
        return _train(cfg, args, Path(out_name), device, dist, on_log, max_steps, on_start)
    finally:
        if dist.enabled:
            import torch.distributed as tdist

            tdist.destroy_process_group()


def _param_groups(model: torch.nn.Module, skip: set[str], scales: dict[str, float]) -> list[dict[str, Any]]:
    """Adam parameter groups: the trained parameters not in ``skip``, grouped by the first ``scales``
    substring their name contains (``scale`` multiplies the stage's lr); the rest in a group of scale 1."""
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for n, p in model.named_parameters():
        if n in skip or not p.requires_grad:
            continue
        scale = next((v for k, v in scales.items() if k in n), 1.0)
        groups.setdefault(scale, []).append(p)
    unmatched = [k for k in scales if not any(k in n for n, _ in model.named_parameters())]
    if unmatched:
        raise InputError(f"lr_scales {unmatched}: no parameter of the model has such a name")
    return [{"params": ps, "scale": sc} for sc, ps in sorted(groups.items())]


def _train(cfg: TrainConfig, args: dict[str, Any], out: Path, device: torch.device, dist: Dist,
           on_log: Callable[[dict[str, Any]], None] | None, max_steps: int | None,
           on_start: Callable[[int], None] | None = None) -> Path:
    from .data import open_sampler

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    try:
        model = create(cfg.model, **args).to(device)
    except (TypeError, ValueError) as e:  # a model_args key the architecture has not, or a value it cannot take
        raise InputError(f"{cfg.model} cannot be built from model_args {cfg.model_args}: {e}") from None
    losses = getattr(model, "stage_losses", ("rd",))
    bad = sorted({s.loss for s in cfg.stages} - set(losses))
    if bad:
        raise InputError(f"model {cfg.model!r} has no stage loss {', '.join(map(repr, bad))}; use {', '.join(losses)}")
    if any(s.prefix for s in cfg.stages) and not getattr(model, "trains_with_prefix", False):
        raise InputError(f"model {cfg.model!r} does not train with a stage prefix")
    if any(s.intra or s.intra_offset or s.boost for s in cfg.stages) and not getattr(model, "trains_with_prefix", False):
        raise InputError(f"model {cfg.model!r} does not train with a stage's intra keys (intra, intra_offset) or boost")
    aux_names = {n for n, _ in model.named_parameters() if n.endswith(".quantiles")}
    if cfg.train_only:
        prefixes = tuple(cfg.train_only)
        for n, p in model.named_parameters():
            p.requires_grad_(n in aux_names or n.startswith(prefixes))
        if not any(n.startswith(prefixes) for n, _ in model.named_parameters()):
            raise InputError(f"train_only {cfg.train_only}: no parameter of model {cfg.model!r} has such a name")
    params = [p for n, p in model.named_parameters() if n not in aux_names and p.requires_grad]
    aux = [p for n, p in model.named_parameters() if n in aux_names]
    opt = torch.optim.Adam(_param_groups(model, aux_names, cfg.lr_scales), lr=cfg.stages[0].lr)
    aux_opt = torch.optim.Adam(aux, lr=cfg.aux_lr) if aux else None
    step = 0
    ckpt = out / "last.pt"
    history: list[dict[str, Any]] = []
    if ckpt.exists():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        if aux_opt is not None:
            aux_opt.load_state_dict(state["aux_opt"])
        step = int(state["step"])
        history = json.loads(state.get("history", "[]"))
        torch.manual_seed(shard_seed(cfg.seed + step, dist.rank))
    else:
        if cfg.init:
            from .models import _TABLES, load_state, weights_digest

            init_state, init_cfg = load_state(cfg.init)
            had, has = bool(init_cfg.get("motion")), bool(getattr(model, "config", {}).get("motion"))
            if had != has:  # the same tensors either way: only the config tells them apart
                raise InputError(f"{cfg.init}: weights trained {'with' if had else 'without'} block motion; "
                                 f"set `motion` in [model_args] to {'a block size' if had else '0'} to match")
            if cfg.init_digest:  # from_toml checks and lowercases it; a config built in code may not have been
                have = weights_digest(init_state).hex()
                if not have.startswith(cfg.init_digest.lower()):
                    raise InputError(f"{cfg.init}: weights digest {have[:8]}..., not the {cfg.init_digest[:8]}... "
                                     "this config starts from (init_digest; see the config's comments)")
            if cfg.init_widen and cfg.init_lambdas:
                raise InputError("init_widen and init_lambdas cannot be combined (widen first, then requalify)")
            if cfg.init_lambdas:
                if not hasattr(model, "requalify"):
                    raise InputError(f"model {cfg.model!r} cannot map its init weights onto other qualities")
                if not init_cfg.get("lambdas"):
                    raise InputError(f"{cfg.init}: no lambdas in its config (init_lambdas needs them)")
                try:
                    model.requalify(init_state, init_cfg["lambdas"])
                except (KeyError, RuntimeError, ModelError) as e:
                    raise InputError(f"{cfg.init}: cannot be mapped onto model {cfg.model!r}'s qualities ({e})") from None
            elif cfg.init_widen:
                if not hasattr(model, "embed"):
                    raise InputError(f"model {cfg.model!r} cannot widen its init weights")
                try:
                    model.embed(init_state)
                except (KeyError, RuntimeError, ModelError) as e:
                    raise InputError(f"{cfg.init}: cannot be widened into model {cfg.model!r} ({e})") from None
            else:
                missing, unexpected = model.load_state_dict(
                    {k: v for k, v in init_state.items() if not k.endswith(_TABLES)}, strict=False)
                fresh = tuple(getattr(model, "init_fresh", ()))  # modules that may start untrained
                if unexpected or [k for k in missing if not k.endswith(_TABLES) and not (fresh and k.startswith(fresh))]:
                    raise InputError(f"{cfg.init}: weights do not fit model {cfg.model!r}")
        if dist.rank:
            torch.manual_seed(shard_seed(cfg.seed, dist.rank))
    q_weights = None
    if cfg.quality_weights:
        if len(cfg.quality_weights) != model.qualities:
            raise InputError(f"quality_weights has {len(cfg.quality_weights)} entries; model {cfg.model!r} "
                             f"has {model.qualities} qualities")
        q_weights = torch.tensor(cfg.quality_weights, dtype=torch.float64)
    sampler = open_sampler(cfg.data, photo_prob=cfg.photo_prob, seed=shard_seed(cfg.seed + step, dist.rank))
    if dist.main:  # the run's folder is made once the config, the weights and the data have passed
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps({**cfg.__dict__, "stages": [s.__dict__ for s in cfg.stages]},
                                                    indent=1))
    model.train()
    loss_fn: Callable[..., dict[str, torch.Tensor]] = model.training_loss
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        wrapper = _Loss(model)
        # the entropy bottlenecks' quantiles are trained by the aux loss, outside DDP (averaged below)
        DDP._set_params_and_buffers_to_ignore_for_model(wrapper, [f"model.{n}" for n in aux_names])
        loss_fn = DDP(wrapper, device_ids=[device.index] if device.type == "cuda" else None,
                      find_unused_parameters=True)
    end = cfg.total_steps if max_steps is None else min(cfg.total_steps, step + max_steps)
    log_f = (out / "log.jsonl").open("a") if dist.main else None
    t0, acc, n = time.time(), {"loss": 0.0, "bpp": 0.0, "psnr": 0.0}, 0
    if on_start and dist.main:
        on_start(step)
    while step < end:
        stage = cfg.stage_at(step)
        for g in opt.param_groups:
            g["lr"] = stage.lr * g.get("scale", 1.0)
        if stage.prefix:  # this step's prefix: 0..prefix frames coded before the loss's frames
            stage = dataclasses.replace(stage, prefix=int(torch.randint(0, stage.prefix + 1, ())))
        clip = sampler.batch(cfg.batch, stage.prefix + stage.frames, cfg.crop).to(device)
        if q_weights is None:
            q = torch.randint(0, model.qualities, (cfg.batch,)).to(device)
        else:
            q = torch.multinomial(q_weights, cfg.batch, replacement=True).to(device)
        opt.zero_grad(set_to_none=True)
        res = accumulate_backward(loss_fn, clip, q, stage, cfg.accumulate, device.type, cfg.bf16,
                                  getattr(loss_fn, "no_sync", None))
        torch.nn.utils.clip_grad_norm_(params, cfg.clip_grad)
        opt.step()
        if aux_opt is not None:
            aux_opt.zero_grad(set_to_none=True)
            model.aux_loss().backward()
            if dist.enabled:
                import torch.distributed as tdist

                for p in aux:
                    if p.grad is not None:
                        tdist.all_reduce(p.grad)
                        p.grad /= dist.world
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
            if log_f is not None:
                log_f.write(json.dumps(rec) + "\n")
                log_f.flush()
                if on_log:
                    on_log({**rec, "total": cfg.total_steps})
            acc, n = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0}, 0
        if dist.main and (step % cfg.checkpoint_every == 0 or step == end):
            state = {"model": model.state_dict(), "opt": opt.state_dict(), "step": step,
                     "history": json.dumps(history)}
            if aux_opt is not None:
                state["aux_opt"] = aux_opt.state_dict()
            _atomic_save(state, ckpt)
        if dist.main and (step % cfg.export_every == 0 or step == end):
            export_safetensors(model, out / f"{cfg.model}.safetensors", {"steps": str(step)})
            if cfg.keep_exports:
                shutil.copyfile(out / f"{cfg.model}.safetensors", out / f"step-{step}.safetensors")
    if log_f is not None:
        log_f.close()
    return out / f"{cfg.model}.safetensors"


if __name__ == "__main__":  # python -m nvc.train CONFIG [--lambda X]   (what torchrun -m nvc.train runs)
    import argparse

    ap = argparse.ArgumentParser(prog="python -m nvc.train")
    ap.add_argument("config")
    ap.add_argument("--lambda", dest="lmbda", type=float, default=None)
    ap.add_argument("--steps", type=int, default=None)
    a = ap.parse_args()
    c = TrainConfig.from_toml(a.config)
    if a.lmbda is not None:
        c.lmbda = a.lmbda
    train(c, on_log=lambda r: print(json.dumps(r), flush=True), max_steps=a.steps)

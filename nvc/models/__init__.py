"""Model registry: named architectures with integer qualities, like CompressAI's zoo.

``create(name, **cfg)`` builds an architecture with fresh weights; ``load(name)`` returns it with the
weights shipped in the package (``nvc/weights/<name>.safetensors``) or from a checkpoint, ready to code.
Importing this package imports torch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def _lite(**cfg: Any) -> nn.Module:
    from .lite import NvcLite

    return NvcLite(**cfg)


def _dvc(**cfg: Any) -> nn.Module:
    from .dvc import DVC

    return DVC(**cfg)


def _dhvc(**cfg: Any) -> nn.Module:
    from .dhvc import DHVC

    return DHVC(**cfg)


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"nvc-lite": _lite, "dvc": _dvc, "dhvc-1.0": _dhvc}
DEFAULT_MODEL = "nvc-lite"


def names() -> list[str]:
    """Registered architecture names."""
    return sorted(ARCHITECTURES)


def architecture(name: str) -> Callable[..., nn.Module]:
    """The factory registered as ``name``."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(names())}") from None


def create(name: str, **cfg: Any) -> nn.Module:
    """Builds architecture ``name`` with fresh (untrained) weights."""
    return architecture(name)(**cfg)


_TABLES = ("_quantized_cdf", "_offset", "_cdf_length", "scale_table")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state_dict without the entropy coders' derived tables (rebuilt by ``update()``)."""
    return {k: v for k, v in model.state_dict().items() if not k.endswith(_TABLES)}


def coding_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole state, entropy coders' tables (CDFs, offsets, scale table) included, on the CPU.

    Shipped weights carry their tables: computed once, they are data, so every machine codes with the
    same probabilities (recomputing them runs libm functions whose last bits vary between machines)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _set_tables(model: nn.Module, tables: dict[str, torch.Tensor], source: str) -> None:
    """Installs stored entropy tables after checking that they are complete and well formed."""
    expected = {k for k in model.state_dict() if k.endswith(_TABLES)}
    if set(tables) != expected:
        raise ModelError(f"{source}: incomplete entropy tables (expected {len(expected)}, found {len(tables)})")
    for key, value in tables.items():
        mod_name, buf = key.rsplit(".", 1)
        mod = model.get_submodule(mod_name)
        mod._buffers[buf] = value.clone()
    for key in tables:
        if key.endswith("._quantized_cdf"):
            prefix = key[: -len("_quantized_cdf")]
            cdf, length, offset = tables[key], tables[prefix + "_cdf_length"], tables[prefix + "_offset"]
            ok = (cdf.dim() == 2 and cdf.dtype == torch.int32 and length.shape == offset.shape == (cdf.shape[0],)
                  and bool(((length >= 2) & (length <= cdf.shape[1])).all()))
            if ok:
                idx = torch.arange(cdf.shape[1])[None]
                valid = idx < length.long()[:, None]
                ok = (bool((cdf[:, 0] == 0).all()) and bool(((cdf[:, 1:] >= cdf[:, :-1]) | ~valid[:, 1:]).all())
                      and bool(((cdf <= 1 << 16) | ~valid).all()))
            if not ok:
                raise ModelError(f"{source}: malformed entropy table {key}")


def weights_digest(state: dict[str, torch.Tensor]) -> bytes:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes (16 bytes): identifies the weights."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:16]


def shipped_weights(name: str) -> Path:
    return WEIGHTS_DIR / f"{name}.safetensors"


def load_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Reads a state_dict from .safetensors, or a torch checkpoint with ``weights_only=True`` only."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"{p}: weights file not found")
    if p.suffix == ".safetensors":
        from safetensors import safe_open
        from safetensors.torch import load_file

        try:
            with safe_open(str(p), "pt") as f:
                meta = dict(f.metadata() or {})
            state = load_file(str(p))
        except Exception as e:  # noqa: BLE001 - any parse failure is a bad weights file
            raise ModelError(f"{p.name}: not a valid safetensors file ({str(e)[:120]})") from None
        cfg = json.loads(meta.get("config", "{}"))
        return state, cfg
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - pickles that need code, or corrupt files, are refused
        raise ModelError(f"{p.name}: refused to load checkpoint ({str(e).splitlines()[0][:120]})") from None
    cfg = {}
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        cfg = obj.get("config", {}) if isinstance(obj.get("config", {}), dict) else {}
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        cfg = obj.get("config", {}) if isinstance(obj.get("config", {}), dict) else {}
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{p.name}: not a state_dict")
    return obj, cfg


def load(name: str = DEFAULT_MODEL, checkpoint: str | Path | None = None, device: str = "cpu",
         **options: Any) -> nn.Module:
    """Builds ``name`` with shipped weights (or ``checkpoint``), entropy tables updated, in eval mode.

    ``options`` are the model's coding options (``model.configure(**options)``; e.g. DVC's ``intra``,
    ``intra_qp``, ``intra_quality``); None values are ignored. The result carries ``weights_digest``
    (bytes) for the stream header.
    """
    options = {k: v for k, v in options.items() if v is not None}
    architecture(name)  # before any file: a typo in --model is not a missing weights file
    path = Path(checkpoint) if checkpoint else shipped_weights(name)
    if checkpoint is None and not path.is_file():
        raise ModelError(f"no shipped weights for {name!r} ({path.name} missing); pass --checkpoint")
    state, cfg = load_state(path)
    model = create(name, **cfg)
    if options and not hasattr(model, "configure"):
        flags = ", ".join("--" + k.replace("_", "-") for k in options)
        raise ModelError(f"model {name!r} does not take {flags}")
    tables = {k: v for k, v in state.items() if k.endswith(_TABLES)}
    state = {k: v for k, v in state.items() if not k.endswith(_TABLES)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise ModelError(f"{path.name}: weights do not fit model {name!r} ({str(e).splitlines()[0][:160]})") from None
    missing = [k for k in missing if not k.endswith(_TABLES)]
    if missing or unexpected:
        raise ModelError(f"{path.name}: weights do not fit model {name!r} "
                         f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    if tables:
        _set_tables(model, tables, path.name)
    else:  # a training checkpoint: derive the tables here (the digest then tells machines apart)
        model.update(force=True)
    # the digest covers the weights and the entropy tables: a stream never meets other probabilities
    model.weights_digest = weights_digest(model.state_dict())  # type: ignore[assignment]
    if hasattr(model, "configure"):
        model.configure(**options)  # may extend weights_digest (e.g. DVC with nvc intra frames)
    return model.to(device)

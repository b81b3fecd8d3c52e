"""A tiny config trains for a few steps on generated frames; the loss falls; resume continues."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nvc.train import TrainConfig, train
from nvc.errors import InputError


def _data(root):
    from PIL import Image

    img_dir = root / "images"
    img_dir.mkdir(parents=True)
    rng = np.random.RandomState(0)
    for i in range(3):
        base = rng.rand(12, 12, 3)
        img = np.kron(base, np.ones((16, 16, 1)))  # blocky but smooth-ish, 192x192
        Image.fromarray((img * 255).astype(np.uint8)).save(img_dir / f"p{i}.png")
    return root


def test_tiny_training_loss_falls_and_resumes(tmp_path):
    data = _data(tmp_path / "data")
    cfg_path = tmp_path / "tiny.toml"
    cfg_path.write_text(f"""
model = "nvc-lite"
model_args = {{ n = 8, m = 8, c = 4 }}
data = "{data}"
out = "{tmp_path / 'run'}"
batch = 2
crop = 64
bf16 = false
log_every = 5
checkpoint_every = 10
export_every = 20
[[stages]]
steps = 20
frames = 2
lr = 0.003
[[stages]]
steps = 10
frames = 3
lr = 0.001
""")
    cfg = TrainConfig.from_toml(cfg_path)
    assert cfg.total_steps == 30
    train(cfg, max_steps=20)
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 20
    assert log[-1]["loss"] < log[0]["loss"]
    path = train(cfg)  # resumes at 20, runs to 30
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 30 and path.exists()
    from nvc.models import load

    m = load("nvc-lite", path)
    assert m.qualities == 6
    # Continue from exported weights (fresh optimizer) into a new folder.
    cfg2 = TrainConfig.from_toml(cfg_path)
    cfg2.out, cfg2.init = str(tmp_path / "run2"), str(path)
    train(cfg2, max_steps=1)
    first = json.loads((tmp_path / "run2" / "log.jsonl").read_text().splitlines()[0])
    assert first["loss"] < log[0]["loss"]
    # Grow the exported weights into wider latents (init_widen): training starts from them.
    cfg3 = TrainConfig.from_toml(cfg_path)
    cfg3.out, cfg3.init, cfg3.init_widen = str(tmp_path / "run3"), str(path), True
    cfg3.model_args = {"n": 8, "m": 12, "c": 4}
    wide = load("nvc-lite", train(cfg3, max_steps=1))
    assert wide.config["m"] == 12 and wide.qualities == 6
    cfg3.out, cfg3.model_args = str(tmp_path / "run4"), {"n": 8, "m": 4, "c": 4}
    with pytest.raises(InputError, match="cannot be widened"):
        train(cfg3, max_steps=1)


def test_bad_config(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text("nonsense_key = 1\n")
    with pytest.raises(InputError, match="unknown config keys"):
        TrainConfig.from_toml(p)
    with pytest.raises(InputError, match="not found"):
        TrainConfig.from_toml(tmp_path / "none.toml")

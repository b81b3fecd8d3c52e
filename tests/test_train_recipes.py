"""Training recipes of the seed architectures (DVC, DHVC 1.0): Vimeo-90k loader, model losses, DDP plumbing."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from nvc.data import VimeoSampler, is_vimeo, open_sampler
from nvc.train import TrainConfig, shard_seed, train

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _one_thread():
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(prev)


def fake_vimeo(root: Path, sequences: int = 2, h: int = 96, w: int = 112) -> Path:
    """A Vimeo-90k septuplet layout with smooth, moving generated frames."""
    from PIL import Image

    rng = np.random.RandomState(0)
    names = []
    for s in range(sequences):
        name = f"{s + 1:05d}/0001"
        d = root / "sequences" / name
        d.mkdir(parents=True)
        base = np.kron(rng.rand(h // 8 + 2, w // 8 + 4, 3), np.ones((8, 8, 1)))
        for t in range(7):
            frame = base[4 : 4 + h, 2 * t : 2 * t + w]
            Image.fromarray((frame * 255).astype(np.uint8)).save(d / f"im{t + 1}.png")
        names.append(name)
    (root / "sep_trainlist.txt").write_text("\n".join(names) + "\n")
    return root


def _config(tmp_path: Path, text: str) -> TrainConfig:
    p = tmp_path / "cfg.toml"
    p.write_text(text)
    return TrainConfig.from_toml(p)


def test_vimeo_sampler(tmp_path):
    root = fake_vimeo(tmp_path / "vimeo")
    assert is_vimeo(root) and not is_vimeo(tmp_path)
    s = open_sampler(root, photo_prob=0.5, seed=3)
    assert isinstance(s, VimeoSampler) and len(s.sequences) == 2
    b = s.batch(3, 4, 64)
    assert b.shape == (3, 4, 3, 64, 64) and b.dtype == torch.float32
    assert 0.0 <= float(b.min()) and float(b.max()) <= 1.0
    again = open_sampler(root, photo_prob=0.5, seed=3).batch(3, 4, 64)
    assert torch.equal(b, again)  # seeded
    with pytest.raises(ValueError):
        s.clip(8, 64)


def test_shipped_recipes_parse():
    dvc = TrainConfig.from_toml(REPO / "configs" / "dvc.toml")
    assert dvc.model == "dvc" and dvc.lmbda == 1024 and dvc.crop == 256
    assert dvc.stages[0].loss == "flow" and all(s.loss == "rd" for s in dvc.stages[1:])
    assert dvc.stages[1].lr == 1e-4 and dvc.stages[-1].lr < dvc.stages[1].lr
    dhvc = TrainConfig.from_toml(REPO / "configs" / "dhvc.toml")
    assert dhvc.model == "dhvc-1.0" and min(s.frames for s in dhvc.stages) >= 3
    lite = TrainConfig.from_toml(REPO / "configs" / "nvc-lite.toml")
    assert lite.lmbda is None and all(s.loss == "rd" for s in lite.stages)


def test_every_config_parses_and_continuations_pin_their_start():
    """A config that continues from the shipped weights names their digest: the shipped file changes."""
    configs = sorted((REPO / "configs").glob("*.toml"))
    assert len(configs) >= 3
    for path in configs:
        cfg = TrainConfig.from_toml(path)
        if cfg.init == "nvc/weights/nvc-lite.safetensors":
            assert cfg.init_digest, f"{path.name}: init is the shipped file but init_digest is not set"


def test_dvc_loss_falls_on_a_fixed_batch(tmp_path):
    from nvc.models import create
    from nvc.train import Stage

    torch.manual_seed(0)
    clip = open_sampler(fake_vimeo(tmp_path / "v"), photo_prob=0, seed=0).batch(2, 2, 64)
    model = create("dvc", lmbda=256.0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    for stage in (Stage(1, 2, 1e-4, "flow"), Stage(1, 2, 1e-4)):
        losses = []
        for _ in range(4):
            torch.manual_seed(1)  # same quantisation noise every step
            res = model.training_loss(clip, torch.zeros(2, dtype=torch.long), stage)
            assert all(math.isfinite(float(v)) for v in res.values())
            opt.zero_grad()
            res["loss"].backward()
            opt.step()
            losses.append(float(res["loss"]))
        assert losses[-1] < losses[0], (stage.loss, losses)


def test_dvc_recipe_runs_and_exports(tmp_path):
    data = fake_vimeo(tmp_path / "vimeo")
    cfg = _config(tmp_path, f"""
model = "dvc"
lambda = 512
data = "{data}"
out = "{tmp_path / 'run'}/dvc-{{lambda}}"
batch = 1
crop = 64
bf16 = false
device = "cpu"
log_every = 1
[[stages]]
steps = 1
frames = 2
lr = 1e-4
loss = "flow"
[[stages]]
steps = 2
frames = 3
lr = 1e-4
""")
    path = train(cfg)
    assert path == tmp_path / "run" / "dvc-512" / "dvc.safetensors" and path.is_file()
    log = [json.loads(x) for x in (path.parent / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in log)
    from nvc.models import load

    m = load("dvc", path, intra="x265")  # exported weights (aliased bottleneck included) load and code
    assert m.lmbda == 512.0


def test_lambda_refused_for_nvc_lite(tmp_path):
    from nvc.errors import InputError

    cfg = _config(tmp_path, f'model = "nvc-lite"\nlambda = 1\ndata = "{tmp_path}"\nout = "{tmp_path / "r"}"\n')
    with pytest.raises(InputError, match="lambda"):
        train(cfg)
    with pytest.raises(InputError, match="stage keys"):
        _config(tmp_path, "[[stages]]\nsteps = 1\nframes = 2\nlr = 1.0\nwarp = 1\n")


def test_dhvc_multi_frame_step(tmp_path):
    """One optimizer step of DHVC (118 M parameters) on 3-frame 64x64 clips with context chaining (direct,
    not through train(): its checkpoint with Adam state would be ~1.4 GB)."""
    from nvc.models import create
    from nvc.train import Stage

    clip = open_sampler(fake_vimeo(tmp_path / "vimeo", sequences=1), photo_prob=0, seed=0).batch(1, 3, 64)
    torch.manual_seed(0)
    model = create("dhvc-1.0", lmb=256.0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    res = model.training_loss(clip, torch.zeros(1, dtype=torch.long), Stage(1, 3, 1e-4))
    assert math.isfinite(float(res["loss"])) and float(res["bpp"]) > 0 and float(res["mse"]) > 0
    res["loss"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    # the temporal context chain reaches the first frame's latent blocks: the biases get gradients
    assert model.bias_list[0].grad is not None
    before = model.bias.detach().clone()
    opt.step()
    assert not torch.equal(before, model.bias)


def test_shard_seed():
    assert shard_seed(7, 0) == 7  # single process: unchanged
    seeds = {shard_seed(7, r) for r in range(64)}
    assert len(seeds) == 64
    assert shard_seed(7 + 100, 1) != shard_seed(7, 1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_world_size_one_gloo(tmp_path, monkeypatch):
    import torch.distributed as dist

    data = fake_vimeo(tmp_path / "vimeo", sequences=1)
    for k, v in {"NVC_DDP": "1", "WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    cfg = _config(tmp_path, f"""
model = "dvc"
data = "{data}"
out = "{tmp_path / 'run'}"
batch = 1
crop = 64
bf16 = false
device = "cpu"
log_every = 1
[[stages]]
steps = 1
frames = 2
lr = 1e-4
loss = "flow"
[[stages]]
steps = 1
frames = 2
lr = 1e-4
""")
    path = train(cfg)
    assert not dist.is_initialized()  # torn down again
    assert path.is_file()
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(math.isfinite(r["loss"]) for r in log)

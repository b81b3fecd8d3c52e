"""A tiny config trains for a few steps on generated frames; the loss falls; resume continues."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from nvc.train import TrainConfig, train
from nvc.errors import InputError, ModelError


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


def _tiny_lite(data: Path, out: Path, batch: int) -> str:
    """The head of a config that trains a tiny nvc-lite on ``data`` (64x64 crops, fp32)."""
    return f"""model = "nvc-lite"
model_args = {{ n = 8, m = 8, c = 4 }}
data = "{data}"
out = "{out}"
batch = {batch}
crop = 64
bf16 = false
"""


def test_tiny_training_loss_falls_and_resumes(tmp_path):
    data = _data(tmp_path / "data")
    cfg_path = tmp_path / "tiny.toml"
    cfg_path.write_text(_tiny_lite(data, tmp_path / "run", 2) + f"""
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
    # init_digest pins the weights a config continues from
    from nvc.models import load_state, weights_digest

    digest = weights_digest(load_state(path)[0]).hex()
    cfg2.init_digest = "0" * 8 if not digest.startswith("0" * 8) else "1" * 8
    with pytest.raises(InputError, match="init_digest"):
        train(cfg2, max_steps=1)
    assert not (tmp_path / "run2" / "last.pt").exists()
    cfg2.init_digest = digest[:12]
    train(cfg2, max_steps=1)
    # weights without block motion do not start a model with it (nor the reverse): same tensors, other model
    cfg_m = TrainConfig.from_toml(cfg_path)
    cfg_m.out, cfg_m.init, cfg_m.model_args = str(tmp_path / "run_m"), str(path), {**cfg_m.model_args, "motion": 8}
    with pytest.raises(InputError, match="block motion"):
        train(cfg_m, max_steps=1)
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
    # Two more qualities in front (init_lambdas): the exported weights' gains are mapped onto the new ladder.
    cfg5 = TrainConfig.from_toml(cfg_path)
    base = load("nvc-lite", path)
    lams = [0.001, 0.002] + [float(v) for v in base.lambdas.tolist()]
    cfg5.out, cfg5.init, cfg5.init_lambdas = str(tmp_path / "run5"), str(path), True
    cfg5.model_args = {**cfg5.model_args, "lambdas": lams}
    more = load("nvc-lite", train(cfg5, max_steps=1))
    assert more.qualities == base.qualities + 2
    cfg5.init_widen, cfg5.out = True, str(tmp_path / "run6")
    with pytest.raises(InputError, match="cannot be combined"):
        train(cfg5, max_steps=1)
    # A checkerboard context on the exported weights (init_fresh), trained alone (train_only): the rest of
    # the weights stay the exported ones.
    cfg7 = TrainConfig.from_toml(cfg_path)
    cfg7.out, cfg7.init = str(tmp_path / "run7"), str(path)
    cfg7.model_args, cfg7.train_only = {**cfg7.model_args, "context": True}, ["i_ctx.", "p_ctx."]
    ctx = load("nvc-lite", train(cfg7, max_steps=2))
    assert ctx.context and not torch.equal(ctx.i_ctx.fuse[-1].weight, torch.zeros_like(ctx.i_ctx.fuse[-1].weight))
    assert torch.equal(ctx.p_g_s[0].weight, base.p_g_s[0].weight)
    cfg7.out, cfg7.train_only = str(tmp_path / "run8"), ["nothing."]
    with pytest.raises(InputError, match="train_only"):
        train(cfg7, max_steps=1)


def test_bad_config(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text("nonsense_key = 1\n")
    with pytest.raises(InputError, match="unknown config keys"):
        TrainConfig.from_toml(p)
    with pytest.raises(InputError, match="not found"):
        TrainConfig.from_toml(tmp_path / "none.toml")
    p.write_text('init_digest = "58e2d450"\n')
    with pytest.raises(InputError, match="init_digest without init"):
        TrainConfig.from_toml(p)
    for bad in ("58e2", "58e2d45g", "0" * 33):
        p.write_text(f'init = "w.safetensors"\ninit_digest = "{bad}"\n')
        with pytest.raises(InputError, match="8 to 32 hex digits"):
            TrainConfig.from_toml(p)
    p.write_text('init = "w.safetensors"\ninit_digest = "58E2D450"\n')
    assert TrainConfig.from_toml(p).init_digest == "58e2d450"
    stage = "[[stages]]\nsteps = 1\nframes = 1\nlr = 1e-4\n"
    for text, words in (('batch = "x"\n', "batch must be an integer, not 'x'"),
                        ("bf16 = 1\n", "bf16 must be true or false, not 1"),
                        ("crop = 128.5\n", "crop must be an integer"),
                        ('lambda = "x"\n', "lambda must be a number"),
                        ('data = 3\n', "data must be a string"),
                        ("stages = 3\n", "stages must be [[stages]] tables"),
                        ("[[stages]]\nframes = 1\n", "stage 1 lacks steps, lr"),
                        (stage.replace("steps = 1", 'steps = "a"'), "stage 1 steps must be an integer"),
                        (stage + "intra = 1\n", "stage 1 intra must be true or false"),
                        (stage.replace("steps = 1", "steps = 0"), "stage 1 steps must be at least 1, not 0"),
                        (stage.replace("frames = 1", "frames = 0"), "stage 1 frames must be at least 1, not 0"),
                        (stage.replace("lr = 1e-4", "lr = -1.0"), "stage 1 lr must be above 0"),
                        ("batch = 0\n" + stage, "batch must be at least 1, not 0"),
                        ("log_every = 0\n" + stage, "log_every must be at least 1"),
                        ("photo_prob = 2\n" + stage, "photo_prob 0..1"),
                        ('device = "gpu"\n' + stage, "unknown device 'gpu'")):
        p.write_text(text)
        with pytest.raises(InputError, match=re.escape(words)):
            TrainConfig.from_toml(p)
    p.write_text('model = "nope"\n')
    with pytest.raises(ModelError, match="unknown model 'nope'"):  # when the config is read, before any output
        TrainConfig.from_toml(p)
    p.write_text("aux_lr = 1\nlambda = 256\n" + stage)  # a float takes an integer
    cfg = TrainConfig.from_toml(p)
    assert cfg.aux_lr == 1 and cfg.lmbda == 256.0 and cfg.stages[0].lr == 1e-4


def test_config_extends(tmp_path):
    base = tmp_path / "base.toml"
    base.write_text('seed = 1\nbatch = 4\nout = "runs/a"\n[model_args]\nmotion = 16\ncontext = true\n'
                    '[lr_scales]\n"_gain." = 10.0\n[[stages]]\nsteps = 5\nframes = 2\nlr = 1e-4\n')
    sub = tmp_path / "sub"
    sub.mkdir()
    child = sub / "child.toml"
    child.write_text('extends = "../base.toml"\nseed = 2\nout = "runs/b"\n[model_args]\ncontext = false\n')
    cfg = TrainConfig.from_toml(child)
    assert (cfg.seed, cfg.batch, cfg.out) == (2, 4, "runs/b")
    assert cfg.model_args == {"motion": 16, "context": False}  # tables merge key by key
    assert cfg.lr_scales == {"_gain.": 10.0}
    assert [(s.steps, s.lr) for s in cfg.stages] == [(5, 1e-4)]
    grand = tmp_path / "grand.toml"  # a chain: grand -> child -> base; stages replaced whole
    grand.write_text('extends = "sub/child.toml"\n[[stages]]\nsteps = 7\nframes = 3\nlr = 2e-5\n')
    cfg = TrainConfig.from_toml(grand)
    assert (cfg.seed, cfg.batch) == (2, 4)
    assert [(s.steps, s.frames, s.lr) for s in cfg.stages] == [(7, 3, 2e-5)]
    bad = tmp_path / "bad.toml"
    for text, match in (('extends = "none.toml"\n', "none.toml: config file not found \\(extended by"),
                        ('extends = "bad.toml"\n', "loops back"),
                        ("extends = 3\n", "extends must be"),
                        ('extends = "base.toml"\nnonsense = 1\n', "unknown config keys")):
        bad.write_text(text)
        with pytest.raises(InputError, match=match):
            TrainConfig.from_toml(bad)
    base.write_text('extends = "sub/child.toml"\n')  # a longer loop: child -> base -> child
    with pytest.raises(InputError, match="loops back"):
        TrainConfig.from_toml(child)


def test_quality_weights_and_lr_scales(tmp_path):
    """``quality_weights`` draws only the weighted qualities; ``lr_scales`` gives matching parameters their
    own Adam group at a multiple of the stage's lr."""
    from nvc.models import load

    data = _data(tmp_path / "data")
    p = tmp_path / "q.toml"
    base = f"""
model = "nvc-lite"
model_args = {{ n = 8, m = 8, c = 4 }}
data = "{data}"
batch = 2
crop = 64
bf16 = false
checkpoint_every = 2
export_every = 2
"""
    p.write_text(base + f"""out = "{tmp_path / 'run'}"
keep_exports = true
quality_weights = [1, 0, 0, 0, 0, 0]
lr_scales = {{ "_gain." = 10 }}
[[stages]]
steps = 2
frames = 2
lr = 0.001
""")
    cfg = TrainConfig.from_toml(p)
    first = load("nvc-lite", train(cfg, max_steps=1)).state_dict()
    after = load("nvc-lite", train(cfg)).state_dict()
    gain = after["i_y_gain.gain"] - first["i_y_gain.gain"]
    assert gain[0].abs().max() > 0 and gain[1:].abs().max() == 0  # only quality 0 was drawn
    # keep_exports: each export also kept by its step (the run stopped at 1, then went on to 2)
    assert sorted(f.name for f in (tmp_path / "run").glob("step-*")) == ["step-1.safetensors", "step-2.safetensors"]
    opt = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["opt"]
    assert [(g["scale"], g["lr"]) for g in opt["param_groups"]] == [(1.0, 0.001), (10.0, 0.01)]
    for bad, msg in (("quality_weights = [-1, 1]", "quality_weights must be"),
                     ("quality_weights = [0, 0]", "quality_weights must be"),
                     ('lr_scales = { "_gain." = 0 }', "lr_scales must be")):
        p.write_text(base + bad + "\n")
        with pytest.raises(InputError, match=msg):
            TrainConfig.from_toml(p)
    for bad, msg in (("quality_weights = [1, 1]", "has 6 qualities"),
                     ('lr_scales = { "no_such_name" = 2 }', "no parameter of the model")):
        p.write_text(base + f'out = "{tmp_path / "bad"}"\n' + bad + "\n")
        with pytest.raises(InputError, match=msg):
            train(TrainConfig.from_toml(p), max_steps=1)


def test_stage_prefix(tmp_path):
    """``prefix`` codes up to that many frames without gradient before the loss's frames."""
    import torch

    from nvc.errors import ModelError
    from nvc.models import create
    from nvc.train import Stage

    data = _data(tmp_path / "data")
    base = f"""
data = "{data}"
out = "{tmp_path / 'run'}"
batch = 1
crop = 64
bf16 = false
[[stages]]
steps = 2
frames = 2
lr = 0.001
"""
    p = tmp_path / "p.toml"
    p.write_text('model = "nvc-lite"\nmodel_args = { n = 8, m = 8, c = 4 }\n' + base + "prefix = 3\n")
    cfg = TrainConfig.from_toml(p)
    assert cfg.stages[0].prefix == 3
    train(cfg)  # each step draws 0..3 prefix frames, so clips of 2..5 frames
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and all(np.isfinite(r["loss"]) for r in log)
    p.write_text('model = "nvc-lite"\n' + base + "prefix = -1\n")
    with pytest.raises(InputError, match="prefix must be 0 or more"):
        TrainConfig.from_toml(p)
    p.write_text('model = "dvc"\nlambda = 256\n' + base.replace("run", "dvc") + "prefix = 1\n")
    with pytest.raises(InputError, match="does not train with a stage prefix"):
        train(TrainConfig.from_toml(p))

    torch.manual_seed(0)
    model = create("nvc-lite", n=8, m=8, c=4)
    clip = torch.rand(1, 4, 3, 64, 64)
    q = torch.zeros(1, dtype=torch.long)
    torch.manual_seed(1)  # the training pass draws quantization noise: the same draws below
    res = model.training_loss(clip, q, Stage(1, 2, 1e-3, prefix=2))
    res["loss"].backward()
    # the prefix (the I frame and one P frame) has no gradient: the intra branch gets none
    assert all(p.grad is None for n, p in model.named_parameters() if n.startswith("i_"))
    assert model.p_g_a[0].weight.grad is not None
    # the same loss as coding the prefix by hand and training on the last two frames
    torch.manual_seed(1)
    with torch.no_grad():
        ref = model(clip[:, 0], quality=q)["x_hat"].float().clamp(0, 1)
        ref = model(clip[:, 1], ref=ref, quality=q)["x_hat"].float().clamp(0, 1)
    lam = model.lambdas[q] * 255.0**2
    total = 0.0
    for i in (2, 3):
        out = model(clip[:, i], ref=ref, quality=q)
        mse = ((out["x_hat"] - clip[:, i]) ** 2).mean()
        bpp = sum((-torch.log2(v)).sum() for v in out["likelihoods"].values()) / (64 * 64)
        total = total + lam * mse + bpp
        ref = out["x_hat"].clamp(0, 1)
    assert torch.allclose(res["loss"], (total / 2).squeeze(), rtol=1e-5)
    with pytest.raises(ModelError, match="leaves no frame"):
        model.training_loss(clip, q, Stage(1, 0, 1e-3, prefix=4))


def _tiny_lite_clip(frames: int):
    """A tiny nvc-lite, a random (1, frames, 3, 64, 64) clip and the second-highest quality; the RNG left seeded
    at 1, as the stage tests' hand computations re-seed it."""
    import torch

    from nvc.models import create

    torch.manual_seed(0)
    model = create("nvc-lite", n=8, m=8, c=4)
    clip = torch.rand(1, frames, 3, 64, 64)
    q = torch.full((1,), model.qualities - 2, dtype=torch.long)
    torch.manual_seed(1)
    return model, clip, q


def test_stage_intra(tmp_path):
    """``intra`` keeps the I frame in the loss behind a prefix, at ``intra_offset`` qualities higher."""
    import torch

    from nvc.train import Stage

    model, clip, q = _tiny_lite_clip(4)
    res = model.training_loss(clip, q, Stage(1, 2, 1e-3, prefix=2, intra=True, intra_offset=3))
    res["loss"].backward()
    assert model.i_g_a[0].weight.grad is not None and model.p_g_a[0].weight.grad is not None
    # by hand: the I frame at the top quality (offset 3, clamped) in the loss, the P prefix frame without
    # gradient, then the two loss frames; the mean over the three frames in the loss
    torch.manual_seed(1)
    top = torch.full_like(q, model.qualities - 1)
    total = 0.0

    def term(out, x, qq):
        mse = ((out["x_hat"] - x) ** 2).mean()
        bpp = sum((-torch.log2(v)).sum() for v in out["likelihoods"].values()) / (64 * 64)
        return model.lambdas[qq] * 255.0**2 * mse + bpp

    out = model(clip[:, 0], quality=top)
    total = total + term(out, clip[:, 0], top)
    with torch.no_grad():
        ref = model(clip[:, 1], ref=out["x_hat"].detach().clamp(0, 1), quality=q)["x_hat"].clamp(0, 1)
    for i in (2, 3):
        out = model(clip[:, i], ref=ref, quality=q)
        total = total + term(out, clip[:, i], q)
        ref = out["x_hat"].clamp(0, 1)
    assert torch.allclose(res["loss"], (total / 3).squeeze(), rtol=1e-5)

    data = _data(tmp_path / "data")
    p = tmp_path / "p.toml"
    base = _tiny_lite(data, tmp_path / "run", 1) + """[[stages]]
steps = 1
frames = 2
lr = 0.001
prefix = 2
"""
    p.write_text(base + "intra = true\nintra_offset = 2\n")
    cfg = TrainConfig.from_toml(p)
    assert cfg.stages[0].intra and cfg.stages[0].intra_offset == 2
    train(cfg)
    p.write_text(base + "intra_offset = -1\n")
    with pytest.raises(InputError, match="intra_offset must be 0 or more"):
        TrainConfig.from_toml(p)
    p.write_text(base.replace("nvc-lite", "dvc").replace("model_args = { n = 8, m = 8, c = 4 }", "lambda = 256")
                 .replace("prefix = 2", "intra = true"))
    with pytest.raises(InputError, match="intra keys"):
        train(TrainConfig.from_toml(p))


def test_stage_boost(tmp_path):
    """``boost_period`` / ``boost`` code the P frames at those GoP positions higher, as the encoder's ladder."""
    import torch

    from nvc.train import Stage

    model, clip, q = _tiny_lite_clip(5)
    res = model.training_loss(clip, q, Stage(1, 4, 1e-3, prefix=1, boost_period=2, boost=3))
    # by hand: the I frame in the prefix, then P frames 1..4 with 2 and 4 at the top (3 up, clamped)
    torch.manual_seed(1)
    top = torch.full_like(q, model.qualities - 1)
    with torch.no_grad():
        ref = model(clip[:, 0], quality=q)["x_hat"].clamp(0, 1)
    total = 0.0
    for i, qq in ((1, q), (2, top), (3, q), (4, top)):
        out = model(clip[:, i], ref=ref, quality=qq)
        mse = ((out["x_hat"] - clip[:, i]) ** 2).mean()
        bpp = sum((-torch.log2(v)).sum() for v in out["likelihoods"].values()) / (64 * 64)
        total = total + model.lambdas[qq] * 255.0**2 * mse + bpp
        ref = out["x_hat"].clamp(0, 1)
    assert torch.allclose(res["loss"], (total / 4).squeeze(), rtol=1e-5)
    torch.manual_seed(1)
    flat = model.training_loss(clip, q, Stage(1, 4, 1e-3, prefix=1))
    assert not torch.allclose(flat["loss"], res["loss"])

    data = _data(tmp_path / "data")
    p = tmp_path / "p.toml"
    base = _tiny_lite(data, tmp_path / "run", 1) + """[[stages]]
steps = 1
frames = 3
lr = 0.001
"""
    p.write_text(base + "boost_period = 2\nboost = 1\n")
    cfg = TrainConfig.from_toml(p)
    assert (cfg.stages[0].boost_period, cfg.stages[0].boost) == (2, 1)
    train(cfg)
    for bad, match in (("boost_period = 2\nboost = -1\n", "boost must be 0 or more"),
                       ("boost = 1\n", "go together"), ("boost_period = 4\n", "go together")):
        p.write_text(base + bad)
        with pytest.raises(InputError, match=match):
            TrainConfig.from_toml(p)


def test_average_exports(tmp_path):
    """Averaging exports: the parameters' mean, entropy tables recomputed, loadable; bad inputs refused."""
    from nvc.models import _TABLES, create, load, load_state
    from nvc.train import average_exports, export_safetensors

    paths = []
    for seed in (0, 1, 2):
        torch.manual_seed(seed)
        model = create("nvc-lite", n=8, m=8, c=4)
        paths.append(tmp_path / f"s{seed}.safetensors")
        export_safetensors(model, paths[-1], {"steps": str(seed)})
    out = average_exports(paths, tmp_path / "avg.safetensors")
    states = [load_state(p)[0] for p in paths]
    avg, cfg = load_state(out)
    assert cfg == load_state(paths[0])[1]
    for k, v in avg.items():
        if k.endswith(_TABLES):
            continue
        if v.is_floating_point():
            want = (states[0][k].double() + states[1][k].double() + states[2][k].double()) / 3
            assert torch.allclose(v.double(), want, atol=1e-6), k
    # tables are those of the averaged parameters, as an export computes them
    again = create("nvc-lite", n=8, m=8, c=4)
    again.load_state_dict({k: v for k, v in avg.items() if not k.endswith(_TABLES)}, strict=False)
    export_safetensors(again, tmp_path / "re.safetensors", {})
    re = load_state(tmp_path / "re.safetensors")[0]
    assert all(torch.equal(re[k], avg[k]) for k in avg if k.endswith(_TABLES))
    load("nvc-lite", checkpoint=out)  # complete and well-formed tables

    with pytest.raises(InputError, match="already exists"):
        average_exports(paths, out)
    with pytest.raises(InputError, match="two or more"):
        average_exports(paths[:1], tmp_path / "one.safetensors")
    torch.manual_seed(3)
    export_safetensors(create("nvc-lite", n=8, m=8, c=8), tmp_path / "other.safetensors", {})
    with pytest.raises(InputError, match="different model configs"):
        average_exports([paths[0], tmp_path / "other.safetensors"], tmp_path / "bad.safetensors")


def test_accumulate(tmp_path):
    """``accumulate`` backpropagates the batch in equal parts: the gradient and the logged means are the
    whole batch's; a part count that does not divide the batch is refused."""
    from nvc.train import Stage, accumulate_backward

    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3)
    clip, q = torch.randn(6, 5), torch.arange(6)

    def loss_fn(c, qq, stage):
        per = (lin(c) ** 2).mean(dim=1) * (1 + qq)  # per-sample, depends on the sample's quality
        return {"loss": per.mean(), "bpp": per.mean() / 2, "mse": (c ** 2).mean()}

    grads, logs = [], []
    for parts in (1, 2, 3):
        lin.zero_grad(set_to_none=True)
        logs.append(accumulate_backward(loss_fn, clip, q, Stage(1, 1, 1e-3), parts))
        grads.append([p.grad.clone() for p in lin.parameters()])
    for g, r in zip(grads[1:], logs[1:]):
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g, grads[0]))
        assert all(torch.allclose(r[k], logs[0][k], atol=1e-6) for k in ("loss", "bpp", "mse"))

    data = _data(tmp_path / "data")
    p = tmp_path / "a.toml"
    stages = """[[stages]]
steps = 2
frames = 2
lr = 0.001
"""
    p.write_text(_tiny_lite(data, tmp_path / "run", 2) + "accumulate = 2\n" + stages)
    cfg = TrainConfig.from_toml(p)
    assert cfg.accumulate == 2
    train(cfg)
    rec = json.loads((tmp_path / "run" / "log.jsonl").read_text().splitlines()[-1])
    assert rec["step"] == 2 and np.isfinite(rec["loss"])
    for bad in (0, 3):
        p.write_text(_tiny_lite(data, tmp_path / "run2", 2) + f"accumulate = {bad}\n" + stages)
        with pytest.raises(InputError, match="accumulate must divide batch"):
            TrainConfig.from_toml(p)


def test_model_args_and_stage_loss_refused_before_training(tmp_path):
    data = _data(tmp_path / "data")
    stage = "[[stages]]\nsteps = 1\nframes = 1\nlr = 1e-3\n"
    for head, extra, words in (('model_args = { foo = 1 }\n', "", "cannot be built from model_args {'foo': 1}"),
                               ("", 'loss = "flow"\n', "has no stage loss 'flow'; use rd")):
        p = tmp_path / "c.toml"
        tiny = _tiny_lite(data, tmp_path / "run", 1)
        if head:
            tiny = tiny.replace("model_args = { n = 8, m = 8, c = 4 }\n", head)
        p.write_text(tiny + stage + extra)
        with pytest.raises(InputError, match=re.escape(words)):
            train(TrainConfig.from_toml(p))
        assert not (tmp_path / "run" / "last.pt").exists()


def test_cli_train_errors_before_the_bar_and_leaves_no_folder(tmp_path):
    """`nvc train`: an error while the model is built is its one line (no progress bar before it) and leaves no run
    folder; a run that starts shows the bar from the step it starts at and names its weights."""
    from typer.testing import CliRunner

    from nvc.cli import app

    data = _data(tmp_path / "data")
    stage = "[[stages]]\nsteps = 2\nframes = 1\nlr = 1e-3\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(_tiny_lite(data, tmp_path / "bad-run", 1).replace("n = 8, m = 8, c = 4", "n = 8, m = 8, c = 4, foo = 1")
                   + stage)
    res = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert res.exit_code == 2
    assert res.output.strip().splitlines() == [res.output.strip().splitlines()[0]]
    assert "cannot be built from model_args" in res.output and "train" not in res.output.split("error:")[0]
    assert not (tmp_path / "bad-run").exists()
    good = tmp_path / "good.toml"
    good.write_text(_tiny_lite(data, tmp_path / "run", 1) + "log_every = 1\n" + stage)
    res = CliRunner().invoke(app, ["train", "--config", str(good)])
    assert res.exit_code == 0, res.output
    assert "2/2" in res.output and f"weights: {tmp_path / 'run'}" in res.output.replace("\n", "")

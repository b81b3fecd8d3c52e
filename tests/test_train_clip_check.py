"""benchmarks/train_clip_check.py: its RD points and the --split bookkeeping add up to the stream's bits."""

from __future__ import annotations

from .conftest import load_script, make_frames


def _check():
    return load_script("train_clip_check")


def test_split_adds_up_to_the_points(lite) -> None:
    mod = _check()
    h, w = 48, 80
    frames = make_frames(3, w, h)
    split: dict = {}
    (bpp, psnr), = mod.rd_points(lite, frames, h, w, (0,), gop=32, split=split)
    assert psnr > 20
    row = split[0]
    assert set(row) == {"I", "P"}
    for kind in ("I", "P"):
        assert set(row[kind]) == {*mod.SUBSTREAMS, "header", "filter"}  # format 4.0: the post-filter's bytes
    for kind in ("I", "P"):  # format 3.0: one string, and a payload field of one byte
        assert row[kind]["rans"] > 0 and abs(row[kind]["header"] - 8 / (h * w)) < 1e-4
    # one I frame and two P frames: the per-type means, weighted by their counts, give the stream's bpp
    total = sum(row["I"].values()) + 2 * sum(row["P"].values())
    assert abs(total / 3 - bpp) < 1e-3


def test_parse_entry_options() -> None:
    mod = _check()
    ck, opts = mod.parse_entry("shipped:refine=3,irefine=5,nosettle,q=0/2,nofilter")
    assert ck == "shipped"
    assert opts == {"refine": 3, "irefine": 5, "nosettle": True, "q": (0, 2), "nofilter": True}


def test_reusable_takes_only_what_the_check_asks_for() -> None:
    mod = _check()
    clip = {"size": "144x176", "points": {"a": [[0.1, 30.0]], "x264": [[0.1, 31.0]]},
            "points_rgb": {"a": [[0.1, 28.0]]}, "encode_s": {"a": 5.0}}
    assert mod.reusable(clip, "a", "144x176", True, False, False) == {
        "points": [[0.1, 30.0]], "points_rgb": [[0.1, 28.0]], "encode_s": 5.0}
    assert mod.reusable(clip, "a", "144x176", False, False, False) == {"points": [[0.1, 30.0]], "encode_s": 5.0}
    assert mod.reusable(clip, "x264", "144x176", True, False, False) == {"points": [[0.1, 31.0]]}  # no RGB for x264
    assert mod.reusable(clip, "a", "288x352", True, False, False) is None  # another crop
    assert mod.reusable(clip, "a", "144x176", False, True, False) is None  # per-frame points not stored
    assert mod.reusable(clip, "b", "144x176", False, False, False) is None
    assert mod.reusable(None, "a", "144x176", False, False, False) is None


def test_verdict_applies_the_shipping_rule() -> None:
    mod = _check()
    key = "bd_rate_psnr_rgb"
    clips = {"bikes": {key: {"a": -1.38, "b": -2.07}}, "vtest": {key: {"a": -0.17, "b": -0.67}},
             "tree": {key: {"a": -0.15, "b": 0.60}}}  # run 25's check: the average (b) had the lower mean
    v = mod.verdict(clips, ["a", "b"], "psnr_rgb", below=-0.5)
    assert (v["best"], v["ship"], v["means"]) == ("b", "b", {"a": -0.57, "b": -0.71})
    assert mod.verdict(clips, ["a", "b"], "psnr_rgb", below=-0.8)["ship"] is None  # not below the margin
    assert mod.verdict(clips, ["a", "b"], "psnr_rgb", below=-0.5, worst=0.5)["ship"] is None  # tree too far
    run26 = {"bikes": {key: {"s": 0.29}}, "vtest": {key: {"s": 0.14}}, "tree": {key: {"s": -0.99}}}
    assert mod.verdict(run26, ["s"], "psnr_rgb", below=0.0)["ship"] == "s"  # the rule without a margin shipped it
    v = mod.verdict(run26, ["s"], "psnr_rgb", below=-0.5)
    assert v["ship"] is None and "not below" in v["reason"]
    clips["tree"][key]["b"] = None  # a BD-rate that failed: that candidate cannot ship
    assert mod.verdict(clips, ["b"], "psnr_rgb", below=-0.5)["ship"] is None
    assert mod.verdict(clips, ["a", "b"], "psnr_rgb", below=-0.5)["ship"] == "a"


def test_ceiling_one_psnr_per_quality(lite) -> None:
    """--ceiling: PSNR-RGB of the intra transforms without quantization, one per quality asked for, on the
    visible pixels; the qualities spread over the model's range, from 0 to the top."""
    mod = _check()
    h, w = 40, 72  # padded to 64x128: only the visible part counts
    qs = mod.spread(lite.qualities)
    assert qs[0] == 0 and qs[-1] == lite.qualities - 1
    c = mod.ceiling(lite, make_frames(1, w, h)[0], h, w, qs)
    assert len(c) == len(qs) and all(20 < v < 99 for v in c)
    import torch

    before = {k: v.clone() for k, v in lite.state_dict().items()}
    grads = [p.requires_grad for p in lite.parameters()]
    fit = mod.fitted_ceiling(lite, make_frames(1, w, h)[0], h, w, steps=5)
    assert fit > c[-1]  # fitting the latents to the synthesis can only help it
    assert all(torch.equal(v, lite.state_dict()[k]) for k, v in before.items())  # the model is unchanged
    assert [p.requires_grad for p in lite.parameters()] == grads

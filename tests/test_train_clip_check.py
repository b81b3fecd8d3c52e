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

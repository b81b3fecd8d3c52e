"""nvc.bench: the benchmark driver (outputs, BD-rate, resume, sharding, failures) on tiny clips."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

import nvc.bench as bench
from nvc.errors import InputError, NvcError
from nvc.io import Frame, frame_bytes
from nvc.ladder import DEFAULT_INTER_REFINE, DEFAULT_INTRA_REFINE

from .conftest import write_y4m


def clip(n: int = 4, w: int = 64, h: int = 64, seed: int = 0) -> list[Frame]:
    rng = np.random.RandomState(seed)
    tex = np.kron(rng.randint(30, 220, (h // 4 + 1, w // 4 + n)), np.ones((4, 4)))
    xx = np.arange(w)[None, :]
    out = []
    for t in range(n):
        y = np.clip(0.7 * tex[:h, t : t + w] + 25 * np.sin((xx + 3 * t) / 6.0) + 20, 16, 235).astype(np.uint8)
        u = np.full((h // 2, w // 2), 120 + t, np.uint8)
        v = np.full((h // 2, w // 2), 136 - t, np.uint8)
        out.append(Frame(y, u, v))
    return out


def sparse_yuv(path: Path, w: int = 64, h: int = 64, n: int = 4) -> Path:
    with path.open("wb") as f:
        f.truncate(frame_bytes(w, h) * n)
    return path


# A synthetic codec family: quality (dB) = 10·log10(bpp) + 50 for every codec, with nvc needing 20 % fewer
# bits than x264 for the same quality and x265 10 % fewer: the BD-rates are then exactly -20 % and -11.1 %.
FACTOR = {"x264": 1.0, "x265": 0.9, "nvc-lite": 0.8}


def fake_record(p: bench.Point, cfg: bench.BenchConfig) -> dict:
    if p.param == "quality":
        b = 0.03125 * 2 ** (p.value * 4 / 5)
    else:
        b = 0.5 * 2 ** (-(p.value - (22 if p.codec == "x264" else 24)) / 5)
    bpp = b * FACTOR[p.codec]
    q = 10 * math.log10(b) + 50
    return {
        "sequence": p.sequence.name, "codec": p.codec, "param": p.param, "value": p.value, "frames": 4,
        "width": 64, "height": 64, "fps": 25.0, "bytes": int(bpp * 4 * 64 * 64 / 8), "bits": 0, "bpp": bpp,
        "kbps": bpp * 64 * 64 * 25 / 1000, "psnr_y": q, "psnr_u": q + 2, "psnr_v": q + 3, "psnr_yuv": q,
        "psnr_rgb": q - 1, "ms_ssim": 1 - 0.5 * 10 ** (-q / 20), "encode_seconds": 1.0, "decode_seconds": 0.5,
        "encode_fps": 4.0, "decode_fps": 8.0, "peak_rss_mb": 100.0, "rss_delta_mb": 1.0, "peak_gpu_mb": None,
        "device": "cpu", "stream": "",
    }


@pytest.fixture
def counting(monkeypatch):
    calls: list[str] = []

    def fake(p, cfg):
        calls.append(p.key)
        return fake_record(p, cfg)

    monkeypatch.setattr(bench, "run_point", fake)
    return calls


@pytest.fixture
def clips(tmp_path) -> Path:
    d = tmp_path / "clips"
    d.mkdir()
    sparse_yuv(d / "alpha_64x64_25.yuv")
    sparse_yuv(d / "beta_64x64_25.yuv")
    return d


def run(clips: Path, out: Path, **kw):
    kw.setdefault("qualities", range(6))
    return bench.run_bench(str(clips), None, out=str(out), frames=4, gop=4, progress=False, **kw)


def test_outputs_schema_and_bd_rate(clips, tmp_path, counting):
    out = tmp_path / "run"
    res = run(clips, out)
    assert len(counting) == 2 * (6 + 5 + 5)
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(res))
    assert set(res) >= {"protocol", "sequences", "bd_rate", "bd_rate_per_sequence", "average", "failures"}
    proto = res["protocol"]
    assert proto["frames"] == 4 and proto["gop"] == 4 and proto["qualities"] == list(range(6))
    assert res["protocol"]["anchors"] == {"x264": [22, 27, 32, 37, 42], "x265": [24, 29, 34, 39, 44]}
    assert sorted(res["sequences"]) == ["alpha_64x64_25", "beta_64x64_25"]
    assert [len(res["sequences"]["alpha_64x64_25"][c]) for c in ("nvc-lite", "x264", "x265")] == [6, 5, 5]
    for metric in ("psnr_rgb", "psnr_yuv"):
        assert res["bd_rate"]["x264"][metric] == pytest.approx(-20.0, abs=1e-6)
        assert res["bd_rate"]["x265"][metric] == pytest.approx((0.8 / 0.9 - 1) * 100, abs=1e-6)
        assert res["bd_rate_per_sequence"]["beta_64x64_25"]["x264"][metric] == pytest.approx(-20.0, abs=1e-6)
    assert res["bd_rate"]["x264"]["ms_ssim"] == pytest.approx(-20.0, abs=0.5)  # not linear: interpolated
    assert res["bd_rate_sequences"]["x264"]["psnr_rgb"] == 2
    assert [p["value"] for p in res["average"]["x264"]] == [42, 37, 32, 27, 22]  # sorted by rate
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 32 and set(bench.CSV_FIELDS) == set(rows[0])
    assert (out / "rd.png").stat().st_size > 1000
    assert len(list((out / "points").glob("*.json"))) == 32
    assert (out / "points" / "alpha_64x64_25__nvc-lite__q3.json").is_file()


def test_a_sequence_without_bd_rate_is_named(clips, tmp_path, monkeypatch):
    """A curve that is not monotonic has no BD-rate: the mean leaves that sequence out, and says so."""
    def fake(p, cfg):
        r = fake_record(p, cfg)
        if p.sequence.name.startswith("beta") and p.codec == "nvc-lite" and p.value == 4:
            r["psnr_yuv"] += 5  # above quality 5's
        return r

    monkeypatch.setattr(bench, "run_point", fake)
    res = run(clips, tmp_path / "run")
    assert res["bd_rate_per_sequence"]["beta_64x64_25"]["x264"]["psnr_yuv"] is None
    assert res["bd_rate_sequences"]["x264"] == {"psnr_rgb": 2, "psnr_yuv": 1, "ms_ssim": 2}
    assert res["bd_rate"]["x264"]["psnr_yuv"] == pytest.approx(-20.0, abs=1e-6)  # alpha's alone
    why = res["bd_rate_missing"]["x264"]["psnr_yuv"]["beta_64x64_25"]
    assert "not monotonic" in why and set(res["bd_rate_missing"]["x264"]) == {"psnr_yuv"}
    import io

    from rich.console import Console

    buf = io.StringIO()
    bench._print_tables(res, Console(file=buf, width=200))
    out = buf.getvalue()
    assert "-20.00 (1/2)" in out and "psnr_yuv vs x264: beta_64x64_25 left out of the mean (test curve is not" in out
    cells = [[c.strip() for c in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]
    rows = [r for r in cells if r[1:2] == ["x264"]]
    assert [r[:3] for r in rows] == [  # each sequence's BD-rates, then their mean
        ["alpha_64x64_25", "x264", "-20.00"], ["beta_64x64_25", "x264", "-20.00"], ["mean", "x264", "-20.00"]]
    assert rows[1][3] == "-" and rows[2][3] == "-20.00 (1/2)"  # beta has no PSNR-YUV BD-rate


def test_resume_skips_finished_points(clips, tmp_path, counting):
    out = tmp_path / "run"
    first = run(clips, out, anchors=("x264",), qualities=range(5))
    assert len(counting) == 2 * (5 + 5)
    counting.clear()
    again = run(clips, out, anchors=("x264",), qualities=range(5))
    assert counting == []
    assert again["bd_rate"] == first["bd_rate"]
    run(clips, out, anchors=("x264",), qualities=range(6), crfs={"x264": [22, 27, 32, 37, 42, 47]})
    assert sorted(counting) == sorted(["alpha_64x64_25__nvc-lite__q5", "beta_64x64_25__nvc-lite__q5",
                                       "alpha_64x64_25__x264__crf47", "beta_64x64_25__x264__crf47"])
    with pytest.raises(InputError) as e:  # another protocol in the same folder
        bench.run_bench(str(clips), None, out=str(out), frames=8, gop=4, qualities=[0], progress=False)
    assert "frames" in str(e.value) and "\n" not in str(e.value)
    # the weights and the quality ladder are part of the protocol: a rerun with others refuses the folder
    from nvc.models import load

    assert first["protocol"]["weights"] == load("nvc-lite").weights_digest.hex()
    assert first["protocol"]["quality_ladder"].startswith("I frames +3")
    with pytest.raises(InputError, match="quality_ladder"):
        run(clips, out, anchors=("x264",), qualities=range(5), flat_quality=True)
    with pytest.raises(InputError, match="refine"):  # refinement too
        run(clips, out, anchors=("x264",), qualities=range(5), refine=3)
    with pytest.raises(InputError, match="refine"):  # none at all is another encoder than the default
        run(clips, out, anchors=("x264",), qualities=range(5), refine=0)
    proto = json.loads((out / "protocol.json").read_text())
    assert proto["refine"] is None
    del proto["refine"]  # a folder from before the key: the default refinement, so it resumes
    (out / "protocol.json").write_text(json.dumps(proto))
    run(clips, out, anchors=("x264",), qualities=range(5))
    # so are the encoder's choices; a folder from before they were recorded does not resume
    assert proto["encoder"] == load("nvc-lite").encoder_choices() and proto["encoder"]["intra_refine"] == DEFAULT_INTRA_REFINE
    assert proto["encoder"]["inter_refine"] == DEFAULT_INTER_REFINE
    (out / "protocol.json").write_text(json.dumps({**proto, "encoder": {**proto["encoder"], "settle_margin": 0}}))
    with pytest.raises(InputError, match="encoder"):
        run(clips, out, anchors=("x264",), qualities=range(5))
    (out / "protocol.json").write_text(json.dumps({k: v for k, v in proto.items() if k != "encoder"}))
    with pytest.raises(InputError, match="encoder"):
        run(clips, out, anchors=("x264",), qualities=range(5))
    (out / "protocol.json").write_text(json.dumps({**proto, "weights": "00" * 16}))
    with pytest.raises(InputError, match="weights"):
        run(clips, out, anchors=("x264",), qualities=range(5))


def test_failed_point_is_reported_and_retried(clips, tmp_path, monkeypatch):
    calls: list[str] = []

    def flaky(p, cfg):
        calls.append(p.key)
        if p.key == "alpha_64x64_25__x264__crf32":
            raise NvcError("x264: boom")
        return fake_record(p, cfg)

    monkeypatch.setattr(bench, "run_point", flaky)
    out = tmp_path / "run"
    res = run(clips, out, anchors=("x264",))
    assert res["failures"] == [{"point": "alpha_64x64_25__x264__crf32", "error": "x264: boom"}]
    assert len(res["sequences"]["alpha_64x64_25"]["x264"]) == 4
    assert res["bd_rate"]["x264"]["psnr_rgb"] == pytest.approx(-20.0, abs=1e-6)
    calls.clear()
    monkeypatch.setattr(bench, "run_point", lambda p, cfg: (calls.append(p.key), fake_record(p, cfg))[1])
    res = run(clips, out, anchors=("x264",))
    assert calls == ["alpha_64x64_25__x264__crf32"] and res["failures"] == []


def test_sharding_by_rank(clips, tmp_path, counting, monkeypatch):
    out = tmp_path / "run"
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    part = run(clips, out, anchors=("x264",))
    assert part["rank"] == 1 and not (out / "results.json").exists()
    assert counting and all(k.startswith("beta") for k in counting)  # sequence index 1
    counting.clear()
    monkeypatch.setenv("RANK", "0")
    res = run(clips, out, anchors=("x264",))
    assert counting and all(k.startswith("alpha") for k in counting)
    assert sorted(res["sequences"]) == ["alpha_64x64_25", "beta_64x64_25"] and (out / "results.json").is_file()
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(InputError):
        run(clips, out, anchors=("x264",))


def test_argument_errors(clips, tmp_path):
    for kw in ({"frames": 0}, {"gop": 0}, {"jobs": 0}, {"anchors": ("vp8",)}, {"crfs": {"x264": [80]}},
               {"qualities": "a,b"}, {"qualities": [-1]}, {"refine": -1}):
        args = {"out": str(tmp_path / "o"), "qualities": [0], "progress": False, "anchors": ("x264",), **kw}
        with pytest.raises(InputError):
            bench.run_bench(str(clips), None, **args)
    with pytest.raises(InputError, match="--refine"):  # checked before any work, even with no nvc points
        bench.run_bench(str(clips), None, out=str(tmp_path / "o"), qualities=[], refine=-1, progress=False)
    for kw, words in (({"numeric": "bad"}, "unknown --numeric"), ({"device": "bad"}, "unknown device")):
        with pytest.raises(InputError, match=words):  # refused before any point runs: no protocol written
            bench.run_bench(str(clips), None, out=str(tmp_path / "p"), qualities=[0], progress=False, **kw)
        assert not (tmp_path / "p" / "protocol.json").exists()


def test_refine_needs_a_refinable_model(clips, tmp_path, monkeypatch):
    from nvc.models.lite import NvcLite

    monkeypatch.setattr(NvcLite, "refinable", False)
    with pytest.raises(InputError, match="no encoder-side refinement"):
        run(clips, tmp_path / "o", qualities=[0], anchors=(), refine=2)


def test_real_anchor_points_end_to_end(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    write_y4m(d / "moving.y4m", clip(4))
    out = tmp_path / "run"
    res = bench.run_bench(str(d), None, qualities=[], anchors=("x264",), crfs={"x264": [27, 40]}, out=str(out),
                          frames=3, gop=2, progress=True)
    pts = res["sequences"]["moving"]["x264"]
    assert [p["value"] for p in pts] == [40, 27]
    for p in pts:
        assert p["frames"] == 3 and p["bits"] == 8 * p["bytes"] > 0
        assert p["bpp"] == pytest.approx(p["bits"] / (3 * 64 * 64))
        assert p["kbps"] == pytest.approx(p["bits"] / (3 / 25) / 1000)
        assert 20 < p["psnr_y"] < 100 and 0 < p["ms_ssim"] <= 1
        assert p["psnr_yuv"] == pytest.approx((6 * p["psnr_y"] + p["psnr_u"] + p["psnr_v"]) / 8, abs=1e-9)
        assert p["encode_fps"] > 0 and p["peak_rss_mb"] > 0
        assert (out / p["stream"]).stat().st_size == p["bytes"]
    assert pts[0]["psnr_y"] < pts[1]["psnr_y"] and pts[0]["bpp"] < pts[1]["bpp"]
    assert res["bd_rate"] == {"x264": {"psnr_rgb": None, "psnr_yuv": None, "ms_ssim": None}}


@dataclass
class _Enc:
    frames: int
    seconds: float
    device: str = "cpu"


def test_nvc_point_uses_the_real_bitstream_size(tmp_path, monkeypatch):
    """The nvc path with a stand-in codec: rate is the stream file's size, quality from the decoded .yuv."""
    import nvc.api

    frames = clip(3)
    src = tmp_path / "clips"
    src.mkdir()
    write_y4m(src / "c.y4m", frames)
    seen = {}

    def encode(input, output, *, model, quality, gop, frames, device, force, **kw):
        seen.update(model=model, quality=quality, gop=gop, frames=frames, kw=kw)
        Path(output).write_bytes(b"\1" * (100 + quality))
        return _Enc(frames=3, seconds=0.5)

    def decode(input, output, *, device, force, **kw):
        with Path(output).open("wb") as f:  # a lossless "codec"
            for fr in clips_frames:
                f.write(fr.tobytes())
        return _Enc(frames=3, seconds=0.25)

    clips_frames = frames
    monkeypatch.setattr(nvc.api, "encode", encode)
    monkeypatch.setattr(nvc.api, "decode", decode)
    res = bench.run_bench(str(src), None, qualities=[2], anchors=(), out=str(tmp_path / "run"), frames=3, gop=8,
                          progress=False)
    (p,) = res["sequences"]["c"]["nvc-lite"]
    assert seen == {"model": "nvc-lite", "quality": 2, "gop": 8, "frames": 3,
                    "kw": {"numeric": None, "flat_quality": False, "refine": None, "postfilter": True}}
    assert p["bytes"] == 102 and p["bits"] == 816 and p["psnr_y"] == 100.0 and p["ms_ssim"] == pytest.approx(1.0)
    assert p["encode_fps"] == pytest.approx(6.0) and p["decode_fps"] == pytest.approx(12.0)
    assert not list((tmp_path / "run" / "tmp").iterdir())  # decoded .yuv removed


def test_real_nvc_point_end_to_end(tmp_path):
    """One real nvc-lite point through nvc.api: a real .nvc stream on disk, decoded and measured."""
    import torch

    torch.set_num_threads(1)
    d = tmp_path / "clips"
    d.mkdir()
    write_y4m(d / "m.y4m", clip(2))
    out = tmp_path / "run"
    res = bench.run_bench(str(d), None, qualities=[1], anchors=(), out=str(out), frames=2, gop=2, progress=False)
    assert res["failures"] == []
    (p,) = res["sequences"]["m"]["nvc-lite"]
    stream = out / p["stream"]
    assert stream.suffix == ".nvc" and stream.stat().st_size == p["bytes"] and p["frames"] == 2
    assert 5 < p["psnr_y"] < 100 and p["decode_fps"] > 0
    # with encoder-side refinement: another stream, decoded and measured the same way
    res = bench.run_bench(str(d), None, qualities=[1], anchors=(), out=str(tmp_path / "refined"), frames=2, gop=2,
                          progress=False, refine=2)
    assert res["failures"] == [] and res["protocol"]["refine"] == 2
    (r,) = res["sequences"]["m"]["nvc-lite"]
    assert r["frames"] == 2 and (out.parent / "refined" / r["stream"]).stat().st_size == r["bytes"]
    assert 5 < r["psnr_y"] < 100


def test_jobs_run_points_in_worker_processes(tmp_path):
    d = tmp_path / "clips"
    d.mkdir()
    write_y4m(d / "a.y4m", clip(2))
    write_y4m(d / "b.y4m", clip(2, seed=1))
    res = bench.run_bench(str(d), None, qualities=[], anchors=("x264",), crfs={"x264": [30, 40]},
                          out=str(tmp_path / "run"), frames=2, jobs=2, progress=False)
    assert res["failures"] == []
    assert {s: len(c["x264"]) for s, c in res["sequences"].items()} == {"a": 2, "b": 2}


def test_cli_style_lists_and_quality_range(clips, tmp_path, counting):
    res = bench.run_bench(str(clips), None, qualities="0,5", anchors="x264", sequences="beta_64x64_25",
                          out=str(tmp_path / "run"), frames=4, gop=4, progress=False)
    assert res["protocol"]["qualities"] == [0, 5] and list(res["sequences"]) == ["beta_64x64_25"]
    assert len(counting) == 2 + 5
    with pytest.raises(InputError):
        run(clips, tmp_path / "run2", qualities=[11])  # nvc-lite has 0..10

"""benchmarks/speed.py: runs end to end on a tiny size and writes the documented JSON keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import load_script


def _speed():
    return load_script("speed")


def test_speed_script_json(tmp_path: Path) -> None:
    import av

    if "libx264" not in av.codecs_available:
        pytest.skip("this PyAV build has no libx264")
    import nvc.bitstream
    import nvc.codec
    import nvc.models

    load, encode_payload, to_yuv = nvc.models.load, nvc.bitstream.encode_payload, nvc.codec.rgb_to_yuv420
    import nvc.entropy as em

    gc_compress = em.GaussianConditional.compress
    speed = _speed()
    out = tmp_path / "speed.json"
    res = speed.main(["--sizes", "128x96", "--frames", "2", "--warmup", "1", "--device", "cpu", "--threads", "2",
                      "--flat", "1,2", "--size", "64x64", "--mac-size", "64x64", "--json", str(out), "--workdir", str(tmp_path)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(res))
    for key in ("command", "device", "model", "sizes", "flat", "ru_maxrss_mb", "quality", "gop", "crf", "source"):
        assert key in data, key
    assert data["complete"] is True
    assert "--sizes 128x96" in data["command"]
    assert data["device"]["type"] == "cpu" and data["device"]["name"] and data["device"]["torch_threads"] == 2
    model = data["model"]
    assert model["params"] > 1e6 and 0 < model["macs"]["decode_layer_params"] < model["params"]
    for ph in ("encode_intra", "encode_inter", "decode_intra", "decode_inter"):
        assert model["macs"][ph]["kmac_per_px"] > 0
    assert model["macs"]["decode_inter"]["kmac_per_px"] > model["macs"]["decode_intra"]["kmac_per_px"]
    (size,) = data["sizes"]
    assert (size["width"], size["height"], size["frames"]) == (128, 96, 2)
    for what in ("encode", "decode"):
        ph = size["nvc"][what]
        assert ph["frames"] == 2 and ph["fps"] > 0 and ph["peak_rss_mb"] > 0
        assert set(ph["split_seconds"]) == set(data["split_keys"])
        assert ph["split_seconds"]["network"] > 0 and ph["split_seconds"]["entropy"] > 0
        assert ph["split_seconds"]["colour"] > 0 and ph["split_seconds"]["io"] > 0
        assert sum(ph["split_seconds"].values()) == pytest.approx(ph["seconds"], rel=0.05, abs=0.01)
        assert len(ph["frame_seconds"]) == 2
    for anchor in ("x264-zl", "x264-medium"):
        a = size["x264"][anchor]
        assert a["frames"] == 2 and a["encode_fps"] > 0 and a["decode_fps"] > 0
        assert set(size["ratios"][anchor]) == {"encode", "decode", "encode_codec_only", "decode_codec_only"}
        assert size["ratios"][anchor]["encode"] > 0
    assert [r["frames"] for r in data["flat"]["runs"]] == [1, 2]
    assert all(r["encode"]["peak_rss_mb"] > 0 and r["decode"]["peak_rss_mb"] > 0 for r in data["flat"]["runs"])
    # every monkeypatch is undone
    assert nvc.models.load is load and nvc.bitstream.encode_payload is encode_payload and nvc.codec.rgb_to_yuv420 is to_yuv
    assert em.GaussianConditional.compress is gc_compress


def test_parse_sizes() -> None:
    speed = _speed()
    assert speed.parse_sizes("cif,720p,1080p:2", 4) == [("cif", 352, 288, 4), ("720p", 1280, 720, 4),
                                                       ("1080p", 1920, 1080, 2)]
    assert speed.parse_sizes("none", 4) == []

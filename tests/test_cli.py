"""The CLI through Typer's runner: commands, one-line errors with exit code 2, --force, startup."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from nvc.cli import app

from .conftest import make_frames, write_y4m, write_yuv

runner = CliRunner()


def test_help_does_not_import_torch():
    code = "import sys; from nvc.cli import app; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "encode" in r.output and "bench" in r.output


def test_encode_decode_info(tmp_path):
    src = write_yuv(tmp_path / "clip_48x32.yuv", make_frames(3, 48, 32))
    out = tmp_path / "c.nvc"
    r = runner.invoke(app, ["encode", str(src), "-o", str(out), "-q", "0", "--quiet", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    assert "3 frames" in r.output and "bpp" in r.output and "PSNR" in r.output
    r = runner.invoke(app, ["info", str(out), "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["frame_count"] == 3
    assert [f["quality"] for f in json.loads(r.output)["frames"]] == [3, 0, 0]  # the I frame gets +3
    r = runner.invoke(app, ["decode", str(out), "-o", str(tmp_path / "d.y4m"), "--quiet"])
    assert r.exit_code == 0, r.output
    flat = tmp_path / "flat.nvc"
    r = runner.invoke(app, ["encode", str(src), "-o", str(flat), "-q", "0", "--flat-quality", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["info", str(flat), "--json"])
    assert [f["quality"] for f in json.loads(r.output)["frames"]] == [0, 0, 0]
    refined = tmp_path / "refined.nvc"
    r = runner.invoke(app, ["encode", str(src), "-o", str(refined), "-q", "0", "--refine", "2", "--quiet"])
    assert r.exit_code == 0 and "3 frames" in r.output, r.output
    r = runner.invoke(app, ["decode", str(refined), "-o", str(tmp_path / "r.y4m"), "--quiet"])
    assert r.exit_code == 0, r.output
    # No overwrite without --force; with it, fine.
    r = runner.invoke(app, ["encode", str(src), "-o", str(out), "--quiet"])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(app, ["encode", str(src), "-o", str(out), "--quiet", "--force", "-n", "1"])
    assert r.exit_code == 0, r.output


def test_errors_are_one_line_exit_2(tmp_path):
    bad = write_yuv(tmp_path / "x.yuv", make_frames(1, 32, 32))
    cases = [
        ["encode", str(tmp_path / "missing.y4m"), "-o", str(tmp_path / "o.nvc")],
        ["encode", str(bad), "-o", str(tmp_path / "o.nvc")],
        ["encode", str(bad), "--size", "30x30", "-o", str(tmp_path / "o.nvc")],
        ["encode", str(bad), "--size", "32x32", "-q", "42", "-o", str(tmp_path / "o.nvc")],
        ["decode", str(bad), "-o", str(tmp_path / "o.yuv")],
        ["info", str(tmp_path / "nothing.nvc")],
        ["encode", str(bad), "--size", "32x32", "--numeric", "int8", "-o", str(tmp_path / "o.nvc")],
        ["encode", str(bad), "--size", "32x32", "--refine", "-1", "-o", str(tmp_path / "o.nvc")],
    ]
    for args in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in r.output, (args, r.output)
    assert not (tmp_path / "o.nvc").exists() and not (tmp_path / "o.yuv").exists()


def test_a_bad_stream_header_names_the_stream(tmp_path):
    junk = tmp_path / "junk.nvc"
    junk.write_bytes(b"hello, not a stream")
    empty = tmp_path / "empty.nvc"
    empty.write_bytes(b"")
    for args, name, why in ((["decode", str(junk), "-o", str(tmp_path / "o.yuv")], "junk.nvc", "bad magic"),
                            (["info", str(junk)], "junk.nvc", "bad magic"),
                            (["info", str(empty)], "empty.nvc", "truncated in header")):
        r = runner.invoke(app, args)
        assert r.exit_code == 2 and f"{name}: " in r.output and why in r.output, (args, r.output)


def test_models_lists_default():
    from nvc.models import load

    r = runner.invoke(app, ["models"])
    assert r.exit_code == 0 and "nvc-lite" in r.output
    m = load("nvc-lite")
    assert m.weights_digest.hex()[:8] in r.output  # what configs pin with init_digest
    from nvc.models.base import model_default_quality

    assert f"{m.qualities} (default {model_default_quality(m)})" in r.output


def test_sample_encode(tmp_path):
    out = tmp_path / "s.nvc"
    r = runner.invoke(app, ["encode", "--sample", "-o", str(out), "-n", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "352x288" in r.output


def test_disk_full_leaves_nothing(tmp_path, monkeypatch):
    import errno

    from nvc import bitstream

    src = write_yuv(tmp_path / "clip_32x32.yuv", make_frames(2, 32, 32))
    before = src.read_bytes()

    def full(self, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(bitstream.StreamWriter, "write", full)
    out = tmp_path / "full.nvc"
    r = runner.invoke(app, ["encode", str(src), "-o", str(out), "--quiet"])
    assert r.exit_code == 2 and "No space left" in r.output
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == ["clip_32x32.yuv"]
    assert src.read_bytes() == before


def test_interrupt_leaves_nothing(tmp_path, monkeypatch):
    from nvc import bitstream

    src = write_yuv(tmp_path / "clip_32x32.yuv", make_frames(2, 32, 32))

    def interrupt(self, *a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(bitstream.StreamWriter, "write", interrupt)
    r = runner.invoke(app, ["encode", str(src), "-o", str(tmp_path / "i.nvc"), "--quiet"])
    assert r.exit_code == 130
    assert [p.name for p in tmp_path.iterdir()] == ["clip_32x32.yuv"]


def test_numeric_modes(tmp_path):
    src = write_yuv(tmp_path / "clip_64x32.yuv", make_frames(2, 64, 32))
    for flag, mode in ((None, "EXACT"), ("fast", "FLOAT32_CPU"), ("exact", "EXACT")):
        out = tmp_path / f"{flag}.nvc"
        extra = ["--numeric", flag] if flag else []
        r = runner.invoke(app, ["encode", str(src), "-o", str(out), "--quiet", "--device", "cpu", *extra])
        assert r.exit_code == 0, r.output
        assert f"({'fast' if flag == 'fast' else 'exact'})" in r.output
        r = runner.invoke(app, ["info", str(out), "--json"])
        assert json.loads(r.output)["numeric_mode"] == mode
        r = runner.invoke(app, ["decode", str(out), "-o", str(tmp_path / f"{flag}.yuv"), "--quiet"])
        assert r.exit_code == 0, r.output


def test_pipes(tmp_path):
    """``-`` for stdin and stdout: the same bytes as files, summaries on stderr, one-line errors."""
    src = write_y4m(tmp_path / "a.y4m", make_frames(3, 48, 32))
    args = ["-q", "0", "--quiet", "--device", "cpu"]
    r = runner.invoke(app, ["encode", str(src), "-o", str(tmp_path / "f.nvc"), *args])
    assert r.exit_code == 0, r.output
    stream = (tmp_path / "f.nvc").read_bytes()
    r = runner.invoke(app, ["encode", "-", "-o", str(tmp_path / "p.nvc"), *args], input=src.read_bytes())
    assert r.exit_code == 0, r.output
    assert (tmp_path / "p.nvc").read_bytes() == stream
    r = runner.invoke(app, ["encode", str(src), "-o", "-", *args])
    assert r.exit_code == 0 and r.stdout_bytes == stream and "stdout: 3 frames" in r.stderr, r.stderr
    r = runner.invoke(app, ["decode", str(tmp_path / "f.nvc"), "-o", str(tmp_path / "d.y4m"), "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["decode", "-", "-o", "-", "--quiet"], input=stream)
    assert r.exit_code == 0 and r.stdout_bytes == (tmp_path / "d.y4m").read_bytes(), r.stderr
    assert "stdout: 3 frames" in r.stderr
    r = runner.invoke(app, ["info", "-", "--json"], input=stream)
    assert r.exit_code == 0 and json.loads(r.stdout)["frame_count"] == 3
    # a cut stream on stdin: its complete frames on stdout, then one line on stderr
    r = runner.invoke(app, ["decode", "-", "-o", "-", "--quiet"], input=stream[:-10])
    assert r.exit_code == 2 and r.stdout_bytes.count(b"FRAME\n") == 2
    assert r.stderr.count("\n") == 1 and "wrote 2 complete frames to stdout" in r.stderr
    r = runner.invoke(app, ["encode", str(src), "-o", "-", "--recon", "-", *args])
    assert r.exit_code == 2 and "only one output" in r.stderr and not r.stdout_bytes


def test_broken_pipe_is_one_line(tmp_path):
    """``nvc decode x.nvc -o - | head -c 10``: the reader leaves early; one line on stderr, exit code 2."""
    src = write_y4m(tmp_path / "a.y4m", make_frames(6, 128, 128))  # 147 KB of Y4M, more than a pipe buffers
    stream = tmp_path / "a.nvc"
    r = runner.invoke(app, ["encode", str(src), "-o", str(stream), "-q", "0", "--quiet", "--refine", "0"])
    assert r.exit_code == 0, r.output
    code = "from nvc.cli import main; main()"
    p = subprocess.Popen([sys.executable, "-c", code, "decode", str(stream), "-o", "-", "--quiet"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.read(10) == b"YUV4MPEG2 "
    p.stdout.close()
    err = p.stderr.read().decode()
    assert p.wait(timeout=120) == 2 and err.count("\n") == 1 and "broken pipe" in err, err


def test_summary_names_a_pixel_format_conversion(tmp_path):
    import av
    import numpy as np

    ten = tmp_path / "ten.mkv"
    with av.open(str(ten), "w") as c:
        s = c.add_stream("ffv1", rate=25)
        s.width, s.height, s.pix_fmt = 32, 32, "yuv420p10le"
        for pkt in [*s.encode(av.VideoFrame.from_ndarray(np.full((48, 32), 512, np.uint16), format="yuv420p10le")),
                    *s.encode()]:
            c.mux(pkt)
    r = runner.invoke(app, ["encode", str(ten), "-o", str(tmp_path / "t.nvc"), "--quiet", "--device", "cpu"])
    assert r.exit_code == 0 and "converted from yuv420p10le to 8-bit yuv420p" in r.output, r.output
    src = write_y4m(tmp_path / "a.y4m", make_frames(1, 32, 32))
    r = runner.invoke(app, ["encode", str(src), "-o", str(tmp_path / "a.nvc"), "--quiet", "--device", "cpu"])
    assert r.exit_code == 0 and "converted" not in r.output, r.output


def test_postfilter_option(tmp_path):
    """The sample's frames get a post-filter (format 4.0 and later) by default; --no-postfilter shows every frame as
    reconstructed. Both decode to what the encoder's --recon wrote."""
    modes = {}
    for flag in ("--postfilter", "--no-postfilter"):
        out, recon, dec = tmp_path / f"{flag}.nvc", tmp_path / f"{flag}.recon.y4m", tmp_path / f"{flag}.y4m"
        r = runner.invoke(app, ["encode", "--sample", "-n", "2", "-o", str(out), "--recon", str(recon), flag, "--quiet", "--json"])
        assert r.exit_code == 0, r.output
        modes[flag] = [f["filter"] for f in json.loads(r.stdout)["per_frame"]]
        assert runner.invoke(app, ["decode", str(out), "-o", str(dec), "--quiet"]).exit_code == 0
        assert dec.read_bytes() == recon.read_bytes()
        info = runner.invoke(app, ["info", str(out)]).output
        assert ("filter NEW" in info) == ("NEW" in modes[flag])
    assert modes["--postfilter"][0] == "NEW" and modes["--no-postfilter"] == ["OFF", "OFF"]


def test_encode_json_report(tmp_path):
    src = write_y4m(tmp_path / "a.y4m", make_frames(3, 48, 32))
    r = runner.invoke(app, ["encode", str(src), "-o", str(tmp_path / "a.nvc"), "-q", "0", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["frames"] == 3 and d["bytes"] == (tmp_path / "a.nvc").stat().st_size
    assert [f["type"] for f in d["per_frame"]] == ["I", "P", "P"] and [f["quality"] for f in d["per_frame"]] == [3, 0, 0]
    assert [f["bytes"] for f in d["per_frame"]] == d["frame_bytes"]
    assert abs(sum(f["psnr_y"] for f in d["per_frame"]) / 3 - d["psnr_y"]) < 1e-9
    r = runner.invoke(app, ["encode", str(src), "-o", "-", "-q", "0", "--quiet", "--json"])  # stdout carries the stream
    assert r.exit_code == 0 and json.loads(r.stderr)["frames"] == 3 and r.stdout_bytes.startswith(b"NVC")
    r = runner.invoke(app, ["decode", str(tmp_path / "a.nvc"), "-o", str(tmp_path / "a.yuv"), "--quiet", "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["frames"] == 3 and json.loads(r.stdout)["width"] == 48


def test_bench_sequences_and_bad_qualities(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("a", "b"):
        write_y4m(clips / f"{name}.y4m", make_frames(2, 48, 32))
    for args, words in ((["--qualities", "a,b"], "--qualities: expected integers"),
                        (["--sequences", "c"], "no sequence c")):
        r = runner.invoke(app, ["bench", "--dataset", str(clips), "--anchors", "none", "--out", str(tmp_path / "x"), *args])
        assert r.exit_code == 2 and words in r.output and len(r.output.strip().splitlines()) == 1, r.output
    out = tmp_path / "run"
    r = runner.invoke(app, ["bench", "--dataset", str(clips), "--sequences", "b", "--qualities", "0", "--anchors", "none",
                            "--frames", "2", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert list(json.loads((out / "results.json").read_text())["sequences"]) == ["b"]


def test_names_with_brackets_are_printed_as_they_are(tmp_path):
    """Messages and summaries print file names literally: rich would read [red] or [i] in them as markup."""
    r = runner.invoke(app, ["decode", str(tmp_path / "x[red].nvc"), "-o", str(tmp_path / "y.y4m")])
    assert r.exit_code == 2 and "x[red].nvc: no such file" in r.output
    src = write_yuv(tmp_path / "c[b]_48x32.yuv", make_frames(1, 48, 32))
    r = runner.invoke(app, ["encode", str(src), "-o", str(tmp_path / "s[i].nvc"), "-q", "0", "--quiet"])
    assert r.exit_code == 0 and "s[i].nvc: 1 frames" in r.output, r.output

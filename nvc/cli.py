"""The ``nvc`` command line: a thin layer over :mod:`nvc.api` that parses options and prints.

Heavy modules (torch, the models) are imported inside the commands, so ``nvc --help`` stays fast.
Every :class:`~nvc.errors.NvcError` is caught once, here, and printed as one line (exit code 2).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from .errors import NvcError
from .ladder import DEFAULT_HYPER_REFINE, DEFAULT_INTER_REFINE, DEFAULT_INTRA_REFINE, DEFAULT_LADDER, DEFAULT_LAMBDA

app = typer.Typer(
    name="nvc",
    help="nvc: a neural video codec. Encode video to .nvc streams, decode them, benchmark against x264/x265.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()
err = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])
REFINE_DEFAULTS = (f"nvc-lite refines I frames {DEFAULT_INTRA_REFINE} steps and P frames {DEFAULT_INTER_REFINE}, "
                   f"on frames up to 1024x512, and every frame's hyper-latent {DEFAULT_HYPER_REFINE} steps")


def _sentence(text: str) -> str:
    """``text`` with its first letter upper-cased (str.capitalize would lower-case the rest: "P frame")."""
    return text[:1].upper() + text[1:]


def _command(fn: F) -> F:
    """Registers a command whose NvcErrors become one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except NvcError as e:
            err.print(f"[bold red]nvc: error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except BrokenPipeError:  # `nvc decode x.nvc -o - | head -c 100`: the reader left early
            _silence_stdout()
            err.print("[bold red]nvc: error:[/] stdout: broken pipe (the program reading it closed it)", highlight=False)
            raise typer.Exit(2) from None
        except OSError as e:  # disk full, permission denied while writing, ...: the output was not left behind
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            err.print(f"[bold red]nvc: error:[/] {escape(f'{where}{e.strerror or e}')}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("nvc: interrupted; no partial output file was left", highlight=False)
            raise typer.Exit(130) from None

    app.command()(wrapper)
    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """Points stdout at /dev/null, so that Python's flush at exit does not fail again on the broken pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file (a test runner's buffer)
        pass


def _report(*paths: Optional[Path]) -> Console:
    """Where a command's summary goes: stderr when one of ``paths`` is ``-`` (stdout carries the video)."""
    from .io import is_stdio

    return err if any(is_stdio(p) for p in paths) else out


def _json(d: dict[str, Any], console: Console) -> None:
    """``d`` as indented JSON, plain (no markup), on the stream of ``console`` (see :func:`_report`)."""
    (sys.stderr if console is err else sys.stdout).write(json.dumps(d, indent=2) + "\n")


@contextmanager
def _progress(label: str, enabled: bool = True) -> Iterator[Callable[[int, Optional[int]], None]]:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[fps]:.2f} fps"), TimeElapsedColumn()]
    with Progress(*columns, console=err, transient=True, disable=not enabled) as bar:
        task = bar.add_task(label, total=None, fps=0.0)
        import time

        t0 = time.perf_counter()

        def update(done: int, total: Optional[int]) -> None:
            dt = time.perf_counter() - t0
            bar.update(task, completed=done, total=total, fps=done / dt if dt > 0 else 0.0)

        yield update


def _size(text: Optional[str]) -> Optional[tuple[int, int]]:
    from .io import parse_size

    return parse_size(text) if text else None


def _fps(text: Optional[str]) -> Optional[Fraction]:
    from .io import parse_fps

    return parse_fps(text) if text else None


@_command
def encode(
    input: Optional[Path] = typer.Argument(None, help="Video to encode: .yuv, .y4m, .mp4, .mkv, ..., or numbered images as img%04d.png (omit with --sample); - reads stdin (Y4M or anything FFmpeg probes; raw yuv420p with --size)."),
    output: Path = typer.Option(..., "-o", "--output", help="The .nvc stream to write; - for stdout (all at once, when the stream is complete)."),
    size: Optional[str] = typer.Option(None, "--size", "-s", help="WIDTHxHEIGHT of a raw .yuv (else from its name), or of raw yuv420p on stdin; other inputs state their own (a different --size is refused)."),
    fps: Optional[str] = typer.Option(None, "--fps", help="Frame rate, e.g. 30 or 30000/1001 (raw .yuv: default 30)."),
    quality: Optional[int] = typer.Option(None, "--quality", "-q", help=f"Quality index: 0 = smallest file ... highest = best (default: nvc-lite's quality of lambda {DEFAULT_LAMBDA:g}, other models' middle one; `nvc models` lists them). {_sentence(DEFAULT_LADDER.sentence())}."),
    flat_quality: bool = typer.Option(False, "--flat-quality", help="Code every frame at --quality (no quality ladder: by default the I frames and some P frames get more)."),
    refine: Optional[int] = typer.Option(None, "--refine", help=f"Encoder-side latent refinement: N gradient steps per frame, 0 for none (nvc-lite; any decoder reads the stream; frames up to 1920x1088). Default: {REFINE_DEFAULTS}; 20 on every frame codes 6-18 % fewer bits than none but encodes ~6x slower."),
    postfilter: bool = typer.Option(True, "--postfilter/--no-postfilter", help="Fit a small Wiener filter to each frame and signal it where it pays for its bits (format 5.0: on luma one filter per run of activity classes; the decoder applies it outside the prediction loop)."),
    gop: int = typer.Option(32, "--gop", help="Intra period: an I frame every N frames (low delay, P frames between)."),
    frames: Optional[int] = typer.Option(None, "--frames", "-n", help="Encode at most N frames."),
    start: int = typer.Option(0, "--start", help="First input frame to encode (the earlier ones are read and skipped)."),
    model: str = typer.Option("nvc-lite", "--model", "-m", help="Model name (see 'nvc models')."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Weights (.safetensors or torch state_dict)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    numeric: Optional[str] = typer.Option(None, "--numeric", help="exact: fixed point, any device decodes the stream identically (default for nvc-lite); fast: float32, decode on the same kind of device and machine."),
    sample: bool = typer.Option(False, "--sample", help="Encode the built-in sample clip (352x288, 16 frames)."),
    recon: Optional[Path] = typer.Option(None, "--recon", help="Also write the reconstruction (.yuv/.y4m/.mkv/.mp4; - for Y4M on stdout)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite existing outputs."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of the summary line (with each frame's type, quality, bytes and PSNR)."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the networks (default: one per core); the bytes are the same with any count (the encoder's float32 choices, and float32 streams' networks, run on one thread)."),
    intra: Optional[str] = typer.Option(None, "--intra", help="DVC only: I-frame coder, nvc (default) or x265."),
    intra_qp: Optional[int] = typer.Option(None, "--intra-qp", help="DVC with --intra x265: QP (paper: 22, 27, 32, 37)."),
    intra_quality: Optional[int] = typer.Option(None, "--intra-quality", help="DVC with --intra nvc: nvc-lite quality (default as for --quality; `nvc models` lists them)."),
) -> None:
    """Encode a video to an .nvc stream."""
    from . import api
    from .io import output_name

    if input is None and not sample:
        raise typer.BadParameter("give an INPUT video or --sample")
    if input is not None and sample:
        raise typer.BadParameter("give either an INPUT video or --sample, not both")
    with _progress("encode", not quiet) as progress:
        r = api.encode(input, output, model=model, checkpoint=checkpoint, quality=quality, gop=gop, frames=frames,
                       size=_size(size), fps=_fps(fps), device=device, force=force, sample=sample,
                       progress=progress, recon=recon, numeric=numeric, flat_quality=flat_quality, refine=refine,
                       start=start, threads=threads, postfilter=postfilter,
                       model_options={"intra": intra, "intra_qp": intra_qp, "intra_quality": intra_quality})
    if as_json:
        _json(r.to_dict(), _report(output, recon))
        return
    _report(output, recon).print(
        f"{output_name(output)}: {r.frames} frames {r.width}x{r.height}, {r.bytes} bytes, {r.bpp:.4f} bpp, {r.kbps:.1f} kbps, "
        f"PSNR-YUV {r.psnr_yuv:.2f} dB (Y {r.psnr_y:.2f} U {r.psnr_u:.2f} V {r.psnr_v:.2f}), "
        f"{r.encode_fps:.2f} fps on {r.device} ({r.numeric})"
        + (f", converted from {r.source_pix_fmt} to 8-bit yuv420p" if r.converted else ""),
        highlight=False, markup=False, soft_wrap=True,
    )


@_command
def decode(
    input: Path = typer.Argument(..., help="The .nvc stream; - reads stdin (whole, before decoding starts)."),
    output: Path = typer.Option(..., "-o", "--output", help="Decoded video: .yuv, .y4m, .mkv (FFV1) or .mp4 (x264 lossless), numbered RGB images as img%04d.png (from 1); - for Y4M on stdout."),
    start: int = typer.Option(0, "--start", help="First frame to output (decoding starts at its GoP's I frame)."),
    frames: Optional[int] = typer.Option(None, "--frames", "-n", help="Output at most N frames."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Weights the stream was encoded with."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda (auto picks the CPU for a --numeric fast CPU stream; a fast CUDA stream needs cuda)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an existing output."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON instead of the summary line."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the networks (default: one per core); a stream decodes to the same output with any count (float32 streams' networks run on one thread)."),
) -> None:
    """Decode an .nvc stream to a video file."""
    from . import api
    from .io import output_name

    with _progress("decode", not quiet) as progress:
        r = api.decode(input, output, start=start, frames=frames, checkpoint=checkpoint, device=device, force=force,
                       progress=progress, threads=threads)
    if as_json:
        _json(r.to_dict(), _report(output))
        return
    _report(output).print(f"{output_name(output)}: {r.frames} frames {r.width}x{r.height}, {r.decode_fps:.2f} fps", highlight=False, markup=False)


@_command
def info(
    input: Path = typer.Argument(..., help="The .nvc stream; - reads stdin."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Print a stream's header and its frames (type, quality, bytes, offset, post-filter)."""
    from . import api

    d = api.info(input)
    if as_json:
        _json(d, out)
        return
    for k, v in d.items():
        if k != "frames":
            out.print(f"{k:>16}: {v}", highlight=False, markup=False)
    frames = d.get("frames", [])
    counts = {t: sum(1 for f in frames if f["type"] == t) for t in ("I", "P")}
    out.print(f"{'frame records':>16}: {len(frames)} (I {counts['I']}, P {counts['P']})", highlight=False)
    for f in frames:
        filt = "" if f["filter"] == "OFF" else f" filter {f['filter']}"
        out.print(f"  #{f['index']:<5} {f['type']} q{f['quality']} {f['bytes']:>8} B @ {f['offset']}{filt}", highlight=False)


@_command
def models() -> None:
    """List the models: names, qualities, sizes, shipped weights and their digests."""
    from rich.table import Table

    from . import models as registry
    from .models.base import model_default_quality

    t = Table("model", "qualities", "parameters", "weights", "kMAC/px")
    # what stream headers, bench protocols and training configs (init_digest) name the weights by
    t.add_column("digest", no_wrap=True)
    for name in registry.names():
        try:
            m = registry.load(name)
            shipped = registry.shipped_weights(name)
            weights = f"shipped ({shipped.stat().st_size / 1e6:.1f} MB)"
            digest = m.weights_digest.hex()[:8]
        except NvcError:
            try:
                m = registry.create(name)
            except Exception:  # noqa: BLE001 - an architecture that cannot be built is listed as such
                t.add_row(name, "-", "-", "unavailable", "-", "-")
                continue
            weights, digest = "none (--checkpoint)", "-"
        params = sum(p.numel() for p in m.parameters())
        kmac = getattr(m, "kmac_per_pixel", None)
        q = getattr(m, "qualities", 1)
        t.add_row(name, f"{q} (default {model_default_quality(m)})", f"{params / 1e6:.2f} M", weights,
                  f"{kmac():.1f}" if callable(kmac) else "-", digest)
    out.print(t)


@_command
def train(
    config: Path = typer.Option(..., "--config", "-c", help="TOML recipe, e.g. configs/nvc-lite.toml."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Stop after N more steps (resume later)."),
    lmbda: Optional[float] = typer.Option(None, "--lambda", help="Override the recipe's lambda (DVC, DHVC)."),
) -> None:
    """Train (or resume training) a model from a TOML recipe (multi-GPU: torchrun -m nvc.train CONFIG)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from .train import TrainConfig
    from .train import train as run_train

    cfg = TrainConfig.from_toml(config)
    if lmbda is not None:
        cfg.lmbda = lmbda
    columns = [TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
               TextColumn("loss {task.fields[loss]:.3f} bpp {task.fields[bpp]:.3f} PSNR {task.fields[psnr]:.2f}"),
               TimeRemainingColumn()]
    # a transient spinner while the model and the data are prepared (an error there leaves only its own line),
    # then the bar from the step training starts at
    status = err.status("train: preparing the model and the data", spinner="dots")
    bar = Progress(*columns, console=err)
    task = bar.add_task("train", total=cfg.total_steps, loss=0.0, bpp=0.0, psnr=0.0)

    def on_start(step: int) -> None:
        status.stop()
        bar.update(task, completed=step)
        bar.start()

    def on_log(r: dict[str, Any]) -> None:
        bar.update(task, completed=r["step"], loss=r["loss"], bpp=r["bpp"], psnr=r["psnr"])

    status.start()
    try:
        path = run_train(cfg, on_log=on_log, max_steps=steps, on_start=on_start)
    finally:
        status.stop()
        bar.stop()
    out.print(f"weights: {path}", highlight=False, markup=False)


@_command
def bench(
    dataset: str = typer.Option("sample", "--dataset", "-d", help="uvg, hevc-b, mcl-jcv (with --root), a folder of clips (and subfolders of numbered images), or sample."),
    root: Optional[Path] = typer.Option(None, "--root", help="Folder holding the named dataset's files."),
    sequences: Optional[str] = typer.Option(None, "--sequences", help="Comma-separated sequence names: only these of the dataset (default: all)."),
    model: str = typer.Option("nvc-lite", "--model", "-m"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint"),
    qualities: Optional[str] = typer.Option(None, "--qualities", help="Comma-separated qualities (default: all)."),
    anchors: str = typer.Option("x264,x265", "--anchors", help="Comma-separated: x264, x265, svtav1 (or none)."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Results folder (default runs/<dataset>-<time>); rerun to resume."),
    frames: int = typer.Option(96, "--frames", "-n", help="Frames per sequence."),
    gop: int = typer.Option(32, "--gop"),
    jobs: int = typer.Option(1, "--jobs", "-j", help="Benchmark points in parallel processes."),
    device: str = typer.Option("auto", "--device"),
    numeric: Optional[str] = typer.Option(None, "--numeric", help="nvc's numeric mode: exact (default) or fast (float32; same RD, faster)."),
    flat_quality: bool = typer.Option(False, "--flat-quality", help="nvc codes every frame at the point's quality (see 'nvc encode --help')."),
    refine: Optional[int] = typer.Option(None, "--refine", help="nvc's encoder-side latent refinement steps per frame, 0 for none (default: the model's; see 'nvc encode --help')."),
    postfilter: bool = typer.Option(True, "--postfilter/--no-postfilter", help="nvc's post-filter (see 'nvc encode --help')."),
) -> None:
    """Rate-distortion benchmark of nvc against x264/x265 under one protocol."""
    from .bench import run_bench

    results = run_bench(dataset, str(root) if root else None, model=model, checkpoint=str(checkpoint) if checkpoint else None,
              qualities=qualities, anchors=anchors, out=str(out_dir) if out_dir else None, frames=frames, gop=gop, jobs=jobs,
              device=device, progress=True, numeric=numeric, flat_quality=flat_quality, refine=refine,
              postfilter=postfilter, sequences=sequences)
    failures = results.get("failures", [])
    if failures:
        err.print(f"nvc: {len(failures)} benchmark point(s) failed (see results.json); rerun to retry them",
                  highlight=False)
        raise typer.Exit(1)


@app.callback(invoke_without_command=True)
def _root(version: bool = typer.Option(False, "--version", help="Print the version and exit.")) -> None:
    if version:
        from . import __version__

        out.print(f"nvc {__version__}")
        raise typer.Exit(0)


def main() -> None:
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # torch.jit deprecation noise from compressai
    warnings.filterwarnings("ignore", message=".*non-writable.*")
    app()


if __name__ == "__main__":
    main()

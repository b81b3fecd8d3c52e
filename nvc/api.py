"""The library API behind the CLI: encode a video file to an .nvc stream, decode it back.

>>> report = nvc.api.encode("clip.y4m", "clip.nvc", quality=3)
>>> nvc.api.decode("clip.nvc", "clip.yuv")
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from . import bitstream
from .errors import InputError, NvcError, TruncatedStreamError
from .io import Frame, VideoInfo, VideoReader, is_stdio
from .io import open as open_video
from .ladder import ladder_for
from .metrics import psnr_planes

Progress = Callable[[int, int | None], None]  # (frames done, total or None)


@dataclass
class EncodeReport:
    """What an encode did; PSNR figures are against the source frames (8-bit yuv420p), the mean of the
    per-frame PSNRs (as ``nvc bench`` and common test conditions average them)."""

    frames: int
    bytes: int
    width: int
    height: int
    fps: float
    seconds: float
    encode_fps: float
    bpp: float
    kbps: float
    psnr_y: float
    psnr_u: float
    psnr_v: float
    psnr_yuv: float
    model: str
    quality: int
    gop: int
    device: str
    frame_bytes: list[int] = field(default_factory=list)
    numeric: str = "exact"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DecodeReport:
    frames: int
    seconds: float
    decode_fps: float
    width: int
    height: int
    first: int


def open_source(
    input: str | os.PathLike[str] | None, *, size: tuple[int, int] | None = None, fps: Fraction | None = None,
    sample: bool = False, frames: int | None = None,
) -> VideoReader:
    """A reader for a file, or for the built-in sample when ``sample`` is true."""
    if sample:
        from .sample import SAMPLE_FRAMES, SampleReader

        return SampleReader(frames or SAMPLE_FRAMES)
    if input is None:
        raise InputError("no input: give a video file or --sample")
    reader = open_video(input, "r", size=size, fps=fps)
    assert isinstance(reader, VideoReader)
    return reader


def encode(
    input: str | os.PathLike[str] | None,
    output: str | os.PathLike[str],
    *,
    model: str = "nvc-lite",
    checkpoint: str | os.PathLike[str] | None = None,
    quality: int | None = None,
    gop: int = 32,
    frames: int | None = None,
    size: tuple[int, int] | None = None,
    fps: Fraction | None = None,
    device: str = "auto",
    force: bool = False,
    sample: bool = False,
    progress: Progress | None = None,
    recon: str | os.PathLike[str] | None = None,
    model_options: dict[str, Any] | None = None,
    numeric: str | None = None,
    flat_quality: bool = False,
    refine: int | None = None,
) -> EncodeReport:
    """Encodes ``input`` (any readable video, ``-`` for standard input, or the built-in sample) to the .nvc stream
    ``output`` (``-``: standard output, all at once when the stream is complete, since the writer completes its
    header last); ``recon`` may be ``-`` too (Y4M on standard output, frame by frame).

    ``model_options``: the model's coding options, e.g. ``{"intra": "x265", "intra_qp": 27}`` for DVC
    (see :func:`nvc.models.load`); the decoder reads what it needs from the stream.
    ``numeric``: ``"exact"`` (fixed point: any device decodes the stream identically; the default for
    models that have it) or ``"fast"`` (float32: decode on the same kind of device and machine).
    ``quality`` is the P frames' quality; the I frames and some P frames get more, up to the model's top quality
    (:data:`nvc.ladder.DEFAULT_LADDER`), unless ``flat_quality`` codes every frame at ``quality``.
    ``refine``: encoder-side latent refinement, that many gradient steps per frame (nvc-lite; fewer bits
    at the same quality; 20 steps encode about 6 times slower on a CPU; decoders need nothing new; 0: none;
    None: the model's defaults, see :class:`nvc.codec.Encoder`)."""
    from .codec import Encoder, resolve_device
    from .color import padded_size
    from .models import load
    from .models.base import model_default_quality

    if frames is not None and frames < 1:
        raise InputError(f"--frames must be at least 1, not {frames}")
    if gop < 1 or gop > 65535:
        raise InputError(f"--gop must be 1..65535, not {gop}")
    if is_stdio(output) and is_stdio(recon):
        raise InputError("-o - and --recon -: only one output can go to stdout")
    if not is_stdio(output) and Path(output).exists() and not force:
        raise InputError(f"{output}: already exists (use --force to overwrite)")
    dev = resolve_device(device)
    with _stream_output(output) as out, open_source(input, size=size, fps=fps, sample=sample, frames=frames) as reader:
        info = reader.info
        net = load(model, checkpoint, device=str(dev), **(model_options or {}))
        if quality is None:
            quality = model_default_quality(net)
        enc = Encoder(net, quality=quality, gop=gop, width=info.width, height=info.height, device=dev,
                      numeric=numeric, ladder=ladder_for(flat_quality), refine=refine)
        pw, ph = padded_size(info.width, info.height, net.alignment)
        header = bitstream.StreamHeader(
            model=net.name, weights_digest=net.weights_digest, numeric_mode=int(enc.numeric_mode), quality=quality,
            width=info.width, height=info.height, padded_width=pw, padded_height=ph,
            fps_num=info.fps.numerator, fps_den=info.fps.denominator, gop=gop,
        )
        total = frames if frames is not None else info.frames
        if total is not None and info.frames is not None:
            total = min(total, info.frames)
        psnr_sum = np.zeros(3)
        sizes: list[int] = []
        t0 = time.perf_counter()
        recon_writer = open_video(recon, "w", info=info, force=force) if recon else None
        try:
            with bitstream.open(out, "w", header=header, force=force) as writer:
                for frame in reader:
                    if frames is not None and len(sizes) >= frames:
                        break
                    coded = enc.encode(frame)
                    writer.write(coded.frame_type, coded.quality, coded.payload)
                    sizes.append(len(coded.payload))
                    p = psnr_planes(frame, coded.recon)
                    psnr_sum += (p["psnr_y"], p["psnr_u"], p["psnr_v"])
                    if recon_writer is not None:
                        recon_writer.write(coded.recon)  # type: ignore[union-attr]
                    if progress:
                        progress(len(sizes), total)
                if not sizes:
                    raise InputError(f"{input or 'sample'}: no frames to encode")
            if recon_writer is not None:
                recon_writer.close(ok=True)
        except BaseException:
            if recon_writer is not None:
                recon_writer.close(ok=False)
            raise
        seconds = time.perf_counter() - t0
        nbytes = out.stat().st_size
    n = len(sizes)
    rate = float(info.fps)
    py, pu, pv = (float(v) / n for v in psnr_sum)
    return EncodeReport(
        frames=n, bytes=nbytes, width=info.width, height=info.height, fps=rate, seconds=seconds,
        encode_fps=n / seconds if seconds > 0 else 0.0, bpp=nbytes * 8 / (n * info.width * info.height),
        kbps=nbytes * 8 / (n / rate) / 1000.0, psnr_y=py, psnr_u=pu, psnr_v=pv, psnr_yuv=(6 * py + pu + pv) / 8,
        model=net.name, quality=quality, gop=gop, device=str(dev), frame_bytes=sizes,
        numeric="exact" if enc.exact else "fast",
    )


def decode(
    input: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    start: int = 0,
    frames: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "auto",
    force: bool = False,
    progress: Progress | None = None,
) -> DecodeReport:
    """Decodes the .nvc stream ``input`` (``-``: standard input, read whole before decoding starts) to ``output``
    (.yuv, .y4m, .mkv or .mp4 by extension; ``-``: Y4M on standard output).

    ``start``/``frames`` select a range; decoding starts at the I frame of the GoP containing ``start``.
    A truncated or damaged stream: every complete frame before the damage is written, then the error
    (a :class:`~nvc.errors.BitstreamError`) is raised naming where and why decoding stopped.
    """
    from .codec import Decoder, resolve_device
    from .models import load

    if start < 0:
        raise InputError(f"--start must be >= 0, not {start}")
    if frames is not None and frames < 1:
        raise InputError(f"--frames must be at least 1, not {frames}")
    out = Path(output)
    if not is_stdio(out) and out.exists() and not force:
        raise InputError(f"{out}: already exists (use --force to overwrite)")
    dev = resolve_device(device)
    with _stream_input(input) as src, bitstream.open(src, "r") as reader:
        h = reader.header
        if device == "auto" and h.numeric_mode == bitstream.NumericMode.FLOAT32_CPU:
            dev = resolve_device("cpu")  # a float32 CPU stream decodes bit exactly only on a CPU
        available = len(reader.frames)
        if available == 0:
            raise TruncatedStreamError(f"{src.name}: {reader.truncated or 'stream has no frames'}; nothing decoded")
        if start >= available:
            raise InputError(f"--start {start} is past the last frame ({available} frames in the stream)")
        net = load(h.model, checkpoint, device=str(dev))
        dec = Decoder.for_stream(net, h, dev)
        stop = available if frames is None else min(available, start + frames)
        first = reader.gop_start(start)
        info = VideoInfo(h.width, h.height, Fraction(h.fps_num, h.fps_den), stop - start)
        written = 0
        failure: NvcError | None = None
        t0 = time.perf_counter()
        with open_video(out, "w", info=info, force=force) as writer:
            for i in range(first, stop):
                try:
                    frame: Frame = dec.decode(reader.read(i))
                except NvcError as e:
                    failure = e
                    break
                if i >= start:
                    writer.write(frame)  # type: ignore[union-attr]
                    written += 1
                    if progress:
                        progress(written, stop - start)
            if written == 0 and failure is not None:
                raise failure
        seconds = time.perf_counter() - t0
        where = "stdout" if is_stdio(out) else out
        if failure is not None:
            raise type(failure)(f"{failure}; wrote {written} complete frames to {where}")
        if reader.truncated and stop == available and (frames is None or start + frames > available):
            raise TruncatedStreamError(f"{reader.truncated}; wrote {written} complete frames to {where}")
    return DecodeReport(frames=written, seconds=seconds, decode_fps=written / seconds if seconds > 0 else 0.0,
                        width=h.width, height=h.height, first=first)


def info(input: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything the stream's header and index say (see ``nvc info --json``; ``-``: standard input)."""
    with _stream_input(input) as src, bitstream.open(src, "r") as reader:
        return bitstream.info_dict(reader)


@contextmanager
def _stream_input(input: str | os.PathLike[str]) -> Iterator[Path]:
    """The .nvc file to read: ``input``, or for ``-`` standard input spooled to a temporary file (readers seek)."""
    if not is_stdio(input):
        src = Path(input)
        if not src.is_file():
            raise InputError(f"{src}: no such file")
        yield src
        return
    if sys.stdin is None or sys.stdin.isatty():
        raise InputError("stdin is a terminal: pipe an .nvc stream in, e.g. cat clip.nvc | nvc decode - -o out.y4m")
    with tempfile.TemporaryDirectory(prefix="nvc-stdin-") as d:
        spool = Path(d) / "stdin.nvc"
        with spool.open("wb") as f:
            shutil.copyfileobj(sys.stdin.buffer, f)
        yield spool


@contextmanager
def _stream_output(output: str | os.PathLike[str]) -> Iterator[Path]:
    """The .nvc file to write: ``output``, or for ``-`` a temporary file copied to standard output once the stream
    is complete (the writer completes the header last)."""
    if not is_stdio(output):
        yield Path(output)
        return
    if sys.stdout is None or sys.stdout.isatty():
        raise InputError("stdout is a terminal: pipe the .nvc stream on, e.g. nvc encode in.y4m -o - | ssh host 'cat > out.nvc'")
    with tempfile.TemporaryDirectory(prefix="nvc-stdout-") as d:
        spool = Path(d) / "stdout.nvc"
        yield spool
        with spool.open("rb") as f:
            shutil.copyfileobj(f, sys.stdout.buffer)
        sys.stdout.buffer.flush()

"""The library API behind the CLI: encode a video file to an .nvc stream, decode it back; or, frame by frame,
``nvc.api.open`` an .nvc stream for writing (:class:`OutputStream`) or reading (:class:`InputStream`).

>>> report = nvc.api.encode("clip.y4m", "clip.nvc", quality=3)
>>> nvc.api.decode("clip.nvc", "clip.yuv")
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import bitstream
from ._atomic import check_output
from .errors import InputError, NvcError, TruncatedStreamError
from .io import NATIVE_PIX_FMTS, Frame, VideoInfo, VideoReader, is_stdio, output_name, std_pipe
from .io import open as open_video
from .ladder import ladder_for
from .metrics import psnr_planes

if TYPE_CHECKING:
    from .codec import CodedFrame

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
    # one entry per coded frame: index, type ("I"/"P"), quality, bytes (record data: payload and post-filter),
    # filter (the post-filter mode: OFF, KEEP or NEW), psnr_y/u/v/yuv
    per_frame: list[dict[str, Any]] = field(default_factory=list)
    source_pix_fmt: str = "yuv420p"  # the input's pixel format

    @property
    def converted(self) -> bool:
        """Whether the input was converted to 8-bit yuv420p to be coded (10-bit, 4:2:2, 4:4:4, RGB, ...)."""
        return self.source_pix_fmt not in NATIVE_PIX_FMTS and self.source_pix_fmt != "unknown"

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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
    start: int = 0,
    threads: int | None = None,
    postfilter: bool = True,
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
    None: the model's defaults, see :class:`nvc.codec.Encoder`).
    ``start``: the first input frame to code (the ones before it are read and skipped; the stream starts with an
    I frame there). ``threads``: CPU threads for the networks during the call (default: torch's, one per core).
    ``postfilter``: let the encoder fit and signal a post-filter where it pays for its bits (:mod:`nvc.postfilter`)."""
    if frames is not None and frames < 1:
        raise InputError(f"--frames must be at least 1, not {frames}")
    if start < 0:
        raise InputError(f"--start must be >= 0, not {start}")
    if is_stdio(output) and is_stdio(recon):
        raise InputError("-o - and --recon -: only one output can go to stdout")
    _check_not_input(input, output, recon)
    if not is_stdio(output):
        check_output(output, force)
    span = None if frames is None else start + frames  # what the sample is generated to
    with _cpu_threads(threads), _stream_output(output) as out, open_source(input, size=size, fps=fps, sample=sample, frames=span) as reader:
        info = reader.info
        if info.frames is not None and start >= info.frames:
            raise InputError(f"--start {start} is past the last frame ({info.frames} frames in the input)")
        bounds = [b for b in (frames, None if info.frames is None else info.frames - start) if b is not None]
        total = min(bounds) if bounds else None  # frames to code, when known (the progress bar's total)
        per_frame: list[dict[str, Any]] = []
        t0 = time.perf_counter()
        stream = OutputStream(out, width=info.width, height=info.height, fps=info.fps, model=model, checkpoint=checkpoint,
                              quality=quality, gop=gop, device=device, numeric=numeric, flat_quality=flat_quality,
                              refine=refine, force=force, model_options=model_options, postfilter=postfilter)
        recon_writer = None
        try:
            recon_writer = open_video(recon, "w", info=info, force=force) if recon else None
            for i, frame in enumerate(reader):
                if frames is not None and len(per_frame) >= frames:
                    break
                if i < start:
                    continue
                coded = stream.write(frame)
                p = psnr_planes(frame, coded.recon)
                per_frame.append({"index": len(per_frame), "type": coded.frame_type.name, "quality": coded.quality,
                                  "bytes": coded.size, "filter": coded.filter.name, **{k: float(v) for k, v in p.items()}})
                if recon_writer is not None:
                    recon_writer.write(coded.recon)  # type: ignore[union-attr]
                if progress:
                    progress(len(per_frame), total)
            if not per_frame:
                raise InputError(f"{input or 'sample'}: no frames to encode" + (f" from frame {start} on" if start else ""))
            stream.close()
            if recon_writer is not None:
                recon_writer.close(ok=True)
        except BaseException:
            stream.close(ok=False)
            if recon_writer is not None:
                recon_writer.close(ok=False)
            raise
        seconds = time.perf_counter() - t0
        nbytes = out.stat().st_size
    n = len(per_frame)
    rate = float(info.fps)
    py, pu, pv = (sum(f[k] for f in per_frame) / n for k in ("psnr_y", "psnr_u", "psnr_v"))
    return EncodeReport(
        frames=n, bytes=nbytes, width=info.width, height=info.height, fps=rate, seconds=seconds,
        encode_fps=n / seconds if seconds > 0 else 0.0, bpp=nbytes * 8 / (n * info.width * info.height),
        kbps=nbytes * 8 / (n / rate) / 1000.0, psnr_y=py, psnr_u=pu, psnr_v=pv, psnr_yuv=(6 * py + pu + pv) / 8,
        model=stream.model.name, quality=stream.quality, gop=gop, device=str(stream.device), frame_bytes=[f["bytes"] for f in per_frame],
        numeric="exact" if stream.encoder.exact else "fast", source_pix_fmt=info.pix_fmt, per_frame=per_frame,
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
    threads: int | None = None,
) -> DecodeReport:
    """Decodes the .nvc stream ``input`` (``-``: standard input, read whole before decoding starts) to ``output``
    (.yuv, .y4m, .mkv or .mp4 by extension; ``-``: Y4M on standard output).

    ``start``/``frames`` select a range; decoding starts at the I frame of the GoP containing ``start``.
    A truncated or damaged stream: every complete frame before the damage is written, then the error
    (a :class:`~nvc.errors.BitstreamError`) is raised naming where and why decoding stopped.
    ``threads``: CPU threads for the networks during the call (default: torch's, one per core).
    """
    if start < 0:
        raise InputError(f"--start must be >= 0, not {start}")
    if frames is not None and frames < 1:
        raise InputError(f"--frames must be at least 1, not {frames}")
    out = Path(output)
    _check_not_input(input, output)
    if not is_stdio(out):
        check_output(out, force)
    with _cpu_threads(threads), _stream_input(input) as src, InputStream(src, checkpoint=checkpoint, device=device) as stream:
        decoded = stream.decode(start, frames)  # checks the range and the weights before any output exists
        h, count = stream.header, len(stream.frame_range(start, frames))
        info = VideoInfo(h.width, h.height, Fraction(h.fps_num, h.fps_den), count)
        written = 0
        failure: NvcError | None = None
        t0 = time.perf_counter()
        with open_video(out, "w", info=info, force=force) as writer:
            try:
                for frame in decoded:
                    writer.write(frame)  # type: ignore[union-attr]
                    written += 1
                    if progress:
                        progress(written, count)
            except NvcError as e:
                if written == 0:
                    raise
                failure = e
        seconds = time.perf_counter() - t0
        if failure is not None:
            raise type(failure)(f"{failure}; wrote {written} complete frames to {output_name(out)}")
    return DecodeReport(frames=written, seconds=seconds, decode_fps=written / seconds if seconds > 0 else 0.0,
                        width=h.width, height=h.height, first=stream.gop_start(start))


def info(input: str | os.PathLike[str]) -> dict[str, Any]:
    """Everything the stream's header and index say (see ``nvc info --json``; ``-``: standard input)."""
    with _stream_input(input) as src, bitstream.open(src, "r") as reader:
        return bitstream.info_dict(reader)


class OutputStream:
    """An .nvc stream being written, frame by frame (``nvc.api.open(path, "w", width=..., height=...)``): each
    :meth:`write` codes a frame and appends it; the file appears under its name when closed without error.

    >>> with nvc.api.open("out.nvc", "w", width=352, height=288, fps=30, quality=6) as s:
    ...     for frame in frames:            # nvc.io.Frame: 8-bit yuv420p planes
    ...         coded = s.write(frame)      # .frame_type, .quality, .payload, .recon (the decoder's output), .filter
    """

    def __init__(self, path: str | os.PathLike[str], *, width: int, height: int, fps: Fraction | int = 30,
                 model: str = "nvc-lite", checkpoint: str | os.PathLike[str] | None = None, quality: int | None = None,
                 gop: int = 32, device: str = "auto", numeric: str | None = None, flat_quality: bool = False,
                 refine: int | None = None, force: bool = False, model_options: dict[str, Any] | None = None,
                 postfilter: bool = True) -> None:
        """The options are :func:`encode`'s; ``fps`` is stored in the header (a rational)."""
        from .codec import Encoder, resolve_device
        from .color import padded_size
        from .models import load
        from .models.base import model_default_quality

        if is_stdio(path):
            raise InputError("-: nvc.api.open writes a file; nvc.api.encode(..., '-') writes a stream to stdout")
        if gop < 1 or gop > 65535:
            raise InputError(f"--gop must be 1..65535, not {gop}")
        check_output(path, force)
        rate = Fraction(fps)
        self.device = resolve_device(device)
        self.model = load(model, checkpoint, device=str(self.device), **(model_options or {}))
        self.quality = model_default_quality(self.model) if quality is None else quality
        self.encoder = Encoder(self.model, quality=self.quality, gop=gop, width=width, height=height, device=self.device,
                               numeric=numeric, ladder=ladder_for(flat_quality), refine=refine, postfilter=postfilter)
        pw, ph = padded_size(width, height, self.model.alignment)
        self.header = bitstream.StreamHeader(
            model=self.model.name, weights_digest=self.model.weights_digest, numeric_mode=int(self.encoder.numeric_mode),
            quality=self.quality, width=width, height=height, padded_width=pw, padded_height=ph,
            fps_num=rate.numerator, fps_den=rate.denominator, gop=gop,
        )
        self._writer = bitstream.open(path, "w", header=self.header, force=force)
        assert isinstance(self._writer, bitstream.StreamWriter)
        self.path = Path(path)

    @property
    def frames(self) -> int:
        """Frames written so far."""
        return self._writer.frame_count

    def write(self, frame: Frame) -> CodedFrame:
        """Codes ``frame`` (the next in display order) and appends it to the stream."""
        coded = self.encoder.encode(frame)
        self._writer.write(coded.frame_type, coded.quality, coded.payload, coded.filter, coded.filter_params)
        return coded

    def close(self, ok: bool = True) -> None:
        """``ok``: completes the header and renames the file into place; else deletes it."""
        self._writer.close(ok)

    def __enter__(self) -> OutputStream:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(ok=exc_type is None)


class InputStream:
    """An .nvc stream to decode (``nvc.api.open(path)``): iterate for every frame, or :meth:`decode` a range.

    >>> with nvc.api.open("out.nvc") as s:
    ...     print(s.header.width, s.header.height, len(s))
    ...     for frame in s.decode(start=40, frames=10): ...   # seeks to the GoP holding frame 40
    """

    def __init__(self, path: str | os.PathLike[str], *, checkpoint: str | os.PathLike[str] | None = None,
                 device: str = "auto") -> None:
        """``checkpoint``: the weights the stream was coded with, when not the shipped ones."""
        from .codec import resolve_device
        from .models import load

        if is_stdio(path):
            raise InputError("-: nvc.api.open reads a file; nvc.api.decode('-', ...) reads a stream from stdin")
        self._reader = bitstream.open(path, "r")
        assert isinstance(self._reader, bitstream.StreamReader)
        try:
            self.header = self._reader.header
            dev = resolve_device(device)
            if device == "auto" and self.header.numeric_mode == bitstream.NumericMode.FLOAT32_CPU:
                dev = resolve_device("cpu")  # a float32 CPU stream decodes bit exactly only on a CPU
            self.device = dev
            self.model = load(self.header.model, checkpoint, device=str(dev)) if len(self) else None
        except BaseException:
            self._reader.close()
            raise
        self.path = Path(path)

    def __len__(self) -> int:
        """Complete frames in the stream (a cut or damaged stream has fewer than its header announces)."""
        return len(self._reader.frames)

    @property
    def truncated(self) -> str | None:
        """Why the stream is not whole (where it was cut or damaged), or None."""
        return self._reader.truncated

    def gop_start(self, index: int) -> int:
        """The I frame that decoding frame ``index`` starts from."""
        return self._reader.gop_start(index)

    def frame_range(self, start: int = 0, frames: int | None = None) -> range:
        """The indices :meth:`decode` outputs for ``start`` and ``frames`` (checked against the stream)."""
        available = len(self)
        if available == 0:
            raise TruncatedStreamError(f"{self.path.name}: {self.truncated or 'stream has no frames'}; nothing decoded")
        if start < 0:
            raise InputError(f"--start must be >= 0, not {start}")
        if start >= available:
            raise InputError(f"--start {start} is past the last frame ({available} frames in the stream)")
        if frames is not None and frames < 1:
            raise InputError(f"--frames must be at least 1, not {frames}")
        return range(start, available if frames is None else min(available, start + frames))

    def decode(self, start: int = 0, frames: int | None = None) -> Iterator[Frame]:
        """Frames ``start`` .. ``start + frames - 1`` (all from ``start``: ``frames`` None), decoded from the I frame
        of ``start``'s GoP. A damaged frame, or a cut at the end of the range, raises its
        :class:`~nvc.errors.BitstreamError` after the frames before it."""
        from .codec import Decoder

        r = self.frame_range(start, frames)
        return self._frames(Decoder.for_stream(self.model, self.header, self.device), r.start, r.stop,
                            cut=r.stop == len(self) and (frames is None or start + frames > len(self)))

    def _frames(self, dec: Any, start: int, stop: int, cut: bool) -> Iterator[Frame]:
        for i in range(self.gop_start(start), stop):
            frame = dec.decode(self._reader.read(i))
            if i >= start:
                yield frame
        if cut and self.truncated:
            raise TruncatedStreamError(self.truncated)

    def __iter__(self) -> Iterator[Frame]:
        return self.decode()

    def close(self) -> None:
        self._reader.close()

    def __enter__(self) -> InputStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open(  # noqa: A001 - mirrors av.open / nvc.io.open
    path: str | os.PathLike[str], mode: str = "r", **options: Any
) -> InputStream | OutputStream:
    """``open(path)`` -> :class:`InputStream` (options: ``checkpoint``, ``device``); ``open(path, "w", width=...,
    height=..., ...)`` -> :class:`OutputStream` (options: :class:`OutputStream`'s)."""
    if mode in ("r", "rb"):
        return InputStream(path, **options)
    if mode in ("w", "wb"):
        return OutputStream(path, **options)
    raise ValueError(f"mode must be 'r' or 'w', not {mode!r}")


@contextmanager
def _cpu_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``threads`` for the block, then restored (None: unchanged). EXACT
    decoding gives the same output with any count; the encoder's float32 steps (refinement) may round differently."""
    if threads is None:
        yield
        return
    if threads < 1:
        raise InputError(f"--threads must be at least 1, not {threads}")
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _check_not_input(input: str | os.PathLike[str] | None, *outputs: str | os.PathLike[str] | None) -> None:
    """Refuses an output that is the input file itself (as FFmpeg does), ``--force`` or not."""
    if input is None or is_stdio(input) or not Path(input).exists():
        return
    for o in outputs:
        if o is not None and not is_stdio(o) and Path(o).exists() and Path(o).samefile(input):
            raise InputError(f"{o}: is the input file; write the output elsewhere")


@contextmanager
def _stream_input(input: str | os.PathLike[str]) -> Iterator[Path]:
    """The .nvc file to read: ``input``, or for ``-`` standard input spooled to a temporary file (readers seek)."""
    if not is_stdio(input):
        src = Path(input)
        if not src.is_file():
            raise InputError(f"{src}: no such file")
        yield src
        return
    stdin = std_pipe("stdin", "pipe an .nvc stream in, e.g. cat clip.nvc | nvc decode - -o out.y4m")
    with tempfile.TemporaryDirectory(prefix="nvc-stdin-") as d:
        spool = Path(d) / "stdin"
        with spool.open("wb") as f:
            shutil.copyfileobj(stdin, f)
        yield spool


@contextmanager
def _stream_output(output: str | os.PathLike[str]) -> Iterator[Path]:
    """The .nvc file to write: ``output``, or for ``-`` a temporary file copied to standard output once the stream
    is complete (the writer completes the header last)."""
    if not is_stdio(output):
        yield Path(output)
        return
    stdout = std_pipe("stdout", "pipe the .nvc stream on, e.g. nvc encode in.y4m -o - | ssh host 'cat > out.nvc'")
    with tempfile.TemporaryDirectory(prefix="nvc-stdout-") as d:
        spool = Path(d) / "stdout.nvc"
        yield spool
        with spool.open("rb") as f:
            shutil.copyfileobj(f, stdout)
        stdout.flush()

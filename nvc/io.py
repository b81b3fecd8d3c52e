"""Video readers and writers: raw .yuv, .y4m and anything FFmpeg reads (through PyAV).

``nvc.io.open(path, "r")`` yields :class:`Frame` objects (8-bit yuv420p planes) one at a time, so memory
does not grow with the clip's length. A path with a printf number, as FFmpeg writes it (``frames/img%04d.png``),
reads the numbered images from the lowest number on, up to the first gap. ``nvc.io.open(path, "w", info=...)`` writes .yuv, .y4m, or a
lossless .mkv (FFV1) / .mp4 (x264 qp 0), chosen by extension, through a temporary file renamed on success, or
numbered RGB images (``img%04d.png``), renamed together once all are written.
The path ``-`` (:data:`STDIO`) reads standard input (Y4M or anything FFmpeg probes; raw yuv420p when the caller
gives a size) and writes Y4M to standard output, for pipes: ``ffmpeg ... -f yuv4mpegpipe - | nvc encode - ...``.
This module imports numpy and PyAV, not torch: only RGB (``Frame.to_rgb``, numbered-image output) calls nvc.color,
which does.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ._atomic import AtomicFile, output_mode
from .errors import InputError, NvcError, OutputExistsError, UnsupportedFormatError

DEFAULT_RAW_FPS = Fraction(30)
MAX_DIMENSION = 16384
# the path that means standard input (reading) or standard output (writing)
STDIO = "-"
# the pixel formats read as they are; others are converted to 8-bit yuv420p
NATIVE_PIX_FMTS = frozenset({"yuv420p", "yuvj420p"})

# still-image files read as the frames of a numbered sequence (``img%04d.png``)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm", ".pnm")
# video files taken as clips when a folder is scanned (bench datasets, training data)
CLIP_EXTS = (".yuv", ".y4m", ".mp4", ".mkv", ".avi", ".mov", ".webm")

__all__ = ["STDIO", "CLIP_EXTS", "IMAGE_EXTS", "Frame", "VideoInfo", "VideoReader", "VideoWriter", "image_sequence_pattern",
           "is_image_pattern", "is_stdio", "open", "output_name", "parse_size", "parse_fps", "std_pipe"]


def is_stdio(path: str | os.PathLike[str] | None) -> bool:
    """Whether ``path`` is ``-``: standard input for a reader, standard output for a writer."""
    return path is not None and os.fspath(path) == STDIO


def std_pipe(name: str, advice: str) -> BinaryIO:
    """The binary ``sys.stdin`` or ``sys.stdout`` (``name``) for data; a terminal there is refused with ``advice``
    (how to pipe instead)."""
    stream = getattr(sys, name)
    if stream is None or stream.isatty():
        raise InputError(f"{name} is a terminal: {advice}")
    return stream.buffer


def output_name(path: str | os.PathLike[str]) -> str:
    """How messages name an output: ``stdout`` for ``-``, else the path."""
    return "stdout" if is_stdio(path) else os.fspath(path)


@dataclass
class Frame:
    """One 8-bit yuv420p picture: planes Y (H, W), U and V (ceil(H/2), ceil(W/2))."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray

    @property
    def width(self) -> int:
        return int(self.y.shape[1])

    @property
    def height(self) -> int:
        return int(self.y.shape[0])

    def tobytes(self) -> bytes:
        return self.y.tobytes() + self.u.tobytes() + self.v.tobytes()

    @classmethod
    def frombuffer(cls, buf: bytes, width: int, height: int) -> Frame:
        cw, ch = (width + 1) // 2, (height + 1) // 2
        a = np.frombuffer(buf, dtype=np.uint8)
        n = width * height
        return cls(
            a[:n].reshape(height, width),
            a[n : n + cw * ch].reshape(ch, cw),
            a[n + cw * ch : n + 2 * cw * ch].reshape(ch, cw),
        )

    def to_rgb(self) -> np.ndarray:
        """RGB uint8 (H, W, 3), BT.709 limited range (see nvc.color; imports torch)."""
        from .color import yuv420_to_rgb

        rgb = yuv420_to_rgb(self.y, self.u, self.v)
        return (rgb[0] * 255.0).round().clamp(0, 255).byte().permute(1, 2, 0).numpy()


def frame_bytes(width: int, height: int) -> int:
    """Bytes of one 8-bit yuv420p frame."""
    return width * height + 2 * ((width + 1) // 2) * ((height + 1) // 2)


@dataclass(frozen=True)
class VideoInfo:
    """What a reader knows of its video: size, frame rate, and frame count when known."""

    width: int
    height: int
    fps: Fraction
    frames: int | None = None
    pix_fmt: str = "yuv420p"


def parse_size(text: str) -> tuple[int, int]:
    """'1920x1080' -> (1920, 1080); raises InputError otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m:
        raise InputError(f"invalid size {text!r}: expected WIDTHxHEIGHT, e.g. 1920x1080")
    w, h = int(m.group(1)), int(m.group(2))
    _check_dims(w, h)
    return w, h


def parse_fps(text: str | float | Fraction) -> Fraction:
    """'30', '29.97', '30000/1001' -> Fraction; raises InputError otherwise."""
    try:
        f = Fraction(str(text)).limit_denominator(1_000_000)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"invalid frame rate {text!r}: expected e.g. 30, 29.97 or 30000/1001") from None
    if f <= 0 or f > 1000:
        raise InputError(f"invalid frame rate {text!r}: must be in (0, 1000]")
    return f


def _check_dims(w: int, h: int) -> None:
    if not (1 <= w <= MAX_DIMENSION and 1 <= h <= MAX_DIMENSION):
        raise InputError(f"unsupported frame size {w}x{h}: each side must be 1..{MAX_DIMENSION}")


def size_from_name(name: str) -> tuple[int, int] | None:
    """Finds 'WxH' in a file name such as ``Beauty_1920x1080_120fps_420_8bit_YUV.yuv``."""
    m = re.search(r"(?<![0-9])(\d{2,5})x(\d{2,5})(?![0-9])", name)
    return (int(m.group(1)), int(m.group(2))) if m else None


def fps_from_name(name: str) -> Fraction | None:
    """Finds '120fps' (or '29.97fps') in a file name."""
    m = re.search(r"(?<![0-9.])(\d{1,4}(?:\.\d+)?)\s*fps", name, re.IGNORECASE)
    return parse_fps(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------- image sequences
_NUMBER = re.compile(r"%(0?[1-9]?)d")  # FFmpeg's image2 pattern: %d or %0Nd (N < 10); %% is a literal %


def is_image_pattern(path: str | os.PathLike[str]) -> bool:
    """Whether the file name of ``path`` is a numbered-image pattern: exactly one ``%d`` / ``%0Nd``, ``%%`` for a
    literal ``%``, and an image extension (``img%04d.png``)."""
    name = Path(path).name
    rest = name.replace("%%", "")
    return (len(_NUMBER.findall(rest)) == 1 and rest.count("%") == 1
            and Path(name).suffix.lower() in IMAGE_EXTS)


def _pattern_numbers(pattern: Path, every: bool = False) -> tuple[int, int, list[int]]:
    """The first number and the count of the consecutive images ``pattern`` names (as FFmpeg reads them: from
    the lowest number present, up to the first gap), and every number present; with ``every``, none present is
    not an error (0, 0, [])."""
    folder = pattern.parent
    head, _, tail = _NUMBER.split(pattern.name.replace("%%", "\0"), maxsplit=1)
    head, tail = head.replace("\0", "%"), tail.replace("\0", "%")
    rx = re.compile(re.escape(head) + r"(\d+)" + re.escape(tail))
    fmt = pattern.name
    try:
        names = [e.name for e in os.scandir(folder)] if folder.is_dir() else []
    except OSError as e:
        raise InputError(f"{folder}: cannot list the folder ({e.strerror})") from None
    numbers = set()
    for n in names:
        m = rx.fullmatch(n)
        if m and fmt % int(m.group(1)) == n:  # the number printed as the pattern prints it (padding included)
            numbers.add(int(m.group(1)))
    if not numbers:
        if every:
            return 0, 0, []
        raise InputError(f"{pattern}: no such file (no image matches this numbered pattern)")
    first = min(numbers)
    count = 0
    while first + count in numbers:
        count += 1
    return first, count, sorted(numbers)


def image_sequence_pattern(folder: str | os.PathLike[str]) -> str | None:
    """The pattern (``6.1.%02d.png``, ``motion%02d.512.png``) of the one numbered image sequence that a folder
    holds: every image file in it named alike but for one number. None when it holds no images, or images that
    are not one sequence."""
    try:
        names = sorted(f.name for f in Path(folder).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS)
    except OSError:
        return None
    if not names:
        return None
    parts = [re.split(r"(\d+)", n) for n in names]  # text, digits, text, ..., text
    skeleton = parts[0][0::2]
    if len(parts[0]) < 3 or any(p[0::2] != skeleton for p in parts):
        return None
    varying = [i for i in range(1, len(parts[0]), 2) if len({p[i] for p in parts}) > 1]
    if len(varying) > 1 or (not varying and len(names) > 1):
        return None
    k = varying[0] if varying else len(parts[0]) - 2  # one image: its last number
    digits = [p[k] for p in parts]
    padded = any(len(d) > 1 and d.startswith("0") for d in digits)
    if padded and len({len(d) for d in digits}) != 1:
        return None  # 01 beside 1 cannot be one pattern
    number = f"%0{len(digits[0])}d" if padded else "%d"
    text = [t.replace("%", "%%") for t in parts[0]]
    return "".join(text[:k]) + number + "".join(text[k + 1:])


# ---------------------------------------------------------------------------------------- readers
class VideoReader:
    """Base reader: iterate for frames; ``info`` describes the video."""

    info: VideoInfo

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RawYuvReader(VideoReader):
    """Raw 8-bit yuv420p, size and rate from the caller or the file name."""

    def __init__(self, path: Path, size: tuple[int, int] | None, fps: Fraction | None) -> None:
        size = size or size_from_name(path.name)
        if size is None:
            raise InputError(f"{path.name}: raw .yuv needs --size WxH (none found in the file name)")
        w, h = size
        _check_dims(w, h)
        fps = fps or fps_from_name(path.name) or DEFAULT_RAW_FPS
        total = path.stat().st_size
        fb = frame_bytes(w, h)
        if total == 0:
            raise InputError(f"{path.name}: empty file, no frames")
        if total % fb:
            raise InputError(
                f"{path.name}: {total} bytes is not a whole number of {w}x{h} yuv420p frames "
                f"({fb} bytes each); check --size"
            )
        self.path = path
        self.info = VideoInfo(w, h, fps, total // fb)
        self._f: BinaryIO = path.open("rb")

    def __iter__(self) -> Iterator[Frame]:
        self._f.seek(0)
        return _raw_frames(self._f, self.info.width, self.info.height, self.path.name)

    def close(self) -> None:
        self._f.close()


class RawYuvPipeReader(VideoReader):
    """Raw 8-bit yuv420p from standard input: the size from the caller, the frame count unknown until the end."""

    def __init__(self, f: BinaryIO, size: tuple[int, int], fps: Fraction | None) -> None:
        w, h = size
        _check_dims(w, h)
        self._f = f
        self.info = VideoInfo(w, h, fps or DEFAULT_RAW_FPS, None)

    def __iter__(self) -> Iterator[Frame]:
        for i, frame in enumerate(_raw_frames(self._f, self.info.width, self.info.height, "stdin")):
            if i == 0 and frame.y.tobytes()[:9] == b"YUV4MPEG2":
                raise InputError("stdin: this is a Y4M stream, not raw yuv420p; drop --size")
            yield frame


def _raw_frames(f: BinaryIO, w: int, h: int, name: str) -> Iterator[Frame]:
    """The ``w`` x ``h`` yuv420p frames of the raw bytes in ``f``; bytes left after the last whole frame are refused
    (``name`` for the message). Reads until each frame is whole: a pipe's reads may return less."""
    fb = frame_bytes(w, h)
    while True:
        parts, got = [], 0
        while got < fb:
            b = f.read(fb - got)
            if not b:
                break
            parts.append(b)
            got += len(b)
        if got < fb:
            if got:
                raise InputError(f"{name}: {got} bytes after the last whole {w}x{h} yuv420p frame "
                                 f"({fb} bytes each); check --size")
            return
        yield Frame.frombuffer(b"".join(parts), w, h)


class AvReader(VideoReader):
    """Any container/codec FFmpeg reads, through PyAV; frames converted to 8-bit yuv420p BT.709 (grey ones with
    neutral chroma); a frame of another size than the first is refused (nvc does not scale)."""

    def __init__(self, path: Path, file: BinaryIO | None = None, *, format: str | None = None,
                 options: dict[str, str] | None = None, frames: int | None = None) -> None:
        """``file``: read that (standard input) instead of ``path``, probing its format; ``format`` and ``options``:
        FFmpeg's demuxer and its options; ``frames``: the count, when the caller knows it."""
        import av

        self.name = "stdin" if file is not None else path.name
        self._pipe_hint = ("; from a pipe, FFmpeg reads Y4M, MKV or MPEG-TS but an MP4 often needs its file: give the path, or "
                           "pipe Y4M (ffmpeg -i in.mp4 -f yuv4mpegpipe -)") if file is not None else ""
        try:
            self._c = av.open(file if file is not None else str(path), "r", format=format, options=options or {})
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise UnsupportedFormatError(f"{self.name}: not a video FFmpeg can read ({_short(e)}){self._pipe_hint}") from None
        if not self._c.streams.video:
            self._c.close()
            raise UnsupportedFormatError(f"{self.name}: no video stream")
        s = self._c.streams.video[0]
        s.thread_type = "AUTO"
        cc = s.codec_context
        w, h = int(cc.width), int(cc.height)
        if w <= 0 or h <= 0:
            self._c.close()
            raise UnsupportedFormatError(f"{self.name}: video stream has no frame size")
        _check_dims(w, h)
        rate = s.average_rate or s.guessed_rate or s.base_rate or DEFAULT_RAW_FPS
        fps = Fraction(rate.numerator, rate.denominator)
        self.path, self._s = path, s
        self.info = VideoInfo(w, h, fps, frames or int(s.frames) or None, str(cc.pix_fmt or "unknown"))

    def __iter__(self) -> Iterator[Frame]:
        import av

        w, h = self.info.width, self.info.height
        try:
            for i, vf in enumerate(self._c.decode(self._s)):
                if vf.width != w or vf.height != h:  # a size change mid-stream, or numbered images of two sizes
                    raise InputError(f"{self.name}: frame {i} is {vf.width}x{vf.height}, not the video's "
                                     f"{w}x{h} (nvc does not scale: encode the parts apart, or scale them first)")
                grey = vf.format.name.startswith(("gray", "ya"))
                if vf.format.name not in NATIVE_PIX_FMTS:
                    try:
                        vf = vf.reformat(format="yuv420p", dst_colorspace="ITU709",
                                         dst_color_range="MPEG")
                    except (av.FFmpegError, ValueError) as e:
                        raise UnsupportedFormatError(
                            f"{self.name}: cannot convert pixel format {vf.format.name} to yuv420p ({_short(e)})"
                        ) from None
                frame = frame_from_av(vf, w, h)
                if grey:  # neutral chroma, exactly (swscale's V comes out 127)
                    frame = Frame(frame.y, np.full_like(frame.u, 128), np.full_like(frame.v, 128))
                yield frame
        except av.FFmpegError as e:
            raise InputError(f"{self.name}: decoding failed ({_short(e)}){self._pipe_hint}") from None

    def close(self) -> None:
        self._c.close()


def frame_from_av(vf: Any, w: int, h: int) -> Frame:
    """Copies the planes of a yuv420p ``av.VideoFrame`` (``w`` x ``h``) into a :class:`Frame`."""
    cw, ch = (w + 1) // 2, (h + 1) // 2
    out = []
    for plane, (pw, ph) in zip(vf.planes, [(w, h), (cw, ch), (cw, ch)]):
        buf = np.frombuffer(bytes(plane), dtype=np.uint8).reshape(-1, plane.line_size)
        out.append(np.ascontiguousarray(buf[:ph, :pw]))
    return Frame(*out)


def frame_to_av(frame: Frame, pts: int, time_base: Fraction) -> Any:
    """A yuv420p ``av.VideoFrame`` holding ``frame``'s planes, stamped ``pts`` in ``time_base``."""
    import av

    vf = av.VideoFrame(frame.width, frame.height, "yuv420p")
    for plane, data in zip(vf.planes, (frame.y, frame.u, frame.v)):
        h, w = data.shape
        buf = np.frombuffer(plane, dtype=np.uint8).reshape(-1, plane.line_size)
        buf[:h, :w] = data
    vf.pts = pts
    vf.time_base = time_base
    return vf


def _short(e: BaseException) -> str:
    return str(e).splitlines()[0][:160] if str(e) else type(e).__name__


class Y4mReader(AvReader):
    """YUV4MPEG2 through PyAV; the header gives size and rate."""


class ImageSequenceReader(AvReader):
    """Numbered images (``img%04d.png``) through FFmpeg's image2 demuxer: from the lowest number present up to the
    first gap, at 25 frames per second (FFmpeg's default) unless the caller gives a rate."""

    def __init__(self, pattern: Path) -> None:
        first, count, _ = _pattern_numbers(pattern)
        super().__init__(pattern, format="image2", options={"start_number": str(first)}, frames=count)
        self._s.thread_type = "SLICE"  # no frame threads: no packet read past the last image

    def __iter__(self) -> Iterator[Frame]:
        frames = super().__iter__()
        try:
            for _ in range(self.info.frames or 0):  # FFmpeg's range probe can leap a gap: stop at it
                yield next(frames)
        finally:
            frames.close()


# ---------------------------------------------------------------------------------------- writers
class VideoWriter:
    """Base writer: ``write(frame)``; the file appears under its name only when closed without error (standard
    output, path ``-``, gets each frame as it is written)."""

    def __init__(self, path: Path, info: VideoInfo, force: bool) -> None:
        self.path, self.info = path, info
        self._atomic = None if is_stdio(path) else AtomicFile(path, force=force)
        self.frames = 0

    def write(self, frame: Frame) -> None:
        raise NotImplementedError

    def _finish(self) -> None:
        pass

    def close(self, ok: bool = True) -> None:
        if ok:
            self._finish()
        if self._atomic is not None:
            self._atomic.close(ok)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(ok=exc_type is None)


class RawYuvWriter(VideoWriter):
    def __init__(self, path: Path, info: VideoInfo, force: bool) -> None:
        super().__init__(path, info, force)
        self._f = self._atomic.open() if self._atomic is not None else sys.stdout.buffer

    def write(self, frame: Frame) -> None:
        self._f.write(frame.tobytes())
        self.frames += 1

    def _finish(self) -> None:
        if self._atomic is None:
            self._f.flush()


class Y4mWriter(RawYuvWriter):
    def __init__(self, path: Path, info: VideoInfo, force: bool) -> None:
        super().__init__(path, info, force)
        f = info.fps
        self._f.write(f"YUV4MPEG2 W{info.width} H{info.height} F{f.numerator}:{f.denominator} Ip A1:1 C420jpeg\n".encode())

    def write(self, frame: Frame) -> None:
        self._f.write(b"FRAME\n")
        super().write(frame)


class AvWriter(VideoWriter):
    """Lossless .mkv (FFV1) or .mp4 (libx264, qp 0), BT.709 limited range tagged."""

    def __init__(self, path: Path, info: VideoInfo, force: bool) -> None:
        import av

        fmt = "matroska" if path.suffix.lower() == ".mkv" else "mp4"
        if fmt == "mp4" and (info.width % 2 or info.height % 2):
            raise UnsupportedFormatError(f"{path.name}: x264 codes yuv420p with an even width and height only, and "
                                         f"this video is {info.width}x{info.height}: write .mkv (FFV1), .y4m or .yuv")
        super().__init__(path, info, force)
        self._c = av.open(str(self._atomic.tmp), "w", format=fmt)
        codec, opts = ("ffv1", {}) if fmt == "matroska" else ("libx264", {"qp": "0", "preset": "medium"})
        self._s = self._c.add_stream(codec, rate=info.fps, options=opts)
        self._s.width, self._s.height, self._s.pix_fmt = info.width, info.height, "yuv420p"
        cc = self._s.codec_context
        cc.color_range, cc.colorspace, cc.color_primaries, cc.color_trc = 1, 1, 1, 1  # MPEG range, BT.709

    def write(self, frame: Frame) -> None:
        import av

        vf = frame_to_av(frame, self.frames, 1 / self.info.fps)
        try:
            for packet in self._s.encode(vf):
                self._c.mux(packet)
        except av.FFmpegError as e:
            raise NvcError(f"{self.path.name}: writing failed ({_short(e)})") from None
        self.frames += 1

    def _finish(self) -> None:
        import av

        try:
            for packet in self._s.encode():
                self._c.mux(packet)
            self._c.close()
        except av.FFmpegError as e:
            raise NvcError(f"{self.path.name}: writing failed ({_short(e)})") from None

    def close(self, ok: bool = True) -> None:
        if not ok:
            try:
                self._c.close()
            except Exception:  # noqa: BLE001 - already failing; the temp file is removed below
                pass
        super().close(ok)


class ImageSequenceWriter(VideoWriter):
    """Numbered RGB images (``img%04d.png``; also .bmp, .tif, .ppm), numbered from 1 as FFmpeg numbers them; each
    frame converted by nvc.color (BT.709 limited range to full-range RGB). The images appear under their names only
    when the writer closes without error; an existing image of the pattern is refused unless ``force``, and with
    it the pattern's other old images (past the last one written, or numbered 0) are removed, so that the folder
    holds this sequence and no stale frame."""

    CODECS = {".png": "png", ".bmp": "bmp", ".tif": "tiff", ".tiff": "tiff", ".ppm": "ppm"}

    def __init__(self, path: Path, info: VideoInfo, force: bool) -> None:
        import av

        self.path, self.info, self.frames, self.force = path, info, 0, force
        self._atomic = None
        codec = self.CODECS.get(path.suffix.lower())
        if codec is None:
            raise InputError(f"{path.name}: numbered images are written as {', '.join(self.CODECS)} (lossless)")
        folder = path.parent
        if not folder.is_dir():
            raise InputError(f"{folder}: output folder does not exist")
        self._old = set(_pattern_numbers(path, every=True)[2])
        if self._old and not force:
            first = path.name % min(self._old)
            raise OutputExistsError(f"{folder / first}: already exists (use --force to overwrite the sequence)")
        self._cc = av.CodecContext.create(codec, "w")
        self._cc.width, self._cc.height, self._cc.pix_fmt = info.width, info.height, "rgb24"
        self._tmp: list[tuple[Path, Path]] = []

    def write(self, frame: Frame) -> None:
        import av

        final = self.path.parent / (self.path.name % (self.frames + 1))
        fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=self.path.parent)
        self._tmp.append((Path(tmp), final))
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.to_rgb()), format="rgb24")
        with os.fdopen(fd, "wb") as f:
            for packet in self._cc.encode(vf):  # intra-only codecs: one packet per frame, no delay
                f.write(bytes(packet))
        self.frames += 1

    def close(self, ok: bool = True) -> None:
        tmp, self._tmp = self._tmp, []
        try:
            if ok:
                if not self.force:
                    for _, final in tmp:  # all checked before any is renamed: the sequence appears whole or not
                        if final.exists():
                            raise OutputExistsError(f"{final}: appeared while writing (use --force to overwrite)")
                mode = output_mode()
                for t, final in tmp:
                    os.chmod(t, mode)
                    os.replace(t, final)
                for k in sorted(n for n in self._old if n > self.frames or n < 1):
                    (self.path.parent / (self.path.name % k)).unlink(missing_ok=True)
        finally:
            for t, _ in tmp:
                t.unlink(missing_ok=True)


WRITERS: dict[str, type[VideoWriter]] = {
    ".yuv": RawYuvWriter, ".y4m": Y4mWriter, ".mkv": AvWriter, ".mp4": AvWriter,
}


def open(  # noqa: A001 - mirrors av.open / builtins.open
    path: str | os.PathLike[str],
    mode: str = "r",
    *,
    size: tuple[int, int] | None = None,
    fps: Fraction | None = None,
    info: VideoInfo | None = None,
    force: bool = False,
) -> VideoReader | VideoWriter:
    """Opens a video for reading (``"r"``) or writing (``"w"``, needs ``info``); ``-`` is standard input (Y4M or
    anything FFmpeg probes, raw yuv420p when ``size`` is given) or standard output (Y4M)."""
    p = Path(path)
    if mode == "r":
        reader: VideoReader
        if is_stdio(path):
            stdin = std_pipe("stdin", "pipe a video in, e.g. ffmpeg -i in.mp4 -f yuv4mpegpipe - | nvc encode - -o out.nvc")
            if size is not None:
                return RawYuvPipeReader(stdin, size, fps)
            reader = AvReader(p, file=stdin)
        elif not p.exists() and is_image_pattern(p):
            reader = ImageSequenceReader(p)
        else:
            if not p.exists():
                raise InputError(f"{p}: no such file")
            if p.is_dir() and (pattern := image_sequence_pattern(p)) is not None:
                raise InputError(f"{p}: is a folder; give its numbered images' pattern, {p / pattern}")
            if not p.is_file():
                raise InputError(f"{p}: not a file")
            if not os.access(p, os.R_OK):
                raise InputError(f"{p}: not readable (permission denied)")
            if p.suffix.lower() == ".yuv":
                return RawYuvReader(p, size, fps)
            if p.suffix.lower() == ".nvc":
                raise InputError(f"{p.name}: this is an nvc stream; use 'nvc decode'")
            reader = Y4mReader(p) if p.suffix.lower() == ".y4m" else AvReader(p)
        if size is not None and size != (reader.info.width, reader.info.height):
            # the container states its size; a different --size is a mistake, not a request to scale
            reader.close()
            raise InputError(f"{p.name}: --size {size[0]}x{size[1]} does not match the video's "
                             f"{reader.info.width}x{reader.info.height} (--size is for raw yuv420p; nvc does not scale)")
        if fps is not None:
            reader.info = VideoInfo(reader.info.width, reader.info.height, fps, reader.info.frames, reader.info.pix_fmt)
        return reader
    if mode == "w":
        if info is None:
            raise ValueError("writing needs info=VideoInfo(...)")
        if is_stdio(path):
            std_pipe("stdout", "pipe the Y4M output on, e.g. nvc decode in.nvc -o - | ffplay -")
            return Y4mWriter(p, info, force)
        if is_image_pattern(p):
            return ImageSequenceWriter(p, info, force)
        cls = WRITERS.get(p.suffix.lower())
        if cls is None:
            raise InputError(f"{p.name}: unknown output type; use .yuv, .y4m, .mkv or .mp4, numbered images as "
                             f"img%04d.png, or - for Y4M on stdout")
        return cls(p, info, force)
    raise ValueError(f"mode must be 'r' or 'w', not {mode!r}")

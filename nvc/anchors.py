"""Conventional-codec anchors for the benchmark: x264, x265 and (optionally) SVT-AV1, through PyAV in-process.

Each anchor encodes 8-bit yuv420p frames with FFmpeg's library encoder into an **elementary stream in
memory** (no container, no ffmpeg subprocess), decodes the packets back with FFmpeg's decoder, and returns
the reconstructed frames. The rate is the total size of the encoded packets (Annex-B H.264/HEVC with
in-band parameter sets, AV1 OBUs): ``bits = sum(packet.size) * 8`` — no container overhead.

Configuration (low delay, like the nvc codec: no frame reordering, one I frame per GoP, constant quality):

========  ===========  =====================================================================  ==================
anchor    encoder      options                                                                default CRFs
========  ===========  =====================================================================  ==================
x264      libx264      preset=medium, tune=zerolatency (no B-frames, no lookahead),           22 27 32 37 42
                       keyint=min-keyint=GoP, scenecut=0, crf
x265      libx265      preset=medium, tune=zerolatency, keyint=min-keyint=GoP, scenecut=0,    24 29 34 39 44
                       bframes=0, crf
svtav1    libsvtav1    preset=8, pred-struct=1 (low delay), keyint=GoP, crf                   27 35 43 51 59
========  ===========  =====================================================================  ==================

Encoders use their default threading. Streams are tagged BT.709 limited range.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InputError, NvcError, UnsupportedFormatError
from .io import Frame, frame_from_av, frame_to_av

__all__ = ["Anchor", "ANCHORS", "AnchorResult", "available", "encode_decode", "names"]


@dataclass(frozen=True)
class Anchor:
    name: str
    encoder: str
    decoders: tuple[str, ...]  # first available wins
    default_crfs: tuple[int, ...]
    preset: str
    crf_range: tuple[int, int]

    def options(self, crf: int, gop: int, preset: str | None = None) -> dict[str, str]:
        p = preset or self.preset
        if self.name == "x264":
            return {"crf": str(crf), "preset": p, "tune": "zerolatency",
                    "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0"}
        if self.name == "x265":
            return {"crf": str(crf), "preset": p, "tune": "zerolatency",
                    "x265-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0:log-level=error"}
        if self.name == "svtav1":
            return {"crf": str(crf), "preset": p, "svtav1-params": f"keyint={gop}:pred-struct=1"}
        raise AssertionError(self.name)


ANCHORS: dict[str, Anchor] = {
    "x264": Anchor("x264", "libx264", ("h264",), (22, 27, 32, 37, 42), "medium", (0, 51)),
    "x265": Anchor("x265", "libx265", ("hevc",), (24, 29, 34, 39, 44), "medium", (0, 51)),
    "svtav1": Anchor("svtav1", "libsvtav1", ("libdav1d", "libaom-av1", "av1"), (27, 35, 43, 51, 59), "8", (1, 63)),
}


def names() -> list[str]:
    return list(ANCHORS)


def _get(name: str) -> Anchor:
    try:
        return ANCHORS[name]
    except KeyError:
        raise InputError(f"unknown anchor {name!r}; known: {', '.join(ANCHORS)}") from None


def available(name: str) -> bool:
    """Whether this PyAV build has the anchor's encoder and a decoder for it."""
    import av

    a = _get(name)
    have = av.codecs_available
    return a.encoder in have and any(d in have for d in a.decoders)


@dataclass
class AnchorResult:
    """One anchor encode/decode: reconstructed frames, stream size, and timings (codec calls only)."""

    anchor: str
    crf: int
    frames: list[Frame]
    bytes: int
    encode_seconds: float
    decode_seconds: float
    packet_bytes: list[int]

    @property
    def bits(self) -> int:
        return self.bytes * 8


def _from_av(vf: object, w: int, h: int) -> Frame:
    if vf.format.name not in ("yuv420p", "yuvj420p") or vf.width != w or vf.height != h:  # type: ignore[attr-defined]
        vf = vf.reformat(width=w, height=h, format="yuv420p")  # type: ignore[attr-defined]
    return frame_from_av(vf, w, h)


def _crop(frame: Frame, w: int, h: int) -> Frame:
    """``frame`` cut to ``w`` x ``h`` (an anchor's even-padded picture; chroma sizes round up alike)."""
    if (frame.width, frame.height) == (w, h):
        return frame
    return Frame(np.ascontiguousarray(frame.y[:h, :w]), frame.u, frame.v)


def encode_decode(
    frames: Iterable[Frame],
    anchor: str,
    crf: int,
    *,
    fps: Fraction | float = Fraction(30),
    gop: int = 32,
    preset: str | None = None,
    max_frames: int | None = None,
    stream_path: str | os.PathLike[str] | None = None,
) -> AnchorResult:
    """Encodes ``frames`` (8-bit yuv420p) with ``anchor`` at ``crf``, decodes back.

    An odd width or height is coded padded to even by repeating the last column or row (yuv420p needs even
    sides; the chroma planes already cover it), and the decoded frames are cropped back: the bits include
    the padding.

    ``max_frames`` stops reading ``frames`` after that many; ``stream_path`` also saves the elementary
    stream (``.264``/``.265``/``.obu``, playable by ffmpeg/ffplay). Timings cover only the encoder and
    decoder calls (not reading the source or converting frames).
    """
    import av

    a = _get(anchor)
    lo, hi = a.crf_range
    if not lo <= int(crf) <= hi:
        raise InputError(f"{anchor}: CRF {crf} is outside {lo}..{hi}")
    if gop < 1:
        raise InputError(f"--gop must be at least 1, not {gop}")
    if a.encoder not in av.codecs_available:
        raise UnsupportedFormatError(f"{anchor}: this PyAV/FFmpeg build has no {a.encoder} encoder")
    decoder = next((d for d in a.decoders if d in av.codecs_available), None)
    if decoder is None:
        raise UnsupportedFormatError(
            f"{anchor}: this PyAV/FFmpeg build has no decoder for it ({', '.join(a.decoders)})"
        )
    if a.name == "svtav1":
        os.environ.setdefault("SVT_LOG", "1")  # errors only: SVT-AV1 prints its banner to stderr otherwise
    rate = Fraction(fps).limit_denominator(1_000_000)
    time_base = 1 / rate

    enc = None
    packets: list[bytes] = []
    n, w, h = 0, 0, 0
    t_enc = 0.0
    try:
        for frame in frames:
            if max_frames is not None and n >= max_frames:
                break
            if enc is None:
                w, h = frame.width, frame.height
                enc = av.CodecContext.create(a.encoder, "w")
                enc.width, enc.height, enc.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
                enc.time_base, enc.framerate = time_base, rate
                enc.color_range, enc.colorspace, enc.color_primaries, enc.color_trc = 1, 1, 1, 1
                enc.gop_size = gop
                enc.max_b_frames = 0
                enc.options = a.options(int(crf), gop, preset)
            elif (frame.width, frame.height) != (w, h):
                raise InputError(f"{anchor}: frame {n} is {frame.width}x{frame.height}, expected {w}x{h}")
            if w % 2 or h % 2:
                frame = Frame(np.pad(frame.y, ((0, h % 2), (0, w % 2)), mode="edge"), frame.u, frame.v)
            vf = frame_to_av(frame, n, time_base)
            t0 = time.perf_counter()
            out = enc.encode(vf)
            t_enc += time.perf_counter() - t0
            packets += [bytes(p) for p in out]
            n += 1
        if enc is None:
            raise InputError(f"{anchor}: no frames to encode")
        t0 = time.perf_counter()
        out = enc.encode(None)
        t_enc += time.perf_counter() - t0
        packets += [bytes(p) for p in out]
    except av.FFmpegError as e:
        raise NvcError(f"{anchor}: encoding failed ({str(e).splitlines()[0][:160]})") from None

    dec = av.CodecContext.create(decoder, "r")
    recon: list[Frame] = []
    t_dec = 0.0
    try:
        for data in [*packets, None]:
            t0 = time.perf_counter()
            out = dec.decode(av.Packet(data) if data is not None else None)
            t_dec += time.perf_counter() - t0
            recon += [_crop(_from_av(vf, w + w % 2, h + h % 2), w, h) for vf in out]
    except av.FFmpegError as e:
        raise NvcError(f"{anchor}: decoding its own stream failed ({str(e).splitlines()[0][:160]})") from None
    if len(recon) != n:
        raise NvcError(f"{anchor}: encoded {n} frames but decoded {len(recon)}")
    if stream_path is not None:
        Path(stream_path).write_bytes(b"".join(packets))
    sizes = [len(p) for p in packets]
    return AnchorResult(anchor=a.name, crf=int(crf), frames=recon, bytes=sum(sizes), encode_seconds=t_enc,
                        decode_seconds=t_dec, packet_bytes=sizes)

"""Intra (I-frame) coders for models without one of their own (DVC).

- ``nvc``: the intra branch of nvc's learned model (the shipped ``nvc-lite`` weights, any of their qualities);
- ``x265``: the frame coded by libx265 through PyAV, intra only, 8-bit yuv420p at a fixed QP (the DVC
  paper protocol uses QP 22, 27, 32, 37). The HEVC elementary stream (Annex B, in-band parameter sets)
  is carried as is; both the encoder and the decoder reconstruct the frame by *decoding those bytes* with
  FFmpeg's HEVC decoder, so the reconstructions agree bit for bit.

An I-frame payload made by :class:`~nvc.models.dvc.DVC` starts with a 2-byte tag substream
``[coder id, parameter]``: ``(0, quality)`` for ``nvc`` followed by nvc-lite's two strings (y, z), or
``(1, qp)`` for ``x265`` followed by the HEVC bytes.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from torch import Tensor

INTRA_NVC, INTRA_X265 = 0, 1
INTRA_CODERS = {"nvc": INTRA_NVC, "x265": INTRA_X265}
X265_PRESET = "medium"
PAPER_QPS = (22, 27, 32, 37)


def x265_encode(x: Tensor, qp: int) -> bytes:
    """Codes padded RGB ``x`` (1, 3, H, W) in [0, 1] (H, W even) as one HEVC intra picture at ``qp``."""
    import av

    from ..io import frame_to_av
    from ..color import rgb_to_yuv420
    from ..io import Frame

    h, w = int(x.shape[-2]), int(x.shape[-1])
    frame = Frame(*rgb_to_yuv420(x[:1]))
    enc: Any = av.CodecContext.create("libx265", "w")
    enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
    enc.time_base, enc.framerate = Fraction(1, 25), Fraction(25)
    enc.color_range, enc.colorspace, enc.color_primaries, enc.color_trc = 1, 1, 1, 1
    enc.gop_size, enc.max_b_frames = 1, 0
    enc.options = {"preset": X265_PRESET,
                   "x265-params": f"qp={int(qp)}:keyint=1:min-keyint=1:bframes=0:info=0:log-level=error"}
    try:
        packets = [bytes(p) for p in enc.encode(frame_to_av(frame, 0, Fraction(1, 25)))]
        packets += [bytes(p) for p in enc.encode(None)]
    except av.FFmpegError as e:
        raise RuntimeError(f"x265 intra encoding failed ({str(e).splitlines()[0][:120]})") from None
    return b"".join(packets)


def x265_decode(data: bytes, width: int, height: int, device: Any) -> Tensor:
    """Decodes one HEVC picture to RGB (1, 3, height, width) on ``device``; ValueError if it is not one."""
    import av

    from ..anchors import _from_av
    from ..color import yuv420_to_rgb

    dec: Any = av.CodecContext.create("hevc", "r")
    dec.thread_count = 1
    try:
        frames = list(dec.decode(av.Packet(data))) + list(dec.decode(None))
    except av.FFmpegError as e:
        raise ValueError(f"undecodable HEVC intra picture ({str(e).splitlines()[0][:100]})") from None
    if len(frames) != 1 or (frames[0].width, frames[0].height) != (width, height):
        got = f"{frames[0].width}x{frames[0].height}" if frames else "no picture"
        raise ValueError(f"HEVC intra payload holds {len(frames)} picture(s) ({got}), expected one {width}x{height}")
    f = _from_av(frames[0], width, height)
    return yuv420_to_rgb(f.y, f.u, f.v, device)

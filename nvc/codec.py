"""Encoder and decoder sessions: they hold the reference context; the models stay stateless.

>>> enc = Encoder(model, quality=3, gop=32, width=w, height=h)
>>> coded = enc.encode(frame)          # -> CodedFrame(frame_type, quality, payload, recon)
>>> dec = Decoder(model, width=w, height=h)
>>> frame = dec.decode(record)         # equals coded.recon bit for bit (same device)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from . import bitstream
from .bitstream import FramePayload, FrameType, NumericMode
from .color import pad, padded_size, rgb_to_yuv420, yuv420_to_rgb
from .errors import BitstreamError, InputError, WeightsMismatchError
from .io import Frame


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu'/'cuda' as given (cuda checked)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available")
    return torch.device(device)


def numeric_mode(device: torch.device) -> NumericMode:
    return NumericMode.FLOAT32_CUDA if device.type == "cuda" else NumericMode.FLOAT32_CPU


@dataclass
class CodedFrame:
    """One encoded frame: what goes in the stream, and the reconstruction the decoder will produce."""

    frame_type: FrameType
    quality: int
    payload: bytes
    recon: Frame


class _Session:
    def __init__(self, model: Any, width: int, height: int, device: torch.device) -> None:
        self.model = model
        self.width, self.height = width, height
        self.device = device
        self.padded = padded_size(width, height, model.alignment)
        self._ctx: Any = None
        self.index = 0

    def _to_frame(self, x_hat: torch.Tensor) -> Frame:
        return Frame(*rgb_to_yuv420(x_hat[..., : self.height, : self.width]))


class Encoder(_Session):
    """Codes frames in order: an I frame every ``gop`` frames, P frames in between (low delay)."""

    def __init__(self, model: Any, *, quality: int, gop: int, width: int, height: int,
                 device: torch.device | None = None) -> None:
        super().__init__(model, width, height, device or torch.device("cpu"))
        if not 0 <= quality < model.qualities:
            raise InputError(f"quality {quality} out of range: {model.name} has qualities 0..{model.qualities - 1}")
        if gop < 1:
            raise InputError(f"--gop must be at least 1, not {gop}")
        self.quality, self.gop = quality, gop

    def encode(self, frame: Frame) -> CodedFrame:
        if (frame.width, frame.height) != (self.width, self.height):
            raise InputError(f"frame {self.index} is {frame.width}x{frame.height}, expected {self.width}x{self.height}")
        intra = self.index % self.gop == 0
        with torch.inference_mode():
            x = pad(yuv420_to_rgb(frame.y, frame.u, frame.v, self.device), self.model.alignment)
            strings, shape, x_hat, ctx = self.model.compress_frame(x, None if intra else self._ctx, self.quality)
            recon = self._to_frame(x_hat)
        self._ctx = ctx
        self.index += 1
        payload = bitstream.encode_payload(FramePayload(shape=tuple(int(s) for s in shape), strings=list(strings)))
        return CodedFrame(FrameType.I if intra else FrameType.P, self.quality, payload, recon)


class Decoder(_Session):
    """Decodes frame records in order; a P frame needs the frames since its GoP's I frame first."""

    def __init__(self, model: Any, *, width: int, height: int, device: torch.device | None = None) -> None:
        super().__init__(model, width, height, device or torch.device("cpu"))

    @classmethod
    def for_stream(cls, model: Any, header: bitstream.StreamHeader, device: torch.device) -> Decoder:
        """A decoder for ``header``, after checking the model, weights, numeric mode and sizes match."""
        if header.model != model.name:
            raise WeightsMismatchError(f"stream was coded with model {header.model!r}, not {model.name!r}")
        accept = getattr(model, "accept_stream_digest", None)  # models whose digest depends on coding options
        if not (accept(header.weights_digest) if accept is not None else header.weights_digest == model.weights_digest):
            raise WeightsMismatchError(
                f"stream was coded with other {header.model} weights (digest {header.weights_digest.hex()}, "
                f"these are {model.weights_digest.hex()}); pass the matching --checkpoint"
            )
        if header.numeric_mode != numeric_mode(device):
            want = "cuda" if header.numeric_mode == NumericMode.FLOAT32_CUDA else "cpu"
            raise WeightsMismatchError(
                f"stream was encoded on {want}; cross-device decoding is not bit-exact yet, decode with --device {want}"
            )
        if not 0 <= header.quality < model.qualities:
            raise BitstreamError(f"stream quality {header.quality} is out of the model's range")
        if padded_size(header.width, header.height, model.alignment) != (header.padded_width, header.padded_height):
            raise BitstreamError("stream's padded size does not match its display size")
        return cls(model, width=header.width, height=header.height, device=device)

    def decode(self, record: bitstream.FrameRecord) -> Frame:
        if not 0 <= record.quality < self.model.qualities:
            raise BitstreamError(f"frame {record.index}: quality {record.quality} out of range")
        intra = record.frame_type == FrameType.I
        if not intra and self._ctx is None:
            raise BitstreamError(f"frame {record.index}: P frame without a preceding I frame")
        p = bitstream.decode_payload(record.payload)
        self._check_shape(record.index, p.shape, len(p.strings))
        with torch.inference_mode():
            try:
                x_hat, ctx = self.model.decompress_frame(p.strings, p.shape, None if intra else self._ctx, record.quality)
            except (RuntimeError, ValueError, IndexError) as e:
                raise BitstreamError(f"frame {record.index}: undecodable payload ({str(e).splitlines()[0][:100]})") from None
            frame = self._to_frame(x_hat)
        self._ctx = ctx
        self.index = record.index + 1
        return frame

    def _check_shape(self, index: int, shape: tuple[int, ...], n: int) -> None:
        pw, ph = self.padded
        expect = getattr(self.model, "latent_shape", None)
        if expect is not None and tuple(shape) != tuple(expect(ph, pw)):
            raise BitstreamError(f"frame {index}: latent shape {tuple(shape)} does not match the frame size")
        expect_n = getattr(self.model, "substreams", None)
        if expect_n is not None and n != expect_n:
            raise BitstreamError(f"frame {index}: {n} substreams, expected {expect_n}")

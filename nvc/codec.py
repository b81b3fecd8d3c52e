"""Encoder and decoder sessions: they hold the reference context; the models stay stateless.

>>> enc = Encoder(model, quality=3, gop=32, width=w, height=h)
>>> coded = enc.encode(frame)          # -> CodedFrame(frame_type, quality, payload, recon, filter, filter_params)
                                       # (I frames and every 4th P frame higher: DEFAULT_LADDER)
>>> dec = Decoder(model, width=w, height=h)
>>> frame = dec.decode(record)         # equals coded.recon bit for bit (same device)
"""

from __future__ import annotations

import re
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from . import bitstream, postfilter
from .bitstream import FilterMode, FramePayload, FrameType, NumericMode, filter_data_size
from .color import pad, pad_from_reference, padded_size, rgb_to_yuv420, yuv420_to_rgb
from .errors import BitstreamError, InputError, WeightsMismatchError
from .io import Frame
from .ladder import DEFAULT_LADDER, DEFAULT_LAMBDA, FLAT, QualityLadder, ladder_for  # noqa: F401 - also nvc.codec.* since 0.1
from .models.layers import one_thread


def check_device(device: str) -> None:
    """Refuses a device name other than auto, cpu, cuda or cuda:N."""
    if device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", device):
        raise InputError(f"unknown device {device!r}: use auto, cpu or cuda")


def resolve_device(device: str) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu'/'cuda' as given (cuda checked)."""
    check_device(device)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA GPU is available")
    return torch.device(device)


NUMERIC_CHOICES = ("exact", "fast")


def check_numeric(numeric: str) -> None:
    """Refuses a numeric mode other than :data:`NUMERIC_CHOICES`."""
    if numeric not in NUMERIC_CHOICES:
        raise InputError(f"unknown --numeric {numeric!r}: use exact or fast")


def numeric_mode(device: torch.device, numeric: str = "fast") -> NumericMode:
    """The header's numeric mode: ``exact`` (any device decodes it) or ``fast`` (float32 on ``device``)."""
    check_numeric(numeric)
    if numeric == "exact":
        return NumericMode.EXACT
    return NumericMode.FLOAT32_CUDA if device.type == "cuda" else NumericMode.FLOAT32_CPU


def default_numeric(model: Any) -> str:
    """``exact`` for models that support it (streams decode identically anywhere), else ``fast``."""
    return "exact" if getattr(model, "exact_capable", False) else "fast"


MAX_REFINE = 1000  # the most refinement steps per frame an encoder accepts
# Refinement runs the whole frame through a differentiable pass (about 2 KB of memory per pixel,
# measured on nvc-lite): frames up to 1920x1088 padded, about 4.5 GB.
MAX_REFINE_PIXELS = 1920 * 1088


def check_refine(model: Any, refine: int | None, padded: tuple[int, int] | None = None) -> None:
    """Raises :class:`InputError` unless ``refine`` is a valid step count that ``model`` (when given) can
    refine per frame (of ``padded`` size, when given); None (the model's defaults) always is."""
    if refine is None:
        return
    if isinstance(refine, bool) or not isinstance(refine, int) or not 0 <= refine <= MAX_REFINE:
        raise InputError(f"--refine must be 0..{MAX_REFINE} steps, not {refine}")
    if refine and model is not None and not getattr(model, "refinable", False):
        raise InputError(f"model {model.name} has no encoder-side refinement; drop --refine")
    if refine and padded is not None and padded[0] * padded[1] > MAX_REFINE_PIXELS:
        raise InputError(f"--refine needs about 2 KB of memory per pixel: frames up to 1920x1088 (padded), "
                         f"not {padded[0]}x{padded[1]}")


@dataclass
class CodedFrame:
    """One encoded frame: what goes in the stream, and the reconstruction the decoder will produce."""

    frame_type: FrameType
    quality: int
    payload: bytes
    recon: Frame  # what the decoder shows (through the post-filter)
    filter: FilterMode = FilterMode.OFF
    filter_params: bytes = b""

    def record(self, index: int) -> bitstream.FrameRecord:
        """The frame record a decoder reads for this frame, as frame ``index`` of a stream in the current format."""
        return bitstream.FrameRecord(index, self.frame_type, self.quality, self.payload, bitstream.FORMAT_VERSION,
                                     self.filter, self.filter_params)

    @property
    def size(self) -> int:
        """The bytes of the frame's record data: its payload and, for a NEW post-filter, the filter's."""
        return len(self.payload) + filter_data_size(self.filter_params)


class _Session:
    def __init__(self, model: Any, width: int, height: int, device: torch.device, exact: bool) -> None:
        if exact and not getattr(model, "exact_capable", False):
            raise InputError(f"model {model.name} has no exact numeric mode; use --numeric fast")
        self.model = model
        self.width, self.height = width, height
        self.device = device
        self.exact = exact
        self.padded = padded_size(width, height, model.alignment)
        self._ctx: Any = None  # the model's reference context (the unfiltered reconstruction's)
        self._filter: postfilter.PostFilter | None = None  # the GoP's current post-filter
        self.index = 0

    def _coding_options(self) -> dict[str, Any]:
        return {"exact": True} if self.exact else {}

    def _model_threads(self) -> AbstractContextManager[None]:
        """Where the model runs: float32 streams on one CPU thread at both ends, since oneDNN's sums follow the
        thread count (a decoder with another count drifts, then desynchronizes); EXACT ones on the caller's
        threads (their encoder's float32 choices take one thread inside ``compress_frame``)."""
        return nullcontext() if self.exact else one_thread(self.device)

    def _derived_shape(self) -> tuple[int, ...] | None:
        """The payload shape the model derives from the padded frame size (None: models that don't)."""
        expect = getattr(self.model, "latent_shape", None)
        return None if expect is None else tuple(int(s) for s in expect(self.padded[1], self.padded[0]))

    def _to_frame(self, x_hat: torch.Tensor) -> Frame:
        x = x_hat[..., : self.height, : self.width]
        # exact mode: the conversion to 8 bits runs on the CPU so that every device writes the same bytes
        return Frame(*rgb_to_yuv420(x.cpu() if self.exact else x))


def _frame_lambda(model: Any, quality: int) -> float:
    """The rate-distortion weight of ``quality`` (the model's ``lambdas``; else the default quality's)."""
    lambdas = getattr(model, "config", {}).get("lambdas") or ()
    return float(lambdas[quality]) if 0 <= quality < len(lambdas) else float(DEFAULT_LAMBDA)


class Encoder(_Session):
    """Codes frames in order: an I frame every ``gop`` frames, P frames in between (low delay)."""

    def __init__(self, model: Any, *, quality: int, gop: int, width: int, height: int,
                 device: torch.device | None = None, numeric: str | None = None,
                 ladder: QualityLadder = DEFAULT_LADDER, refine: int | None = None, postfilter: bool = True) -> None:
        """``quality``: the P frames' quality; ``ladder`` raises some frames' (``FLAT``: none);
        ``refine``: gradient steps of encoder-side latent refinement per frame (0: none; None: the model's
        defaults, e.g. :attr:`nvc.models.lite.NvcLite.intra_refine`; the stream decodes with any decoder
        either way, only encoding is slower); ``postfilter``: fit and signal a post-filter where it pays
        (:mod:`nvc.postfilter`; False: every frame is shown as reconstructed)."""
        dev = device or torch.device("cpu")
        self.numeric_mode = numeric_mode(dev, numeric or default_numeric(model))
        super().__init__(model, width, height, dev, self.numeric_mode == NumericMode.EXACT)
        if not 0 <= quality < model.qualities:
            raise InputError(f"quality {quality} out of range: {model.name} has qualities 0..{model.qualities - 1}")
        if gop < 1:
            raise InputError(f"--gop must be at least 1, not {gop}")
        check_refine(model, refine, self.padded)
        self.quality, self.gop, self.ladder, self.refine = quality, gop, ladder, refine
        self.postfilter = postfilter

    def encode(self, frame: Frame) -> CodedFrame:
        if (frame.width, frame.height) != (self.width, self.height):
            raise InputError(f"frame {self.index} is {frame.width}x{frame.height}, expected {self.width}x{self.height}")
        position = self.index % self.gop
        intra = position == 0
        quality = self.ladder.quality(self.quality, position, self.model.qualities - 1)
        with torch.inference_mode():
            rgb = yuv420_to_rgb(frame.y, frame.u, frame.v, self.device)
            # models whose context is the reconstructed padded frame get padding that costs no bits
            from_ref = not intra and getattr(self.model, "context_is_frame", False)
            x = pad_from_reference(rgb, self._ctx) if from_ref else pad(rgb, self.model.alignment)
            opts = self._coding_options()
            if getattr(self.model, "refinable", False):  # models that take the visible size and refine
                opts["visible"] = (self.height, self.width)
                if self.refine is not None:
                    opts["refine"] = self.refine
            with self._model_threads():
                strings, shape, x_hat, ctx = self.model.compress_frame(x, None if intra else self._ctx, quality, **opts)
            recon = self._to_frame(x_hat)
            with one_thread(self.device):  # a choice: its float32 sums must not follow the thread count
                choice = self._choose_filter(recon, frame, rgb, quality, intra)
        self._ctx = ctx
        self.index += 1
        shape = tuple(int(s) for s in shape)
        if shape == self._derived_shape():  # format 3.0: a shape the decoder derives is not written
            shape = ()
        payload = bitstream.encode_payload(FramePayload(shape=shape, strings=list(strings)))
        return CodedFrame(FrameType.I if intra else FrameType.P, quality, payload, choice.shown, choice.mode,
                          choice.params)

    def _choose_filter(self, recon: Frame, frame: Frame, rgb: torch.Tensor, quality: int, intra: bool) -> postfilter.Choice:
        """The frame's post-filter (:func:`nvc.postfilter.choose`, the error measured on RGB as the model's
        training does), and the GoP's current filter after it."""
        if intra:
            self._filter = None
        if not self.postfilter:
            return postfilter.Choice(FilterMode.OFF, b"", None, recon)
        source = rgb[..., : self.height, : self.width].float()

        def distortion(candidate: Frame) -> float:
            shown = yuv420_to_rgb(candidate.y, candidate.u, candidate.v, self.device).float()
            return float(torch.sum((shown - source) ** 2)) * 255.0**2 / 3  # per picture sample, as the model's loss

        choice = postfilter.choose(recon, frame, self._filter, _frame_lambda(self.model, quality), distortion)
        self._filter = choice.current
        return choice


class Decoder(_Session):
    """Decodes frame records in order; a P frame needs the frames since its GoP's I frame first."""

    def __init__(self, model: Any, *, width: int, height: int, device: torch.device | None = None,
                 exact: bool | None = None) -> None:
        """``exact``: decode in the device-independent numeric mode (default: the model's default mode)."""
        if exact is None:
            exact = default_numeric(model) == "exact"
        super().__init__(model, width, height, device or torch.device("cpu"), exact)

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
        exact = header.numeric_mode == NumericMode.EXACT
        if not exact and header.numeric_mode != numeric_mode(device):
            want = "cuda" if header.numeric_mode == NumericMode.FLOAT32_CUDA else "cpu"
            raise WeightsMismatchError(
                f"stream was encoded with --numeric fast on {want}: only a {want} decode is bit exact "
                f"(--device {want}); encode with --numeric exact for streams any device decodes"
            )
        if exact and not getattr(model, "exact_capable", False):
            raise BitstreamError(f"numeric mode EXACT is not defined for model {model.name}")
        if not 0 <= header.quality < model.qualities:
            raise BitstreamError(f"stream quality {header.quality} is out of the model's range")
        if padded_size(header.width, header.height, model.alignment) != (header.padded_width, header.padded_height):
            raise BitstreamError("stream's padded size does not match its display size")
        return cls(model, width=header.width, height=header.height, device=device, exact=exact)

    def decode(self, record: bitstream.FrameRecord) -> Frame:
        if not 0 <= record.quality < self.model.qualities:
            raise BitstreamError(f"frame {record.index}: quality {record.quality} out of range")
        intra = record.frame_type == FrameType.I
        if not intra and self._ctx is None:
            raise BitstreamError(f"frame {record.index}: P frame without a preceding I frame")
        p = bitstream.decode_payload(record.payload, record.version)
        shape = self._check_shape(record.index, p.shape, len(p.strings), record.version)
        with torch.inference_mode(), self._model_threads():
            try:
                x_hat, ctx = self.model.decompress_frame(p.strings, shape, None if intra else self._ctx,
                                                         record.quality, **self._coding_options())
            except (RuntimeError, ValueError, IndexError) as e:
                raise BitstreamError(f"frame {record.index}: undecodable payload ({str(e).splitlines()[0][:100]})") from None
            frame = self._to_frame(x_hat)
        self._ctx = ctx
        self.index = record.index + 1
        return self._show(record, frame)

    def _show(self, record: bitstream.FrameRecord, frame: Frame) -> Frame:
        """The decoded picture through the record's post-filter (and the GoP's current filter updated)."""
        if record.frame_type == FrameType.I:
            self._filter = None
        if record.filter == FilterMode.NEW:
            try:
                self._filter = postfilter.unpack(record.filter_params, record.version)
            except BitstreamError as e:
                raise BitstreamError(f"frame {record.index}: {e}") from None
        elif record.filter == FilterMode.KEEP and self._filter is None:
            raise BitstreamError(f"frame {record.index}: keeps a post-filter, but none was sent since the I frame")
        if record.filter == FilterMode.OFF or self._filter is None:
            return frame
        return postfilter.apply(frame, self._filter)

    def _check_shape(self, index: int, shape: tuple[int, ...], n: int,
                     version: tuple[int, int] = bitstream.FORMAT_VERSION) -> tuple[int, ...]:
        """The payload's shape (format 3.0: derived where it is empty), after checking it and the
        substream count against the model and the frame size."""
        expect = self._derived_shape()
        if not shape and version[0] >= 3:
            if expect is None:
                raise BitstreamError(f"frame {index}: payload has no shape, and {self.model.name} does not derive one")
            shape = expect
        if expect is not None and tuple(shape) != expect:
            raise BitstreamError(f"frame {index}: latent shape {tuple(shape)} does not match the frame size")
        count = getattr(self.model, "substream_count", None)  # models with one substream count per format version
        expect_n = None if count is None else count(version[0])
        if expect_n is not None and n != expect_n:
            raise BitstreamError(f"frame {index}: {n} substreams, expected {expect_n}")
        return tuple(shape)

"""The frame-coding contract every nvc model fulfils, on top of CompressAI's forward/compress/decompress.

A codec session (nvc.codec) drives a model one frame at a time and keeps the *context* (reference
frame, previous latents: whatever the model needs) itself; the model stays stateless. ``ctx=None``
means "start of a GoP": the frame is coded intra.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Protocol

from torch import Tensor

from ..ladder import DEFAULT_LAMBDA


def default_quality(qualities: int, lambdas: Sequence[float] = ()) -> int:
    """The quality an encoder uses when none is given: with per-quality ``lambdas``, the one nearest
    :data:`DEFAULT_LAMBDA` in log-lambda (the lower on a tie); otherwise the middle one (of an even count, the
    upper of the two); 0 for single-rate models."""
    if lambdas:
        if len(lambdas) != qualities or min(lambdas) <= 0:
            raise ValueError(f"default_quality: {qualities} qualities, lambdas {list(lambdas)}")
        dist = [abs(math.log(v / DEFAULT_LAMBDA)) for v in lambdas]
        return dist.index(min(dist))
    return qualities // 2


def model_default_quality(model: Any) -> int:
    """:func:`default_quality` of a loaded model: its ``qualities``, and the ``lambdas`` of its config if any."""
    return default_quality(getattr(model, "qualities", 1), getattr(model, "config", {}).get("lambdas", ()))


class FrameCodec(Protocol):
    name: str
    alignment: int  # frames are padded to a multiple of this
    qualities: int  # valid qualities are 0..qualities-1
    weights_digest: bytes  # set by nvc.models.load

    def update(self, force: bool = True) -> None: ...

    def compress_frame(self, x: Tensor, ctx: Any, quality: int) -> tuple[list[bytes], tuple[int, ...], Tensor, Any]:
        """Codes padded frame ``x`` (1, 3, H, W) in [0, 1] -> (strings, shape, x_hat, new_ctx).

        ``x_hat`` and ``new_ctx`` must equal, bit for bit, what ``decompress_frame`` returns on the same device.
        """
        ...

    def decompress_frame(
        self, strings: list[bytes], shape: tuple[int, ...], ctx: Any, quality: int
    ) -> tuple[Tensor, Any]:
        """Inverse of :meth:`compress_frame` -> (x_hat, new_ctx)."""
        ...

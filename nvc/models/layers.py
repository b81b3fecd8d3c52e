"""Building blocks shared by nvc's models: convolutions, quality gains and the latent coders.

The latent coders wrap CompressAI's entropy models (``EntropyBottleneck`` for the hyper-latent,
``GaussianConditional`` for the main latent, both rANS) behind one small interface used by training
(``likelihoods``) and by coding (``compress``/``decompress``). Encoder and decoder reach the
reconstruction through the same ``dequantize`` call so they agree bit for bit.
"""

from __future__ import annotations

import math

import torch
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from torch import Tensor, nn

SCALES_MIN = 0.11
SCALES_MAX = 256.0
SCALES_LEVELS = 64


def scale_table() -> Tensor:
    """CompressAI's default log-spaced table of Gaussian scales (64 levels, 0.11 to 256)."""
    return torch.exp(torch.linspace(math.log(SCALES_MIN), math.log(SCALES_MAX), SCALES_LEVELS))


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    """A 'same' convolution; stride 2 halves the size."""
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    """A transposed convolution that doubles the size exactly."""
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


class Gains(nn.Module):
    """Per-quality channel gains (and their learned inverses), as in asymmetric gained VAEs.

    ``forward(x, q)`` scales ``x`` (B, C, H, W) by the gain of quality ``q`` (a LongTensor of shape (B,)).
    """

    def __init__(self, qualities: int, channels: int, init: Tensor | None = None) -> None:
        super().__init__()
        s = torch.ones(qualities) if init is None else init.float()
        self.gain = nn.Parameter(s[:, None].repeat(1, channels))
        self.inverse = nn.Parameter((1.0 / s)[:, None].repeat(1, channels))

    def forward(self, x: Tensor, q: Tensor) -> Tensor:
        return x * self.gain[q].abs().unsqueeze(-1).unsqueeze(-1)

    def invert(self, x: Tensor, q: Tensor) -> Tensor:
        return x * self.inverse[q].abs().unsqueeze(-1).unsqueeze(-1)


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


def safe_string(data: bytes, symbols: int) -> bytes:
    """Pads an rANS string with zeros so that decoding ``symbols`` symbols can never read past its end.

    CompressAI's rANS decoder does no bounds checks; each symbol (and each bypass-coded escape) reads at
    most a few 32-bit words, so 4 words per symbol of zeros make any string, even a hostile one, safe.
    Valid strings decode the same: the decoder never reaches the padding.
    """
    return bytes(data) + bytes(16 * symbols + 64)


class HyperLatentCoder(nn.Module):
    """Codes the hyper-latent z with a factorized prior (EntropyBottleneck)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(channels)

    def train_forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (z_hat with straight-through rounding around the medians, likelihoods with noise)."""
        _, lik = self.entropy_bottleneck(z, training=True)
        medians = self.entropy_bottleneck._get_medians().detach()
        z_hat = ste_round(z - medians) + medians
        return z_hat, lik

    def compress(self, z: Tensor) -> tuple[list[bytes], Tensor]:
        strings = self.entropy_bottleneck.compress(z)
        medians = self.entropy_bottleneck._get_medians().detach()
        symbols = torch.round(z - medians)
        return strings, symbols + medians

    def decompress(self, strings: list[bytes], size: tuple[int, int]) -> Tensor:
        n = self.entropy_bottleneck._quantized_cdf.shape[0] * size[0] * size[1]
        return self.entropy_bottleneck.decompress([safe_string(s, n) for s in strings], size)


class LatentCoder(nn.Module):
    """Codes the main latent y with a Gaussian conditional (mean and scale from the priors)."""

    def __init__(self) -> None:
        super().__init__()
        self.gaussian_conditional = GaussianConditional(None)

    def train_forward(self, y: Tensor, scales: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (y_hat with straight-through rounding, likelihoods of the noisy latent)."""
        _, lik = self.gaussian_conditional(y, scales, means=means, training=True)
        y_hat = ste_round(y - means) + means
        return y_hat, lik

    def symbols(self, y: Tensor, means: Tensor) -> Tensor:
        return torch.round(y - means)

    @staticmethod
    def dequantize(symbols: Tensor, means: Tensor) -> Tensor:
        return symbols.to(means.dtype) + means

    def indexes(self, scales: Tensor) -> Tensor:
        """Scale-table index per element; equals ``GaussianConditional.build_indexes`` in one op."""
        gc = self.gaussian_conditional
        return torch.searchsorted(gc.scale_table[:-1].contiguous(), gc.lower_bound_scale(scales).contiguous()).int()

    def compress(self, y: Tensor, scales: Tensor, means: Tensor) -> tuple[list[bytes], Tensor]:
        indexes = self.indexes(scales)
        strings = self.gaussian_conditional.compress(y, indexes, means=means)
        return strings, self.dequantize(self.symbols(y, means), means)

    def decompress(self, strings: list[bytes], scales: Tensor, means: Tensor) -> Tensor:
        indexes = self.indexes(scales)
        n = indexes[0].numel()
        symbols = self.gaussian_conditional.decompress([safe_string(s, n) for s in strings], indexes)
        return self.dequantize(symbols, means)

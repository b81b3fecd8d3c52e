"""Device-independent ("exact") evaluation of decoder-side networks in fixed point.

Floating-point convolutions sum their products in an order that depends on the device, the library and
the thread count, so two machines compute slightly different entropy parameters and a single flipped
scale index turns the rest of a frame into noise. In exact mode every convolution computes *integer*
arithmetic that float64 represents without rounding, so every summation order gives the same bits:

- activations entering a convolution are rounded to the grid ``2^-ACT_FRAC`` and clamped to
  ``|a| < 2^(ACT_BITS - ACT_FRAC)`` (integers of at most ``ACT_BITS`` bits);
- weights are rounded per output channel to a power-of-two grid chosen from the channel's largest weight
  so that the integer weights have ``w_bits`` bits, with ``w_bits = 52 - a_bits - ceil(log2 K)`` for
  ``K`` products per output (so every partial sum stays below 2^52); biases are rounded to the grid of
  the products;
- everything else is element-wise IEEE-754 float64 (add, multiply, divide, sqrt, max, round), which
  is correctly rounded, hence identical, on every conforming CPU and GPU.

Convolutions run with cuDNN disabled on CUDA (FFT and Winograd algorithms are not exact). The grids are
documented in ``formats/nvc-bitstream.md``; changing them changes decoded bits, so the format version
must change with them.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from compressai.layers import GDN
from torch import Tensor, nn

ACT_FRAC = 15  # activations: multiples of 2^-15 ...
ACT_BITS = 23  # ... with |integer| < 2^23, i.e. |a| < 256 (float32 holds them exactly too)
SQ_FRAC = 15  # GDN's squared inputs: multiples of 2^-15 ...
SQ_BITS = 31  # ... with |integer| < 2^31, i.e. x^2 < 65536
SUM_BITS = 52  # every partial sum of integer products stays below 2^52


def quantize(x: Tensor, frac: int = ACT_FRAC, bits: int = ACT_BITS) -> Tensor:
    """Rounds to the grid 2^-frac (half to even) and saturates to |integer| < 2^bits, in float64."""
    lim = float(2**bits - 1)
    return torch.round(x.double() * 2.0**frac).clamp_(-lim, lim).mul_(2.0**-frac)


def _fixed_weight(w: Tensor, bias: Tensor | None, act_frac: int, act_bits: int, out_dim: int,
                  terms: int) -> tuple[Tensor, Tensor | None]:
    """Rounds ``w`` per output channel (dimension ``out_dim``) and ``bias`` to exact dyadic grids."""
    w = w.detach().double()
    w_bits = SUM_BITS - act_bits - math.ceil(math.log2(max(terms, 2))) - 1  # one bit for the bias
    dims = [d for d in range(w.dim()) if d != out_dim]
    peak = w.abs().amax(dim=dims, keepdim=True)
    # exponent e with peak < 2^e (frexp is exact); weights become integers of w_bits bits times 2^(e-w_bits)
    _, e = torch.frexp(peak.clamp(min=2.0**-60))
    step_exp = e.double() - w_bits
    if bias is not None:
        # the bias lives on the products' grid 2^(step_exp - act_frac) and must stay below 2^(SUM_BITS-1)
        # there: a channel of tiny weights and a large bias gets a coarser weight grid
        _, eb = torch.frexp(bias.detach().double().abs().clamp(min=2.0**-60))
        shape = [1] * w.dim()
        shape[out_dim] = -1
        step_exp = torch.maximum(step_exp, (eb.double() + act_frac - (SUM_BITS - 1)).reshape(shape))
    wq = torch.round(w * torch.exp2(-step_exp)) * torch.exp2(step_exp)
    if bias is None:
        return wq, None
    bexp = step_exp.flatten() - act_frac
    bq = torch.round(bias.detach().double() * torch.exp2(-bexp)) * torch.exp2(bexp)
    return wq, bq


def _no_cudnn(x: Tensor) -> contextlib.AbstractContextManager:
    return torch.backends.cudnn.flags(enabled=False) if x.is_cuda else contextlib.nullcontext()


def conv(mod: nn.Conv2d | nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """``mod(x)`` in exact arithmetic (float64 result, exact up to the next ``quantize``)."""
    xq = quantize(x)
    k = mod.kernel_size[0] * mod.kernel_size[1]
    if isinstance(mod, nn.ConvTranspose2d):
        # weight (in, out, kh, kw); an output sums at most in * ceil(kh/s) * ceil(kw/s) products
        terms = mod.in_channels * math.ceil(mod.kernel_size[0] / mod.stride[0]) * math.ceil(mod.kernel_size[1] / mod.stride[1])
        w, b = _fixed_weight(mod.weight, mod.bias, ACT_FRAC, ACT_BITS, 1, terms)
        with _no_cudnn(x):
            return F.conv_transpose2d(xq, w, b, mod.stride, mod.padding, mod.output_padding, mod.groups, mod.dilation)
    w, b = _fixed_weight(mod.weight, mod.bias, ACT_FRAC, ACT_BITS, 0, mod.in_channels // mod.groups * k)
    with _no_cudnn(x):
        return F.conv2d(xq, w, b, mod.stride, mod.padding, mod.dilation, mod.groups)


def gdn(mod: GDN, x: Tensor) -> Tensor:
    """CompressAI's GDN / inverse GDN in exact arithmetic: ``x / sqrt(beta + gamma * x^2)`` (or ``*``)."""
    xq = quantize(x)
    c = xq.shape[1]
    beta = mod.beta_reparam(mod.beta.detach()).double()
    gamma = mod.gamma_reparam(mod.gamma.detach()).double().reshape(c, c, 1, 1)
    gq, bq = _fixed_weight(gamma, beta, SQ_FRAC, SQ_BITS, 0, c)
    sq = quantize(xq * xq, SQ_FRAC, SQ_BITS)
    with _no_cudnn(x):
        norm = F.conv2d(sq, gq, bq)
    # beta > 0 after reparametrization, but rounding could reach 0: keep the root positive
    root = torch.sqrt(norm.clamp_(min=2.0 ** -(SQ_FRAC + 20)))
    return xq * root if mod.inverse else xq / root


def run(seq: nn.Module, x: Tensor) -> Tensor:
    """Runs a module made of convolutions, (inverse) GDNs and leaky ReLUs in exact arithmetic."""
    mods = list(seq) if isinstance(seq, nn.Sequential) else [seq]
    for m in mods:
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            x = conv(m, x)
        elif isinstance(m, GDN):
            x = gdn(m, x)
        elif isinstance(m, nn.LeakyReLU):
            x = F.leaky_relu(x.double(), m.negative_slope)
        elif isinstance(m, nn.ReLU):
            x = F.relu(x.double())
        else:
            raise TypeError(f"exact mode cannot run {type(m).__name__}")
    return x


def gain(x: Tensor, inverse: Tensor) -> Tensor:
    """``x * |inverse|`` per channel (Gains.invert) in float64."""
    return x.double() * inverse.detach().double().abs()[..., None, None]


def to_float32(x: Tensor) -> Tensor:
    """Rounds to the activation grid and returns float32 (exact: the grid values have at most 23 bits)."""
    return quantize(x).float()

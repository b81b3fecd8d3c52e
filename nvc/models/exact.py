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

Since every partial sum is exact, any way of computing a convolution that forms the same products gives the
same bits. On a CPU the convolutions run in stripes of a few rows whose unfolded inputs stay in cache, and a
transposed convolution of stride s runs as s*s ordinary convolutions, one per output phase (the zeros a
transposed convolution inserts add nothing). Convolutions run with cuDNN disabled on CUDA (FFT and Winograd
algorithms are not exact). The grids are
documented in ``formats/nvc-bitstream.md``; changing them changes decoded bits, so the format version
must change with them.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layers import GDN, STRIPE_BYTES, conv_out_size, conv_rows, row_stripes, same_halo, stripe_budget

ACT_FRAC = 15  # activations: multiples of 2^-15 ...
ACT_BITS = 23  # ... with |integer| < 2^23, i.e. |a| < 256 (float32 holds them exactly too)
SQ_FRAC = 15  # GDN's squared inputs: multiples of 2^-15 ...
SQ_BITS = 31  # ... with |integer| < 2^31, i.e. x^2 < 65536
SUM_BITS = 52  # every partial sum of integer products stays below 2^52


def quantize(x: Tensor, frac: int = ACT_FRAC, bits: int = ACT_BITS) -> Tensor:
    """Rounds to the grid 2^-frac (half to even) and saturates to |integer| < 2^bits, in float64."""
    return _quantize_(x.double() if x.dtype != torch.float64 else x.clone(), frac, bits)


def _quantize_(y: Tensor, frac: int, bits: int) -> Tensor:
    """:func:`quantize` of a float64 tensor, in place."""
    lim = float(2**bits - 1)
    return y.mul_(2.0**frac).round_().clamp_(-lim, lim).mul_(2.0**-frac)


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


Finish = Callable[[Tensor], Tensor]


def to_float32(x: Tensor) -> Tensor:
    """``quantize(x)`` as float32 (exact: grid values have at most 23 bits), in stripes of rows so that no
    float64 copy of ``x`` exists."""
    if x.dim() < 3 or x.numel() * 8 <= STRIPE_BYTES:
        return quantize(x).float()
    out = torch.empty_like(x, dtype=torch.float32)
    step = max(1, STRIPE_BYTES // (x[..., :1, :].numel() * 8))
    for r in range(0, x.shape[-2], step):
        out[..., r:r + step, :] = quantize(x[..., r:r + step, :]).float()
    return out


def _budget(x: Tensor) -> int:
    """Bytes of float64 working set per convolution stripe (:func:`~nvc.models.layers.stripe_budget`)."""
    return stripe_budget(x, STRIPE_BYTES)


def _rows_per_stripe(terms: int, width: int, channels: int, budget: int | None = None) -> int:
    per_row = max(terms, channels) * max(width, 1) * 8
    return max(1, (STRIPE_BYTES if budget is None else budget) // per_row)


# One output phase of a transposed convolution: the ordinary convolution kernel (out, in, ny, nx) and the
# offsets (first input row, first input column) of its window relative to the phase's output position.
_Phase = tuple[Tensor | None, int, int]


def _conv_weights(mod: nn.Conv2d | nn.ConvTranspose2d) -> tuple[Tensor, Tensor | None, int]:
    kh, kw = mod.kernel_size
    if isinstance(mod, nn.ConvTranspose2d):
        # weight (in, out, kh, kw); an output sums at most in * ceil(kh/s) * ceil(kw/s) products
        terms = mod.in_channels * math.ceil(kh / mod.stride[0]) * math.ceil(kw / mod.stride[1])
        w, b = _fixed_weight(mod.weight, mod.bias, ACT_FRAC, ACT_BITS, 1, terms)
    else:
        terms = mod.in_channels // mod.groups * kh * kw
        w, b = _fixed_weight(mod.weight, mod.bias, ACT_FRAC, ACT_BITS, 0, terms)
    return w, b, terms


# A convolution's fixed-point weights, bias, product count and (transposed) phase kernels: computed once per
# layer and pass, not per stripe, where a pass runs a layer stripe by stripe (run_rows, last_layer_rows).
_Prepared = tuple[Tensor, Tensor | None, int, dict[tuple[int, int], _Phase] | None]
Memo = dict[nn.Module, _Prepared]


def _prepare(mod: nn.Conv2d | nn.ConvTranspose2d, memo: Memo | None = None) -> _Prepared:
    if memo is not None and mod in memo:
        return memo[mod]
    w, b, terms = _conv_weights(mod)
    prepared = (w, b, terms, _phases(mod, w) if isinstance(mod, nn.ConvTranspose2d) else None)
    if memo is not None:
        memo[mod] = prepared
    return prepared


def _conv_stripes(mod: nn.Conv2d | nn.ConvTranspose2d, xq: Tensor, finish: Finish, dtype: torch.dtype,
                  rows: tuple[int, int] | None = None, memo: Memo | None = None) -> Tensor:
    """``finish(mod(xq))`` computed in horizontal stripes of output rows (``xq``: grid values); only
    output rows ``[rows[0], rows[1])`` when ``rows`` is given; ``memo``: prepared weights to reuse.

    The arithmetic is exact, so stripes give the same bits as one whole-frame convolution; they bound
    the float64 working set (im2col buffers) independently of the frame size, and on a CPU keep it in
    cache. Transposed convolutions run by output phase (:func:`_deconv_phase_rows`)."""
    w, b, terms, phases = _prepare(mod, memo)
    ho, wo = conv_out_size(mod, xq.shape[2], xq.shape[3])
    first, last = rows if rows is not None else (0, ho)
    if not 0 <= first <= last <= ho:
        raise ValueError(f"rows {rows} outside 0..{ho}")
    out = torch.empty(xq.shape[0], mod.out_channels, last - first, wo, dtype=dtype, device=xq.device)
    budget = _budget(xq)
    if phases is not None:
        # stripes of whole input rows (s output rows each), sized by the phases' unfolded inputs
        step = mod.stride[0] * _rows_per_stripe(terms, xq.shape[3], mod.out_channels, budget)
    else:
        step = _rows_per_stripe(terms, wo, mod.out_channels, budget)
    with _no_cudnn(xq):
        for o0 in range(first, last, step):
            o1 = min(last, o0 + step)
            y = (_deconv_phase_rows(mod, xq, phases, b, o0, o1) if phases is not None
                 else conv_rows(mod, xq, o0, o1, w, b, torch.float64))
            out[:, :, o0 - first:o1 - first] = finish(y)
    return out


def _phase_taps(k: int, s: int, p: int, r: int) -> tuple[list[int], int]:
    """The kernel taps reaching output positions ``s*m + r`` of a transposed convolution (kernel ``k``,
    stride ``s``, padding ``p``), ordered by the input position ``m + d`` they read, and the first ``d``.
    Output ``o`` receives input ``i`` through tap ``j`` when ``o = i*s - p + j``."""
    taps = [j for j in range(k - 1, -1, -1) if (r + p - j) % s == 0]
    return taps, ((r + p - taps[0]) // s if taps else 0)


def _phases(mod: nn.ConvTranspose2d, w: Tensor) -> dict[tuple[int, int], _Phase] | None:
    """``mod``'s fixed-point weights ``w`` (in, out, kh, kw) split by output phase, or None when the
    layer is not a plain one (groups or dilation) and runs as one transposed convolution."""
    if mod.groups != 1 or mod.dilation != (1, 1):
        return None
    (kh, kw), (sh, sw), (ph, pw) = mod.kernel_size, mod.stride, mod.padding
    phases: dict[tuple[int, int], _Phase] = {}
    for r in range(sh):
        rows, dy = _phase_taps(kh, sh, ph, r)
        for c in range(sw):
            cols, dx = _phase_taps(kw, sw, pw, c)
            sub = w[:, :, rows][:, :, :, cols].transpose(0, 1).contiguous() if rows and cols else None
            phases[r, c] = (sub, dy, dx)
    return phases


def _deconv_phase_rows(mod: nn.ConvTranspose2d, xq: Tensor, phases: dict[tuple[int, int], _Phase],
                       bias: Tensor | None, o0: int, o1: int) -> Tensor:
    """Output rows ``[o0, o1)`` of the transposed convolution ``mod`` of grid values ``xq``, in float64:
    each output phase ``(r, c)`` (rows ``s*m + r``, columns ``s*n + c``) is an ordinary convolution of the
    input with the taps that reach it. The same products as :func:`conv_rows`, so the same bits."""
    n, _, h, w = xq.shape
    (sh, sw) = mod.stride
    wo = conv_out_size(mod, h, w)[1]
    out = xq.new_empty(n, mod.out_channels, o1 - o0, wo, dtype=torch.float64)
    for (r, c), (sub, dy, dx) in phases.items():
        m0, m1 = -(-(o0 - r) // sh), -(-(o1 - r) // sh)  # phase rows m with o0 <= s*m + r < o1
        cols = -(-(wo - c) // sw)
        if m1 <= m0 or cols <= 0:
            continue
        dst = out[:, :, sh * m0 + r - o0::sh, c::sw]
        if sub is None:  # no tap reaches this phase: the bias alone
            dst.copy_((bias if bias is not None else xq.new_zeros(mod.out_channels, dtype=torch.float64))
                      [None, :, None, None].expand_as(dst))
            continue
        ny, nx = sub.shape[2], sub.shape[3]
        a, z = m0 + dy, m1 - 1 + dy + ny  # input rows [a, z), zero outside the frame
        left, right = dx, cols - 1 + dx + nx  # input columns [left, right)
        seg = xq[:, :, max(a, 0):min(z, h), max(left, 0):min(right, w)].to(torch.float64)
        seg = F.pad(seg, (max(0, -left), max(0, right - w), max(0, -a), max(0, z - h)))
        dst.copy_(F.conv2d(seg, sub, bias))
    return out


def conv(mod: nn.Conv2d | nn.ConvTranspose2d, x: Tensor) -> Tensor:
    """``mod(x)`` in exact arithmetic: float64, exact (its input rounded to the grid first)."""
    return _conv_stripes(mod, quantize(x), lambda y: y, torch.float64)


def _gdn_params(mod: GDN, c: int) -> tuple[Tensor, Tensor]:
    beta = mod.beta_reparam(mod.beta.detach()).double()
    gamma = mod.gamma_reparam(mod.gamma.detach()).double().reshape(c, c, 1, 1)
    gq, bq = _fixed_weight(gamma, beta, SQ_FRAC, SQ_BITS, 0, c)
    assert bq is not None
    return gq, bq


def _gdn_rows(mod: GDN, xq: Tensor, gq: Tensor, bq: Tensor) -> Tensor:
    sq = _quantize_(xq * xq, SQ_FRAC, SQ_BITS)
    norm = F.conv2d(sq, gq, bq)
    del sq
    # beta > 0 after reparametrization, but rounding could reach 0: keep the root positive
    root = norm.clamp_(min=2.0 ** -(SQ_FRAC + 20)).sqrt_()
    return root.mul_(xq) if mod.inverse else torch.div(xq, root, out=root)


def _gdn_stripes(mod: GDN, xq: Tensor) -> Tensor:
    """The GDN of grid values ``xq``, rounded to the grid, float32, in stripes of rows."""
    c, h = xq.shape[1], xq.shape[2]
    gq, bq = _gdn_params(mod, c)
    out = torch.empty_like(xq, dtype=torch.float32)
    step = max(1, _rows_per_stripe(c, xq.shape[3], c) // 8)  # about 8 float64 temporaries per stripe
    with _no_cudnn(xq):
        for r0 in range(0, h, step):
            out[:, :, r0:r0 + step] = to_float32(_gdn_rows(mod, xq[:, :, r0:r0 + step].double(), gq, bq))
    return out


def last_layer_rows(seq: nn.Sequential, x: Tensor) -> Callable[[int, int], Tensor]:
    """``seq`` run on ``x`` up to its last layer (a convolution); returns ``rows(a, z)``, which computes
    rows ``[a, z)`` of the last layer's output on demand (grid values, float32), for :func:`run_rows`."""
    *head, last = list(seq)
    if not isinstance(last, (nn.Conv2d, nn.ConvTranspose2d)):
        raise TypeError("last_layer_rows needs a convolution last")
    xq = run(nn.Sequential(*head), x) if head else to_float32(x)
    memo: Memo = {}
    return lambda a, z: _conv_stripes(last, xq, to_float32, torch.float32, rows=(a, z), memo=memo)


def run_rows(seq: nn.Sequential, parts: list[Tensor | Callable[[int, int], Tensor]]) -> Tensor:
    """``run(seq, cat(parts, dim=1))`` for a stack of stride-1 'same' layers, computed in stripes of
    rows with a halo, so that neither the concatenation nor any intermediate exists for the whole
    frame. ``parts`` are grid values, or functions giving rows ``[a, z)`` of such (see
    :func:`last_layer_rows`); at least one is a tensor. The bits equal those of :func:`run`."""
    halo = same_halo(seq)
    if halo is None:
        raise TypeError("run_rows needs stride-1 'same' convolutions")
    w = next(p for p in parts if isinstance(p, Tensor)).shape[3]
    width = max(m.out_channels for m in seq if isinstance(m, nn.Conv2d)) + seq[0].in_channels
    step = max(16, STRIPE_BYTES // (width * w * 8 * 4))
    memo: Memo = {}
    return row_stripes(lambda t: run(seq, t, grid=True, memo=memo), parts, halo, step)


def run(seq: nn.Module, x: Tensor, grid: bool = False, memo: Memo | None = None) -> Tensor:
    """Runs a module made of convolutions, (inverse) GDNs and leaky ReLUs in exact arithmetic.

    Returns grid values as float32 (exact). Every operation's result is rounded to the activation grid
    where the next convolution would round it: a convolution's output after the leaky ReLU that follows
    it (if any), a GDN's output; so the bits equal those of rounding at each convolution's input.
    ``grid``: ``x`` already holds grid values (as float32), so it is used as is. ``memo``: the convolutions'
    prepared weights, kept across calls on stripes of one frame."""
    mods = list(seq) if isinstance(seq, nn.Sequential) else [seq]
    if not grid:
        x = to_float32(x)
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            act = _activation(mods[i + 1]) if i + 1 < len(mods) else None
            x = _conv_stripes(m, x, (lambda y, f=act: to_float32(f(y))) if act else to_float32, torch.float32,
                              memo=memo)
            i += 2 if act else 1
        elif isinstance(m, GDN):
            x = _gdn_stripes(m, x)
            i += 1
        elif (act := _activation(m)) is not None:
            x = to_float32(act(x.double()))
            i += 1
        else:
            raise TypeError(f"exact mode cannot run {type(m).__name__}")
    return x


def _activation(m: nn.Module) -> Finish | None:
    """The element-wise function of a (leaky) ReLU module, else None."""
    if isinstance(m, nn.LeakyReLU):
        return lambda y, s=m.negative_slope: F.leaky_relu(y, s)
    if isinstance(m, nn.ReLU):
        return F.relu
    return None


def gain(x: Tensor, inverse: Tensor) -> Tensor:
    """``x * |inverse|`` per channel (Gains.invert) in float64."""
    return x.double() * inverse.detach().double().abs()[..., None, None]

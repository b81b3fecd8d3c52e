"""Building blocks shared by nvc's models: convolutions, quality gains and the latent coders.

The latent coders wrap nvc's entropy models (:mod:`nvc.entropy`: ``EntropyBottleneck`` for the hyper-latent,
``GaussianConditional`` for the main latent, both rANS) behind one small interface used by training
(``likelihoods``) and by coding (``compress``/``decompress``). Encoder and decoder reach the
reconstruction through the same ``dequantize`` call so they agree bit for bit.
"""

from __future__ import annotations

import ctypes
import functools
import math
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..entropy import EntropyBottleneck, GaussianConditional, LowerBound, SymbolReader

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


class NonNegative(nn.Module):
    """Re-parametrization ``p -> max(p, sqrt(minimum + pedestal))^2 - pedestal`` keeping a weight >= minimum."""

    pedestal: Tensor

    def __init__(self, minimum: float = 0.0, offset: float = 2.0**-18) -> None:
        super().__init__()
        self.register_buffer("pedestal", torch.tensor([offset**2]))
        self.lower_bound = LowerBound((float(minimum) + offset**2) ** 0.5)

    def init(self, x: Tensor) -> Tensor:
        """The parameter whose re-parametrized value is ``x``."""
        return torch.sqrt(torch.max(x + self.pedestal, self.pedestal))

    def forward(self, x: Tensor) -> Tensor:
        return self.lower_bound(x) ** 2 - self.pedestal


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016): ``x / sqrt(beta + gamma * x^2)`` per pixel
    across channels; ``inverse`` multiplies instead (IGDN). Parameter layout as CompressAI's ``GDN``."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1) -> None:
        super().__init__()
        self.inverse = bool(inverse)
        self.beta_reparam = NonNegative(minimum=beta_min)
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(channels)))
        self.gamma_reparam = NonNegative()
        self.gamma = nn.Parameter(self.gamma_reparam.init(gamma_init * torch.eye(channels)))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        norm = F.conv2d(x**2, self.gamma_reparam(self.gamma).reshape(c, c, 1, 1), self.beta_reparam(self.beta))
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))


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


def count_macs(modules: Iterable[nn.Module], run: Callable[[], object]) -> int:
    """Multiply-accumulates of the convolutions, transposed convolutions and GDN layers (counted as a 1x1
    convolution) among ``modules`` while ``run()`` runs, from forward hooks on their inputs and outputs."""
    total = [0]

    def add(n: int) -> None:
        total[0] += n

    hooks = []
    for mod in modules:
        if isinstance(mod, nn.ConvTranspose2d):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o: add(i[0].numel() * m.out_channels * m.kernel_size[0] * m.kernel_size[1])))
        elif isinstance(mod, nn.Conv2d):
            hooks.append(mod.register_forward_hook(
                lambda m, i, o: add(o.numel() * m.in_channels * m.kernel_size[0] * m.kernel_size[1])))
        elif isinstance(mod, GDN):
            hooks.append(mod.register_forward_hook(lambda m, i, o: add(o.numel() * o.shape[1])))
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def conv_out_size(mod: nn.Conv2d | nn.ConvTranspose2d, h: int, w: int) -> tuple[int, int]:
    """Output height and width of ``mod`` on an ``h`` x ``w`` input."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = mod.kernel_size, mod.stride, mod.padding, mod.dilation
    if isinstance(mod, nn.ConvTranspose2d):
        oph, opw = mod.output_padding
        return ((h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1, (w - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1)
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def conv_rows(mod: nn.Conv2d | nn.ConvTranspose2d, x: Tensor | list[Tensor], o0: int, o1: int,
              weight: Tensor | None = None, bias: Tensor | None = None, dtype: torch.dtype | None = None) -> Tensor:
    """Output rows ``[o0, o1)`` of ``mod(x)`` (weights: ``weight``/``bias``, else the module's), computed
    from the input rows they depend on; the slice of ``x`` is cast to ``dtype`` when given. ``x`` may be a
    list of parts to concatenate along channels (ordinary convolutions): only their slices are."""
    w = mod.weight if weight is None else weight
    b = mod.bias if weight is None else bias
    parts = x if isinstance(x, list) else [x]
    h = parts[0].shape[2]
    (kh, _), (sh, sw), (ph, pw), (dh, dw) = mod.kernel_size, mod.stride, mod.padding, mod.dilation
    if isinstance(mod, nn.ConvTranspose2d):
        assert isinstance(x, Tensor)
        wo = conv_out_size(mod, h, x.shape[3])[1]
        # output row o receives input rows i with o = i*s - p + j*d, 0 <= j < k
        i0 = max(0, -(-(o0 + ph - dh * (kh - 1)) // sh))
        i1 = min(h - 1, (o1 - 1 + ph) // sh)
        y = x.new_zeros(x.shape[0], mod.out_channels, o1 - o0, wo, dtype=dtype or x.dtype)
        if i0 <= i1:
            seg = x[:, :, i0:i1 + 1]
            part = F.conv_transpose2d(seg.to(dtype) if dtype else seg, w, None, (sh, sw), (0, pw),
                                      (0, mod.output_padding[1]), mod.groups, (dh, dw))
            r0 = o0 - (i0 * sh - ph)  # the first wanted row in ``part``
            lo, hi = max(0, r0), min(part.shape[2], r0 + (o1 - o0))
            if lo < hi:
                y[:, :, lo - r0:hi - r0] = part[:, :, lo:hi]
        if b is not None:
            y += b[None, :, None, None]
        return y
    a, z = o0 * sh - ph, (o1 - 1) * sh - ph + dh * (kh - 1) + 1  # input rows [a, z)
    segs = [q[:, :, max(a, 0):min(z, h)] for q in parts]
    seg = segs[0] if len(segs) == 1 else torch.cat(segs, dim=1)
    seg = seg.to(dtype) if dtype else seg
    if a < 0 or z > h:
        seg = F.pad(seg, (0, 0, max(0, -a), max(0, z - h)))
    return F.conv2d(seg, w, b, (sh, sw), (0, pw), (dh, dw), mod.groups)


def row_stripes(fn: Callable[[Tensor], Tensor], parts: list[Tensor | Callable[[int, int], Tensor]], halo: int,
                step: int) -> Tensor:
    """``fn(cat(parts, dim=1))`` for a ``fn`` whose output row r depends on input rows r-halo..r+halo
    only (stride-1 'same' layers), computed ``step`` rows at a time so that neither the concatenation
    nor ``fn``'s intermediates exist for the whole frame. A part may be a function giving rows
    ``[a, z)`` on demand; at least one is a tensor (it gives the size)."""
    n, _, h, w = next(p for p in parts if isinstance(p, Tensor)).shape
    out: Tensor | None = None
    for o0 in range(0, h, step):
        o1 = min(h, o0 + step)
        a, z = max(0, o0 - halo), min(h, o1 + halo)
        y = fn(torch.cat([p[:, :, a:z] if isinstance(p, Tensor) else p(a, z) for p in parts], dim=1))
        if out is None:
            out = torch.empty(n, y.shape[1], h, w, dtype=y.dtype, device=y.device)
        out[:, :, o0:o1] = y[:, :, o0 - a:o1 - a]
    assert out is not None
    return out


def same_halo(seq: nn.Sequential) -> int | None:
    """The row halo of a stack of stride-1 'same' convolutions and element-wise layers, else None."""
    halo = 0
    for m in seq:
        if isinstance(m, nn.ConvTranspose2d):
            return None
        if isinstance(m, nn.Conv2d):
            (kh, _), (sh, sw), (ph, _), (dh, _) = m.kernel_size, m.stride, m.padding, m.dilation
            if (sh, sw) != (1, 1) or 2 * ph != dh * (kh - 1):
                return None
            halo += ph
    return halo


# Working set per stripe of the memory-bounded inference paths (float32 GDNs, convolutions and fusion, exact
# convolutions): the bound, and what a GPU uses (each stripe is a kernel launch there).
STRIPE_BYTES = 64 << 20

# On a CPU, a stripe is sized to stay in cache, per torch thread (each thread takes its share of the stripe):
# on a 2-core AMD EPYC (2 MiB L2 per core, 32 MiB L3), 2 threads, a 720p EXACT decode took 9 s in 4 MiB stripes
# against 16 s in 64 MiB ones, the same bits. The encoder's float32 analysis runs in such stripes too: fewer
# mid-sized temporaries for glibc's heap to keep (README, Speed).
CACHE_BYTES = 2 << 20


def stripe_budget(x: Tensor, cap: int | None = None) -> int:
    """Bytes of working set per stripe for ``x``'s device: ``CACHE_BYTES`` per torch thread on a CPU, ``cap``
    (default ``STRIPE_BYTES``) on a GPU, and at most ``cap`` anywhere."""
    cap = STRIPE_BYTES if cap is None else cap
    return cap if x.is_cuda else min(cap, CACHE_BYTES * max(1, torch.get_num_threads()))


@contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """torch's CPU threads set to one for the block, then restored (on a GPU: nothing). For float32 work whose
    result must not follow the caller's thread count: an encoder's choices (analysis, refinement, motion search)
    and a float32 stream's networks (:mod:`nvc.codec`). oneDNN picks its kernels, and so the order of its sums, by
    the thread count (a 1x1 convolution with a bias, a strided convolution's gradient); on one thread the sums
    are the same whatever the caller asked for."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError, TypeError):  # no malloc_trim (another libc), or no process handle
        return None


def release_free_heap() -> None:
    """Hands the C heap's free pages back to the system (glibc's ``malloc_trim``; elsewhere nothing). glibc
    keeps freed blocks under its mmap threshold (up to 32 MB: a plane of a 1080p frame, a stripe's temporaries)
    for reuse, but a block above it is mapped anew even while the heap holds that much free, so at 1080p the
    freed heap (~300 MB) used to add to every peak."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _gdn_light(mod: GDN, x: Tensor, budget: int) -> Tensor:
    """``mod(x)`` (inference) in stripes of rows: a few stripe-sized temporaries instead of four frames."""
    c, h = x.shape[1], x.shape[2]
    beta = mod.beta_reparam(mod.beta)
    gamma = mod.gamma_reparam(mod.gamma).reshape(c, c, 1, 1)
    out = torch.empty_like(x)
    step = max(1, budget // (4 * c * x.shape[3] * x.element_size()))
    for r in range(0, h, step):
        xs = x[:, :, r:r + step]
        norm = F.conv2d(xs * xs, gamma, beta)
        norm = norm.sqrt_() if mod.inverse else norm.rsqrt_()
        out[:, :, r:r + step] = norm.mul_(xs)
    return out


def _conv_light(mod: nn.Conv2d, parts: list[Tensor], budget: int) -> Tensor:
    """``mod(cat(parts, dim=1))`` for inference, in stripes of output rows (:func:`conv_rows`): the convolution's
    own temporaries and the concatenation exist a stripe at a time. The same products per output; the same bits
    as a whole-frame pass on this project's CPU (measured on nvc-lite's layers at 1080p; not promised, since a
    library may order its sums by position)."""
    n, _, h, w = parts[0].shape
    ho, wo = conv_out_size(mod, h, w)
    cin = sum(p.shape[1] for p in parts)
    per_row = (cin * w * mod.stride[0] + 2 * mod.out_channels * wo) * parts[0].element_size()
    step = max(1, budget // per_row)
    out = torch.empty(n, mod.out_channels, ho, wo, dtype=parts[0].dtype, device=parts[0].device)
    for o0 in range(0, ho, step):
        out[:, :, o0:o0 + step] = conv_rows(mod, parts, o0, min(ho, o0 + step))
    return out


def run_light(seq: nn.Sequential, x: Tensor | list[Tensor], analysis: bool = False) -> Tensor:
    """``seq(x)`` for inference on a large frame (``x``: a tensor, or parts to concatenate along channels), in
    bounded memory: (inverse) GDNs run in stripes of rows (``STRIPE_BYTES``), after the C heap's free pages are
    released (:func:`release_free_heap`).

    ``analysis``: ``seq`` is the encoder's analysis transform, whose output only chooses what the encoder codes
    (a decoder never computes it), so its convolutions and GDNs run in cache-sized stripes
    (:func:`stripe_budget`) and the parts are concatenated a stripe at a time. Decoder-side stacks keep the
    whole-frame convolutions and 64 MiB GDN stripes that float32 streams were coded against, since a float32
    result may depend on how a layer is cut (a transposed convolution's does, on this project's CPU)."""
    parts = list(x) if isinstance(x, (list, tuple)) else [x]
    budget = stripe_budget(parts[0]) if analysis else STRIPE_BYTES
    release_free_heap()
    for m in seq:
        big = 4 * sum(p.numel() for p in parts) * parts[0].element_size() > budget
        if analysis and big and isinstance(m, nn.Conv2d):
            parts = [_conv_light(m, parts, budget)]
            continue
        t = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        parts = [_gdn_light(m, t, budget) if big and isinstance(m, GDN) else m(t)]
    return parts[0]


def ste_round(x: Tensor) -> Tensor:
    """Round in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


MAX_BYTES_PER_SYMBOL = 2  # 16 bits per latent element: ~8x what the highest quality spends


def safe_string(data: bytes, symbols: int) -> bytes:
    """Checks an rANS string for ``symbols`` symbols and zero-pads it so that decoding can never read
    past its end, even when it is hostile (CompressAI's rANS decoder does no bounds checks).

    How far can a decoder run past the data? Each symbol reads at most one 32-bit word, plus, for an
    escaped (bypass-coded) value, one word per 4-bit chunk: ``n`` chunks where ``n`` sums 4-bit values
    for as long as they read 15. A run of 15s comes from the 64-bit state (16 nibbles) and from 0xF
    nibbles of the data, so no value has more than ``15 * (F + 17)`` chunks, ``F`` the number of 0xF
    nibbles in the data. Once in the zero padding the state's low bits are 0, so no further symbol
    escapes after the first few. Hence the padding: ``2 * symbols + 15 * (F + 17) + 1264`` words.

    Refused (ValueError), before anything is allocated: more than ``MAX_BYTES_PER_SYMBOL`` bytes per
    symbol (+4 KiB). The number of 0xF nibbles is not limited: values out of the coded range (a scene
    cut coded as a P frame) are escaped with runs of 0xF nibbles (114 of 288 nibbles in one real
    string), so such a limit refused valid strings. ``F <= 2 * len`` bounds the padding at ``120 * len``
    bytes. Valid strings decode the same: the decoder never reaches the padding.
    """
    f = check_string(data, symbols)
    words = 2 * symbols + 15 * (f + 17) + 1264
    return bytes(data) + bytes(4 * words)


def check_string(data: bytes, symbols: int) -> int:
    """The limit :func:`safe_string` enforces (ValueError when broken); returns the 0xF nibble count.
    Encoders check their own strings with it, so they never write one a decoder refuses."""
    n = len(data)
    if n > MAX_BYTES_PER_SYMBOL * symbols + 4096:
        raise ValueError(f"entropy-coded substream of {n} bytes is too long for {symbols} symbols")
    arr = np.frombuffer(data, dtype=np.uint8)
    return int(np.count_nonzero((arr & 0x0F) == 0x0F)) + int(np.count_nonzero((arr >> 4) == 0x0F))


class HyperLatentCoder(nn.Module):
    """Codes the hyper-latent z with a factorized prior (EntropyBottleneck)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.entropy_bottleneck = EntropyBottleneck(channels)

    def train_forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Returns (z_hat with straight-through rounding around the medians, likelihoods with noise)."""
        _, lik = self.entropy_bottleneck(z, training=True)
        medians = self.entropy_bottleneck.medians().detach()
        z_hat = ste_round(z - medians) + medians
        return z_hat, lik

    def compress(self, z: Tensor) -> tuple[list[bytes], Tensor]:
        strings = self.entropy_bottleneck.compress(z)
        for st in strings:
            check_string(st, z[0].numel())
        medians = self.entropy_bottleneck.medians().detach()
        symbols = torch.round(z - medians)
        return strings, symbols + medians

    def code(self, z: Tensor) -> tuple[list[int], list[int], Tensor]:
        """One item's (1, C, H, W) symbols and table indexes, in coding order, for
        :func:`nvc.entropy.encode_parts` (tables: ``entropy_bottleneck.tables()``), and ``z_hat``."""
        indexes, medians = self.entropy_bottleneck._per_channel(1, tuple(z.shape[2:]))
        symbols = torch.round(z - medians)
        return symbols.int().reshape(-1).tolist(), indexes.reshape(-1).tolist(), symbols + medians

    def symbols(self, size: tuple[int, int]) -> int:
        """How many symbols one item of spatial ``size`` codes."""
        return self.entropy_bottleneck._quantized_cdf.shape[0] * size[0] * size[1]

    def decompress(self, strings: list[bytes], size: tuple[int, int]) -> Tensor:
        n = self.symbols(size)
        return self.entropy_bottleneck.decompress([safe_string(s, n) for s in strings], size)

    def read(self, reader: SymbolReader, size: tuple[int, int], name: str = "z") -> Tensor:
        """One item's ``z_hat`` read from ``reader``'s tables ``name`` (the twin of :meth:`code`)."""
        indexes, medians = self.entropy_bottleneck._per_channel(1, tuple(size))
        return reader.read(indexes, name).to(medians.dtype) + medians


class LatentCoder(nn.Module):
    """Codes the main latent y with a Gaussian conditional (mean and scale from the priors)."""

    def __init__(self) -> None:
        super().__init__()
        self.gaussian_conditional = GaussianConditional()

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
        """Scale-table index per element."""
        return self.gaussian_conditional.indexes(scales)

    def compress(self, y: Tensor, scales: Tensor, means: Tensor, first: Tensor | None = None,
                 refine: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None) -> tuple[list[bytes], Tensor]:
        """rANS strings of ``y`` and its dequantized values (each symbol rounded once: coded, and dequantized
        for the reconstruction). ``first``: a (H, W) mask of the positions coded first (every channel's,
        channel by channel, each in raster order) with ``scales``/``means``; ``refine(y_first)`` (their
        dequantized values, zero elsewhere) gives the scales and means of the others, coded after them in the
        same order. The twin of :meth:`decompress`, which reads the first part before it knows the rest's."""
        symbols, indexes, y_hat = self.code(y, scales, means, first, refine)
        strings = self.gaussian_conditional.encode(symbols, indexes)
        for st in strings:
            check_string(st, indexes[0].numel())
        return strings, y_hat

    def code(self, y: Tensor, scales: Tensor, means: Tensor, first: Tensor | None = None,
             refine: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`compress` before the rANS coder: the symbols and table indexes, (N, n) int32 in coding
        order, and the dequantized ``y``."""
        indexes = self.indexes(scales)
        symbols = self.symbols(y, means)
        if first is None:
            y_hat = self.dequantize(symbols, means)
            return symbols.int().flatten(1), indexes.int().flatten(1), y_hat
        if refine is None:
            raise ValueError("a two-part code needs refine")
        y_hat = torch.where(first, self.dequantize(symbols, means), torch.zeros_like(means))
        scales_r, means_r = refine(y_hat)
        rest = ~first
        indexes = torch.where(rest, self.indexes(scales_r), indexes)
        symbols = torch.where(rest, self.symbols(y, means_r), symbols)
        y_hat = torch.where(rest, self.dequantize(symbols, means_r), y_hat)
        order = lambda t: torch.cat([t[:, :, first].flatten(1), t[:, :, rest].flatten(1)], dim=1)  # noqa: E731
        return order(symbols).int(), order(indexes).int(), y_hat

    def decompress(self, strings: list[bytes], scales: Tensor, means: Tensor, first: Tensor | None = None,
                   refine: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None) -> Tensor:
        """The dequantized ``y`` of ``strings``. With ``first`` (strings from ``compress(first=...)``): the
        first part is read with ``scales``/``means``, then ``refine(y_first)`` (its values, zero elsewhere)
        gives the scales and means the rest is read with."""
        indexes = self.indexes(scales)
        n = indexes[0].numel()
        if first is None:
            symbols = self.gaussian_conditional.decompress([safe_string(s, n) for s in strings], indexes)
            return self.dequantize(symbols, means)
        if refine is None or len(strings) != scales.shape[0]:
            raise ValueError("a two-part decode needs refine and one string per batch item")
        readers = [self.gaussian_conditional.reader(safe_string(s, n)) for s in strings]
        return self.read(readers, scales, means, first, refine)

    def read(self, readers: list[SymbolReader], scales: Tensor, means: Tensor, first: Tensor | None = None,
             refine: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None, name: str = "") -> Tensor:
        """The dequantized ``y`` read from one reader per batch item (tables ``name``), as :meth:`code` ordered
        the symbols (the twin of :meth:`code`)."""
        indexes = self.indexes(scales)
        if first is None:
            return torch.stack([self.dequantize(rd.read(indexes[i], name), means[i]) for i, rd in enumerate(readers)])
        if refine is None:
            raise ValueError("a two-part decode needs refine")
        y_hat = torch.zeros_like(means)
        for i, rd in enumerate(readers):
            y_hat[i][:, first] = self.dequantize(rd.read(indexes[i][:, first], name), means[i][:, first])
        scales, means = refine(y_hat)
        indexes = self.indexes(scales)
        for i, rd in enumerate(readers):
            y_hat[i][:, ~first] = self.dequantize(rd.read(indexes[i][:, ~first], name), means[i][:, ~first])
        return y_hat

"""Block motion for nvc-lite's P frames: estimation (encoder), compensation (both sides).

The reference is cut into ``block``×``block`` blocks of the *current* frame's grid; each block has a
displacement ``(dy, dx)`` in units of 1/``precision`` pixel (1: whole pixels, 2: half pixels) and is
predicted by the reference's pixels at that offset, with coordinates clamped to the frame (replicate
padding); half-pixel positions average their two or four neighbours. Near block edges the prediction may
blend the neighbouring blocks' vectors (overlapped compensation, dyadic weights). Compensation copies values,
halves sums of two and blends with fixed weights in a fixed order, so every device computes the same
prediction in every numeric mode. Estimation is the encoder's choice alone (the decoder never runs it).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..color import luma as _luma
from ..entropy import extension
from .layers import check_string, safe_string

# By default, searches wider than this radius go coarse to fine (see estimate).
FULL_SEARCH_RADIUS = 8
_COARSE = 4  # the coarse level's downscaling
_REFINE = 3  # the fine level searches this far around the coarse vector
STRIPE_PIXELS = 1 << 17  # predictions are formed this many pixels at a time (see _block_errors, compensate)


def _stripe_blocks(width: int, block: int) -> int:
    """Rows of blocks per stripe: about ``STRIPE_PIXELS`` pixels, at least one row."""
    return max(1, STRIPE_PIXELS // (width * block))


def _by_length(radius: int) -> list[tuple[int, int]]:
    """Every displacement within ``radius``, shortest first (so among equal costs the shortest wins)."""
    return sorted(((dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)),
                  key=lambda d: (abs(d[0]) + abs(d[1]), d))


def _full_search(cur: Tensor, r: Tensor, block: int, radius: int) -> tuple[Tensor, Tensor]:
    """Every displacement within ``radius`` on the first channel (luma): (errors (N, K, bh, bw), vectors (K, 2)
    as (K, 1, 2, 1, 1)).

    The horizontal displacements of one vertical displacement are differenced and pooled together, as
    views of the padded reference's rows (a few at a time: about ``STRIPE_PIXELS`` · 32 values), which
    gives each candidate's error bit for bit as one candidate at a time would, in fewer, larger passes."""
    n, _, h, w = cur.shape
    cands = _by_length(radius)
    side = 2 * radius + 1
    rp = F.pad(r, (radius, radius, radius, radius), mode="replicate")[:, 0]  # (N, h + 2r, w + 2r)
    grid = torch.empty((n, side, side, h // block, w // block), dtype=cur.dtype, device=cur.device)
    chunk = max(1, (STRIPE_PIXELS * 32) // max(1, n * h * w))
    for dy in range(side):
        shifted = rp[:, dy:dy + h].unfold(2, w, 1).transpose(1, 2)  # (N, dx, h, w): every horizontal shift
        for x0 in range(0, side, chunk):
            grid[:, dy, x0:x0 + chunk] = F.avg_pool2d((shifted[:, x0:x0 + chunk] - cur[:, :1]) ** 2, block)
    index = torch.tensor([(dy + radius) * side + dx + radius for dy, dx in cands], device=cur.device)
    errs = grid.view(n, side * side, *grid.shape[3:]).index_select(1, index)
    return errs, torch.tensor(cands, dtype=torch.long, device=cur.device).view(-1, 1, 2, 1, 1)


def _pick(errs: Tensor, vecs: Tensor, penalty: float | Tensor, passes: int) -> Tensor:
    """The candidate of least error plus ``penalty`` times its distance to the anchor (zero, then the 3x3
    median of the previous pass); ``vecs`` (K, N or 1, 2, bh or 1, bw or 1). Returns (N, 2, bh, bw)."""
    n, k, bh, bw = errs.shape
    anchor = torch.zeros((n, 2, bh, bw), dtype=torch.long, device=errs.device)
    every = vecs.expand(k, n, 2, bh, bw)
    for _ in range(max(1, passes)):
        cost = errs.transpose(0, 1) + penalty * (vecs - anchor).abs().sum(dim=2)  # (K, N, bh, bw)
        first = cost.argmin(dim=0, keepdim=True)  # the earliest of equal costs
        vec = every.gather(0, first.unsqueeze(2).expand(1, n, 2, bh, bw))[0]
        padded = F.pad(vec.float(), (1, 1, 1, 1), mode="replicate")
        anchor = padded.unfold(2, 3, 1).unfold(3, 3, 1).reshape(n, 2, bh, bw, 9).median(dim=-1).values.long()
    return vec


@torch.no_grad()
def estimate(x: Tensor, ref: Tensor, block: int, radius: int, penalty: float | Tensor = 2e-5,
             passes: int = 2, precision: int = 1, full: int = FULL_SEARCH_RADIUS) -> Tensor:
    """Block displacements (N, 2, H/block, W/block) (dy, dx), |d| <= ``radius`` pixels, that minimise the
    block's mean squared luma error (BT.709, :func:`nvc.color.luma`; any weights would decode the same)
    against ``ref`` plus ``penalty`` per unit of distance to an anchor vector: zero on the first pass, on
    later passes the median of the previous pass's 3x3 neighbourhood (so fields come out smooth and static
    blocks keep the zero vector: both are cheap to code); a tensor ``penalty`` of shape (N, 1, 1) gives
    each frame its own. Ties go to the shorter vector.

    Up to a radius of ``full`` every displacement is tried. Wider searches go coarse to fine: a full
    search on 4x downscaled luma, then every displacement within 3 of each block's coarse vector (times
    4), and the zero vector; about 60 candidates per block instead of (2·radius + 1)². (The full search
    finds vectors the coarse level misses, e.g. of small moving objects, at (2·radius + 1)² whole-frame
    passes.)

    ``precision`` 2 returns half-pixel units: the whole-pixel field, then each vector's eight half-pixel
    neighbours tried too (``penalty`` per pixel of distance, so per half pixel it is halved)."""
    n, _, h, w = x.shape
    if h % block or w % block:
        raise ValueError(f"frame {h}x{w} is not a multiple of the block size {block}")
    if precision not in PRECISIONS:
        raise ValueError(f"motion precision must be one of {PRECISIONS}, not {precision}")
    cur, r = _luma(x.float()), _luma(ref.float())
    mv = _integer_search(cur, r, block, radius, penalty, passes, full)
    if precision == 1:
        return mv
    limit = radius * precision
    vecs = [(mv * precision + torch.tensor([dy, dx], device=x.device).view(1, 2, 1, 1)).clamp_(-limit, limit)
            for dy, dx in _by_length(1)]
    return _pick(_block_errors(cur, r, vecs, block, precision), torch.stack(vecs), penalty / precision, passes)


def _integer_search(cur: Tensor, r: Tensor, block: int, radius: int, penalty: float | Tensor,
                    passes: int, full: int = FULL_SEARCH_RADIUS) -> Tensor:
    """Whole-pixel vectors of :func:`estimate` on luma."""
    if radius <= full or block % _COARSE:
        errs, vecs = _full_search(cur, r, block, radius)
        return _pick(errs, vecs, penalty, passes)
    c_errs, c_vecs = _full_search(F.avg_pool2d(cur, _COARSE), F.avg_pool2d(r, _COARSE), block // _COARSE,
                                  -(-radius // _COARSE))
    center = (_pick(c_errs, c_vecs, penalty * _COARSE, 1) * _COARSE).clamp_(-radius, radius)
    vecs = [torch.zeros_like(center)]
    for dy, dx in _by_length(_REFINE):
        v = center + torch.tensor([dy, dx], device=cur.device).view(1, 2, 1, 1)
        vecs.append(v.clamp_(-radius, radius))
    return _pick(_block_errors(cur, r, vecs, block), torch.stack(vecs), penalty, passes)


def _block_errors(cur: Tensor, r: Tensor, fields: list[Tensor], block: int, precision: int = 1) -> Tensor:
    """Each block's mean squared error against ``cur`` under each candidate field: (N, K, bh, bw).

    Each block's prediction is gathered from ``r`` replicate-padded by the largest displacement (which is
    what :func:`compensate`'s clamped coordinates read), a stripe of block rows at a time (about
    ``STRIPE_PIXELS`` pixels), so that no prediction or gather index exists for the whole frame. The errors
    are those of :func:`compensate`'s prediction without overlap, bit for bit."""
    n, _, h, w = cur.shape
    bh, bw = h // block, w // block
    reach = max(int(v.abs().max()) for v in fields) // precision + 1  # + 1: a half pixel's second neighbour
    rp = F.pad(r, (reach, reach, reach, reach), mode="replicate").reshape(n, -1)
    pitch = w + 2 * reach
    k = torch.arange(block, device=cur.device)
    offsets = (k.view(-1, 1) * pitch + k.view(1, -1)).view(1, 1, 1, -1)  # a block's pixels from its corner
    corners = ((torch.arange(bh, device=cur.device) * block + reach).view(-1, 1) * pitch
               + torch.arange(bw, device=cur.device) * block + reach)  # (bh, bw)
    # the current frame's blocks, each as a row of block² pixels: (N, bh, bw, block²)
    blocks = cur.reshape(n, bh, block, bw, block).permute(0, 1, 3, 2, 4).reshape(n, bh, bw, block * block)
    out = torch.empty((n, len(fields), bh, bw), dtype=cur.dtype, device=cur.device)
    step = _stripe_blocks(w, block)
    for b0 in range(0, bh, step):
        b1 = min(bh, b0 + step)
        rows = b1 - b0
        for i, v in enumerate(fields):
            v = v[:, :, b0:b1].expand(n, 2, rows, bw)
            iy = torch.div(v[:, 0], precision, rounding_mode="floor")
            ix = torch.div(v[:, 1], precision, rounding_mode="floor")
            at = (corners[b0:b1] + iy * pitch + ix).unsqueeze(-1) + offsets  # (N, rows, bw, block²)

            def read(down: int, right: int) -> Tensor:
                return rp.gather(1, (at + down * pitch + right).view(n, -1)).view(at.shape)

            if precision == 1:
                pred = read(0, 0)
            else:
                fy = (v[:, 0] != iy * precision).unsqueeze(-1)
                fx = (v[:, 1] != ix * precision).unsqueeze(-1)
                pred = _half_pixel(read, fy, fx)
            err = (pred - blocks[:, b0:b1]) ** 2
            out[:, i, b0:b1] = F.avg_pool2d(err.view(-1, 1, block, block), block).view(n, rows, bw)
    return out


def compensate(ref: Tensor, mv: Tensor, block: int, precision: int = 1, overlap: int = 0) -> Tensor:
    """The prediction of each block from ``ref`` (N, C, H, W) displaced by ``mv`` (N, 2, H/block, W/block),
    in units of 1/``precision`` pixel. A half-pixel position is the mean of its two (or four) neighbours,
    computed as ``(a + b) / 2`` per row, then between rows: sums of two and halvings, exact everywhere.

    ``overlap`` > 0 (overlapped block motion compensation): within ``band = block >> (4 - overlap)``
    pixels of a block edge, a pixel's prediction blends its block's vector with the nearest horizontal,
    vertical and diagonal neighbours' (bilinear weights, about 1/2 at the edge falling to 0 at ``band``;
    dyadic, so every product is exact on a fine enough grid), which smooths the block edges out of the
    prediction."""
    n, c, h, w = ref.shape
    if mv.shape != (n, 2, h // block, w // block) or h % block or w % block:
        raise ValueError(f"motion field {tuple(mv.shape)} does not fit a {h}x{w} frame in {block}-blocks")
    if precision not in PRECISIONS:
        raise ValueError(f"motion precision must be one of {PRECISIONS}, not {precision}")
    if overlap not in OVERLAPS:
        raise ValueError(f"motion overlap must be one of {OVERLAPS}, not {overlap}")
    rows = _stripe_blocks(w, block) * block
    if rows >= h:
        return _compensate_rows(ref, mv, block, precision, overlap, 0, h)
    # a stripe of block rows at a time: no gather index or temporary exists for the whole frame
    out = torch.empty_like(ref)
    for y0 in range(0, h, rows):
        out[:, :, y0:y0 + rows] = _compensate_rows(ref, mv, block, precision, overlap, y0, min(h, y0 + rows))
    return out


def _compensate_rows(ref: Tensor, mv: Tensor, block: int, precision: int, overlap: int, y0: int, y1: int) -> Tensor:
    """Rows ``y0..y1`` of :func:`compensate`'s prediction (N, C, y1 - y0, W); each pixel is computed alone."""
    h, w = ref.shape[-2:]
    bh, bw = h // block, w // block
    ys, xs = torch.arange(y0, y1, device=ref.device), torch.arange(w, device=ref.device)
    by, bx = ys // block, xs // block

    def pred(y: Tensor, x: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
        """Pixels (y[i], x[j]), each with the vector of block (rows[i], cols[j])."""
        v = mv[:, :, rows][:, :, :, cols]
        return _predict_pixels(ref, y, x, v[:, 0], v[:, 1], precision)

    own = pred(ys, xs, by, bx)
    if not overlap:
        return own
    band = block >> (4 - overlap)
    k = torch.arange(block, device=ref.device)
    twice = torch.minimum(2 * k + 1, 2 * block - 2 * k - 1)  # twice the distance to the nearest edge
    weight = (2 * band - twice).clamp(min=0).to(ref.dtype) / (4 * band)  # the neighbour's: (band - d) / (2 band)
    side = torch.where(2 * k + 1 < block, -1, 1)  # the nearest edge: before or after
    ny = (by + side[ys % block]).clamp(0, bh - 1)
    nx = (bx + side.repeat(bw)).clamp(0, bw - 1)
    # Each pixel is top + (bottom - top) * wy, with top = own + (p(i, j') - own) * wx and bottom likewise from
    # the vertical neighbour: a + (b - a) * w, three separate operations (never a fused multiply-add, never
    # torch.lerp), so a zero weight gives a exactly. Only the rows and columns of nonzero weight are computed.
    wy, wx = weight[ys % block], weight.repeat(bw)
    cy, cx = torch.nonzero(wy).flatten(), torch.nonzero(wx).flatten()
    ay, ax = wy[cy].view(1, 1, -1, 1), wx[cx].view(1, 1, 1, -1)
    # (Indexing with cx or cy reads a copy, and each right side is computed before it is stored, so the blends
    # are written in place: ``own`` becomes ``top``, then the output.)
    top = own
    top[..., cx] = pred(ys, xs[cx], by, nx[cx]).sub_(own[..., cx]).mul_(ax).add_(own[..., cx])
    bottom = pred(ys[cy], xs, ny[cy], bx)
    bottom[..., cx] = pred(ys[cy], xs[cx], ny[cy], nx[cx]).sub_(bottom[..., cx]).mul_(ax).add_(bottom[..., cx])
    top[..., cy, :] = bottom.sub_(top[..., cy, :]).mul_(ay).add_(top[..., cy, :])
    return top


def _predict_pixels(ref: Tensor, y: Tensor, x: Tensor, dy: Tensor, dx: Tensor, precision: int) -> Tensor:
    """The pixels (y[i], x[j]) of ``ref`` (N, C, H, W), each displaced by its own vector ``(dy, dx)`` (N, h, w
    each, h and w the lengths of ``y`` and ``x``): (N, C, h, w)."""
    n, c, h, w = ref.shape
    iy, ix = torch.div(dy, precision, rounding_mode="floor"), torch.div(dx, precision, rounding_mode="floor")
    rows = y.view(1, -1, 1) + iy
    cols = x.view(1, 1, -1) + ix
    size = rows.shape[1] * cols.shape[2]
    flat_ref = ref.reshape(n, c, h * w)

    def at(r: Tensor, k: Tensor) -> Tensor:
        flat = (r.clamp(0, h - 1) * w + k.clamp(0, w - 1)).view(n, 1, size).expand(n, c, size)
        return flat_ref.gather(2, flat).view(n, c, *dy.shape[1:])

    if precision == 1:
        return at(rows, cols)
    fy, fx = (dy != iy * precision).unsqueeze(1), (dx != ix * precision).unsqueeze(1)  # half-pixel offsets
    return _half_pixel(lambda down, right: at(rows + down, cols + right), fy, fx)


def _half_pixel(read: Callable[[int, int], Tensor], fy: Tensor, fx: Tensor) -> Tensor:
    """Pixels at whole- or half-pixel positions from ``read(down, right)``, the whole-pixel neighbours at
    offsets 0 or 1 below / right of each position's whole part; ``fy`` / ``fx`` (broadcasting to the reads)
    mark the half offsets. The mean of two is ``(a + b) / 2`` per row, then between rows (exact)."""
    top = read(0, 0)
    top = (top + torch.where(fx, read(0, 1), top)) * 0.5
    if not bool(fy.any()):
        return top
    bottom = read(1, 0)
    bottom = (bottom + torch.where(fx, read(1, 1), bottom)) * 0.5
    return (top + torch.where(fy, bottom, top)) * 0.5


# ---------------------------------------------------------------------------------------------- coding
# A motion field is coded as the residuals of each vector (in its units: whole or half pixels) against a
# predictor from vectors before it in raster order: the median of its left, above and above-right neighbours
# (above-left in the last column), the left one in the top row, the one above in the first column, zero for
# the first block. The dy and dx residuals are each coded with one of the fixed two-sided geometric tables
# below (the encoder picks the cheapest per component and frame), through the rANS coder the latents use.

# Ratios theta = N / 65536 of the tables P(v) ~ theta^|v| (integers, so the tables are the same everywhere).
_THETA = (58982, 52429, 46341, 32768, 23170, 16384, 11585, 8192, 5793, 4096, 2896, 2048, 1448, 1024, 724, 512,
          362, 256)
_SPAN = 128  # residuals lie in -_SPAN.._SPAN times the precision (vectors within MAX_RADIUS, predictors too)
MAX_RADIUS = 64  # the largest displacement a stream may carry, in pixels
BLOCKS = (8, 16)  # the block sizes a stream may use
PRECISIONS = (1, 2)  # vector units a stream may use: 1/precision pixel
OVERLAPS = (0, 1, 2, 3)  # overlapped compensation: none, or over block/8, block/4, block/2 pixels of each edge
_HEADER = 3  # block size log2 | precision log2 << 4 | overlap << 6; dy table; dx table
# CompressAI's rANS encoder flushes into one 32-bit word per symbol: a string of n symbols of up to 16 bits
# each needs n/2 + 3 words, which overflows its buffer (heap corruption) below 6 symbols. Frames are padded
# to 64x64 or more, so their fields have 16 blocks or more; smaller ones are refused rather than coded.
MIN_FIELD_BLOCKS = 3


@lru_cache(maxsize=None)
def _tables(precision: int = 1) -> tuple[list[list[int]], list[int], list[int]]:
    """16-bit CDFs (rANS layout: symbols, then an escape of frequency 1) of every ratio over the residuals
    of vectors in 1/``precision`` pixels, exact integers: each frequency is the floor of
    ``theta^|v| * (65535 - n) / sum(theta^|u|)``, at least 1, and the zero residual also takes what is left of
    65535; computed over the common denominator ``2^(16 * span)`` (the integers exact rationals give, without
    their cost)."""
    span = _SPAN * precision
    n = 2 * span + 1
    budget = (1 << 16) - 1  # the escape takes 1
    cdfs = []
    for num in _THETA:
        by_size = [num**k << 16 * (span - k) for k in range(span + 1)]  # theta^k * 2^(16 span), k = |v|
        weights = by_size[:0:-1] + by_size  # v = -span .. span
        total = sum(weights)
        freq = [max(1, w * (budget - n) // total) for w in weights]
        freq[span] += budget - sum(freq)  # the rest to the zero residual (the mode)
        cdf = [0]
        for f in freq + [1]:
            cdf.append(cdf[-1] + f)
        cdfs.append(cdf)
    return cdfs, [n + 2] * len(_THETA), [-span] * len(_THETA)


def _bits(residuals: np.ndarray, table: int, precision: int) -> float:
    cdf = np.asarray(_tables(precision)[0][table], dtype=np.float64)
    freq = np.diff(cdf)[residuals + _SPAN * precision]
    return float(-np.log2(freq / (1 << 16)).sum())


def _predict(field: np.ndarray) -> np.ndarray:
    """The predictor of every vector of a (2, bh, bw) field (the rule above), vectorized; the decoder
    applies the same rule vector by vector in :func:`decode_field`."""
    _, bh, bw = field.shape
    pred = np.zeros_like(field)
    pred[:, 0, 1:] = field[:, 0, :-1]  # top row: the left neighbour
    if bh > 1:
        pred[:, 1:, 0] = field[:, :-1, 0]  # first column: the one above
        if bw > 1:
            left, above = field[:, 1:, :-1], field[:, :-1, 1:]
            corner = np.concatenate([field[:, :-1, 2:], field[:, :-1, -2:-1]], axis=2)  # above-right, else above-left
            pred[:, 1:, 1:] = np.median(np.stack([left, above, corner]), axis=0).astype(np.int64)
    return pred


class MotionField(NamedTuple):
    """A decoded motion field: vectors (1, 2, bh, bw) and how to apply them (see :func:`compensate`)."""

    mv: Tensor
    block: int
    precision: int = 1
    overlap: int = 0


class FieldCode(NamedTuple):
    """A motion field before the rANS coder: its 3-byte header and the symbols of its vectors' residuals
    (dy, dx per block, raster order) with their table indexes into ``tables``."""

    header: bytes
    tables: tuple[list[list[int]], list[int], list[int]]
    symbols: list[int]
    indexes: list[int]


def encode_field(mv: Tensor, block: int, precision: int = 1, overlap: int = 0) -> bytes:
    """The bytes of one (1, 2, bh, bw) motion field of ``block``-sized blocks, in 1/``precision`` pixels,
    applied with ``overlap``: the header, then the vectors in a rANS string of their own (format 1.x, and
    :func:`code_field` for a string shared with other parts)."""
    return field_bytes(code_field(mv, block, precision, overlap))


def field_bytes(c: FieldCode) -> bytes:
    """:func:`encode_field`'s bytes of a coded field: its header, then its vectors in a rANS string of their own."""
    data = extension("ans").RansEncoder().encode_with_indexes(c.symbols, c.indexes, *c.tables)
    check_string(data, len(c.symbols))  # never write what a decoder refuses
    return c.header + data


def code_field(mv: Tensor, block: int, precision: int = 1, overlap: int = 0) -> FieldCode:
    """:func:`encode_field` before the rANS coder."""
    if block not in BLOCKS or precision not in PRECISIONS or overlap not in OVERLAPS:
        raise ValueError(f"motion block size {block}, precision {precision} or overlap {overlap} is not codable")
    field = mv[0].cpu().numpy().astype(np.int64)
    if field[0].size < MIN_FIELD_BLOCKS:
        raise ValueError(f"a motion field needs {MIN_FIELD_BLOCKS} blocks or more, not {field[0].size}")
    if np.abs(field).max(initial=0) > MAX_RADIUS * precision:
        raise ValueError(f"motion vectors over {MAX_RADIUS} pixels")
    res = field - _predict(field)
    choice = [min(range(len(_THETA)), key=lambda t: _bits(res[c], t, precision)) for c in (0, 1)]
    symbols = np.stack([res[0], res[1]], axis=-1).reshape(-1)  # (dy, dx) per block, raster order
    indexes = np.tile(np.array(choice), res[0].size)
    header = bytes([overlap << 6 | (precision.bit_length() - 1) << 4 | (block.bit_length() - 1), *choice])
    return FieldCode(header, _tables(precision), symbols.tolist(), indexes.tolist())


class FieldHeader(NamedTuple):
    """A motion field's header, checked for a frame size: what reading its vectors needs."""

    block: int
    precision: int
    overlap: int
    shape: tuple[int, int]  # blocks (bh, bw)
    tables: tuple[list[list[int]], list[int], list[int]]
    indexes: Tensor  # the table of each symbol, (bh * bw * 2,)


def decode_field(data: bytes, height: int, width: int, blocks: tuple[int, ...]) -> MotionField:
    """The motion field coded in ``data`` (:func:`encode_field`) for a padded ``height``x``width`` frame."""
    if len(data) < _HEADER:
        raise ValueError("motion substream is too short")
    h = read_header(data[:_HEADER], height, width, blocks)
    # zero-padded so that even a hostile string cannot make the decoder read past it (layers.safe_string)
    string = safe_string(data[_HEADER:], h.indexes.numel())
    values = extension("ans").RansDecoder().decode_with_indexes(string, h.indexes.tolist(), *h.tables)
    return field_from_residuals(h, values)


# Format 3.0 codes the header in the frame's rANS string, before the vectors: three symbols, each with a
# uniform table (16-bit CDFs, an escape of frequency 1 last): the mode, log2(block) - 3 | log2(precision) << 1 |
# overlap << 2 (0..15), then the dy and dx tables (0..17). About 12 bits instead of 3 bytes and a length.
HEADER_INDEXES = (0, 1, 1)  # the mode's table, then the table choices' (twice)
HEADER_SYMBOLS = len(HEADER_INDEXES)
_MODES = 16


def _uniform_cdf(n: int) -> list[int]:
    budget = (1 << 16) - 1  # the escape takes 1
    cdf = [0]
    for k in range(n):
        cdf.append(cdf[-1] + budget // n + (k < budget % n))
    return cdf + [cdf[-1] + 1]


@lru_cache(maxsize=None)
def header_tables() -> tuple[list[list[int]], list[int], list[int]]:
    """The rANS tables of a field's header symbols (:data:`HEADER_INDEXES` into them)."""
    return [_uniform_cdf(_MODES), _uniform_cdf(len(_THETA))], [_MODES + 2, len(_THETA) + 2], [0, 0]


def header_symbols(header: bytes) -> list[int]:
    """A field's 3-byte header (:attr:`FieldCode.header`) as format 3.0's three symbols."""
    return [(header[0] & 15) - 3 | (header[0] >> 4 & 3) << 1 | (header[0] >> 6) << 2, header[1], header[2]]


def header_from_symbols(values: list[int]) -> bytes:
    """:func:`header_symbols`' inverse (ValueError for values no encoder writes)."""
    mode, dy, dx = (int(v) for v in values)
    if not (0 <= mode < _MODES and 0 <= dy < len(_THETA) and 0 <= dx < len(_THETA)):
        raise ValueError("motion field header symbol out of range")
    return bytes([3 + (mode & 1) | (mode >> 1 & 1) << 4 | (mode >> 2) << 6, dy, dx])


def read_header(data: bytes, height: int, width: int, blocks: tuple[int, ...]) -> FieldHeader:
    """A motion field's 3-byte header (:attr:`FieldCode.header`), checked for a padded frame size."""
    if len(data) != _HEADER:
        raise ValueError(f"motion field header of {len(data)} bytes, expected {_HEADER}")
    block, precision, overlap = 1 << (data[0] & 15), 1 << (data[0] >> 4 & 3), data[0] >> 6
    if block not in blocks or height % block or width % block:
        raise ValueError(f"motion block size {block} is not allowed here")
    if precision not in PRECISIONS:
        raise ValueError(f"motion precision 1/{precision} pixel is not allowed")
    if max(data[1], data[2]) >= len(_THETA):
        raise ValueError("motion table index out of range")
    bh, bw = height // block, width // block
    indexes = torch.tensor([data[1], data[2]], dtype=torch.int32).repeat(bh * bw)
    return FieldHeader(block, precision, overlap, (bh, bw), _tables(precision), indexes)


def field_from_residuals(h: FieldHeader, values: list[int] | Tensor) -> MotionField:
    """The field of the residuals ``values`` read with ``h.indexes`` (the vectors rebuilt from their
    predictions, each checked against the search range)."""
    (bh, bw), precision = h.shape, h.precision
    limit = MAX_RADIUS * precision
    res = np.asarray(values, dtype=np.int64).reshape(bh * bw, 2).tolist()
    field: list[list[int]] = []  # (dy, dx) per block, raster order; plain ints: this loop is the decoder's
    for i in range(bh):
        for j in range(bw):
            r = res[i * bw + j]
            if i == 0:
                p = field[-1] if j else [0, 0]
            elif j == 0:
                p = field[(i - 1) * bw]
            else:
                left, above = field[-1], field[(i - 1) * bw + j]
                corner = field[(i - 1) * bw + j + 1] if j + 1 < bw else field[(i - 1) * bw + j - 1]
                p = [sorted((left[c], above[c], corner[c]))[1] for c in (0, 1)]
            v = [p[0] + r[0], p[1] + r[1]]
            if abs(v[0]) > limit or abs(v[1]) > limit:
                raise ValueError(f"motion vector over {MAX_RADIUS} pixels at block ({i}, {j})")
            field.append(v)
    out = torch.tensor(field, dtype=torch.long).reshape(bh, bw, 2).permute(2, 0, 1).contiguous()
    return MotionField(out.unsqueeze(0), h.block, precision, h.overlap)

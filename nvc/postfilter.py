"""The post-filter: a small Wiener filter per plane that the encoder fits to a frame and signals in the stream.

The decoder shows the model's reconstruction (8-bit yuv420p) passed through a fixed-point FIR filter per plane,
with the plane's edges replicated: on Y a point-symmetric diamond of radius 3 (25 taps, 13 coefficients); on U and
V a point-symmetric diamond of radius 1 (5 taps, 3 coefficients) plus 8 taps on the reconstructed luma, as
cross-component filters do: with L the sums of the 2x2 luma samples of each chroma sample, the differences between
L at each of the 8 neighbours and L at the sample itself:

    out = clip((c0 * p[x] + sum_k c_k * (p[x + d_k] + p[x - d_k]) + sum_j l_j * (L[x + e_j] - L[x]) + offset
                + 2^(SHIFT-1)) >> SHIFT, 0, 255)

Since format 5.0 the luma plane may have up to :data:`CLASSES` filters: each 4x4 block of the reconstruction falls
in an activity class by the sum of its samples' Laplacians (:func:`luma_classes`, computed alike by both sides),
and runs of adjacent classes share a filter (:attr:`PostFilter.y_splits`), as adaptive loop filters classify.

The encoder fits the coefficients by least squares against the source (nothing is trained, so the filter adapts
to each clip and rate), merges classes while that pays, keeps a plane's filter only where it pays for its bits
(:func:`choose`), and may reuse the GoP's last filter for free. The next frame is predicted from the unfiltered
reconstruction: the filter is outside the prediction loop. Integer arithmetic only, so every decoder computes the same bytes.
``formats/nvc-bitstream.md`` ("Post-filter") specifies it; this module imports numpy, never torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .bitstream import FORMAT_VERSION, MAX_FILTER_BYTES, FilterMode, filter_data_size
from .errors import BitstreamError

__all__ = ["SHIFT", "CLASSES", "PostFilter", "FilterMode", "Choice", "fit", "apply", "choose", "pack", "unpack",
           "luma_classes", "PLANES"]

SHIFT = 7  # fractional bits of every coefficient and offset
MAX_ABS = 1 << 14  # |value| limit: a decoder refuses more (sums stay far inside int64)
MAX_BYTES = MAX_FILTER_BYTES  # a packed filter's size limit (the record's length byte)
PLANES = ("y", "u", "v")
# luma classes (format 5.0): a 4x4 block's activity, the sum over its 16 samples of |2p - left - right| +
# |2p - up - down|, against these bounds (twice the previous: 2, 4, ... 64 per sample); class k: k bounds below it
BLOCK = 4
ACTIVITY_BOUNDS = (32, 64, 128, 256, 512, 1024)
CLASSES = len(ACTIVITY_BOUNDS) + 1

# one tap of each point-symmetric pair (dy, dx), the centre excluded
_PAIRS = {"y": ((0, 1), (0, 2), (0, 3), (1, -2), (1, -1), (1, 0), (1, 1), (1, 2), (2, -1), (2, 0), (2, 1), (3, 0)),
          "u": ((0, 1), (1, 0)), "v": ((0, 1), (1, 0))}
_RADIUS = {"y": 3, "u": 1, "v": 1}
# chroma planes: the differences between the 2x2 luma sums of each of the 8 neighbours and of the sample itself
_LUMA_TAPS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx)

# the encoder's choice: a plane's squared error weighs as its share of an RGB error (BT.709, limited range:
# R, G, B errors from Y, U, V errors of equal size, squared and averaged), per picture sample
_RGB_WEIGHT = {"y": 1.355, "u": 1.50, "v": 1.17}
CHOICE_SCALE = 4.0  # lambda's multiple in the choice (a new filter is kept for later frames too; measured)
SPLIT_SCALE = 2.0  # lambda's multiple when merging luma classes (a further luma filter must pay sooner; measured)


@dataclass(frozen=True)
class PostFilter:
    """Per plane ``(c0, c_1..c_n[, l_1..l_8], offset)`` in units of ``2^-SHIFT``, or None: the plane as it is.

    Luma may have more filters (format 5.0): ``y`` serves the luma classes below ``y_splits[0]``, ``y_more[i]``
    those from ``y_splits[i]`` on (``y_splits`` increasing, within ``1..CLASSES-1``)."""

    y: Optional[tuple[int, ...]] = None
    u: Optional[tuple[int, ...]] = None
    v: Optional[tuple[int, ...]] = None
    y_more: tuple[tuple[int, ...], ...] = ()
    y_splits: tuple[int, ...] = ()

    def planes(self) -> dict[str, Optional[tuple[int, ...]]]:
        return {"y": self.y, "u": self.u, "v": self.v}

    def luma_filters(self) -> tuple[tuple[int, ...], ...]:
        """Every luma filter, in class order (empty: no luma filter)."""
        return () if self.y is None else (self.y, *self.y_more)

    def class_filter(self) -> tuple[int, ...]:
        """Each luma class's index into :meth:`luma_filters`."""
        return tuple(int(i) for i in _class_filter(self.y_splits))

    @property
    def empty(self) -> bool:
        return self.y is None and self.u is None and self.v is None


def _count(name: str) -> int:
    return 1 + len(_PAIRS[name]) + (0 if name == "y" else len(_LUMA_TAPS)) + 1


def _shifted(p: np.ndarray, r: int) -> tuple[np.ndarray, int, int]:
    h, w = p.shape
    return np.pad(p.astype(np.int32), r, mode="edge"), h, w


def _luma_sums(y: np.ndarray, h: int, w: int) -> np.ndarray:
    """The sums of each chroma sample's 2x2 luma samples (odd sizes: the last row and column replicated)."""
    yp = np.pad(y.astype(np.int32), ((0, 2 * h - y.shape[0]), (0, 2 * w - y.shape[1])), mode="edge")
    return yp[0::2, 0::2] + yp[0::2, 1::2] + yp[1::2, 0::2] + yp[1::2, 1::2]


def luma_classes(y: np.ndarray) -> np.ndarray:
    """Each luma sample's activity class (0..CLASSES-1, uint8): its 4x4 block's (aligned to the plane's corner;
    a partial block at the right or bottom edge with its last column's or row's values repeated) sum of
    ``|2p - left - right| + |2p - up - down|`` against :data:`ACTIVITY_BOUNDS`, the plane's edges replicated."""
    h, w = y.shape
    p = np.pad(y.astype(np.int32), 1, mode="edge")
    c = p[1:-1, 1:-1]
    lap = np.abs(2 * c - p[:-2, 1:-1] - p[2:, 1:-1]) + np.abs(2 * c - p[1:-1, :-2] - p[1:-1, 2:])
    hb, wb = -(-h // BLOCK), -(-w // BLOCK)
    lap = np.pad(lap, ((0, hb * BLOCK - h), (0, wb * BLOCK - w)), mode="edge")
    act = lap.reshape(hb, BLOCK, wb, BLOCK).sum(axis=(1, 3))
    cls = np.searchsorted(np.asarray(ACTIVITY_BOUNDS), act, side="left").astype(np.uint8)
    return np.repeat(np.repeat(cls, BLOCK, axis=0), BLOCK, axis=1)[:h, :w]


class _Inputs:
    """The filter's inputs for each sample of a reconstruction's planes (centre, pair sums and, for U and V, the
    luma-sum differences; int32: at most 1020 in magnitude, so a product with a value stays under 2^24), computed
    once per plane and frame however many filters are tried on it."""

    def __init__(self, rec: object) -> None:
        self.rec = rec
        self._cols: dict[str, list[np.ndarray]] = {}
        self._luma: list[np.ndarray] | None = None  # the same for U and V
        self._classes: np.ndarray | None = None

    @property
    def classes(self) -> np.ndarray:
        """The luma classes of the reconstruction (:func:`luma_classes`)."""
        if self._classes is None:
            self._classes = luma_classes(self.rec.y)  # type: ignore[attr-defined]
        return self._classes

    def __call__(self, name: str) -> list[np.ndarray]:
        if name not in self._cols:
            r = _RADIUS[name]
            p, h, w = _shifted(getattr(self.rec, name), r)
            cols = [p[r:r + h, r:r + w]]
            for dy, dx in _PAIRS[name]:
                cols.append(p[r + dy:r + dy + h, r + dx:r + dx + w] + p[r - dy:r - dy + h, r - dx:r - dx + w])
            self._cols[name] = cols if name == "y" else cols + self._luma_taps(h, w)
        return self._cols[name]

    def _luma_taps(self, h: int, w: int) -> list[np.ndarray]:
        if self._luma is None:
            s, _, _ = _shifted(_luma_sums(self.rec.y, h, w), 1)  # type: ignore[attr-defined]
            centre = s[1:1 + h, 1:1 + w]
            self._luma = [s[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] - centre for dy, dx in _LUMA_TAPS]
        return self._luma


def _filtered(cols: list[np.ndarray], coeffs: tuple[int, ...]) -> np.ndarray:
    acc = np.full(cols[0].shape, coeffs[-1] + (1 << (SHIFT - 1)), dtype=np.int64)
    for c, col in zip(coeffs[:-1], cols):
        if c:
            acc += c * col
    return np.clip(acc >> SHIFT, 0, 255).astype(np.uint8)


def _class_filter(splits: tuple[int, ...]) -> np.ndarray:
    """Each luma class's filter index, given the classes where each further filter begins."""
    return np.searchsorted(np.asarray(splits, dtype=np.int64), np.arange(CLASSES), side="right")


def _filtered_luma(inputs: _Inputs, filters: tuple[tuple[int, ...], ...], splits: tuple[int, ...]) -> np.ndarray:
    """The luma plane through one filter per run of classes (``splits``: where each further filter begins)."""
    cols = inputs("y")
    if not splits:
        return _filtered(cols, filters[0])
    which = _class_filter(splits)[inputs.classes]  # each sample's filter
    table = np.asarray(filters, dtype=np.int64).T  # per value, its coefficient in each filter
    acc = table[-1][which] + (1 << (SHIFT - 1))
    for coeffs, col in zip(table[:-1], cols):
        if coeffs.any():
            acc += coeffs[which] * col
    return np.clip(acc >> SHIFT, 0, 255).astype(np.uint8)


def apply(rec: object, f: PostFilter, inputs: Optional[_Inputs] = None) -> object:
    """``rec`` (an :class:`nvc.io.Frame`) through ``f``: a new frame of the same type (planes without a filter
    are shared, not copied)."""
    inputs = inputs or _Inputs(rec)
    out = {name: getattr(rec, name) if c is None else _filtered(inputs(name), c)
           for name, c in f.planes().items() if name != "y"}
    out["y"] = rec.y if f.y is None else _filtered_luma(inputs, f.luma_filters(), f.y_splits)  # type: ignore[attr-defined]
    return type(rec)(out["y"], out["u"], out["v"])


def _equations(cols: list[np.ndarray], target: np.ndarray, labels: Optional[np.ndarray] = None,
               n_labels: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The normal equations of the least-squares fit of ``cols`` (and a constant) to ``target``, one set per
    label (``labels``: each sample's; None: all samples one): ``A^T A``, ``A^T b``, ``b^T b`` and the counts."""
    n = len(cols) + 1
    ata, atb, btb, count = np.zeros((n_labels, n, n)), np.zeros((n_labels, n)), np.zeros(n_labels), np.zeros(n_labels)
    rows = cols[0].shape[0]
    step = max(1, (1 << 18) // max(1, cols[0].shape[1]))
    for r0 in range(0, rows, step):  # a band of rows at a time (bounded memory)
        band = cols[0][r0:r0 + step]
        a = np.stack([c[r0:r0 + step].ravel().astype(np.float64) for c in cols] + [np.ones(band.size)], 1)
        b = target[r0:r0 + step].ravel().astype(np.float64)
        if labels is None:
            parts = [(0, a, b)]
        else:
            lab = labels[r0:r0 + step].ravel()
            order = np.argsort(lab, kind="stable")  # the band's samples grouped by label (a radix sort for uint8)
            a, b = a[order], b[order]
            ends = np.searchsorted(lab[order], np.arange(n_labels + 1))
            parts = [(k, a[lo:hi], b[lo:hi]) for k, (lo, hi) in enumerate(zip(ends, ends[1:])) if hi > lo]
        for k, ak, bk in parts:
            ata[k] += ak.T @ ak
            atb[k] += ak.T @ bk
            btb[k] += bk @ bk
            count[k] += len(bk)
    return ata, atb, btb, count


def _rounded(ata: np.ndarray, atb: np.ndarray) -> Optional[tuple[int, ...]]:
    """The fixed-point filter of a least-squares problem: the taps rounded, then the centre and offset solved again
    for the rounded taps and rounded (rounding all at once can leave the DC gain off by a step, a level's bias on
    bright or dark pictures); None where it has no finite solution."""
    n = len(atb)
    sol = _solve(ata, atb)
    if sol is None:
        return None
    scale = 1 << SHIFT
    taps = np.clip(np.round(sol[1:-1] * scale), -MAX_ABS + 1, MAX_ABS - 1)
    idx = [0, n - 1]
    rest = atb[idx] - ata[np.ix_(idx, range(1, n - 1))] @ (taps / scale)
    co = _solve(ata[np.ix_(idx, idx)], rest)
    if co is None:
        return None
    ends = np.clip(np.round(co * scale), -MAX_ABS + 1, MAX_ABS - 1)
    return (int(ends[0]), *(int(t) for t in taps), int(ends[1]))


def _fit_plane(inputs: _Inputs, src: object, name: str, eqs: Optional[tuple[np.ndarray, np.ndarray]] = None
               ) -> Optional[tuple[tuple[int, ...], np.ndarray]]:
    """The plane's rounded least-squares filter and its output, or None where that is no closer to ``src``.
    ``eqs``: the fit's normal equations (``A^T A``, ``A^T b``) when already known."""
    cols = inputs(name)
    target = getattr(src, name)
    if eqs is None:
        ata, atb, _, _ = _equations(cols, target)
        eqs = ata[0], atb[0]
    coeffs = _rounded(*eqs)
    if coeffs is None:
        return None
    out = _filtered(cols, coeffs)
    return (coeffs, out) if _sse(out, target) < _sse(getattr(inputs.rec, name), target) else None


def _luma_equations(inputs: _Inputs, src: object) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The luma fit's normal equations per class (:func:`_equations`). Their sums over the classes are those of one
    filter for the whole plane, bit for bit: every entry is a sum of integer products below 2^53."""
    return _equations(inputs("y"), src.y, inputs.classes, CLASSES)  # type: ignore[attr-defined]


def _fit_luma(inputs: _Inputs, src: object, weight: float,
              eqs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
              ) -> Optional[tuple[tuple[tuple[int, ...], ...], tuple[int, ...], np.ndarray]]:
    """Luma filters for runs of classes, the runs chosen greedily for the least ``weight * (squared error) +
    bits``: from a filter per class present, the two adjacent runs whose merge costs least are merged until one
    is left, and the cheapest partition on the way is kept (errors estimated from the normal equations). Returns
    the rounded filters, the splits and the output, or None where no filter brings the plane closer to ``src``.
    ``eqs``: :func:`_luma_equations` (the caller keeps them for its one-filter fallback)."""
    target = src.y  # type: ignore[attr-defined]
    ata, atb, btb, count = eqs
    present = [k for k in range(CLASSES) if count[k] > 0]
    if not present:
        return None
    cache: dict[tuple[int, int], float] = {}

    def run_cost(lo: int, hi: int) -> float:  # one filter for classes lo..hi-1
        if (lo, hi) not in cache:
            a, b = ata[lo:hi].sum(0), atb[lo:hi].sum(0)
            sol = _solve(a, b)
            if sol is None:
                cache[lo, hi] = float("inf")
            else:
                sse = max(0.0, float(btb[lo:hi].sum() - sol @ b))
                est = np.clip(np.round(sol * (1 << SHIFT)), -MAX_ABS + 1, MAX_ABS - 1).astype(int)
                cache[lo, hi] = weight * sse + _plane_bits("y", tuple(int(c) for c in est))
        return cache[lo, hi]

    starts = [0] + present[1:]  # an empty class joins the run before it (the first run starts at class 0)
    bounds = starts + [CLASSES]
    best_starts, best = list(starts), sum(run_cost(lo, hi) for lo, hi in zip(bounds, bounds[1:]))
    while len(starts) > 1:
        merged = [(run_cost(bounds[i], bounds[i + 2]) - run_cost(bounds[i], bounds[i + 1])
                   - run_cost(bounds[i + 1], bounds[i + 2]), i) for i in range(len(starts) - 1)]
        _, i = min(merged)
        del starts[i + 1]
        bounds = starts + [CLASSES]
        total = sum(run_cost(lo, hi) for lo, hi in zip(bounds, bounds[1:]))
        if total <= best:
            best_starts, best = list(starts), total
    bounds = best_starts + [CLASSES]
    filters = []
    for lo, hi in zip(bounds, bounds[1:]):
        coeffs = _rounded(ata[lo:hi].sum(0), atb[lo:hi].sum(0))
        if coeffs is None:
            return None
        filters.append(coeffs)
    splits = tuple(best_starts[1:])
    out = _filtered_luma(inputs, tuple(filters), splits)
    if _sse(out, target) >= _sse(inputs.rec.y, target):  # type: ignore[attr-defined]
        return None
    return tuple(filters), splits, out


def _solve(a: np.ndarray, b: np.ndarray) -> Optional[np.ndarray]:
    try:
        sol = np.linalg.lstsq(a, b, rcond=None)[0]
    except np.linalg.LinAlgError:
        return None
    return sol if np.all(np.isfinite(sol)) else None


def fit(rec: object, src: object) -> PostFilter:
    """The least-squares filter of every plane that takes ``rec`` closest to ``src`` (:class:`nvc.io.Frame`); a
    plane whose rounded filter does not bring it closer is left as it is."""
    inputs = _Inputs(rec)
    fitted = {name: _fit_plane(inputs, src, name) for name in PLANES}
    return PostFilter(**{name: None if f is None else f[0] for name, f in fitted.items()})


# --------------------------------------------------------------------------------------------------
# The encoder's choice


def _sse(a: np.ndarray, b: np.ndarray) -> float:
    d = a.astype(np.int64) - b.astype(np.int64)
    return float(np.sum(d * d))


@dataclass(frozen=True)
class Choice:
    """What the encoder signals for a frame: the mode, the new filter's bytes (NEW) and the filter in force."""

    mode: FilterMode
    params: bytes
    current: Optional[PostFilter]  # the GoP's current filter after this frame
    shown: object  # the picture the decoder shows


def choose(rec: object, src: object, current: Optional[PostFilter], lam: float,
           distortion: Optional[Callable[[object], float]] = None) -> Choice:
    """The cheapest of OFF, KEEP (when ``current``) and NEW (a fresh fit, each plane kept only where it pays for
    its bits; luma's classes merged by ``SPLIT_SCALE * lam``) for a frame: ``CHOICE_SCALE * lam * distortion(shown)
    + bits``. ``distortion``: a picture's squared error, summed over its samples, in 8-bit units (the codec measures
    it on RGB, averaged over the three channels, as the model's loss does; default: the planes' errors weighted as
    their shares of an RGB error, the same measure)."""
    lam_eff = CHOICE_SCALE * lam

    def plane_error(name: str, out: np.ndarray) -> float:
        scale = 1 if name == "y" else 4  # a chroma sample covers four picture samples
        return _RGB_WEIGHT[name] * scale * _sse(out, getattr(src, name))

    def picture_error(shown: object) -> float:
        return sum(plane_error(n, getattr(shown, n)) for n in PLANES)

    measure = distortion or picture_error
    inputs = _Inputs(rec)
    best = Choice(FilterMode.OFF, b"", current, rec)
    best_cost = lam_eff * measure(rec)
    if current is not None:
        shown = apply(rec, current, inputs)
        cost = lam_eff * measure(shown)
        if cost < best_cost:
            best, best_cost = Choice(FilterMode.KEEP, b"", current, shown), cost
    keep: dict[str, object] = {}
    outs: dict[str, np.ndarray] = {}

    def keep_luma(fitted: Optional[tuple[tuple[tuple[int, ...], ...], tuple[int, ...], np.ndarray]]) -> None:
        keep.update(y=None, y_more=(), y_splits=())
        outs.pop("y", None)
        if fitted is not None:
            filters, splits, out = fitted
            if lam_eff * (plane_error("y", rec.y) - plane_error("y", out)) > _luma_bits(filters):  # type: ignore[attr-defined]
                keep.update(y=filters[0], y_more=filters[1:], y_splits=splits)
                outs["y"] = out

    luma_eqs = _luma_equations(inputs, src)
    keep_luma(_fit_luma(inputs, src, SPLIT_SCALE * lam * _RGB_WEIGHT["y"], luma_eqs))
    for name in ("u", "v"):
        fitted = _fit_plane(inputs, src, name)
        if fitted is None:
            continue
        coeffs, out = fitted
        if lam_eff * (plane_error(name, getattr(rec, name)) - plane_error(name, out)) > _plane_bits(name, coeffs):
            keep[name], outs[name] = coeffs, out
    new = PostFilter(**keep)  # type: ignore[arg-type]
    if 8 * MAX_BYTES < _luma_bits(new.luma_filters()) + sum(_plane_bits(n, c) for n, c in new.planes().items()
                                                             if c is not None and n != "y"):
        # several luma filters with large values, over the parameters' 255 bytes: one luma filter instead (with
        # U and V it needs at most 138 bytes), from the classes' equations summed
        single = _fit_plane(inputs, src, "y", (luma_eqs[0].sum(0), luma_eqs[1].sum(0)))
        keep_luma(None if single is None else ((single[0],), (), single[1]))
        new = PostFilter(**keep)  # type: ignore[arg-type]
    if not new.empty:
        params = pack(new)
        shown = type(rec)(*(outs.get(n, getattr(rec, n)) for n in PLANES))
        cost = lam_eff * measure(shown) + 8 * filter_data_size(params)
        if cost < best_cost:
            best = Choice(FilterMode.NEW, params, new, shown)
    return best


# --------------------------------------------------------------------------------------------------
# Coding: a flag per plane, then each coded plane's values as signed Exp-Golomb codes (the centre as its
# difference from unit gain), zero bits to a whole byte


class _BitWriter:
    def __init__(self) -> None:
        self.bits: list[int] = []

    def flag(self, b: bool) -> None:
        self.bits.append(int(b))

    def se(self, v: int) -> None:
        k = 2 * v - 1 if v > 0 else -2 * v
        k += 1
        self.bits += [0] * (k.bit_length() - 1) + [int(c) for c in bin(k)[2:]]

    def bytes(self) -> bytes:
        bits = self.bits + [0] * (-len(self.bits) % 8)
        return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


class _BitReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def flag(self) -> bool:
        if self.pos >= 8 * len(self.data):
            raise BitstreamError("post-filter: parameters truncated")
        b = (self.data[self.pos >> 3] >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return bool(b)

    def se(self) -> int:
        n = 0
        while not self.flag():
            n += 1
            if n > 20:  # the largest valid value, a centre's difference, needs 19
                raise BitstreamError("post-filter: a value's code is too long")
        k = 1
        for _ in range(n):
            k = (k << 1) | self.flag()
        k -= 1
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unit_centre(name: str, coeffs: tuple[int, ...]) -> int:
    """The centre coefficient that gives the plane's own samples unit gain with these pair coefficients."""
    return (1 << SHIFT) - 2 * sum(coeffs[1:1 + len(_PAIRS[name])])


def _write_plane(w: _BitWriter, name: str, coeffs: tuple[int, ...]) -> None:
    for c in coeffs[1:-1]:
        w.se(c)
    w.se(coeffs[0] - _unit_centre(name, coeffs))
    w.se(coeffs[-1])


def _plane_bits(name: str, coeffs: tuple[int, ...]) -> int:
    w = _BitWriter()
    _write_plane(w, name, coeffs)
    return len(w.bits) + 1


def _luma_bits(filters: tuple[tuple[int, ...], ...]) -> int:
    """The bits of the luma filters, their plane flag and split flags included."""
    return sum(_plane_bits("y", f) - 1 for f in filters) + 1 + CLASSES - 1


def _check(name: str, coeffs: tuple[int, ...]) -> None:
    if len(coeffs) != _count(name) or any(abs(c) >= MAX_ABS for c in coeffs):
        raise BitstreamError(f"post-filter: {name} needs {_count(name)} values under {MAX_ABS}")


def pack(f: PostFilter, version: tuple[int, int] = FORMAT_VERSION) -> bytes:
    """The filter's bytes in a frame record: three flags (Y, U, V coded); for a coded Y (format 5.0) CLASSES - 1
    flags, one per class from 1 on, set where a new luma filter begins; then per coded plane (luma: per filter)
    its pair (and luma) coefficients, the centre's difference from unit gain and the offset, as signed
    Exp-Golomb codes. Format 4.0 (``version``) has one luma filter and no split flags."""
    w = _BitWriter()
    planes = f.planes()
    splits = tuple(f.y_splits)
    if len(f.y_more) != len(splits) or list(splits) != sorted(set(splits)) or any(not 0 < k < CLASSES for k in splits):
        raise BitstreamError(f"post-filter: {len(f.y_more)} more luma filters need as many increasing splits in "
                             f"1..{CLASSES - 1}, got {splits}")
    if splits and (f.y is None or version[0] < 5):
        raise BitstreamError("post-filter: more luma filters need a first one and format 5.0")
    for name in PLANES:
        w.flag(planes[name] is not None)
    for name in PLANES:
        coeffs = planes[name]
        if coeffs is None:
            continue
        if name == "y":
            if version[0] >= 5:
                for k in range(1, CLASSES):
                    w.flag(k in splits)
            for c in f.luma_filters():
                _check(name, c)
                _write_plane(w, name, c)
        else:
            _check(name, coeffs)
            _write_plane(w, name, coeffs)
    out = w.bytes()
    if len(out) > MAX_BYTES:
        raise BitstreamError(f"post-filter: {len(out)} bytes, over the {MAX_BYTES}-byte limit")
    return out


def _read_plane(r: _BitReader, name: str) -> tuple[int, ...]:
    rest = [r.se() for _ in range(_count(name) - 2)]
    centre, offset = r.se(), r.se()
    coeffs = (0, *rest, offset)
    coeffs = (centre + _unit_centre(name, coeffs), *rest, offset)
    if any(abs(c) >= MAX_ABS for c in coeffs):
        raise BitstreamError(f"post-filter: a {name} value is out of range")
    return coeffs


def unpack(data: bytes, version: tuple[int, int] = FORMAT_VERSION) -> PostFilter:
    """Parses :func:`pack`'s bytes of format ``version`` (a record's); refuses an empty filter, truncated or
    trailing data and values out of range (:class:`BitstreamError`)."""
    r = _BitReader(bytes(data))
    coded = [r.flag() for _ in PLANES]
    if not any(coded):
        raise BitstreamError("post-filter: a new filter must code at least one plane")
    planes: dict[str, object] = {}
    for name, on in zip(PLANES, coded):
        if not on:
            continue
        if name == "y":
            splits = tuple(k for k in range(1, CLASSES) if r.flag()) if version[0] >= 5 else ()
            filters = [_read_plane(r, name) for _ in range(len(splits) + 1)]
            planes.update(y=filters[0], y_more=tuple(filters[1:]), y_splits=splits)
        else:
            planes[name] = _read_plane(r, name)
    used = (r.pos + 7) // 8
    if any(r.flag() for _ in range(-r.pos % 8)):
        raise BitstreamError("post-filter: nonzero padding bits")
    if used != len(data):
        raise BitstreamError(f"post-filter: {len(data) - used} bytes after the parameters")
    return PostFilter(**planes)  # type: ignore[arg-type]

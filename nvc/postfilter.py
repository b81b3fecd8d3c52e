"""The post-filter: a small Wiener filter per plane that the encoder fits to a frame and signals in the stream.

The decoder shows the model's reconstruction (8-bit yuv420p) passed through a fixed-point FIR filter per plane,
with the plane's edges replicated: on Y a point-symmetric diamond of radius 3 (25 taps, 13 coefficients); on U and
V a point-symmetric diamond of radius 1 (5 taps, 3 coefficients) plus 8 taps on the reconstructed luma, as
cross-component filters do: with L the sums of the 2x2 luma samples of each chroma sample, the differences between
L at each of the 8 neighbours and L at the sample itself:

    out = clip((c0 * p[x] + sum_k c_k * (p[x + d_k] + p[x - d_k]) + sum_j l_j * (L[x + e_j] - L[x]) + offset
                + 2^(SHIFT-1)) >> SHIFT, 0, 255)

The encoder fits the coefficients by least squares against the source (nothing is trained, so the filter adapts
to each clip and rate), keeps a plane's filter only where it pays for its bits (:func:`choose`), and may reuse
the GoP's last filter for free. The next frame is predicted from the unfiltered reconstruction: the filter is
outside the prediction loop. Integer arithmetic only, so every decoder computes the same bytes.
``formats/nvc-bitstream.md`` ("Post-filter") specifies it; this module imports numpy, never torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from .bitstream import FilterMode
from .errors import BitstreamError

__all__ = ["SHIFT", "PostFilter", "FilterMode", "Choice", "fit", "apply", "choose", "pack", "unpack", "PLANES"]

SHIFT = 7  # fractional bits of every coefficient and offset
MAX_ABS = 1 << 14  # |value| limit: a decoder refuses more (sums stay far inside int64)
MAX_BYTES = 255  # a packed filter's size limit (the record's length byte)
PLANES = ("y", "u", "v")

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


@dataclass(frozen=True)
class PostFilter:
    """Per plane ``(c0, c_1..c_n[, l_1..l_8], offset)`` in units of ``2^-SHIFT``, or None: the plane as it is."""

    y: Optional[tuple[int, ...]] = None
    u: Optional[tuple[int, ...]] = None
    v: Optional[tuple[int, ...]] = None

    def planes(self) -> dict[str, Optional[tuple[int, ...]]]:
        return {"y": self.y, "u": self.u, "v": self.v}

    @property
    def empty(self) -> bool:
        return self.y is None and self.u is None and self.v is None


def _count(name: str) -> int:
    return 1 + len(_PAIRS[name]) + (0 if name == "y" else len(_LUMA_TAPS)) + 1


def _shifted(p: np.ndarray, r: int) -> tuple[np.ndarray, int, int]:
    h, w = p.shape
    return np.pad(p.astype(np.int64), r, mode="edge"), h, w


def _luma_sums(y: np.ndarray, h: int, w: int) -> np.ndarray:
    """The sums of each chroma sample's 2x2 luma samples (odd sizes: the last row and column replicated)."""
    yp = np.pad(y.astype(np.int64), ((0, 2 * h - y.shape[0]), (0, 2 * w - y.shape[1])), mode="edge")
    return yp[0::2, 0::2] + yp[0::2, 1::2] + yp[1::2, 0::2] + yp[1::2, 1::2]


class _Inputs:
    """The filter's inputs for each sample of a reconstruction's planes (centre, pair sums and, for U and V, the
    luma-sum differences; int64), computed once per plane and frame however many filters are tried on it."""

    def __init__(self, rec: object) -> None:
        self.rec = rec
        self._cols: dict[str, list[np.ndarray]] = {}
        self._luma: list[np.ndarray] | None = None  # the same for U and V

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


def apply(rec: object, f: PostFilter, inputs: Optional[_Inputs] = None) -> object:
    """``rec`` (an :class:`nvc.io.Frame`) through ``f``: a new frame of the same type (planes without a filter
    are shared, not copied)."""
    inputs = inputs or _Inputs(rec)
    out = {name: getattr(rec, name) if c is None else _filtered(inputs(name), c) for name, c in f.planes().items()}
    return type(rec)(out["y"], out["u"], out["v"])


def _fit_plane(inputs: _Inputs, src: object, name: str) -> Optional[tuple[tuple[int, ...], np.ndarray]]:
    """The plane's rounded least-squares filter and its output, or None where that is no closer to ``src``."""
    rec = inputs.rec
    cols = inputs(name)
    n = len(cols) + 1
    ata, atb = np.zeros((n, n)), np.zeros(n)
    rows = cols[0].shape[0]
    b_all = getattr(src, name).astype(np.float64)
    step = max(1, (1 << 18) // max(1, cols[0].shape[1]))
    for r0 in range(0, rows, step):  # normal equations, a band of rows at a time (bounded memory)
        a = np.stack([c[r0:r0 + step].ravel().astype(np.float64) for c in cols] + [np.ones(cols[0][r0:r0 + step].size)], 1)
        b = b_all[r0:r0 + step].ravel()
        ata += a.T @ a
        atb += a.T @ b
    sol = _solve(ata, atb)
    if sol is None:
        return None
    # round the taps, then solve the centre and offset again for the rounded taps (rounding all of them at
    # once can leave the DC gain off by a step, a level's bias on bright or dark pictures)
    scale = 1 << SHIFT
    taps = np.clip(np.round(sol[1:-1] * scale), -MAX_ABS + 1, MAX_ABS - 1)
    idx = [0, n - 1]
    rest = atb[idx] - ata[np.ix_(idx, range(1, n - 1))] @ (taps / scale)
    co = _solve(ata[np.ix_(idx, idx)], rest)
    if co is None:
        return None
    ends = np.clip(np.round(co * scale), -MAX_ABS + 1, MAX_ABS - 1)
    coeffs = (int(ends[0]), *(int(t) for t in taps), int(ends[1]))
    out = _filtered(cols, coeffs)
    target = getattr(src, name)
    return (coeffs, out) if _sse(out, target) < _sse(getattr(rec, name), target) else None


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
    its bits) for a frame: ``CHOICE_SCALE * lam * distortion(shown) + bits``. ``distortion``: a picture's squared
    error, summed over its samples, in 8-bit units (the codec measures it on RGB, as the model is trained;
    default: the planes' errors weighted as their shares of an RGB error)."""
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
    keep: dict[str, Optional[tuple[int, ...]]] = {}
    outs: dict[str, np.ndarray] = {}
    for name in PLANES:
        keep[name] = None
        fitted = _fit_plane(inputs, src, name)
        if fitted is None:
            continue
        coeffs, out = fitted
        if lam_eff * (plane_error(name, getattr(rec, name)) - plane_error(name, out)) > _plane_bits(name, coeffs):
            keep[name], outs[name] = coeffs, out
    new = PostFilter(**keep)
    if not new.empty:
        params = pack(new)
        shown = type(rec)(*(outs.get(n, getattr(rec, n)) for n in PLANES))
        cost = lam_eff * measure(shown) + 8 * (len(params) + 1)
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


def pack(f: PostFilter) -> bytes:
    """The filter's bytes in a frame record: three flags (Y, U, V coded), then per coded plane its pair (and
    luma) coefficients, the centre's difference from unit gain and the offset, as signed Exp-Golomb codes."""
    w = _BitWriter()
    planes = f.planes()
    for name in PLANES:
        w.flag(planes[name] is not None)
    for name in PLANES:
        coeffs = planes[name]
        if coeffs is not None:
            if len(coeffs) != _count(name) or any(abs(c) >= MAX_ABS for c in coeffs):
                raise BitstreamError(f"post-filter: {name} needs {_count(name)} values under {MAX_ABS}")
            _write_plane(w, name, coeffs)
    out = w.bytes()
    if len(out) > MAX_BYTES:
        raise BitstreamError(f"post-filter: {len(out)} bytes, over the {MAX_BYTES}-byte limit")
    return out


def unpack(data: bytes) -> PostFilter:
    """Parses :func:`pack`'s bytes; refuses an empty filter, truncated or trailing data and values out of
    range (:class:`BitstreamError`)."""
    r = _BitReader(bytes(data))
    coded = [r.flag() for _ in PLANES]
    if not any(coded):
        raise BitstreamError("post-filter: a new filter must code at least one plane")
    planes: dict[str, Optional[tuple[int, ...]]] = {}
    for name, on in zip(PLANES, coded):
        if not on:
            planes[name] = None
            continue
        rest = [r.se() for _ in range(_count(name) - 2)]
        centre, offset = r.se(), r.se()
        coeffs = (0, *rest, offset)
        coeffs = (centre + _unit_centre(name, coeffs), *rest, offset)
        if any(abs(c) >= MAX_ABS for c in coeffs):
            raise BitstreamError(f"post-filter: a {name} value is out of range")
        planes[name] = coeffs
    used = (r.pos + 7) // 8
    if any(r.flag() for _ in range(-r.pos % 8)):
        raise BitstreamError("post-filter: nonzero padding bits")
    if used != len(data):
        raise BitstreamError(f"post-filter: {len(data) - used} bytes after the parameters")
    return PostFilter(**planes)

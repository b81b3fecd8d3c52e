"""The post-filter (nvc.postfilter): its arithmetic, its fit and choice, and the parsing of its parameters."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nvc import postfilter as pf
from nvc.bitstream import FilterMode
from nvc.errors import BitstreamError
from nvc.io import Frame

from .conftest import make_frames

FAST = settings(max_examples=150, deadline=None)


def _values(name: str) -> int:
    return 1 + len(pf._PAIRS[name]) + (0 if name == "y" else len(pf._LUMA_TAPS)) + 1


def _blurred(frame: Frame) -> Frame:
    """``frame`` with each plane averaged over 3x3 (a reconstruction that lost detail)."""
    def blur(p: np.ndarray) -> np.ndarray:
        q = np.pad(p.astype(np.int32), 1, mode="edge")
        h, w = p.shape
        return (sum(q[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)) // 9).astype(np.uint8)
    return Frame(blur(frame.y), blur(frame.u), blur(frame.v))


def test_module_imports_neither_torch_nor_the_codec() -> None:
    code = "import sys, nvc.postfilter; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split() == ["False"]


def test_identity_and_offset() -> None:
    f = make_frames(1, 67, 45, seed=2)[0]  # odd size: chroma 34x23
    ident = pf.PostFilter(**{n: (1 << pf.SHIFT,) + (0,) * (_values(n) - 2) + (0,) for n in pf.PLANES})
    out = pf.apply(f, ident)
    assert all(np.array_equal(getattr(out, n), getattr(f, n)) for n in pf.PLANES)
    # an offset of +2.5 levels on Y only (rounded half up), clipped at 255; U and V untouched (shared)
    y = (1 << pf.SHIFT,) + (0,) * (_values("y") - 2) + (5 << (pf.SHIFT - 1),)
    out = pf.apply(f, pf.PostFilter(y=y))
    assert np.array_equal(out.y, np.minimum(f.y.astype(int) + 3, 255)) and out.u is f.u and out.v is f.v


def test_arithmetic_is_pinned() -> None:
    """A fixed filter on a fixed picture: the spec's formula, pinned by the output's MD5 (any change to the
    arithmetic changes every decoder's pictures)."""
    f = make_frames(1, 67, 45, seed=7)[0]
    filt = pf.PostFilter(y=(100, 9, -3, 2, 7, 2, -4, 1, 0, -2, 3, 1, -1, -40), u=(120, 3, 1, 2, -1, 0, 1, 3, -2, 0, 1, 0, 30),
                         v=(110, 5, 4, 0, 0, 1, 0, 0, 0, 0, -1, 0, -64))
    out = pf.apply(f, filt)
    md5 = hashlib.md5(out.y.tobytes() + out.u.tobytes() + out.v.tobytes()).hexdigest()
    # the same result from a direct, per-sample evaluation of the formula
    def direct(name: str) -> np.ndarray:
        p = getattr(f, name).astype(np.int64)
        c = filt.planes()[name]
        h, w = p.shape
        yp = np.pad(f.y.astype(np.int64), ((0, 2 * h - f.y.shape[0]), (0, 2 * w - f.y.shape[1])), mode="edge")
        s = yp[0::2, 0::2] + yp[0::2, 1::2] + yp[1::2, 0::2] + yp[1::2, 1::2]
        at = lambda a, i, j: a[min(max(i, 0), h - 1), min(max(j, 0), w - 1)]  # noqa: E731 - edges replicated
        out = np.zeros_like(p)
        for i in range(h):
            for j in range(w):
                acc = c[0] * p[i, j] + c[-1] + (1 << (pf.SHIFT - 1))
                for k, (dy, dx) in enumerate(pf._PAIRS[name]):
                    acc += c[1 + k] * (at(p, i + dy, j + dx) + at(p, i - dy, j - dx))
                if name != "y":
                    base = 1 + len(pf._PAIRS[name])
                    for k, (dy, dx) in enumerate(pf._LUMA_TAPS):
                        acc += c[base + k] * (at(s, i + dy, j + dx) - s[i, j])
                out[i, j] = min(max(acc >> pf.SHIFT, 0), 255)
        return out
    for name in pf.PLANES:
        assert np.array_equal(getattr(out, name), direct(name)), name
    assert md5 == "2237ccd63a1c2357da1b92a10ab8af91"


def test_fit_restores_a_blurred_picture() -> None:
    src = make_frames(1, 96, 64, seed=4)[0]
    rec = _blurred(src)
    filt = pf.fit(rec, src)
    out = pf.apply(rec, filt)
    for name in pf.PLANES:
        before = np.mean((getattr(rec, name).astype(float) - getattr(src, name)) ** 2)
        after = np.mean((getattr(out, name).astype(float) - getattr(src, name)) ** 2)
        assert after < 0.9 * before if name == "y" else after <= before, name  # a plane it cannot help: left alone
    assert pf.unpack(pf.pack(filt)) == filt


def test_choose_never_costs_more_than_showing_the_reconstruction() -> None:
    src = make_frames(3, 96, 64, seed=5)
    current = None
    for i, f in enumerate(src):
        rec = _blurred(f)
        ch = pf.choose(rec, f, current, lam=0.01)
        off = pf.choose(rec, f, None, lam=0.0)  # no weight on distortion: nothing pays for its bits
        assert off.mode == FilterMode.OFF and off.shown is rec
        if ch.mode == FilterMode.NEW:
            assert ch.current == pf.unpack(ch.params)
            assert all(np.array_equal(getattr(ch.shown, n), getattr(pf.apply(rec, ch.current), n)) for n in pf.PLANES)
        if ch.mode == FilterMode.KEEP:
            assert ch.current is current and not ch.params
        err = lambda x: sum(np.sum((getattr(x, n).astype(float) - getattr(f, n)) ** 2) for n in pf.PLANES)  # noqa: E731
        assert err(ch.shown) <= err(rec)
        if i == 0:
            assert ch.mode == FilterMode.NEW  # blur is what a Wiener filter undoes
        current = ch.current
    assert pf.choose(_blurred(src[0]), src[0], current, lam=0.01).mode in (FilterMode.KEEP, FilterMode.NEW)


@st.composite
def filters(draw: st.DrawFn) -> pf.PostFilter:
    planes = {}
    for name in pf.PLANES:
        if draw(st.booleans()):
            planes[name] = tuple(draw(st.lists(st.integers(-pf.MAX_ABS + 1, pf.MAX_ABS - 1), min_size=_values(name),
                                               max_size=_values(name))))
    if not planes:
        planes["y"] = tuple(draw(st.lists(st.integers(-300, 300), min_size=_values("y"), max_size=_values("y"))))
    if "y" in planes:
        splits = tuple(sorted(draw(st.sets(st.integers(1, pf.CLASSES - 1), max_size=pf.CLASSES - 1))))
        more = tuple(tuple(draw(st.lists(st.integers(-300, 300), min_size=_values("y"), max_size=_values("y"))))
                     for _ in splits)
        planes.update(y_more=more, y_splits=splits)
    return pf.PostFilter(**planes)


@FAST
@given(filters())
def test_pack_unpack_property(filt: pf.PostFilter) -> None:
    try:
        data = pf.pack(filt)
    except BitstreamError as e:  # large values everywhere: over the 255-byte limit
        assert "limit" in str(e)
        return
    assert 1 <= len(data) <= pf.MAX_BYTES
    assert pf.unpack(data) == filt


@FAST
@given(filters())
def test_format_4_has_one_luma_filter(filt: pf.PostFilter) -> None:
    """Format 4.0's parameters (read for 4.0 streams) have no split flags, and one luma filter at most."""
    if filt.y_splits:
        with pytest.raises(BitstreamError, match="format 5.0"):
            pf.pack(filt, (4, 0))
        filt = pf.PostFilter(y=filt.y, u=filt.u, v=filt.v)
    try:
        data = pf.pack(filt, (4, 0))
    except BitstreamError as e:
        assert "limit" in str(e)
        return
    assert pf.unpack(data, (4, 0)) == filt
    if filt.y is not None:  # the same filter in 5.0: the split flags follow the plane flags
        assert len(pf.pack(filt)) * 8 - len(data) * 8 in range(-7, pf.CLASSES + 7)


@FAST
@given(st.binary(max_size=64), st.sampled_from([(4, 0), (5, 0)]))
def test_unpack_random_bytes(data: bytes, version: tuple[int, int]) -> None:
    try:
        filt = pf.unpack(data, version)
    except BitstreamError as e:
        assert "\n" not in str(e) and str(e).startswith("post-filter: ")
        return
    assert pf.pack(filt, version) == data  # what parses is exactly one filter's coding


def test_luma_classes() -> None:
    """A 4x4 block's class counts the activity bounds below the sum of its samples' Laplacians."""
    y = np.full((10, 13), 100, np.uint8)  # partial blocks at the right and bottom edges
    assert not pf.luma_classes(y).any()
    y[4:8, 4:8] = 100 + 20 * (np.indices((4, 4)).sum(0) % 2).astype(np.uint8)  # a checkerboard of 0 / 20
    cls = pf.luma_classes(y)
    p = np.pad(y.astype(int), 1, mode="edge")
    lap = sum(np.abs(2 * p[1:-1, 1:-1] - p[1 + dy:11 + dy, 1 + dx:14 + dx] - p[1 - dy:11 - dy, 1 - dx:14 - dx])
              for dy, dx in ((0, 1), (1, 0)))
    act = lap[4:8, 4:8].sum()
    assert act > pf.ACTIVITY_BOUNDS[-1]
    assert (cls[4:8, 4:8] == pf.CLASSES - 1).all()
    # the neighbouring blocks see the board's edge: their class from their own sums, equal over each block
    for by, bx in ((0, 4), (4, 0), (4, 8), (8, 4)):
        a = lap[by:by + 4, bx:bx + 4].sum()
        assert (cls[by:by + 4, bx:bx + 4] == np.searchsorted(pf.ACTIVITY_BOUNDS, a)).all()
    assert cls.dtype == np.uint8 and cls.shape == y.shape
    # the spec's rule, sample by sample, on a random picture with partial blocks (a partial block repeats the
    # Laplacians of its last row and column)
    rng = np.random.default_rng(1)
    y = np.clip(128 + rng.normal(size=(11, 14)) * np.linspace(0, 30, 14), 0, 255).astype(np.uint8)  # busier rightwards
    h, w = y.shape
    at = lambda i, j: int(y[min(max(i, 0), h - 1), min(max(j, 0), w - 1)])  # noqa: E731
    lap = lambda i, j: abs(2 * at(i, j) - at(i, j - 1) - at(i, j + 1)) + abs(2 * at(i, j) - at(i - 1, j) - at(i + 1, j))  # noqa: E731
    cls = pf.luma_classes(y)
    for i in range(h):
        for j in range(w):
            bi, bj = i - i % 4, j - j % 4
            a = sum(lap(min(bi + di, h - 1), min(bj + dj, w - 1)) for di in range(4) for dj in range(4))
            assert cls[i, j] == sum(a > b for b in pf.ACTIVITY_BOUNDS), (i, j)
    assert len(np.unique(cls)) > 2


def test_luma_filters_by_class() -> None:
    """Each luma sample goes through the filter of its class's run."""
    f = make_frames(1, 67, 45, seed=3)[0]
    filters = [(1 << pf.SHIFT,) + (0,) * (_values("y") - 2) + (k << pf.SHIFT,) for k in range(3)]  # +0, +1, +2
    filt = pf.PostFilter(y=filters[0], y_more=tuple(filters[1:]), y_splits=(2, 5))
    assert filt.class_filter() == (0, 0, 1, 1, 1, 2, 2)
    out = pf.apply(f, filt)
    cls = pf.luma_classes(f.y)
    expect = np.minimum(f.y.astype(int) + np.array(filt.class_filter())[cls], 255)
    assert np.array_equal(out.y, expect) and len(np.unique(cls)) > 2
    assert pf.unpack(pf.pack(filt)) == filt


def test_choose_splits_luma_where_it_pays() -> None:
    """A picture blurred in its smooth part and sharpened in its busy part: one filter cannot undo both."""
    src = make_frames(1, 128, 96, seed=6)[0]
    rec = _blurred(src)
    busy = pf.luma_classes(src.y) >= 4
    y = np.where(busy, np.clip(2 * src.y.astype(int) - rec.y, 0, 255), rec.y).astype(np.uint8)
    rec = Frame(y, rec.u, rec.v)
    ch = pf.choose(rec, src, None, lam=0.05)
    assert ch.mode == FilterMode.NEW and ch.current.y_splits
    one = pf.apply(rec, pf.fit(rec, src))
    err = lambda x: np.sum((x.y.astype(float) - src.y) ** 2)  # noqa: E731
    assert err(ch.shown) < err(one)


def test_unpack_refusals() -> None:
    good = pf.pack(pf.PostFilter(y=(128, 1) + (0,) * (_values("y") - 3) + (3,)))
    for bad, why in ((b"", "truncated"), (b"\x00", "at least one plane"), (good[:-1], "truncated"),
                     (good + b"\x00", "after the parameters"), (bytes([good[0] | 0]) + b"\x00" * 10, "too long"),
                     (good[:-1] + bytes([good[-1] | 1]), "padding")):
        with pytest.raises(BitstreamError, match=why):
            pf.unpack(bad)
    with pytest.raises(BitstreamError, match="out of range"):  # a value of 2^14 (Exp-Golomb of k = 2^15 - 1)
        w = pf._BitWriter()
        for flag in (1, 0, 0) + (0,) * (pf.CLASSES - 1):  # Y only, one luma filter
            w.flag(bool(flag))
        w.se(1 << 14)
        w.bits += [1] * (_values("y") - 1)  # the other values and the offset: 0
        pf.unpack(w.bytes())
    with pytest.raises(BitstreamError, match=f"needs {_values('y')} values"):
        pf.pack(pf.PostFilter(y=(128, 0)))


def test_choose_stays_within_the_parameter_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seven luma filters with large values would take more than 255 bytes: the encoder sends one instead."""
    src = make_frames(1, 96, 64, seed=8)[0]
    rec = _blurred(src)
    big = tuple((-1) ** k * (pf.MAX_ABS - 1 - k) for k in range(_values("y")))
    filters = (big,) * pf.CLASSES
    with pytest.raises(BitstreamError, match="limit"):
        pf.pack(pf.PostFilter(y=big, y_more=filters[1:], y_splits=tuple(range(1, pf.CLASSES))))
    # a fit that "pays" (its output is the source itself), whatever its bits
    monkeypatch.setattr(pf, "_fit_luma", lambda inputs, s, w, eqs=None: (filters, tuple(range(1, pf.CLASSES)), s.y.copy()))
    ch = pf.choose(rec, src, None, lam=1e6)
    assert ch.mode == FilterMode.NEW and len(ch.params) <= pf.MAX_BYTES
    assert ch.current.y is not None and not ch.current.y_splits and ch.current == pf.unpack(ch.params)


def test_class_equations_sum_to_the_whole_planes_bit_for_bit() -> None:
    """The fallback to one luma filter solves the classes' normal equations summed: the same numbers as fitting the
    whole plane at once (integer products, exact in float64), so the same filter."""
    src = make_frames(1, 96, 64, seed=3)[0]
    rec = _blurred(src)
    inputs = pf._Inputs(rec)
    ata, atb, _, _ = pf._luma_equations(inputs, src)
    whole_ata, whole_atb, _, _ = pf._equations(inputs("y"), src.y)
    assert np.array_equal(ata.sum(0), whole_ata[0]) and np.array_equal(atb.sum(0), whole_atb[0])
    assert pf._fit_plane(inputs, src, "y", (ata.sum(0), atb.sum(0)))[0] == pf._fit_plane(inputs, src, "y")[0]

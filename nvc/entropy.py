"""Entropy models (factorized prior, Gaussian conditional) and the rANS coder behind them.

nvc codes latents with CompressAI's rANS coder and 16-bit quantized CDF tables. This module holds
nvc's own implementation of the two entropy models (``EntropyBottleneck`` for hyper-latents,
``GaussianConditional`` for latents), with CompressAI's parameter layout (state_dict keys, buffers)
and the same arithmetic, so that the same weights give the same tables and the same bits. It loads
only CompressAI's two compiled extensions (``ans``: the rANS coder, ``_CXX``: pmf → quantized CDF),
never the ``compressai`` package, whose import pulls in torchvision, scipy and every CompressAI model:
about 270 MB of resident memory and several seconds of start-up that an encode or decode does not need.

Training uses the same modules: ``forward`` returns the (noisy or rounded) values and their
likelihoods, ``loss()`` is the auxiliary loss that fits the bottleneck's quantiles.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import math
import os
import sys
from functools import lru_cache
from types import ModuleType
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRECISION = 16  # bits of the quantized CDFs (CompressAI's rANS)
LIKELIHOOD_BOUND = 1e-9
TAIL_MASS = 1e-9


@lru_cache(maxsize=None)
def extension(name: str) -> ModuleType:
    """CompressAI's compiled extension ``name`` (``"ans"`` or ``"_CXX"``), loaded from its file without
    running ``compressai/__init__.py`` (the module CompressAI itself uses once that package is imported)."""
    full = f"compressai.{name}"
    if full in sys.modules:
        return sys.modules[full]
    if "compressai" in sys.modules:
        return importlib.import_module(full)
    spec = importlib.util.find_spec("compressai")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nvc needs the compressai package (its rANS coder): pip install compressai")
    for folder in spec.submodule_search_locations:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            path = os.path.join(folder, name + suffix)
            if os.path.exists(path):
                ext_spec = importlib.util.spec_from_file_location(full, path)
                assert ext_spec is not None and ext_spec.loader is not None
                module = importlib.util.module_from_spec(ext_spec)
                ext_spec.loader.exec_module(module)
                return module
    raise ImportError(f"compressai's compiled extension {name!r} was not found in {list(spec.submodule_search_locations)}")


# ---------------------------------------------------------------------------------------------- bounds
class _LowerBoundFn(torch.autograd.Function):
    """``max(x, bound)`` whose gradient passes where ``x >= bound`` or where it pushes ``x`` up."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, bound: Tensor) -> Tensor:
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        x, bound = ctx.saved_tensors
        return ((x >= bound) | (grad < 0)) * grad, None


class LowerBound(nn.Module):
    """``max(x, bound)`` with a gradient that lets ``x`` move back above the bound (buffer ``bound``)."""

    bound: Tensor

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: Tensor) -> Tensor:
        return _LowerBoundFn.apply(x, self.bound)


# ---------------------------------------------------------------------------------------------- coding
class _EntropyModel(nn.Module):
    """CDF tables (buffers ``_quantized_cdf``, ``_cdf_length``, ``_offset``, built by ``update``) and rANS."""

    _offset: Tensor
    _quantized_cdf: Tensor
    _cdf_length: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.likelihood_lower_bound = LowerBound(LIKELIHOOD_BOUND)
        self.register_buffer("_offset", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_quantized_cdf", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.zeros(0, dtype=torch.int32))
        # (buffers, their versions) the lists were made from, then the lists: cdf, lengths, offsets
        self._lists: tuple[tuple[Tensor, ...], tuple[int, ...], list[list[int]], list[int], list[int]] | None = None

    def _tables(self) -> tuple[list[list[int]], list[int], list[int]]:
        """The tables as the coder's Python lists, converted once per table (not once per call; a new or
        modified buffer, e.g. by ``load_state_dict``, is converted again)."""
        cdf, lengths, offsets = self._quantized_cdf, self._cdf_length, self._offset
        if cdf.dim() != 2 or cdf.numel() == 0 or offsets.dim() != 1 or lengths.dim() != 1:
            raise ValueError("entropy model tables are not built: call update() first")
        # holding the buffers themselves (not their ids) means no new buffer can pass for a cached one
        bufs = (cdf, lengths, offsets)
        versions = tuple(t._version for t in bufs)
        c = self._lists
        if c is None or versions != c[1] or any(a is not b for a, b in zip(c[0], bufs)):
            c = self._lists = (bufs, versions, cdf.tolist(), lengths.int().tolist(), offsets.int().tolist())
        return c[2], c[3], c[4]

    def _set_tables(self, pmf: Tensor, tail: Tensor, lengths: Tensor, offsets: Tensor) -> None:
        """Quantizes each row's ``pmf[:length]`` plus its tail mass to a 16-bit CDF."""
        to_cdf = extension("_CXX").pmf_to_quantized_cdf
        cdf = torch.zeros(len(lengths), int(lengths.max()) + 2, dtype=torch.int32, device=pmf.device)
        for i, (p, n) in enumerate(zip(pmf, lengths.tolist())):
            row = to_cdf(torch.cat((p[:n], tail[i])).tolist(), PRECISION)
            cdf[i, :len(row)] = torch.tensor(row, dtype=torch.int32)
        self._quantized_cdf = cdf
        self._offset = offsets.int()
        self._cdf_length = (lengths + 2).int()
        self._lists = None

    def encode(self, symbols: Tensor, indexes: Tensor) -> list[bytes]:
        """One rANS string per batch item of integer ``symbols`` coded with the tables ``indexes``."""
        if symbols.shape != indexes.shape or symbols.dim() < 2:
            raise ValueError("symbols and indexes must have the same (N, ...) shape")
        cdf, lengths, offsets = self._tables()
        coder = extension("ans").RansEncoder()
        sym, idx = symbols.int().cpu(), indexes.int().cpu()
        return [coder.encode_with_indexes(sym[i].reshape(-1).tolist(), idx[i].reshape(-1).tolist(), cdf, lengths,
                                          offsets) for i in range(sym.shape[0])]

    def decode(self, strings: list[bytes], indexes: Tensor) -> Tensor:
        """The integer symbols (int32, on ``indexes``' device) of ``strings`` coded with ``indexes``."""
        if not isinstance(strings, (list, tuple)) or len(strings) != indexes.shape[0] or indexes.dim() < 2:
            raise ValueError("one string per batch item of indexes (N, ...) is needed")
        cdf, lengths, offsets = self._tables()
        coder = extension("ans").RansDecoder()
        idx = indexes.int().cpu()
        out = torch.empty(indexes.shape, dtype=torch.int32)
        for i, s in enumerate(strings):
            values = coder.decode_with_indexes(s, idx[i].reshape(-1).tolist(), cdf, lengths, offsets)
            out[i] = torch.tensor(values, dtype=torch.int32).reshape(out[i].shape)
        return out.to(indexes.device)

    def tables(self) -> Tables:
        """The CDF tables as the rANS coder takes them (for :func:`encode_parts` and :class:`SymbolReader`)."""
        return self._tables()

    def reader(self, string: bytes) -> SymbolReader:
        """Reads one rANS string in parts (each coded with its own tables), in the order they were
        coded: what a decoder needs when later parts' tables depend on earlier parts' symbols."""
        return SymbolReader(string, {"": self._tables()})

    @staticmethod
    def _noisy_or_rounded(x: Tensor, training: bool, means: Tensor | None) -> Tensor:
        if training:
            return x + torch.empty_like(x).uniform_(-0.5, 0.5)
        return x if means is None else torch.round(x - means) + means


class EntropyBottleneck(_EntropyModel):
    """Factorized prior (Ballé et al. 2018): one learned density per channel, a monotone cumulative
    made of ``filters`` small layers; quantization around each channel's median. Parameters
    ``matrices.i``, ``biases.i``, ``factors.i``, ``quantiles`` (aux), buffer ``target``."""

    def __init__(self, channels: int, init_scale: float = 10.0, filters: tuple[int, ...] = (3, 3, 3, 3)) -> None:
        super().__init__()
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        dims = (1, *self.filters, 1)
        scale = float(init_scale) ** (1 / (len(self.filters) + 1))
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for i in range(len(self.filters) + 1):
            init = math.log(math.expm1(1 / scale / dims[i + 1]))
            self.matrices.append(nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init)))
            self.biases.append(nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5)))
            if i < len(self.filters):
                self.factors.append(nn.Parameter(torch.zeros(channels, dims[i + 1], 1)))
        s = float(init_scale)
        self.quantiles = nn.Parameter(torch.tensor([-s, 0.0, s]).repeat(channels, 1, 1))
        t = math.log(2 / TAIL_MASS - 1)
        self.register_buffer("target", torch.tensor([-t, 0.0, t]))

    def medians(self) -> Tensor:
        """Each channel's median, shape (C, 1, 1)."""
        return self.quantiles[:, :, 1:2]

    def _logits_cumulative(self, x: Tensor, stop_gradient: bool) -> Tensor:
        for i in range(len(self.filters) + 1):
            m, b = self.matrices[i], self.biases[i]
            if stop_gradient:
                m, b = m.detach(), b.detach()
            x = torch.matmul(F.softplus(m), x) + b
            if i < len(self.filters):
                f = self.factors[i].detach() if stop_gradient else self.factors[i]
                x = x + torch.tanh(f) * torch.tanh(x)
        return x

    def _likelihood(self, x: Tensor, stop_gradient: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        lower = self._logits_cumulative(x - 0.5, stop_gradient)
        upper = self._logits_cumulative(x + 0.5, stop_gradient)
        return torch.sigmoid(upper) - torch.sigmoid(lower), lower, upper

    def forward(self, x: Tensor, training: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(values, likelihoods)`` of ``x`` (N, C, ...): noisy in training, rounded around the medians else."""
        training = self.training if training is None else training
        perm = (1, 0, *range(2, x.dim()))
        v = x.permute(*perm).contiguous()
        shape = v.shape
        v = v.reshape(shape[0], 1, -1)
        out = self._noisy_or_rounded(v, training, None if training else self.medians())
        lik = self.likelihood_lower_bound(self._likelihood(out)[0])
        return (out.reshape(shape).permute(*perm).contiguous(), lik.reshape(shape).permute(*perm).contiguous())

    def likelihood(self, values: Tensor) -> Tensor:
        """The (bounded) likelihood of each element of ``values`` (N, C, ...), differentiable in ``values``."""
        perm = (1, 0, *range(2, values.dim()))
        v = values.permute(*perm).contiguous()
        shape = v.shape
        lik = self.likelihood_lower_bound(self._likelihood(v.reshape(shape[0], 1, -1))[0])
        return lik.reshape(shape).permute(*perm).contiguous()

    def loss(self) -> Tensor:
        """Auxiliary loss: puts ``quantiles`` at the tail-mass quantiles and the median of each density."""
        return torch.abs(self._logits_cumulative(self.quantiles, stop_gradient=True) - self.target).sum()

    def update(self, force: bool = False) -> bool:
        """Builds the CDF tables from the densities (when missing, or always with ``force``)."""
        if self._offset.numel() > 0 and not force:
            return False
        medians = self.quantiles[:, 0, 1]
        minima = torch.ceil(medians - self.quantiles[:, 0, 0]).int().clamp(min=0)
        maxima = torch.ceil(self.quantiles[:, 0, 2] - medians).int().clamp(min=0)
        start = medians - minima
        lengths = maxima + minima + 1
        samples = torch.arange(int(lengths.max()), device=start.device)[None, :] + start[:, None, None]
        pmf, lower, upper = self._likelihood(samples, stop_gradient=True)
        tail = torch.sigmoid(lower[:, 0, :1]) + torch.sigmoid(-upper[:, 0, -1:])
        self._set_tables(pmf[:, 0, :], tail, lengths, -minima)
        return True

    def _per_channel(self, n: int, size: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        """Table indexes (each element's channel) and medians, broadcast to (n, C, *size)."""
        c = self.channels
        view = (1, c) + (1,) * len(size)
        indexes = torch.arange(c, dtype=torch.int32, device=self.quantiles.device).view(view).expand(n, c, *size)
        medians = self.medians().detach().reshape(view).expand(n, c, *size)
        return indexes, medians

    def compress(self, x: Tensor) -> list[bytes]:
        """rANS strings of ``x`` (N, C, ...) rounded around the medians."""
        indexes, medians = self._per_channel(x.shape[0], tuple(x.shape[2:]))
        return self.encode(torch.round(x - medians).int(), indexes)

    def decompress(self, strings: list[bytes], size: tuple[int, ...]) -> Tensor:
        """Inverse of :meth:`compress` for a spatial ``size``."""
        indexes, medians = self._per_channel(len(strings), tuple(size))
        return self.decode(strings, indexes).to(medians.dtype) + medians


def _normal_cdf(x: Tensor) -> Tensor:
    return 0.5 * torch.erfc(-(2**-0.5) * x)


Tables = tuple[list[list[int]], list[int], list[int]]  # quantized CDFs, their lengths, offsets (rANS coder's)


def encode_parts(parts: list[tuple[str, Tables, list[int], list[int]]]) -> bytes:
    """One rANS string of several parts, each ``(name, tables, symbols, indexes)`` (indexes into its own
    tables). A :class:`SymbolReader` with the same tables under the same names reads the parts back in this
    order. One string pays the coder's flush (8 bytes and a 32-bit alignment) once, not once per part.
    (The bytes are those of one ``encode_with_indexes`` call over all the parts' tables laid end to end.)"""
    coder = extension("ans").BufferedRansEncoder()
    for _, tables, symbols, indexes in parts:
        coder.encode_with_indexes(symbols, indexes, *tables)
    return coder.flush()


class SymbolReader:
    """A rANS string read part by part: ``read(indexes, name)`` returns the next ``indexes.numel()``
    symbols (int32, shaped and placed like ``indexes``) coded with the tables called ``name``.
    :meth:`_EntropyModel.reader` reads a string of one model's tables (:meth:`_EntropyModel.encode` of the
    parts' concatenation); ``SymbolReader(string, {name: tables, ...})`` one of :func:`encode_parts`."""

    def __init__(self, string: bytes, tables: dict[str, Tables]) -> None:
        self._tables = dict(tables)
        self._coder = extension("ans").RansDecoder()
        self._coder.set_stream(string)

    def add(self, name: str, tables: Tables) -> None:
        """Tables for parts whose tables the string's earlier parts choose (e.g. a motion field's header)."""
        self._tables[name] = tables

    def read(self, indexes: Tensor, name: str = "") -> Tensor:
        values = self._coder.decode_stream(indexes.int().cpu().reshape(-1).tolist(), *self._tables[name])
        return torch.tensor(values, dtype=torch.int32).reshape(indexes.shape).to(indexes.device)


class GaussianConditional(_EntropyModel):
    """Gaussian conditional (Ballé et al. 2018): each element a Gaussian of given mean and scale,
    coded with the table of the next larger scale in ``scale_table``. Buffers ``scale_table``,
    ``scale_bound``; scales below ``scale_bound`` are raised to it."""

    scale_table: Tensor
    scale_bound: Tensor

    def __init__(self, scale_bound: float = 0.11) -> None:
        super().__init__()
        self.lower_bound_scale = LowerBound(scale_bound)
        self.register_buffer("scale_table", torch.zeros(0))
        self.register_buffer("scale_bound", torch.tensor([float(scale_bound)]))

    def forward(self, x: Tensor, scales: Tensor, means: Tensor | None = None,
                training: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(values, likelihoods)``: noisy in training, rounded around ``means`` else."""
        training = self.training if training is None else training
        out = self._noisy_or_rounded(x, training, means)
        return out, self.likelihood(out, scales, means)

    def likelihood(self, values: Tensor, scales: Tensor, means: Tensor | None = None) -> Tensor:
        """The (bounded) likelihood of each element of ``values``, differentiable in all three."""
        v = torch.abs(values - means if means is not None else values)
        s = self.lower_bound_scale(scales)
        return self.likelihood_lower_bound(_normal_cdf((0.5 - v) / s) - _normal_cdf((-0.5 - v) / s))

    def update_scale_table(self, table: Tensor, force: bool = False) -> bool:
        """Sets the scales and builds one CDF table per scale (when missing, or always with ``force``)."""
        if self._offset.numel() > 0 and not force:
            return False
        self.scale_table = torch.as_tensor(table, dtype=torch.float32).to(self.scale_table.device)
        # the tables cover +-(TAIL_MASS/2 quantile of the standard normal) scales around the mean
        multiplier = -float(torch.special.ndtri(torch.tensor(TAIL_MASS / 2, dtype=torch.float64)))
        center = torch.ceil(self.scale_table * multiplier).int()
        lengths = 2 * center + 1
        samples = torch.abs(torch.arange(int(lengths.max()), device=center.device).int() - center[:, None]).float()
        s = self.scale_table.unsqueeze(1).float()
        upper = _normal_cdf((0.5 - samples) / s)
        lower = _normal_cdf((-0.5 - samples) / s)
        self._set_tables(upper - lower, 2 * lower[:, :1], lengths, -center)
        return True

    def indexes(self, scales: Tensor) -> Tensor:
        """The table of each element: the smallest table scale >= its (bounded) scale, else the last."""
        return torch.searchsorted(self.scale_table[:-1].contiguous(), self.lower_bound_scale(scales).contiguous()).int()

    def compress(self, x: Tensor, indexes: Tensor, means: Tensor) -> list[bytes]:
        """rANS strings of ``x`` rounded around ``means``, coded with the tables ``indexes``."""
        return self.encode(torch.round(x - means).int(), indexes)

    def decompress(self, strings: list[bytes], indexes: Tensor) -> Tensor:
        """The integer symbols of ``strings`` (int32)."""
        return self.decode(strings, indexes)

"""``nvc-lite``: nvc's default model, small enough for a CPU, one set of weights for every quality.

- Intra frames: a mean-scale hyperprior image codec (Ballé et al. 2018, Minnen et al. 2018) with GDN.
- Inter frames: *conditional residual* coding. The encoder sees the current frame, the reference
  and their difference; the decoder predicts the frame as ``reference + correction`` where the
  correction is synthesized from the decoded latent fused with the reference; the latent's prior
  combines the hyperprior with a temporal prior computed from the reference. Weights trained with block
  motion (``motion`` in the config) first replace the reference by its block-motion-compensated
  prediction: integer vectors per block, found by the encoder and sent in the stream (:mod:`.motion`).
- Variable rate: per-quality channel gains on both latents (asymmetric gained VAE); each quality has
  its own rate-distortion weight ``lambdas[q]``.
- Spatial context (weights with ``context`` in their config): the latent is coded in two checkerboard
  halves, the second with entropy parameters refined from the first (He et al. 2021, :class:`_Context`).

The module is stateless: the reference frame lives in the codec session, never on the module.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from . import exact as exact_ops
from . import motion
from ..errors import ModelError
from ..ladder import DEFAULT_HYPER_REFINE, DEFAULT_INTER_REFINE, DEFAULT_INTRA_REFINE, QualityLadder
from ..entropy import SymbolReader, encode_parts
from .layers import (GDN, STRIPE_BYTES, Gains, HyperLatentCoder, LatentCoder, check_string, conv, conv_rows, count_macs,
                     deconv, one_thread, row_stripes, run_light, safe_string, same_halo, scale_table, ste_round)

# Frames above this many (padded) pixels run the float32 inference path in bounded memory (stripes).
LIGHT_PIXELS = 1 << 19

# Rate-distortion weights (on MSE of RGB in [0, 1] scaled by 255^2) of a fresh model's qualities 0..5 (the
# shipped weights carry their own ladder in their config: eight qualities since run 15).
DEFAULT_LAMBDAS = (0.004, 0.0075, 0.014, 0.026, 0.048, 0.09)

# Block motion (``motion`` in the config): the block sizes a model may use, the encoder's search radius.
# (Named here because NvcLite.__init__'s ``motion`` argument hides the module there.)
MOTION_BLOCKS = motion.BLOCKS
MOTION_RADIUS = 16
# the encoder's full (not coarse-to-fine) motion search radius on frames of up to LIGHT_PIXELS pixels
MOTION_FULL_RADIUS = 16
MAX_MOTION_RADIUS = motion.MAX_RADIUS
# motion search's cost per unit of vector distance, times lambdas[q] (see NvcLite.motion_penalty)
MOTION_PENALTY = 5e-7
# the units of the encoder's vectors: 1/MOTION_PRECISION pixel (see NvcLite.motion_precision)
MOTION_PRECISION = 2
# the encoder's overlapped block motion compensation: over block >> (4 - MOTION_OVERLAP) pixels of each edge
MOTION_OVERLAP = 2
# the radius training searches over its crops (they are small, and far matches are rare)
TRAIN_MOTION_RADIUS = 8

# Adam's step size for encoder-side latent refinement (NvcLite.refine_latent), in quantization steps.
REFINE_LR = 0.01
# Adam's step size for encoder-side hyper-latent refinement (NvcLite.refine_hyper), in quantization steps of z.
HYPER_REFINE_LR = 0.1


def _relaxed(t: Tensor, t_hat: Tensor, width: float, gen: torch.Generator) -> Tensor:
    """``t`` relaxed for a refinement's rate gradient: ``t_hat`` (rounded, straight through) plus ``width`` times
    its rounding error and uniform noise in [-0.5, 0.5) from ``gen`` (reproducible refinement)."""
    return t_hat + width * (t - t_hat + (torch.rand(t.shape, generator=gen, device=t.device, dtype=t.dtype) - 0.5))


def _bits(b: dict[str, Any], y: Tensor, scales: Tensor, means: Tensor, z: Tensor) -> Tensor:
    """Ideal bits of a branch's ``y`` under ``scales``/``means`` and of its ``z`` under the factorized prior."""
    return (-torch.log2(b["y"].gaussian_conditional.likelihood(y, scales, means)).sum()
            - torch.log2(b["z"].entropy_bottleneck.likelihood(z)).sum())


class _Hyper(nn.Module):
    """Hyper analysis/synthesis shared by the intra and inter branches (mean-scale outputs)."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__()
        self.h_a = nn.Sequential(
            conv(m, n, 3, 1), nn.LeakyReLU(inplace=True), conv(n, n, 5, 2), nn.LeakyReLU(inplace=True), conv(n, n, 5, 2)
        )
        self.h_s = nn.Sequential(
            deconv(n, m, 5, 2),
            nn.LeakyReLU(inplace=True),
            deconv(m, m * 3 // 2, 5, 2),
            nn.LeakyReLU(inplace=True),
            conv(m * 3 // 2, m * 2, 3, 1),
        )


def anchors(height: int, width: int, device: torch.device | None = None) -> Tensor:
    """The checkerboard's anchor positions of a ``height x width`` latent: ``(row + column)`` even."""
    r = torch.arange(height, device=device)[:, None]
    c = torch.arange(width, device=device)[None, :]
    return (r + c) % 2 == 0


class _Context(nn.Module):
    """Checkerboard spatial context (He et al. 2021): the entropy parameters of the non-anchor half of
    ``y`` are refined from the decoded anchor half (its 5x5 neighbourhood), so the decoder codes ``y`` in
    two passes. ``fuse``'s last layer starts at zero: a fresh context changes nothing until trained."""

    def __init__(self, m: int) -> None:
        super().__init__()
        self.conv = conv(m, 2 * m, 5, 1)
        self.fuse = nn.Sequential(conv(4 * m, 2 * m, 1, 1), nn.LeakyReLU(inplace=True), conv(2 * m, 2 * m, 1, 1))
        nn.init.zeros_(self.fuse[-1].weight)
        nn.init.zeros_(self.fuse[-1].bias)


class NvcLite(nn.Module):
    """The default intra + inter model. See the module docstring."""

    name = "nvc-lite"
    # Frames are padded to a multiple of this (two stride-2 stages of the hyperprior after four of y).
    alignment = 64
    trains_with_prefix = True  # training_loss honours a stage's ``prefix``, ``intra``, ``intra_offset`` (nvc.train.Stage)

    def __init__(self, n: int = 64, m: int = 96, c: int = 32, lambdas: tuple[float, ...] = DEFAULT_LAMBDAS,
                 motion: int = 0, motion_radius: int = MOTION_RADIUS, context: bool = False) -> None:
        """``motion``: block size of the P frames' block motion (0: none, the reference is used as is): the
        size the encoder (and training) uses; a decoder follows the size each frame's field states.
        ``context``: checkerboard spatial context on both branches' ``y`` (:class:`_Context`)."""
        super().__init__()
        if motion not in (0, *MOTION_BLOCKS):
            raise ModelError(f"nvc-lite: motion block size must be 0 or one of {MOTION_BLOCKS}, not {motion}")
        if not 1 <= motion_radius <= MAX_MOTION_RADIUS:
            raise ModelError(f"nvc-lite: motion radius must be 1..{MAX_MOTION_RADIUS}, not {motion_radius}")
        self.config = {"n": n, "m": m, "c": c, "lambdas": list(lambdas)}
        if motion:
            self.config.update(motion=motion, motion_radius=motion_radius)
        if context:
            self.config["context"] = True
        self.context = bool(context)
        self.motion, self.motion_radius = motion, motion_radius
        q = len(lambdas)
        self.register_buffer("lambdas", torch.tensor(lambdas, dtype=torch.float32), persistent=False)
        # Gains start at sqrt(lambda / geometric-mean lambda): the MSE-optimal quantization step scales
        # as lambda^-1/2, so each quality starts near its operating point.
        lam = torch.tensor(lambdas, dtype=torch.float64)
        y_init = (lam / lam.log().mean().exp()).sqrt()

        # ---- intra
        self.i_g_a = nn.Sequential(
            conv(3, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m)
        )
        self.i_g_s = nn.Sequential(
            deconv(m, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
            deconv(n, n), GDN(n, inverse=True), deconv(n, 3),
        )
        self.i_hyper = _Hyper(n, m)
        self.i_y_gain = Gains(q, m, y_init)
        self.i_z_gain = Gains(q, n)
        self.i_z = HyperLatentCoder(n)
        self.i_y = LatentCoder()
        self.i_ctx = _Context(m) if context else None

        # ---- inter
        self.p_g_a = nn.Sequential(
            conv(9, n), GDN(n), conv(n, n), GDN(n), conv(n, n), GDN(n), conv(n, m)
        )
        self.p_g_s = nn.Sequential(
            deconv(m, n), GDN(n, inverse=True), deconv(n, n), GDN(n, inverse=True),
            deconv(n, n), GDN(n, inverse=True), deconv(n, c),
        )
        self.p_fuse = nn.Sequential(
            conv(c + 3, c, 3, 1), nn.LeakyReLU(inplace=True), conv(c, c, 3, 1), nn.LeakyReLU(inplace=True), conv(c, 3, 3, 1)
        )
        self.p_temporal = nn.Sequential(
            conv(3, c), nn.LeakyReLU(inplace=True), conv(c, n), nn.LeakyReLU(inplace=True),
            conv(n, n), nn.LeakyReLU(inplace=True), conv(n, m),
        )
        self.p_params = nn.Sequential(
            conv(3 * m, 2 * m, 1, 1), nn.LeakyReLU(inplace=True), conv(2 * m, 2 * m, 1, 1),
            nn.LeakyReLU(inplace=True), conv(2 * m, 2 * m, 1, 1),
        )
        self.p_hyper = _Hyper(n, m)
        self.p_y_gain = Gains(q, m, y_init)
        self.p_z_gain = Gains(q, n)
        self.p_z = HyperLatentCoder(n)
        self.p_y = LatentCoder()
        self.p_ctx = _Context(m) if context else None

    @property
    def init_fresh(self) -> tuple[str, ...]:
        """Modules that may start untrained when training from weights without them (``init`` in a
        config): the context, which starts as a no-op."""
        return ("i_ctx.", "p_ctx.") if self.context else ()

    @property
    def substreams(self) -> int:
        """Substreams per frame (format 3.0): one rANS string of the motion field (its header, then its vectors;
        P frames with block motion), z and y."""
        return 1

    @property
    def legacy_substreams(self) -> int:
        """Substreams per frame in format 1.x: y, z, and with block motion the motion field."""
        return 3 if self.motion else 2

    def substream_count(self, major: int) -> int:
        """Substreams per frame in streams of format ``major``.x (2.0 had the motion field's 3-byte header
        apart, before the string; empty in I frames)."""
        return {1: self.legacy_substreams, 2: 2 if self.motion else 1}.get(major, self.substreams)

    @staticmethod
    def latent_shape(padded_height: int, padded_width: int) -> tuple[int, int]:
        """Spatial size of the hyper-latent z (what a frame payload's ``shape`` holds)."""
        return padded_height // 64, padded_width // 64

    # ------------------------------------------------------------------ helpers
    @property
    def qualities(self) -> int:
        return int(self.lambdas.numel())

    def _branch(self, inter: bool) -> dict[str, Any]:
        if inter:
            return {"g_a": self.p_g_a, "hyper": self.p_hyper, "yg": self.p_y_gain, "zg": self.p_z_gain,
                    "z": self.p_z, "y": self.p_y, "ctx": self.p_ctx}
        return {"g_a": self.i_g_a, "hyper": self.i_hyper, "yg": self.i_y_gain, "zg": self.i_z_gain,
                "z": self.i_z, "y": self.i_y, "ctx": self.i_ctx}

    def _analysis(self, x: Tensor, ref: Tensor | None, light: bool = False) -> Tensor:
        """The analysis transform; ``light``: inference, on large frames in cache-sized stripes (``run_light``)."""
        parts = [x] if ref is None else [x, ref, x - ref]
        seq = self.i_g_a if ref is None else self.p_g_a
        if light and x.shape[-2] * x.shape[-1] > LIGHT_PIXELS:
            return run_light(seq, parts, analysis=True)
        return seq(torch.cat(parts, dim=1) if len(parts) > 1 else x)

    def _temporal(self, ref: Tensor | None, temporal: Tensor | None = None) -> Tensor | None:
        """The reference's temporal prior for a loop of :meth:`_params` calls: ``p_temporal(ref)``, or the given
        ``temporal`` (already computed) as a normal tensor, since autograd cannot save inference-mode tensors;
        None without a reference."""
        if ref is None:
            return None
        return self.p_temporal(ref) if temporal is None else temporal.clone()

    def _params(self, hyper_out: Tensor, ref: Tensor | None, temporal: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Entropy parameters; ``temporal``: ``p_temporal(ref)`` if already computed."""
        if ref is not None:
            temporal = self.p_temporal(ref) if temporal is None else temporal
            hyper_out = self.p_params(torch.cat([hyper_out, temporal], dim=1))
        scales, means = hyper_out.chunk(2, dim=1)
        return scales, means

    @staticmethod
    def _context_params(b: dict[str, Any], y_anchor: Tensor, scales: Tensor, means: Tensor,
                        exact: bool = False) -> tuple[Tensor, Tensor]:
        """The entropy parameters with the non-anchor half refined by the context from ``y_anchor`` (the
        decoded anchors, zero elsewhere); anchors keep ``scales``/``means``. In EXACT mode every input is
        grid values (float32) and so are the results (a sum of two grid values below 2^8 is exact)."""
        a = anchors(y_anchor.shape[-2], y_anchor.shape[-1], y_anchor.device)
        if exact:
            ctx = exact_ops.run(b["ctx"].conv, y_anchor)
            delta = exact_ops.run_rows(b["ctx"].fuse, [scales, means, ctx])
        else:
            delta = b["ctx"].fuse(torch.cat([scales, means, b["ctx"].conv(y_anchor)], dim=1))
        ds, dm = delta.to(scales.dtype).chunk(2, dim=1)
        return torch.where(a, scales, scales + ds), torch.where(a, means, means + dm)

    def _train_params(self, b: dict[str, Any], y: Tensor, scales: Tensor, means: Tensor) -> tuple[Tensor, Tensor]:
        """Differentiable entropy parameters of ``y``: with a context, refined from the anchors rounded
        around their means (straight through), as a decoder sees them."""
        if b["ctx"] is None:
            return scales, means
        a = anchors(y.shape[-2], y.shape[-1], y.device)
        y_anchor = torch.where(a, ste_round(y - means) + means, torch.zeros_like(y))
        return self._context_params(b, y_anchor, scales, means)

    def _synthesis(self, y_hat: Tensor, ref: Tensor | None) -> Tensor:
        if ref is None:
            return self.i_g_s(y_hat)
        feat = self.p_g_s(y_hat)
        return ref + self.p_fuse(torch.cat([feat, ref], dim=1))

    # The decoder-side path (hyper synthesis -> entropy parameters -> synthesis), in float32 or in
    # device-independent fixed point (nvc.models.exact). Encoder and decoder both go through these.
    def _decode_params(self, b: dict[str, Any], z_hat: Tensor, ref: Tensor | None, q: Tensor,
                       exact: bool, temporal: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``temporal``: ``p_temporal(ref)`` if already computed (float32 only; EXACT computes its own)."""
        if not exact:
            return self._params(b["hyper"].h_s(b["zg"].invert(z_hat, q)), ref, temporal)
        hyper_out = exact_ops.run(b["hyper"].h_s, exact_ops.gain(z_hat, b["zg"].inverse[q]))
        if ref is not None:  # run()'s outputs are grid values (float32), and so is a decoded reference
            temporal = exact_ops.run(self.p_temporal, exact_ops.to_float32(ref), grid=True)
            hyper_out = exact_ops.run_rows(self.p_params, [hyper_out, temporal])
        scales, means = hyper_out.chunk(2, dim=1)
        return scales, means

    def _decode_frame(self, b: dict[str, Any], y_hat: Tensor, ref: Tensor | None, q: Tensor,
                      exact: bool) -> Tensor:
        if not exact:
            y = b["yg"].invert(y_hat, q)
            if y.shape[-2] * y.shape[-1] * 256 <= LIGHT_PIXELS:
                return self._synthesis(y, ref)
            # large frames: the same layers in bounded memory (float32 results equal up to rounding)
            if ref is None:
                return run_light(self.i_g_s, y)
            # the full-resolution features are made stripe by stripe from the last layer's input
            head = run_light(self.p_g_s[:-1], y)
            last = self.p_g_s[-1]
            feat = lambda a, z: conv_rows(last, head, a, z)  # noqa: E731
            step = max(16, STRIPE_BYTES // (100 * ref.shape[3] * 4))
            return ref + row_stripes(self.p_fuse, [feat, ref], same_halo(self.p_fuse) or 0, step)
        y = exact_ops.gain(y_hat, b["yg"].inverse[q])
        if ref is None:
            return exact_ops.run(self.i_g_s, y)
        feat = exact_ops.last_layer_rows(self.p_g_s, y)  # full-resolution features, made stripe by stripe
        ref = exact_ops.to_float32(ref)
        # grid values: |ref + correction| < 2^9 on the 2^-15 grid fits float32's 24 bits, so this sum is exact
        return ref + exact_ops.run_rows(self.p_fuse, [feat, ref])

    @staticmethod
    def _qtensor(q: int | Tensor, batch: int, device: torch.device) -> Tensor:
        if isinstance(q, Tensor):
            return q.to(device=device, dtype=torch.long)
        return torch.full((batch,), int(q), dtype=torch.long, device=device)

    # ------------------------------------------------------------------ training contract
    def forward(self, x: Tensor, ref: Tensor | None = None, quality: int | Tensor = 0) -> dict[str, Any]:
        """Differentiable pass: ``{"x_hat", "likelihoods": {"y", "z"}}`` (intra when ``ref`` is None)."""
        b = self._branch(ref is not None)
        q = self._qtensor(quality, x.shape[0], x.device)
        y = b["yg"](self._analysis(x, ref), q)
        z = b["zg"](b["hyper"].h_a(y), q)
        with torch.autocast(device_type=x.device.type, enabled=False):
            z_hat, z_lik = b["z"].train_forward(z.float())
        hyper_out = b["hyper"].h_s(b["zg"].invert(z_hat, q))
        scales, means = self._params(hyper_out, ref)
        with torch.autocast(device_type=x.device.type, enabled=False):
            scales, means = self._train_params(b, y.float(), scales.float(), means.float())
            y_hat, y_lik = b["y"].train_forward(y.float(), scales, means)
        x_hat = self._synthesis(b["yg"].invert(y_hat, q), ref)
        return {"x_hat": x_hat, "likelihoods": {"y": y_lik, "z": z_lik}}

    def _fitting_keys(self, state: dict[str, Tensor]) -> set[str]:
        """This model's tensor names without the entropy tables, after checking ``state`` has exactly them
        (before any shape is read); ModelError otherwise."""
        from . import _TABLES

        want = {k for k in self.state_dict() if not k.endswith(_TABLES)}
        have = {k for k in state if not k.endswith(_TABLES)}
        if want != have:
            raise ModelError(f"weights do not fit nvc-lite (missing {sorted(want - have)[:3]}, "
                             f"unexpected {sorted(have - want)[:3]})")
        return want

    def embed(self, state: dict[str, Tensor]) -> None:
        """Loads the trained weights of an nvc-lite with fewer latent channels (``m``) into this one.

        The result codes the old latent channels exactly as before; the new channels start out unused:
        the analysis makes them from fresh weights, the synthesis and every layer that reads them get
        zero weights for them, and their priors copy the scales of old channels with zero means. So the
        reconstruction is the old model's, and training can start from it (``init_widen`` in a config).
        Widths derived from ``m`` (1.5m, 2m = scales | means, 3m = scales | means | temporal) map by
        blocks; ``n``, ``c`` and the qualities must match.
        """
        own = self.state_dict()
        want = self._fitting_keys(state)
        m_old = state["i_y_gain.gain"].shape[1]
        m_new = self.config["m"]
        if m_old > m_new:
            raise ModelError(f"cannot embed {m_old} latent channels into {m_new}")
        blocks = {2 * m_old: 2, 3 * m_old: 3}  # scales | means (| temporal): old channels in each block
        if {self.config["n"], self.config["c"]} & set(blocks):
            raise ModelError(f"cannot embed {m_old} latent channels: n or c equals a multiple of m")

        def index(size: int) -> Tensor:
            """Where an old axis of ``size`` entries lands in the new one (m, 1.5m, n, c: in front)."""
            k = blocks.get(size)
            if k is None:
                return torch.arange(size)
            return torch.cat([torch.arange(m_old) + i * m_new for i in range(k)])

        last_prior = {"i_hyper.h_s.4", "p_hyper.h_s.4", "p_params.4"}  # their outputs are scales | means
        new = {}
        for key, fresh in own.items():
            if key not in want:
                continue
            old = state[key]
            if old.shape == fresh.shape:
                new[key] = old.clone()
                continue
            mod_name, kind = key.rsplit(".", 1)
            mod = self.get_submodule(mod_name)
            t = fresh.clone()
            if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)) and kind == "weight":
                out_dim = 1 if isinstance(mod, nn.ConvTranspose2d) else 0
                in_dim = 1 - out_dim
                if old.shape[in_dim] != t.shape[in_dim]:  # inputs from new channels: not read yet
                    keep = torch.zeros(t.shape[in_dim], dtype=torch.bool)
                    keep[index(old.shape[in_dim])] = True
                    t.index_fill_(in_dim, (~keep).nonzero().flatten(), 0.0)
            if mod_name in last_prior:  # new channels' scales copy old ones (with old inputs); means are 0
                src = torch.arange(m_old, m_new) % m_old
                t.index_fill_(0, torch.arange(m_new, 2 * m_new), 0.0)
                t[torch.meshgrid(torch.arange(m_old, m_new), *[index(s) for s in old.shape[1:]],
                                 indexing="ij")] = old.index_select(0, src)
            if isinstance(mod, Gains):  # new channels take the gains of the old channel they copy
                src = torch.arange(t.shape[1]) % m_old
                t = old.index_select(1, src).clone()
            t[torch.meshgrid(*[index(s) for s in old.shape], indexing="ij")] = old  # old entries, new places
            new[key] = t
        self.load_state_dict(new, strict=False)  # every key but the entropy tables (rebuilt by update())

    def requalify(self, state: dict[str, Tensor], lambdas: list[float] | tuple[float, ...]) -> None:
        """Loads the weights of an nvc-lite trained for other qualities (``lambdas``) into this one.

        Every tensor but the gain vectors is copied. Each of this model's qualities takes the gains of the old
        quality with the same lambda; a new lambda gets, per channel, the least-squares line through the
        log-magnitudes of the three old qualities nearest to it in log-lambda (gains scale about as
        lambda^1/2, the MSE-optimal quantization step). Gains are stored as magnitudes (the model reads |g|).
        So the old qualities code exactly as before, and new ones start near their operating points
        (``init_lambdas`` in a training config)."""
        old = [float(v) for v in lambdas]
        new_l = [float(v) for v in self.lambdas.tolist()]
        if len(old) < 3 or any(b <= a for a, b in zip(old, old[1:])) or old[0] <= 0:
            raise ModelError(f"requalify: need 3 or more increasing positive lambdas, not {old}")
        want = self._fitting_keys(state)
        log_old = torch.tensor(old, dtype=torch.float64).log()
        out: dict[str, Tensor] = {}
        for key in want:
            t = state[key]
            if not (key.endswith("_gain.gain") or key.endswith("_gain.inverse")):
                out[key] = t.clone()
                continue
            if t.shape[0] != len(old):
                raise ModelError(f"requalify: {key} has {t.shape[0]} qualities, not {len(old)}")
            mag = t.double().abs()
            rows = []
            for lam in new_l:
                same = [i for i, v in enumerate(old) if math.isclose(v, lam, rel_tol=1e-6)]
                if same:
                    rows.append(mag[same[0]])
                    continue
                near = (log_old - math.log(lam)).abs().argsort()[:3].sort().values
                x, y = log_old[near], mag[near].log()
                xm, ym = x.mean(), y.mean(0)
                slope = ((x - xm)[:, None] * (y - ym)).sum(0) / ((x - xm) ** 2).sum()
                rows.append(torch.exp(ym + slope * (math.log(lam) - xm)))
            out[key] = torch.stack(rows).to(t.dtype).contiguous()
        self.load_state_dict(out, strict=False)  # every key but the entropy tables (rebuilt by update())

    def kmac_per_pixel(self, inter: bool = True, side: str = "decode") -> float:
        """Multiply-accumulates per pixel (thousands) of one frame, counted with hooks on a 256x256 pass.

        ``side="decode"`` counts the modules the decoder runs (hyper synthesis, priors, synthesis);
        ``"encode"`` adds the analysis transforms. GDN layers count as a 1x1 convolution.
        """
        b = "p_" if inter else "i_"
        dec = [b + "hyper.h_s", b + "g_s", b + "ctx"] + (["p_temporal", "p_params", "p_fuse"] if inter else [])
        enc = [b + "g_a", b + "hyper.h_a"]
        wanted = dec + (enc if side == "encode" else [])
        mods = [mod for name, mod in self.named_modules() if any(name.startswith(w + ".") or name == w for w in wanted)]
        x = torch.rand(1, 3, 256, 256, device=self.lambdas.device)
        with torch.no_grad():
            macs = count_macs(mods, lambda: self.forward(x, ref=x if inter else None, quality=0))
        return macs / (256 * 256) / 1000.0

    def aux_loss(self) -> Tensor:
        return self.i_z.entropy_bottleneck.loss() + self.p_z.entropy_bottleneck.loss()

    def training_loss(self, clip: Tensor, quality: Tensor, stage: Any = None) -> dict[str, Tensor]:
        """Cascaded loss over a (B, T, 3, H, W) clip: intra frame 0, inter frames 1..T-1, each predicted
        from the previous reconstruction; per-sample quality ``quality`` (B,). The mean over frames and
        samples of ``lambdas[q] * 255^2 * MSE + bpp`` -> ``{"loss", "bpp", "mse"}``.

        ``stage.prefix`` (if any): the first that many frames are coded without gradient and left out of
        the loss, so the loss's frames are predicted from a reference that has already drifted.
        ``stage.intra``: frame 0 (the I frame) is in the loss behind a prefix too; ``stage.intra_offset``:
        it is coded that many qualities higher (up to the top), as the encoder's ladder does;
        ``stage.boost_period`` and ``stage.boost``: the P frames at positions ``boost_period``, 2 * ``boost_period``,
        ... of the clip (a GoP from its I frame) are coded ``boost`` qualities higher, up to the top, as the
        ladder's period and boost code them."""
        b, t, _, h, w = clip.shape
        skip = int(getattr(stage, "prefix", 0))
        if not 0 <= skip < t:
            raise ModelError(f"a stage prefix of {skip} leaves no frame of {t} in the loss")
        intra = bool(getattr(stage, "intra", False))
        # each frame's quality offset by its GoP position, as the encoder's ladder gives it
        top = self.qualities - 1
        ladder = QualityLadder(int(getattr(stage, "intra_offset", 0)), int(getattr(stage, "boost_period", 0)),
                               int(getattr(stage, "boost", 0)))
        ref = None
        total = clip.new_zeros(())

        def predict(x: Tensor, ref: Tensor | None, q: Tensor) -> Tensor | None:
            """The P frame's reference: block-motion compensated against the source when the model has motion."""
            if ref is None or not self.motion:
                return ref
            radius = min(self.motion_radius, TRAIN_MOTION_RADIUS)
            mv = motion.estimate(x, ref, self.motion, radius, self.motion_penalty(q),
                                 precision=self.motion_precision)
            return motion.compensate(ref, mv, self.motion, self.motion_precision, self.motion_overlap)

        bpp_sum, mse_sum, n = clip.new_zeros(()), clip.new_zeros(()), 0
        for i in range(t):
            x = clip[:, i]
            q = (quality + ladder.quality(0, i, top)).clamp(max=top)
            if i < skip and not (i == 0 and intra):
                with torch.no_grad():
                    ref = self(x, ref=predict(x, ref, q), quality=q)["x_hat"].float().clamp(0, 1)
                continue
            out = self(x, ref=predict(x, ref, q), quality=q)
            x_hat = out["x_hat"].float()
            mse = ((x_hat - x) ** 2).mean(dim=(1, 2, 3))
            bpp = sum((-torch.log2(lik)).sum(dim=(1, 2, 3)) for lik in out["likelihoods"].values()) / (h * w)
            total = total + (self.lambdas[q] * 255.0**2 * mse + bpp).mean()
            bpp_sum = bpp_sum + bpp.mean().detach()
            mse_sum = mse_sum + mse.mean().detach()
            n += 1
            # behind a prefix the I frame's gradient stops at its reconstruction
            ref = x_hat.clamp(0, 1) if i >= skip else x_hat.detach().clamp(0, 1)
        return {"loss": total / n, "bpp": bpp_sum / n, "mse": mse_sum / n}

    # ------------------------------------------------------------------ coding contract
    def update(self, force: bool = True) -> None:
        """Builds the entropy coders' CDF tables (call after loading weights)."""
        for branch in (False, True):
            b = self._branch(branch)
            b["z"].entropy_bottleneck.update(force=force)
            b["y"].gaussian_conditional.update_scale_table(scale_table(), force=force)

    def refine_latent(self, x: Tensor, ref: Tensor | None, quality: int, steps: int,
                      visible: tuple[int, int] | None = None, lr: float = REFINE_LR, seed: int = 0,
                      start: Tensor | None = None, temporal: Tensor | None = None) -> Tensor:
        """Encoder-side refinement: the latent ``y`` (after its gain) that codes ``x`` at a lower
        ``lambdas[q] * 255^2 * MSE + bpp`` than the analysis transform's, found by ``steps`` Adam steps.

        The gradient comes from a relaxed rate (uniform noise whose width anneals from 1 to 0, so the last
        steps see true rounding) and a distortion through straight-through rounding, over the ``visible``
        (height, width) top-left part only (padding is not shown). Every step also evaluates the true
        cost (rounded latents, their likelihoods); the latent with the lowest one is returned, so the
        frame never costs more than without refinement. Deterministic for a given ``seed``; the decoder
        is unchanged (it never sees how ``y`` was found). ``start``: the latent to start from (default: the
        analysis transform's), e.g. :meth:`settle_padding_latent`'s; ``temporal``: ``p_temporal(ref)`` if already
        computed."""
        b = self._branch(ref is not None)
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone()
            ref = None if ref is None else ref.detach().clone()
            q = self._qtensor(quality, x.shape[0], x.device)
            with torch.no_grad():
                y0 = b["yg"](self._analysis(x, ref), q) if start is None else start.detach().clone()
                temporal = self._temporal(ref, temporal)  # the same at every step
            y = y0.clone().requires_grad_(True)
            opt = torch.optim.Adam([y], lr=lr)
            gen = torch.Generator(device=x.device).manual_seed(seed)
            lam = float(self.lambdas[quality]) * 255.0**2
            hh, ww = visible or x.shape[-2:]
            pixels = x.shape[-2] * x.shape[-1]
            medians = b["z"].entropy_bottleneck.medians().detach()

            best, best_y = float("inf"), y0
            for it in range(steps + 1):
                z = self._hyper_latent(y, ref, q)
                z_hat = ste_round(z - medians) + medians
                scales, means = self._params(b["hyper"].h_s(b["zg"].invert(z_hat, q)), ref, temporal)
                scales, means = self._train_params(b, y, scales, means)
                y_hat = ste_round(y - means) + means
                x_hat = self._synthesis(b["yg"].invert(y_hat, q), ref).clamp(0, 1)
                # squared error summed over the visible pixels, per pixel of the padded frame (as bpp)
                sse = ((x_hat - x)[..., :hh, :ww] ** 2).sum() / (3 * pixels)
                with torch.no_grad():
                    cost = float(lam * sse + _bits(b, y_hat, scales, means, z_hat) / pixels)
                if cost < best:
                    best, best_y = cost, y.detach().clone()
                if it == steps:
                    break
                a = 1.0 - it / steps  # noise width: 1 -> 0
                y_n = _relaxed(y, y_hat, a, gen)
                z_n = _relaxed(z, z_hat, a, gen)
                (grad,) = torch.autograd.grad(lam * sse + _bits(b, y_n, scales, means, z_n) / pixels, [y])
                y.grad = grad
                opt.step()
        return best_y

    def refine_hyper(self, y: Tensor, ref: Tensor | None, quality: int, steps: int, lr: float = HYPER_REFINE_LR,
                     seed: int = 0, temporal: Tensor | None = None) -> Tensor:
        """Encoder-side hyper-latent refinement: the ``z`` (after its gain, before rounding) that codes the
        given latent ``y`` (after its gain) in fewer bits than ``h_a(y)``, found by ``steps`` Adam steps on
        the rate of ``z`` and of ``y`` under the entropy parameters ``z`` gives (``y`` stays as it is).

        Why: the hyper-analysis can land a hyper-latent just on the wrong side of a rounding step, and a
        hyper-synthesis input with a large learned inverse gain then predicts means far from ``y``, so that
        every latent costs bits. Only the entropy model runs (at 1/16 and 1/64 of the frame's resolution),
        not the synthesis. The rate is relaxed as in :meth:`refine_latent` (noise annealed from 1 to 0),
        every step evaluates the true rate (rounded ``z``, ``y`` rounded around its means), and the ``z``
        with the lowest one is returned: never more bits than ``h_a(y)``'s. Reconstruction changes only
        by where ``y`` rounds around the new means. The decoder is unchanged. ``temporal``: ``p_temporal(ref)``
        if already computed."""
        b = self._branch(ref is not None)
        with torch.inference_mode(False), torch.enable_grad():
            y = y.detach().clone()
            q = self._qtensor(quality, y.shape[0], y.device)
            medians = b["z"].entropy_bottleneck.medians().detach()
            with torch.no_grad():
                z0 = self._hyper_latent(y, ref, q)
                temporal = self._temporal(ref, temporal)

            def rate(z_in: Tensor) -> Tensor:
                """Bits of ``z_in`` (rounded, or relaxed) and of y under the parameters it gives."""
                scales, means = self._params(b["hyper"].h_s(b["zg"].invert(z_in, q)), ref, temporal)
                scales, means = self._train_params(b, y, scales, means)
                y_hat = ste_round(y - means) + means
                return _bits(b, y_hat, scales, means, z_in)

            with torch.no_grad():
                best, best_z = float(rate(torch.round(z0 - medians) + medians)), z0
            z = z0.clone().requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            gen = torch.Generator(device=y.device).manual_seed(seed)
            for it in range(steps):
                z_hat = ste_round(z - medians) + medians
                w = 1.0 - it / steps  # noise width: 1 -> 0
                (grad,) = torch.autograd.grad(rate(_relaxed(z, z_hat, w, gen)) / y.numel(), [z])
                z.grad = grad
                opt.step()
                with torch.no_grad():
                    bits = float(rate(torch.round(z - medians) + medians))
                if bits < best:
                    best, best_z = bits, z.detach().clone()
        return best_z

    @torch.inference_mode()
    def _latent(self, x: Tensor, ref: Tensor | None, quality: int | Tensor) -> Tensor:
        """The analysis transform's latent ``y`` of ``x`` after its gain (memory-light on large frames)."""
        q = self._qtensor(quality, x.shape[0], x.device)
        return self._branch(ref is not None)["yg"](self._analysis(x, ref, light=True), q)

    def _hyper_latent(self, y: Tensor, ref: Tensor | None, quality: int | Tensor) -> Tensor:
        """The hyper-analysis's ``z`` of the latent ``y`` after its gain (what :meth:`refine_hyper` starts from)."""
        b = self._branch(ref is not None)
        return b["zg"](b["hyper"].h_a(y), self._qtensor(quality, y.shape[0], y.device))

    @torch.inference_mode()
    def compress(self, x: Tensor, ref: Tensor | None = None, quality: int = 0, exact: bool = False,
                 y: Tensor | None = None, joint: bool = False, lead: motion.FieldCode | None = None,
                 z: Tensor | None = None, temporal: Tensor | None = None) -> dict[str, Any]:
        """Codes one padded frame (1, 3, H, W): ``{"strings": [y, z], "shape": z size, "x_hat"}``.

        ``joint``: one rANS string instead, ``"strings": [[yz]]`` (the layout of a frame since format 2.0: ``z``'s
        symbols, then ``y``'s, in one string, after ``lead``'s: a motion field's header and vectors).
        ``x_hat`` is the reconstruction the decoder will compute, bit for bit: on the same device, or on
        any device with ``exact=True`` (fixed-point decoder path, see :mod:`nvc.models.exact`).
        ``y``: the latent to code (from :meth:`refine_latent`) instead of the analysis transform's; ``z``: the
        hyper-latent to code (from :meth:`refine_hyper`) instead of the hyper-analysis transform's; ``temporal``:
        ``p_temporal(ref)`` if already computed (used by the float32 path only).
        ``ref`` is the reference as the inter branch sees it (with block motion: already compensated;
        :meth:`compress_frame` finds, codes and applies the motion).
        """
        b = self._branch(ref is not None)
        q = self._qtensor(quality, x.shape[0], x.device)
        if y is None:
            y = self._latent(x, ref, q)
        if z is None:
            z = self._hyper_latent(y, ref, q)
        if joint:
            if x.shape[0] != 1:
                raise ValueError("a joint string codes one frame")
            z_sym, z_idx, z_hat = b["z"].code(z)
        else:
            z_strings, z_hat = b["z"].compress(z)
        scales, means = self._decode_params(b, z_hat, ref, q, exact, temporal)
        first = refine = None
        if b["ctx"] is not None:  # checkerboard: the anchors, then the rest with parameters refined from them
            first = anchors(y.shape[-2], y.shape[-1], y.device)
            refine = lambda y_a: self._context_params(b, y_a, scales, means, exact)  # noqa: E731
        if joint:
            y_sym, y_idx, y_hat = b["y"].code(y, scales, means, first=first, refine=refine)
            parts = [] if lead is None else [("field", motion.header_tables(), motion.header_symbols(lead.header),
                                              list(motion.HEADER_INDEXES)), ("motion", lead.tables, lead.symbols, lead.indexes)]
            t = self._latent_tables(b)
            parts += [("z", t["z"], z_sym, z_idx), ("y", t["y"], y_sym[0].tolist(), y_idx[0].tolist())]
            string = encode_parts(parts)
            check_string(string, sum(len(p[2]) for p in parts))  # never write what a decoder refuses
            strings = [[string]]
        else:
            y_strings, y_hat = b["y"].compress(y, scales, means, first=first, refine=refine)
            strings = [y_strings, z_strings]
        x_hat = self._decode_frame(b, y_hat, ref, q, exact)
        return {"strings": strings, "shape": tuple(z.shape[-2:]), "x_hat": x_hat}

    @staticmethod
    def _latent_tables(b: dict[str, Any]) -> dict[str, Any]:
        """A branch's tables by the names its parts have in a frame's one rANS string (after "motion")."""
        return {"z": b["z"].entropy_bottleneck.tables(), "y": b["y"].gaussian_conditional.tables()}

    # ------------------------------------------------------------------ frame contract (nvc.models.base)
    exact_capable = True  # supports the device-independent numeric mode
    context_is_frame = True  # the context is the padded reconstruction (the encoder pads P frames from it)

    refinable = True  # compress_frame takes ``refine`` (steps of refine_latent) and ``visible``

    def compress_frame(self, x: Tensor, ctx: Tensor | None, quality: int, exact: bool = False,
                       refine: int | None = None, visible: tuple[int, int] | None = None, joint: bool = True,
                       ) -> tuple[list[bytes], tuple[int, ...], Tensor, Tensor]:
        """``refine``: refinement steps (:meth:`refine_latent`; 0: none, not even :attr:`hyper_refine`'s);
        None: the encoder's defaults, :attr:`intra_refine` for I frames and :attr:`inter_refine` for P frames of
        up to ``LIGHT_PIXELS`` pixels (larger frames keep the memory-light path: none). Then, unless ``refine``
        is 0, :attr:`hyper_refine` steps of :meth:`refine_hyper` on every frame.

        ``joint`` (format 3.0's layout): the strings are ``[joint string]``, which holds the motion field
        (P frames with block motion: its header, then its vectors), ``z`` and ``y``. Without: format 1.x's
        ``[y, z]`` and, with block motion, ``[y, z, field]`` (what DVC's nvc-coded I frames still carry)."""
        ref, field, lead = ctx, b"", None
        light = x.shape[-2] * x.shape[-1] <= LIGHT_PIXELS  # the encoder's heavier choices apply up to this size
        if self.motion and ctx is not None:  # P frames: find, code and apply the block motion
            with one_thread(x.device):  # an encoder's float32 choice, as below
                mv = motion.estimate(x, ctx, self.motion, self.motion_radius, penalty=self.motion_penalty(quality),
                                     precision=self.motion_precision,
                                     full=self.motion_full_radius if light else motion.FULL_SEARCH_RADIUS)
            lead = motion.code_field(mv, self.motion, self.motion_precision, self.motion_overlap)
            field = b"" if joint else motion.field_bytes(lead)
            ref = motion.compensate(ctx, mv, self.motion, self.motion_precision, self.motion_overlap)
        settle = visible is not None and self.settle_padding
        hyper = 0 if refine == 0 else self.hyper_refine
        if refine is None:
            refine = 0 if not light else self.intra_refine if ctx is None else self.inter_refine
        temporal = None
        if ref is not None and not exact:  # a float32 stream's prior, computed as its decoder will
            with torch.inference_mode():
                temporal = self.p_temporal(ref)
        # the encoder's float32 choices on one thread, so that the bytes do not follow the thread count (for a
        # float32 stream, nvc.codec runs the whole model on one thread)
        with one_thread(x.device), torch.inference_mode():
            y = z = None
            # the reference's temporal prior, computed once for the float32 steps below (where one of them runs
            # for sure: settling alone computes it only if the frame has padding to settle)
            if ref is not None and temporal is None and (refine > 0 or hyper > 0):
                temporal = self.p_temporal(ref)
            if settle:
                y = self.settle_padding_latent(x, ref, quality, visible, temporal)
            if refine > 0:
                y = self.refine_latent(x, ref, quality, refine, visible, start=y, temporal=temporal)
            if y is None:
                y = self._latent(x, ref, quality)
            if hyper > 0:
                z = self.refine_hyper(y, ref, quality, hyper, temporal=temporal)
            else:
                z = self._hyper_latent(y, ref, quality)
        out = self.compress(x, ref=ref, quality=quality, exact=exact, y=y, joint=joint, lead=lead, z=z,
                            temporal=temporal)
        x_hat = out["x_hat"].clamp(0.0, 1.0)
        strings = [s[0] for s in out["strings"]]
        if self.motion and not joint:
            strings = [*strings, field]
        return strings, tuple(out["shape"]), x_hat, x_hat

    # the encoder's default choices (compress_frame's refine=None): refinement steps for every I frame and
    # every P frame of up to LIGHT_PIXELS pixels, where the full-memory path runs anyway (the model card has
    # their measurements on training clips)
    intra_refine: int = DEFAULT_INTRA_REFINE
    inter_refine: int = DEFAULT_INTER_REFINE
    # the encoder's choice: refine_hyper steps on every frame (0: code h_a(y) as it is), unless compress_frame's
    # ``refine`` is 0 (no refinement at all: the fast path)
    hyper_refine: int = DEFAULT_HYPER_REFINE
    # the encoder's choice: latent positions that only cover padding, settle_margin positions or more past the
    # visible part, code their predicted means (settle_padding_latent)
    settle_padding: bool = True
    settle_margin: int = 1

    @torch.inference_mode()
    def settle_padding_latent(self, x: Tensor, ref: Tensor | None, quality: int,
                              visible: tuple[int, int], temporal: Tensor | None = None) -> Tensor | None:
        """The analysis transform's ``y`` with every position whose 16x16 block lies wholly in
        the padding (right of or below the ``visible`` (height, width) part), ``settle_margin`` positions or
        more away from it, set to its predicted mean. (The first ring of padding positions, next to the
        visible part, shapes the visible edge through the synthesis: settling it cost more than it saved.)

        The decoder crops the padding away, yet the analysis codes the replicated edge there like any
        texture. A latent at its mean codes the likeliest symbol (residual 0), so those positions cost
        almost nothing; the visible pixels they touch through the synthesis change a little. Twice: the
        hyper-latent is recomputed from the settled ``y`` (as :meth:`compress` will), then the means
        again; with a context the non-anchors take the means refined from the settled anchors. The means
        come from the float32 path, also for EXACT streams: the fixed-point means differ by far less than
        the half step that would change a symbol. Frames with no such position return None (code the
        analysis' latent as it is). ``temporal``: ``p_temporal(ref)`` if already computed."""
        stride = 16  # y's positions per pixel, each way (four stride-2 stages)
        hh, ww = x.shape[-2] // stride, x.shape[-1] // stride
        k = self.settle_margin
        rows = torch.arange(hh, device=x.device)[:, None] * stride >= visible[0] + k * stride
        cols = torch.arange(ww, device=x.device)[None, :] * stride >= visible[1] + k * stride
        pad = rows | cols
        if not bool(pad.any()):
            return None
        b = self._branch(ref is not None)
        q = self._qtensor(quality, x.shape[0], x.device)
        y = self._latent(x, ref, q)
        a = anchors(hh, ww, y.device)
        medians = b["z"].entropy_bottleneck.medians().detach()
        temporal = self._temporal(ref, temporal)
        for _ in range(2):
            z = self._hyper_latent(y, ref, q)
            z_hat = torch.round(z - medians) + medians
            scales, means = self._params(b["hyper"].h_s(b["zg"].invert(z_hat, q)), ref, temporal)
            if b["ctx"] is None:
                y = torch.where(pad, means, y)
                continue
            y = torch.where(pad & a, means, y)
            y_anchor = torch.where(a, torch.round(y - means) + means, torch.zeros_like(y))
            _, refined = self._context_params(b, y_anchor, scales, means)
            y = torch.where(pad & ~a, refined, y)
        return y

    motion_penalty_k: float = MOTION_PENALTY  # the encoder's choice (see motion_penalty)
    motion_precision: int = MOTION_PRECISION  # the encoder's choice: vectors in 1/motion_precision pixel
    motion_overlap: int = MOTION_OVERLAP  # the encoder's choice: overlapped compensation (motion.compensate)
    # the encoder's choice: on P frames of up to LIGHT_PIXELS pixels, the motion search tries every displacement
    # within this radius (motion.estimate's ``full``); larger frames search coarse to fine past 8 pixels
    motion_full_radius: int = MOTION_FULL_RADIUS

    def encoder_choices(self) -> dict[str, Any]:
        """The encoder's choices that change its bytes but not the format (e.g. for a benchmark's protocol)."""
        out: dict[str, Any] = {"settle_padding": self.settle_padding, "settle_margin": self.settle_margin,
                               "intra_refine": self.intra_refine, "inter_refine": self.inter_refine,
                               "hyper_refine": self.hyper_refine}
        if self.motion:
            out.update(motion_block=self.motion, motion_radius=self.motion_radius, motion_penalty_k=self.motion_penalty_k,
                       motion_full_radius=self.motion_full_radius,
                       motion_precision=self.motion_precision, motion_overlap=self.motion_overlap)
        return out

    def motion_penalty(self, quality: int | Tensor) -> float | Tensor:
        """Motion search's cost per unit of vector distance (in mean squared error of [0, 1] luma): in
        proportion to the bits a vector costs over the weight of distortion at ``quality`` (a (B,) tensor
        of per-sample qualities in training gives a (B, 1, 1) tensor)."""
        if isinstance(quality, Tensor):
            return (self.motion_penalty_k / self.lambdas[quality]).view(-1, 1, 1)
        return self.motion_penalty_k / float(self.lambdas[quality])

    def decompress_frame(self, strings: list[bytes], shape: tuple[int, ...], ctx: Tensor | None,
                         quality: int, exact: bool = False) -> tuple[Tensor, Tensor]:
        """Any layout of :meth:`compress_frame`'s strings, told apart by their count: format 3.0's one string,
        2.0's (the motion field's 3-byte header apart, before the string, with block motion) or 1.x's
        (:attr:`legacy_substreams`)."""
        ref, size = ctx, (int(shape[0]), int(shape[1]))
        apart = self.motion and len(strings) == 2  # 2.0 with block motion
        if len(strings) == 1 or apart:  # one string: the motion field's vectors (2.0: after its header), z, y
            field = strings[0] if apart else b""
            if ctx is None and field:
                raise ValueError("an I frame carries a motion field")
            b = self._branch(ctx is not None)
            count = b["z"].symbols(size) + self.config["m"] * 16 * size[0] * size[1]  # y: 4x z's size each way
            tables = self._latent_tables(b)
            if not (self.motion and ctx is not None):
                reader = SymbolReader(safe_string(strings[-1], count), tables)
            elif apart:
                h = motion.read_header(field, ctx.shape[-2], ctx.shape[-1], MOTION_BLOCKS)
                reader = SymbolReader(safe_string(strings[-1], count + h.indexes.numel()), tables)
            else:  # 3.0: the header's symbols first; the smallest blocks bound the vectors' count until it is read
                h_most, w_most = (ctx.shape[-2] // min(MOTION_BLOCKS), ctx.shape[-1] // min(MOTION_BLOCKS))
                most = count + motion.HEADER_SYMBOLS + 2 * h_most * w_most
                reader = SymbolReader(safe_string(strings[-1], most), {**tables, "field": motion.header_tables()})
                header = motion.header_from_symbols(reader.read(torch.tensor(motion.HEADER_INDEXES), "field").tolist())
                h = motion.read_header(header, ctx.shape[-2], ctx.shape[-1], MOTION_BLOCKS)
                check_string(strings[-1], count + motion.HEADER_SYMBOLS + h.indexes.numel())  # the exact limit
            if self.motion and ctx is not None:
                reader.add("motion", h.tables)
                f = motion.field_from_residuals(h, reader.read(h.indexes, "motion"))
                ref = motion.compensate(ctx, f.mv.to(ctx.device), f.block, f.precision, f.overlap)
            x_hat = self.decompress([], size, ref=ref, quality=quality, exact=exact, reader=reader)["x_hat"].clamp(0.0, 1.0)
            return x_hat, x_hat
        if len(strings) != self.legacy_substreams:
            raise ValueError(f"{len(strings)} substreams, expected {self.substreams} (or an older format's "
                             f"{self.substream_count(2)} or {self.legacy_substreams})")
        if self.motion:
            if ctx is None and strings[2]:
                raise ValueError("an I frame carries a motion field")
            if ctx is not None:
                f = motion.decode_field(strings[2], ctx.shape[-2], ctx.shape[-1], MOTION_BLOCKS)
                ref = motion.compensate(ctx, f.mv.to(ctx.device), f.block, f.precision, f.overlap)
        x_hat = self.decompress([[strings[0]], [strings[1]]], size, ref=ref,
                                quality=quality, exact=exact)["x_hat"].clamp(0.0, 1.0)
        return x_hat, x_hat

    @torch.inference_mode()
    def decompress(
        self, strings: list[list[bytes]], shape: tuple[int, int], ref: Tensor | None = None, quality: int = 0,
        exact: bool = False, reader: SymbolReader | None = None,
    ) -> dict[str, Tensor]:
        """Inverse of :meth:`compress`: ``{"x_hat"}``. ``reader``: of a joint string (``compress(joint=True)``;
        ``strings`` is then unused), positioned at ``z``'s symbols."""
        b = self._branch(ref is not None)
        device = next(self.parameters()).device
        q = self._qtensor(quality, 1 if reader is not None else len(strings[1]), device)
        z_hat = b["z"].read(reader, shape) if reader is not None else b["z"].decompress(strings[1], shape)
        scales, means = self._decode_params(b, z_hat, ref, q, exact)
        first = refine = None
        if b["ctx"] is not None:  # checkerboard: the anchors, then the rest with parameters refined from them
            first = anchors(scales.shape[-2], scales.shape[-1], scales.device)
            refine = lambda y_a: self._context_params(b, y_a, scales, means, exact)  # noqa: E731
        if reader is not None:
            y_hat = b["y"].read([reader], scales, means, first=first, refine=refine, name="y")
        else:
            y_hat = b["y"].decompress(strings[0], scales, means, first=first, refine=refine)
        return {"x_hat": self._decode_frame(b, y_hat, ref, q, exact)}

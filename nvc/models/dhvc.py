"""``dhvc-1.0``: Deep Hierarchical Video Compression (Lu et al., AAAI 2024), ``dhvc_base()``.

A hierarchical VAE that codes every frame the same way (no motion, no residual):

- A bottom-up *encoder* (ConvNeXt-style blocks, 4x patch embedding then four stride-2 stages) gives one
  feature map per scale, 1/4 .. 1/64 of the frame.
- A top-down *decoder* starts from a learned bias at 1/64 and walks up the scales. At five places
  (1/64, 2x 1/32, 1/16, 1/8) a :class:`TemporalLatentBlock` codes a latent ``z``: its Gaussian prior
  (mean and scale) is predicted from the current top-down feature and the same block's features of the
  two previously decoded frames (:class:`TemporalContextPrediction`); the posterior mean comes from the
  encoder feature. In evaluation ``z = round(q_mean - p_mean) + p_mean``.
- Two streams run side by side: ``feature`` (the latent path whose per-block output is the temporal
  context of later frames) and ``dec_feature`` (the reconstruction path, ending in a pixel shuffle).
- The first frame of a GoP uses learned per-block biases (:meth:`DHVC.get_temp_bias`) as context.

Module names, shapes and the state_dict order follow the authors' code (NJUVISION/DHVC,
``dhvc-1.0/models``) so their checkpoints (``torch.load(path)["state_dict"]``) load as they are.
Frames must be padded to a multiple of 64. The model is single-rate: ``qualities == 1``.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any

import torch
import torch.nn.functional as F
from compressai.entropy_models import GaussianConditional
from compressai.entropy_models.entropy_models import EntropyModel
from compressai.ops import LowerBound
from torch import Tensor, nn

from ..errors import ModelError
from .layers import safe_string

LOG2_E = math.log2(math.e)


# ---------------------------------------------------------------------------------------------- layers
def _conv(cin: int, cout: int, k: int, stride: int = 1) -> nn.Conv2d:
    """Convolution with odd kernel ``k`` and padding ``(k - 1) // 2``, zero-initialised bias."""
    conv = nn.Conv2d(cin, cout, k, stride, (k - 1) // 2)
    nn.init.zeros_(conv.bias)
    return conv


def _patch_down(cin: int, cout: int, rate: int) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, rate, rate, 0)
    nn.init.zeros_(conv.bias)
    return conv


def _patch_up(cin: int, cout: int, rate: int) -> nn.Sequential:
    """1x1 convolution to ``cout * rate^2`` channels, then pixel shuffle."""
    return nn.Sequential(_conv(cin, cout * rate * rate, 1), nn.PixelShuffle(rate))


class _Mlp(nn.Module):
    """Channels-last two-layer perceptron with exact GELU (timm's ``Mlp`` without dropout)."""

    def __init__(self, dim: int, hidden: int, out: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ConvNeXtBlock(nn.Module):
    """Depthwise conv -> LayerNorm (channels) -> MLP -> layer scale ``gamma`` -> residual."""

    def __init__(self, dim: int, kernel_size: int = 7, mlp_ratio: float = 2, ls_init: float = 1e-6) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = _Mlp(dim, int(mlp_ratio * dim), dim)
        self.gamma = nn.Parameter(torch.full((1, dim, 1, 1), float(ls_init)))

    def forward(self, x: Tensor) -> Tensor:
        y = self.conv_dw(x).permute(0, 2, 3, 1).contiguous()
        y = self.mlp(self.norm(y)).permute(0, 3, 1, 2).contiguous()
        return y.mul(self.gamma) + x


def _down(dim: int, new_dim: int) -> nn.Sequential:
    """A ConvNeXt block then a 3x3 stride-2 convolution."""
    return nn.Sequential(ConvNeXtBlock(dim, 7), _conv(dim, new_dim, 3, 2))


class _UpperBoundFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, bound: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, bound)
        return torch.min(x, bound)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        x, bound = ctx.saved_tensors
        return ((x <= bound) | (grad > 0)) * grad, None


class UpperBound(nn.Module):
    """``min(x, bound)``, letting gradients through when they push ``x`` below the bound."""

    bound: Tensor

    def __init__(self, bound: float) -> None:
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: Tensor) -> Tensor:
        return _UpperBoundFn.apply(x, self.bound)


class DiscretizedGaussian(GaussianConditional):
    """CompressAI's ``GaussianConditional`` with DHVC's table (64 scales, 0.11..20), CDF via ``erf``.

    Built on ``EntropyModel`` directly so the state_dict carries the official entries only (the scale
    table is a non-persistent buffer; there is no ``scale_bound`` buffer).
    """

    def __init__(self) -> None:
        EntropyModel.__init__(self)
        table = self.default_scale_table()
        self.register_buffer("scale_table", table, persistent=False)
        self.tail_mass = 1e-9
        self.lower_bound_scale = LowerBound(float(table[0]))

    @staticmethod
    def default_scale_table() -> Tensor:
        return torch.exp(torch.linspace(math.log(0.11), math.log(20.0), steps=64))

    def _standardized_cumulative(self, inputs: Tensor) -> Tensor:
        # Standard normal CDF written as torch.distributions.Normal(0, 1).cdf evaluates it.
        return 0.5 * (1 + torch.erf(inputs / math.sqrt(2)))

    def noisy_log_prob(self, x: Tensor, means: Tensor, scales: Tensor, prob_clamp: float = 1e-6) -> Tensor:
        """Log probability mass of the unit bin around (noisy) ``x`` for training; the density below the clamp."""
        x, means, scales = x.float(), means.float(), scales.float()
        upper = self._standardized_cumulative((x + 0.5 - means) / scales)
        lower = self._standardized_cumulative((x - 0.5 - means) / scales)
        mass = upper - lower
        log_density = -((x - means) ** 2) / (2 * scales**2) - torch.log(scales) - 0.5 * math.log(2 * math.pi)
        return torch.where(mass > prob_clamp, torch.log(mass.clamp(min=1e-8)), log_density)


# ------------------------------------------------------------------------------------- latent blocks
class TemporalContextPrediction(nn.Module):
    """Two small U-Nets: the first fuses the two previous frames' features, the second fuses the result
    with the current top-down feature; a ConvNeXt block finishes. Output: ``width`` channels."""

    depth = 4

    def __init__(self, width: int, kernel_size: int = 7, hidden: int = 128) -> None:
        super().__init__()
        self.enc1, self.dec1 = self._unet(width, kernel_size, hidden)
        self.enc2, self.dec2 = self._unet(width, kernel_size, hidden)
        self.end_fuse = ConvNeXtBlock(width, kernel_size)

    def _unet(self, width: int, k: int, hidden: int) -> tuple[nn.Sequential, nn.Sequential]:
        enc = [_conv(2 * width, hidden, 3)] + [ConvNeXtBlock(hidden, k) for _ in range(self.depth - 1)]
        dec: list[nn.Module] = [ConvNeXtBlock(hidden, k)]
        dec += [
            nn.Sequential(ConvNeXtBlock(2 * hidden, k), _conv(2 * hidden, hidden, 3)) for _ in range(self.depth - 2)
        ]
        dec.append(_conv(2 * hidden, width, 3))
        return nn.Sequential(*enc), nn.Sequential(*dec)

    @staticmethod
    def _run(enc: nn.Sequential, dec: nn.Sequential, x: Tensor) -> Tensor:
        skips = []
        for i, layer in enumerate(enc):
            x = layer(x)
            if i < len(enc) - 1:
                skips.append(x)
        x = dec[0](x)
        for i in range(1, len(dec)):
            x = dec[i](torch.cat([x, skips[-i]], dim=1))
        return x

    def forward(self, feature: Tensor, ctx_old: Tensor, ctx_new: Tensor) -> Tensor:
        ctx = self._run(self.enc1, self.dec1, torch.cat([ctx_old, ctx_new], dim=1))
        ctx = self._run(self.enc2, self.dec2, torch.cat([feature, ctx], dim=1))
        return self.end_fuse(ctx)


class TemporalLatentBlock(nn.Module):
    """One latent variable of the top-down path with a temporally predicted Gaussian prior."""

    is_latent_block = True

    def __init__(self, width: int, zdim: int, enc_width: int, kernel_size: int, mlp_ratio: float) -> None:
        super().__init__()
        self.in_channels = self.out_channels = width
        k = kernel_size
        self.resnet_front = ConvNeXtBlock(width, k, mlp_ratio)
        self.resnet_end = ConvNeXtBlock(width, k, mlp_ratio)
        self.resnet_dec = ConvNeXtBlock(width, k, mlp_ratio)
        self.posterior0 = ConvNeXtBlock(enc_width, k)
        self.posterior1 = ConvNeXtBlock(width, k)
        self.posterior2 = ConvNeXtBlock(width, k)
        self.post_merge = _conv(width + enc_width, width, 1)
        self.dec_merge = _conv(3 * width, width, 1)
        self.posterior = _conv(width, zdim, 3)
        self.z_proj = _conv(zdim, width, 1)
        self.prior = _conv(width, 2 * zdim, 1)
        self.tcp = TemporalContextPrediction(width, k)
        self.up_bound = UpperBound(10.0)
        self.discrete_gaussian = DiscretizedGaussian()

    def prior_params(self, feature: Tensor, ctx: list[Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """-> (feature, temporal context, prior mean, prior scale)."""
        feature = self.resnet_front(feature)
        ctx_feature = self.tcp(feature, ctx[0], ctx[1])
        pm, plogv = self.prior(ctx_feature).chunk(2, dim=1)
        plogv = self.up_bound(F.softplus(plogv + 2.3) - 2.3)  # log-scale in [-2.3, 10]
        return feature, ctx_feature, pm, torch.exp(plogv)

    def posterior_mean(self, feature: Tensor, enc_feature: Tensor) -> Tensor:
        merged = torch.cat([self.posterior1(feature), self.posterior0(enc_feature)], dim=1)
        return self.posterior(self.posterior2(self.post_merge(merged)))

    def finish(self, feature: Tensor, dec_feature: Tensor | None, ctx_feature: Tensor,
               z: Tensor) -> tuple[Tensor, Tensor]:
        """Adds ``z`` to the latent path and merges it into the reconstruction path."""
        feature = self.resnet_end(feature + self.z_proj(z))
        if dec_feature is None:
            dec_feature = torch.zeros_like(feature)
        dec_feature = self.resnet_dec(self.dec_merge(torch.cat([feature, dec_feature, ctx_feature], dim=1)))
        return feature, dec_feature

    def forward(self, feature: Tensor, dec_feature: Tensor | None, ctx: list[Tensor],
                enc_feature: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Training / evaluation pass -> (feature, dec_feature, kl in nats per element)."""
        feature, ctx_feature, pm, pv = self.prior_params(feature, ctx)
        qm = self.posterior_mean(feature, enc_feature)
        if self.training:
            z = (torch.round(qm - pm) - (qm - pm)).detach() + qm  # straight-through residual rounding
            noisy = qm + torch.empty_like(qm).uniform_(-0.5, 0.5)
            kl = -self.discrete_gaussian.noisy_log_prob(noisy, pm, pv)
        else:
            z, probs = self.discrete_gaussian(qm, pv, means=pm, training=False)
            kl = -torch.log(probs)
        feature, dec_feature = self.finish(feature, dec_feature, ctx_feature, z)
        return feature, dec_feature, kl


# ------------------------------------------------------------------------------------------- model
class DHVC(nn.Module):
    """DHVC 1.0; ``DHVC()`` is the authors' ``dhvc_base()``. See the module docstring."""

    name = "dhvc-1.0"
    alignment = 64
    qualities = 1

    def __init__(self, lmb: float = 2048.0) -> None:
        super().__init__()
        self.config = {"lmb": float(lmb)}
        self.lmb = float(lmb)
        ch, im = 128, 3
        enc = [192, 3 * ch, 4 * ch, 4 * ch, 4 * ch]
        dec = [4 * ch, 4 * ch, 3 * ch, 2 * ch, ch]
        z_dims = [32, 32, 96, 8]
        self.z_nums = [1, 2, 1, 1]  # latents per scale, 1/64 .. 1/8 (zip with dec widths stops at 4)

        self.bias = nn.Parameter(torch.zeros(1, dec[0], 1, 1))
        self.encoder = _Encoder([
            _patch_down(im, enc[0], 4),
            *[ConvNeXtBlock(enc[0], 7) for _ in range(6)], _down(enc[0], enc[1]),
            *[ConvNeXtBlock(enc[1], 7) for _ in range(2)], _down(enc[1], enc[2]),
            *[ConvNeXtBlock(enc[2], 5) for _ in range(2)], _down(enc[2], enc[3]),
            *[ConvNeXtBlock(enc[3], 3) for _ in range(4)], _down(enc[3], enc[4]),
            *[ConvNeXtBlock(enc[4], 1) for _ in range(4)],
        ])

        # per decoder scale s (1/64, 1/32, 1/16, 1/8, 1/4): kernel size and MLP ratio
        kernels, ratios = [1, 3, 5, 7, 7], [4, 3, 2, 1.75, 1.5]

        def latent(s: int) -> TemporalLatentBlock:
            return TemporalLatentBlock(dec[s], z_dims[s], enc[-1 - s], kernels[s], ratios[s])

        def path(with_latents: bool) -> nn.ModuleList:
            # the reconstruction path holds the latent blocks; the latent path has identities there
            def lat(s: int) -> nn.Module:
                return latent(s) if with_latents else nn.Identity()

            def cnb(s: int) -> ConvNeXtBlock:
                return ConvNeXtBlock(dec[s], kernels[s], ratios[s])

            return nn.ModuleList([
                lat(0), cnb(0), _patch_up(dec[0], dec[1], 2),
                cnb(1), lat(1), lat(1), cnb(1), _patch_up(dec[1], dec[2], 2),
                cnb(2), lat(2), cnb(2), _patch_up(dec[2], dec[3], 2),
                cnb(3), lat(3), cnb(3), _patch_up(dec[3], dec[4], 2),
                *[cnb(4) for _ in range(8)], _patch_up(dec[4], im, 4),
            ])

        self.dec_blocks = path(True)
        self.fea_blocks = path(False)
        self.bias_list = nn.ParameterList(
            [nn.Parameter(torch.zeros(1, d, 1, 1)) for d, n in zip(dec, self.z_nums) for _ in range(n)]
        )

    # ------------------------------------------------------------------ context
    def get_temp_bias(self, x: Tensor) -> list[Tensor]:
        """The learned per-latent-block context standing in for previous frames at a GoP start."""
        return self._temp_bias(x.shape[0], x.shape[2] // 64, x.shape[3] // 64)

    def _temp_bias(self, n: int, h: int, w: int) -> list[Tensor]:
        out, i = [], 0
        for num in self.z_nums:
            for _ in range(num):
                out.append(self.bias_list[i].expand(n, -1, h, w))
                i += 1
            h, w = 2 * h, 2 * w
        return out

    def _latent_blocks(self) -> list[TemporalLatentBlock]:
        return [b for b in self.dec_blocks if isinstance(b, TemporalLatentBlock)]

    # ------------------------------------------------------------------ training / evaluation
    def forward_frame(self, x: Tensor, z_lists: list[list[Tensor]], get_latent: bool = False,
                      return_rec: bool = False) -> dict[str, Any]:
        """Codes one frame given the two previous frames' latent lists ``[older, newer]``.

        Returns ``{"loss", "bpp", "mse", "psnr"}`` plus ``"z"`` (this frame's latent list, the next
        frame's context) with ``get_latent`` and ``"im_hat"`` (unclamped reconstruction) with ``return_rec``.
        ``bpp`` is ``log2(e) * sum(KL) / (H * W)`` (a float, batch mean); ``"kl"`` is it per sample.
        """
        _, _, h, w = x.shape
        enc_features = self.encoder(x)
        top = enc_features[min(enc_features)]
        feature = self.bias.expand(top.shape[0], -1, top.shape[2], top.shape[3])
        dec_feature: Tensor | None = None
        kls, zs, i = [], [], 0
        for block, fea_block in zip(self.dec_blocks, self.fea_blocks):
            if isinstance(block, TemporalLatentBlock):
                ctx = [z_list[i] for z_list in z_lists]
                feature, dec_feature, kl = block(feature, dec_feature, ctx, enc_features[int(feature.shape[2])])
                kls.append(kl.sum(dim=(1, 2, 3)))
                zs.append(feature)
                i += 1
            else:
                dec_feature = block(dec_feature)
            feature = fea_block(feature)
        x_hat = dec_feature
        assert x_hat is not None
        rate = LOG2_E * sum(kls) / float(h * w)
        distortion = F.mse_loss(x_hat, x, reduction="none").mean(dim=(1, 2, 3))
        stats: dict[str, Any] = OrderedDict()
        stats["loss"] = (rate + self.lmb * distortion).mean(0)
        stats["kl"] = rate
        with torch.no_grad():
            stats["bpp"] = rate.mean(0).item()
            stats["mse"] = distortion.mean(0).item()
            mse = F.mse_loss(x_hat.detach(), x).item()
            stats["psnr"] = -10 * math.log10(mse) if mse > 0 else float("inf")
        if get_latent:
            stats["z"] = zs
        if return_rec:
            stats["im_hat"] = x_hat.detach()
        return stats

    def forward(self, frames: list[Tensor]) -> dict[str, Any]:
        """A GoP (list of frames) from the temporal biases: averaged ``{"loss", "bpp", "psnr"}``."""
        z = self.get_temp_bias(frames[0])
        z_lists = [z, z]
        total = {"loss": 0.0, "bpp": 0.0, "psnr": 0.0}
        for frame in frames:
            st = self.forward_frame(frame, z_lists, get_latent=True)
            z_lists = [z_lists[-1], st["z"]]
            total["loss"] = total["loss"] + st["loss"]
            total["bpp"] += float(st["bpp"])
            total["psnr"] += float(st["psnr"])
        return {k: v / len(frames) for k, v in total.items()}

    def training_loss(self, clip: Tensor, quality: Any = None, stage: Any = None) -> dict[str, Tensor]:
        """Multi-frame loss over a (B, T, 3, H, W) clip (T >= 1, H and W multiples of 64): frame 0 from the
        temporal biases, then each frame with the two previous frames' latents as context (as
        :meth:`forward`); the mean over frames of ``forward_frame``'s ``rate + lmb * MSE``.
        -> ``{"loss", "bpp", "mse"}``."""
        frames = clip.unbind(1)
        z = self.get_temp_bias(frames[0])
        z_lists = [z, z]
        total = clip.new_zeros(())
        bpp, mse = 0.0, 0.0
        for frame in frames:
            st = self.forward_frame(frame, z_lists, get_latent=True)
            z_lists = [z_lists[-1], st["z"]]
            total = total + st["loss"]
            bpp += float(st["bpp"])
            mse += float(st["mse"])
        n = len(frames)
        return {"loss": total / n, "bpp": torch.tensor(bpp / n), "mse": torch.tensor(mse / n)}

    # ------------------------------------------------------------------ coding contract (nvc.models.base)
    def update(self, force: bool = True) -> None:
        """Builds the Gaussian CDF tables of every latent block (call after loading weights)."""
        for block in self._latent_blocks():
            dg = block.discrete_gaussian
            dg.update_scale_table(dg.default_scale_table(), force=force)

    def _check_quality(self, quality: int) -> None:
        if int(quality) != 0:
            raise ModelError(f"{self.name} is single-rate: quality must be 0, got {quality}")

    def _context(self, ctx: list[list[Tensor]] | None, n: int, h: int, w: int) -> list[list[Tensor]]:
        if ctx is None:
            z = self._temp_bias(n, h, w)
            return [z, z]
        return ctx

    def _code(self, x: Tensor | None, strings: list[bytes] | None, ctx: list[list[Tensor]] | None,
              shape: tuple[int, int]) -> tuple[list[bytes], Tensor, list[Tensor]]:
        """Runs the top-down path once, encoding (``x`` given) or decoding (``strings`` given)."""
        h, w = shape
        z_lists = self._context(ctx, 1, h, w)
        enc_features = self.encoder(x) if x is not None else None
        feature = self.bias.expand(1, -1, h, w)
        dec_feature: Tensor | None = None
        out_strings: list[bytes] = []
        zs: list[Tensor] = []
        i = 0
        for block, fea_block in zip(self.dec_blocks, self.fea_blocks):
            if isinstance(block, TemporalLatentBlock):
                feature, ctx_feature, pm, pv = block.prior_params(feature, [zl[i] for zl in z_lists])
                dg = block.discrete_gaussian
                indexes = dg.build_indexes(pv)
                if enc_features is not None:
                    qm = block.posterior_mean(feature, enc_features[int(feature.shape[2])])
                    out_strings.extend(dg.compress(qm, indexes, means=pm))
                    z = dg.quantize(qm, "dequantize", means=pm)
                else:
                    assert strings is not None
                    z = dg.decompress([safe_string(strings[i], indexes[0].numel())], indexes, dtype=pm.dtype, means=pm)
                feature, dec_feature = block.finish(feature, dec_feature, ctx_feature, z)
                zs.append(feature)
                i += 1
            else:
                dec_feature = block(dec_feature)
            feature = fea_block(feature)
        assert dec_feature is not None
        return out_strings, dec_feature, zs

    @torch.inference_mode()
    def compress_frame(self, x: Tensor, ctx: list[list[Tensor]] | None,
                       quality: int = 0) -> tuple[list[bytes], tuple[int, ...], Tensor, list[list[Tensor]]]:
        """Codes padded frame ``x`` (1, 3, H, W), H and W multiples of 64; ``ctx`` is the previous
        context (``[older latents, newer latents]``) or None at a GoP start.
        -> (one string per latent block, (H/64, W/64), clamped x_hat, new context)."""
        self._check_quality(quality)
        if x.shape[0] != 1 or x.shape[2] % self.alignment or x.shape[3] % self.alignment:
            raise ModelError(f"{self.name}: expects one frame padded to a multiple of 64, got {tuple(x.shape)}")
        shape = (x.shape[2] // 64, x.shape[3] // 64)
        z_lists = self._context(ctx, 1, *shape)
        strings, x_hat, zs = self._code(x, None, z_lists, shape)
        return strings, shape, x_hat.clamp(0.0, 1.0), [z_lists[-1], zs]

    @torch.inference_mode()
    def decompress_frame(self, strings: list[bytes], shape: tuple[int, ...], ctx: list[list[Tensor]] | None,
                         quality: int = 0) -> tuple[Tensor, list[list[Tensor]]]:
        """Inverse of :meth:`compress_frame` -> (clamped x_hat, new context)."""
        self._check_quality(quality)
        if len(strings) != len(self._latent_blocks()):
            raise ModelError(f"{self.name}: expected {len(self._latent_blocks())} strings, got {len(strings)}")
        hw = (int(shape[0]), int(shape[1]))
        z_lists = self._context(ctx, 1, *hw)
        _, x_hat, zs = self._code(None, list(strings), z_lists, hw)
        return x_hat.clamp(0.0, 1.0), [z_lists[-1], zs]


class _Encoder(nn.Module):
    """Bottom-up path; returns the last feature of each resolution, keyed by its height."""

    def __init__(self, blocks: list[nn.Module]) -> None:
        super().__init__()
        self.enc_blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        features: dict[int, Tensor] = OrderedDict()
        for block in self.enc_blocks:
            x = block(x)
            features[int(x.shape[2])] = x
        return features


def dhvc_base(lmb: float = 2048.0) -> DHVC:
    """The authors' configuration (same as ``DHVC()``)."""
    return DHVC(lmb)

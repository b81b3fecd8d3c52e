"""``dvc``: DVC (Lu et al., CVPR 2019, "DVC: An End-to-end Deep Video Compression Framework").

This is the P-frame model of DVC in the layout of its popular PyTorch + CompressAI reimplementation
(``VideoCompressor``), so that its checkpoints (plain state_dicts, ``iterN.model``) load as they are:

1. **Motion estimation**: a 4-level SpyNet pyramid (``opticFlow.moduleBasic.{0..3}``) estimates the
   flow from the current frame to the reference, coarse to fine, each level refining the upsampled flow.
2. **Motion coding**: the flow is encoded to a 128-channel latent (``mvEncoder``, /16) coded with a
   Gaussian conditional whose scales come from a hyperprior (``mvpriorEncoder``/``mvpriorDecoder``,
   hyper-latent coded by the factorized ``entropy_hyper_mv``, which *is* ``entropy_bottleneck``).
3. **Motion compensation**: the reference is warped with the decoded flow and refined by a small
   U-shaped residual network (``warpnet``): ``prediction = warped + warpnet([warped, ref])``.
4. **Residual coding**: ``cur - prediction`` is coded by a GDN autoencoder with a scale hyperprior
   (``resEncoder``/``resDecoder``, ``respriorEncoder``/``respriorDecoder``, ``entropy_hyper_res``).

The module is stateless: the reference frame lives in the codec session. DVC has no intra coder of
its own (the paper uses an image codec for I-frames): :meth:`DVC.compress_frame` with ``ctx=None`` codes
the frame with the intra coder chosen by :meth:`DVC.configure` (``nvc.models.load("dvc", ckpt,
intra="x265", intra_qp=27)``): ``nvc`` (default), the intra branch of the shipped ``nvc-lite`` weights at
``intra_quality`` (one of its qualities; default as ``nvc encode``: the quality of lambda 0.0075), or ``x265``, libx265 intra at ``intra_qp`` (see :mod:`nvc.models.intra`). The
I-frame payload starts with a tag substream naming the coder; the weights digest covers the nvc-lite
weights when they are used.

Training (``nvc train --config configs/dvc.toml``): :meth:`DVC.training_loss`, ``lmbda * MSE + bpp``
on P frames predicted from the ground-truth first frame of each clip, after a flow warm-up stage
(``loss = "flow"``: ``lmbda * warp MSE + motion bpp``).

Old checkpoints written with CompressAI 1.1.x name the EntropyBottleneck parameters ``_matrix{K}``,
``_bias{K}``, ``_factor{K}``; :func:`rename_legacy_state_dict` maps them to today's names and
:meth:`DVC.load_state_dict` applies it automatically.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from compressai.entropy_models import EntropyBottleneck, GaussianConditional
from compressai.ops.bound_ops import LowerBoundFunction
from torch import Tensor, nn

from .base import model_default_quality


# Channel counts of the official model.
MV_CHANNELS = 128  # motion latent
N_CHANNELS = 64  # hyper-latents and hidden residual features
M_CHANNELS = 96  # residual latent

_TABLE_BUFFERS = ("_quantized_cdf", "_offset", "_cdf_length")


def default_scale_table() -> Tensor:
    """CompressAI's default Gaussian scale table: 64 log-spaced scales from 0.11 to 256."""
    return torch.exp(torch.linspace(math.log(0.11), math.log(256.0), 64))

# ---------------------------------------------------------------------------------------------------------
# checkpoint helpers

_LEGACY_EB = re.compile(r"^(?P<prefix>(?:.*\.)?)_(?P<kind>matrix|bias|factor)(?P<k>\d+)$")
_LEGACY_KINDS = {"matrix": "matrices", "bias": "biases", "factor": "factors"}


def rename_legacy_state_dict(state_dict: Mapping[str, Tensor]) -> "OrderedDict[str, Tensor]":
    """Maps CompressAI 1.1.x EntropyBottleneck names onto CompressAI >= 1.2 names.

    ``<module>._matrix{K}`` -> ``<module>.matrices.K``, ``_bias{K}`` -> ``biases.K``, ``_factor{K}`` ->
    ``factors.K``. Every other entry is kept as is; order is preserved. Returns a new dict.
    """
    out: OrderedDict[str, Tensor] = OrderedDict()
    for name, value in state_dict.items():
        m = _LEGACY_EB.match(name)
        if m is not None:
            name = f"{m['prefix']}{_LEGACY_KINDS[m['kind']]}.{m['k']}"
        out[name] = value
    return out


# ---------------------------------------------------------------------------------------------------------
# layers



def _safe(strings: list[bytes], indexes: Tensor) -> list[bytes]:
    """Zero-pads rANS strings so a hostile one cannot make the decoder read out of bounds."""
    from .layers import safe_string

    return [safe_string(x, indexes[0].numel()) for x in strings]


def _safe_z(eb: Any, strings: list[bytes], shape: tuple[int, int]) -> list[bytes]:
    from .layers import safe_string

    return [safe_string(x, eb._quantized_cdf.shape[0] * shape[0] * shape[1]) for x in strings]

class _GDN(nn.Module):
    """GDN / inverse GDN with the square-root reparametrisation of DVC's PyTorch code.

    Parameters are ``beta`` (C,) and ``gamma`` (C, C) only (no buffers), as in the official checkpoints:
    ``beta' = max(beta, sqrt(beta_min + p))^2 - p``, ``gamma' = max(gamma, sqrt(p))^2 - p`` with pedestal
    ``p = reparam_offset^2``, and ``y = x / sqrt(beta' + gamma' * x^2)`` (times for the inverse).
    """

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1,
                 reparam_offset: float = 2.0 ** -18) -> None:
        super().__init__()
        self.inverse = inverse
        self.pedestal = reparam_offset ** 2
        self.beta_bound = (beta_min + self.pedestal) ** 0.5
        self.gamma_bound = reparam_offset
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels) + self.pedestal))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels) + self.pedestal))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        beta = LowerBoundFunction.apply(self.beta, torch.tensor(self.beta_bound, dtype=x.dtype, device=x.device))
        beta = beta ** 2 - self.pedestal
        gamma = LowerBoundFunction.apply(self.gamma, torch.tensor(self.gamma_bound, dtype=x.dtype, device=x.device))
        gamma = (gamma ** 2 - self.pedestal).view(c, c, 1, 1)
        norm = torch.sqrt(F.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


def _upsample2(x: Tensor, align_corners: bool = False) -> Tensor:
    return F.interpolate(x, (x.shape[2] * 2, x.shape[3] * 2), mode="bilinear", align_corners=align_corners)


def flow_warp(x: Tensor, flow: Tensor) -> Tensor:
    """Backward-warps ``x`` (B, C, H, W) by ``flow`` (B, 2, H, W) in pixels (x then y).

    The base grid spans [-1, 1] over the pixels and the flow is normalised by ``(size - 1) / 2``;
    sampling is bilinear with border padding and PyTorch's default ``align_corners=False``, exactly as
    in the reference implementation (so a zero flow is *not* an exact identity at the borders).
    """
    b, _, h, w = flow.shape
    gx = torch.linspace(-1.0, 1.0, w, dtype=flow.dtype, device=flow.device).view(1, 1, 1, w).expand(b, 1, h, w)
    gy = torch.linspace(-1.0, 1.0, h, dtype=flow.dtype, device=flow.device).view(1, 1, h, 1).expand(b, 1, h, w)
    grid = torch.cat([gx, gy], 1)
    norm = torch.cat([flow[:, 0:1] / ((x.shape[3] - 1.0) / 2.0), flow[:, 1:2] / ((x.shape[2] - 1.0) / 2.0)], 1)
    return F.grid_sample(x, (grid + norm).permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=False)


class _FlowLevel(nn.Module):
    """One SpyNet level: five 7x7 convolutions from [im1, warped im2, flow] (8 ch) to a flow update."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(8, 32, 7, 1, padding=3)
        self.conv2 = nn.Conv2d(32, 64, 7, 1, padding=3)
        self.conv3 = nn.Conv2d(64, 32, 7, 1, padding=3)
        self.conv4 = nn.Conv2d(32, 16, 7, 1, padding=3)
        self.conv5 = nn.Conv2d(16, 2, 7, 1, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        return self.conv5(x)


class _SpyNet(nn.Module):
    """Coarse-to-fine flow from ``im1`` to ``im2`` (``im2`` warped by the flow approximates ``im1``)."""

    def __init__(self, levels: int = 4) -> None:
        super().__init__()
        self.levels = levels
        self.moduleBasic = nn.ModuleList([_FlowLevel() for _ in range(levels)])

    def forward(self, im1: Tensor, im2: Tensor) -> Tensor:
        p1, p2 = [im1], [im2]
        for _ in range(self.levels - 1):
            p1.append(F.avg_pool2d(p1[-1], kernel_size=2, stride=2))
            p2.append(F.avg_pool2d(p2[-1], kernel_size=2, stride=2))
        coarse = p2[-1]
        flow = torch.zeros(im1.shape[0], 2, coarse.shape[2] // 2, coarse.shape[3] // 2,
                           dtype=im1.dtype, device=im1.device)
        for i, level in enumerate(self.moduleBasic):
            up = _upsample2(flow) * 2.0
            a, b = p1[self.levels - 1 - i], p2[self.levels - 1 - i]
            flow = up + level(torch.cat([a, flow_warp(b, up), up], 1))
        return flow


class _ResBlock(nn.Module):
    """Pre-activation residual block: ``x + conv2(relu(conv1(relu(x))))``."""

    def __init__(self, channels: int, k: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, k, 1, padding=k // 2)
        self.conv2 = nn.Conv2d(channels, channels, k, 1, padding=k // 2)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class _MCNet(nn.Module):
    """Motion-compensation refinement: a two-scale U-net of residual blocks on [warped, ref] -> 3 ch."""

    def __init__(self, ch: int = 64) -> None:
        super().__init__()
        self.feature_ext = nn.Conv2d(6, ch, 3, padding=1)
        self.conv0 = _ResBlock(ch)
        self.conv1 = _ResBlock(ch)
        self.conv2 = _ResBlock(ch)
        self.conv3 = _ResBlock(ch)
        self.conv4 = _ResBlock(ch)
        self.conv5 = _ResBlock(ch)
        self.conv6 = nn.Conv2d(ch, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        c0 = self.conv0(F.relu(self.feature_ext(x)))
        c1 = self.conv1(F.avg_pool2d(c0, 2, 2))
        c3 = self.conv3(self.conv2(F.avg_pool2d(c1, 2, 2)))
        c4 = self.conv4(c1 + _upsample2(c3, align_corners=True))
        c5 = self.conv5(c0 + _upsample2(c4, align_corners=True))
        return self.conv6(c5)


def _conv(cin: int, cout: int, k: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def _deconv(cin: int, cout: int, k: int, stride: int) -> nn.ConvTranspose2d:
    """Transposed convolution that multiplies the size by ``stride`` exactly."""
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


class _Chain(nn.Module):
    """Layers ``{prefix}1 .. {prefix}N`` applied in order, the official DVC sub-network layout.

    Between consecutive layers comes either a registered normalisation ``{norm_prefix}{i}`` (GDN/IGDN)
    or the parameter-free ``act``; nothing follows the last layer. ``abs_input`` takes ``|x|`` first
    (hyper-analysis), ``exp_output`` returns ``exp`` of the result (hyper-synthesis of scales).
    """

    def __init__(self, prefix: str, layers: list[nn.Module], act: Any = None, *, norm_prefix: str = "",
                 norms: list[nn.Module] | None = None, abs_input: bool = False, exp_output: bool = False) -> None:
        super().__init__()
        self._steps: list[tuple[str, str | None]] = []
        for i, layer in enumerate(layers, 1):
            self.add_module(f"{prefix}{i}", layer)
            norm = None
            if norms is not None and i <= len(norms):
                norm = f"{norm_prefix}{i}"
                self.add_module(norm, norms[i - 1])
            self._steps.append((f"{prefix}{i}", norm))
        self._act = act
        self.abs_input = abs_input
        self.exp_output = exp_output

    def forward(self, x: Tensor) -> Tensor:
        if self.abs_input:
            x = torch.abs(x)
        last = len(self._steps) - 1
        for i, (name, norm) in enumerate(self._steps):
            x = getattr(self, name)(x)
            if i < last:
                x = getattr(self, norm)(x) if norm is not None else self._act(x)
        return torch.exp(x) if self.exp_output else x


def _leaky(x: Tensor) -> Tensor:
    return F.leaky_relu(x, 0.1)


def _mv_encoder(c: int) -> _Chain:
    """Flow (2 ch) -> motion latent (c ch, /16): 3x3 convs alternating stride 2 and 1, LeakyReLU(0.1)."""
    layers = [_conv(2 if i == 0 else c, c, 3, 2 if i % 2 == 0 else 1) for i in range(8)]
    return _Chain("conv", layers, _leaky)


def _mv_decoder(c: int) -> _Chain:
    """Motion latent -> flow: stride-2 transposed convs alternating with 3x3 convs, LeakyReLU(0.1)."""
    layers: list[nn.Module] = [
        _deconv(c, c, 3, 2) if i % 2 == 0 else _conv(c, 2 if i == 7 else c, 3, 1) for i in range(8)
    ]
    return _Chain("deconv", layers, _leaky)


def _prior_encoder(m: int, n: int) -> _Chain:
    """|y| -> hyper-latent (/4): conv3x3 s1, conv5x5 s2, conv5x5 s2 with ReLU."""
    return _Chain("conv", [_conv(m, n, 3, 1), _conv(n, n, 5, 2), _conv(n, n, 5, 2)], F.relu, abs_input=True)


def _prior_decoder(n: int, m: int) -> _Chain:
    """Hyper-latent -> Gaussian scales (exp): two stride-2 transposed 5x5 convs, a 3x3 transposed conv."""
    layers = [_deconv(n, n, 5, 2), _deconv(n, n, 5, 2), nn.ConvTranspose2d(n, m, 3, stride=1, padding=1)]
    return _Chain("deconv", layers, F.relu, exp_output=True)


def _res_encoder(n: int, m: int) -> _Chain:
    layers = [_conv(3, n, 5, 2), _conv(n, n, 5, 2), _conv(n, n, 5, 2), _conv(n, m, 5, 2)]
    return _Chain("conv", layers, norm_prefix="gdn", norms=[_GDN(n) for _ in range(3)])


def _res_decoder(m: int, n: int) -> _Chain:
    layers = [_deconv(m, n, 5, 2), _deconv(n, n, 5, 2), _deconv(n, n, 5, 2), _deconv(n, 3, 5, 2)]
    return _Chain("deconv", layers, norm_prefix="igdn", norms=[_GDN(n, inverse=True) for _ in range(3)])


def _bpp(likelihoods: Tensor, num_pixels: int) -> Tensor:
    return torch.log(likelihoods).sum() / (-math.log(2) * num_pixels)


# ---------------------------------------------------------------------------------------------------------
# the model


class DVC(nn.Module):
    """DVC P-frame codec; state_dict layout of the CompressAI-based ``VideoCompressor``.

    ``forward(cur, ref)`` returns ``x_hat`` (clamped), the distortions ``mse`` (of the unclamped
    reconstruction), ``warp_mse``, ``inter_mse``, the rate terms ``bpp_mv``, ``bpp_mvprior``,
    ``bpp_res``, ``bpp_resprior``, their sum ``bpp``, and CompressAI-style ``likelihoods``.
    """

    name = "dvc"
    # Latents are /16 and hyper-latents /64 of the frame size.
    alignment = 64
    qualities = 1
    # the training stages' objectives it has (``loss`` of a stage; "flow": the motion warm-up)
    stage_losses = ("rd", "flow")

    def __init__(self, mv_channels: int = MV_CHANNELS, n: int = N_CHANNELS, m: int = M_CHANNELS,
                 flow_levels: int = 4, lmbda: float = 1024.0) -> None:
        super().__init__()
        self.config = {"mv_channels": mv_channels, "n": n, "m": m, "flow_levels": flow_levels, "lmbda": float(lmbda)}
        self.lmbda = float(lmbda)  # rate-distortion weight of training (MSE on [0, 1]); 256, 512, 1024, 2048
        # I-frame coder (runtime options, not weights; see configure)
        self.intra, self.intra_qp = "nvc", 27
        self.intra_quality: int | None = None  # None: nvc-lite's default quality (base.default_quality)
        self._stream_intra: str | None = None  # the intra coder a decoded stream's header digest names
        self._lite: dict[str, Any] = {}  # the nvc intra model, loaded on first use; not a submodule
        # Registration order reproduces the official state_dict order (CompressionModel's bottleneck first).
        self.entropy_bottleneck = EntropyBottleneck(n)
        self.opticFlow = _SpyNet(flow_levels)
        self.mvEncoder = _mv_encoder(mv_channels)
        self.mvDecoder = _mv_decoder(mv_channels)
        self.mvpriorEncoder = _prior_encoder(mv_channels, n)
        self.mvpriorDecoder = _prior_decoder(n, mv_channels)
        self.warpnet = _MCNet(64)
        self.resEncoder = _res_encoder(n, m)
        self.resDecoder = _res_decoder(m, n)
        self.respriorEncoder = _prior_encoder(m, n)
        self.respriorDecoder = _prior_decoder(n, m)
        self.entropy_hyper_mv = self.entropy_bottleneck  # the same module, listed under both names
        self.entropy_hyper_res = EntropyBottleneck(n)
        self.entropy_bottleneck_mv = GaussianConditional(None)
        self.entropy_bottleneck_res = GaussianConditional(None)

    # ------------------------------------------------------------------ pieces
    def motion_compensation(self, ref: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """-> (prediction, warped reference)."""
        warped = flow_warp(ref, flow)
        return self.warpnet(torch.cat([warped, ref], 1)) + warped, warped

    # ------------------------------------------------------------------ training / evaluation
    def forward(self, cur: Tensor, ref: Tensor) -> dict[str, Any]:
        mode = "noise" if self.training else "dequantize"
        flow = self.opticFlow(cur, ref)
        mv = self.mvEncoder(flow)
        mv_z_hat, mv_z_lik = self.entropy_hyper_mv(self.mvpriorEncoder(mv))
        mv_scales = self.mvpriorDecoder(mv_z_hat)
        mv_hat = self.entropy_bottleneck_mv.quantize(mv, mode)
        _, mv_lik = self.entropy_bottleneck_mv(mv, mv_scales)
        prediction, warped = self.motion_compensation(ref, self.mvDecoder(mv_hat))

        res = self.resEncoder(cur - prediction)
        res_z_hat, res_z_lik = self.entropy_hyper_res(self.respriorEncoder(res))
        res_scales = self.respriorDecoder(res_z_hat)
        res_hat = self.entropy_bottleneck_res.quantize(res, mode)
        _, res_lik = self.entropy_bottleneck_res(res, res_scales)
        recon = prediction + self.resDecoder(res_hat)

        pixels = cur.shape[0] * cur.shape[2] * cur.shape[3]
        bpp_mv, bpp_mvprior = _bpp(mv_lik, pixels), _bpp(mv_z_lik, pixels)
        bpp_res, bpp_resprior = _bpp(res_lik, pixels), _bpp(res_z_lik, pixels)
        return {
            "x_hat": recon.clamp(0.0, 1.0),
            "mse": torch.mean((recon - cur) ** 2),
            "warp_mse": torch.mean((warped - cur) ** 2),
            "inter_mse": torch.mean((prediction - cur) ** 2),
            "bpp_mv": bpp_mv,
            "bpp_mvprior": bpp_mvprior,
            "bpp_res": bpp_res,
            "bpp_resprior": bpp_resprior,
            "bpp": bpp_mv + bpp_mvprior + bpp_res + bpp_resprior,
            "likelihoods": {"mv": mv_lik, "mvprior": mv_z_lik, "res": res_lik, "resprior": res_z_lik},
        }

    def aux_loss(self) -> Tensor:
        return self.entropy_hyper_mv.loss() + self.entropy_hyper_res.loss()

    def training_loss(self, clip: Tensor, quality: Any = None, stage: Any = None) -> dict[str, Tensor]:
        """Loss over a (B, T, 3, H, W) clip, T >= 2: frame 0 (ground truth) is the first reference; frames
        1..T-1 are P frames, each predicted from the previous reconstruction. Per frame
        ``lmbda * MSE + bpp`` (all four rate terms), or with a stage whose ``loss`` is ``"flow"`` (DVC's
        motion warm-up) ``lmbda * warp MSE + bpp_mv + bpp_mvprior`` with the ground truth as reference.
        -> ``{"loss", "bpp", "mse"}`` (means over the P frames; ``mse`` is the one the loss uses)."""
        t = clip.shape[1]
        if t < 2:
            raise ValueError("DVC trains on clips of at least 2 frames (reference + P frame)")
        flow = getattr(stage, "loss", "rd") == "flow"
        ref = clip[:, 0]
        total = clip.new_zeros(())
        bpp_sum, mse_sum = clip.new_zeros(()), clip.new_zeros(())
        for i in range(1, t):
            x = clip[:, i]
            out = self(x, ref)
            if flow:
                mse, bpp = out["warp_mse"], out["bpp_mv"] + out["bpp_mvprior"]
                ref = x
            else:
                mse, bpp = out["mse"], out["bpp"]
                ref = out["x_hat"]
            total = total + self.lmbda * mse + bpp
            bpp_sum = bpp_sum + bpp.detach()
            mse_sum = mse_sum + mse.detach()
        n = t - 1
        return {"loss": total / n, "bpp": bpp_sum / n, "mse": mse_sum / n}

    # ------------------------------------------------------------------ checkpoints
    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):
        """Loads official checkpoints (CompressAI 1.1.x names are renamed; CDF tables of any size)."""
        state = rename_legacy_state_dict(state_dict)
        for name in ("entropy_bottleneck", "entropy_hyper_mv", "entropy_hyper_res",
                     "entropy_bottleneck_mv", "entropy_bottleneck_res"):
            module = getattr(self, name)
            buffers = _TABLE_BUFFERS + (("scale_table",) if isinstance(module, GaussianConditional) else ())
            for buf in buffers:
                key = f"{name}.{buf}"
                if key in state and getattr(module, buf).shape != state[key].shape:
                    getattr(module, buf).resize_(state[key].shape)
        return super().load_state_dict(state, strict=strict, assign=assign)

    # ------------------------------------------------------------------ coding contract (nvc.models.base)
    def update(self, force: bool = True, scale_table: Tensor | None = None) -> bool:
        """Builds the entropy coders' CDF tables (call after loading weights)."""
        table = default_scale_table() if scale_table is None else scale_table
        updated = self.entropy_hyper_mv.update(force=force)
        updated |= self.entropy_hyper_res.update(force=force)
        updated |= self.entropy_bottleneck_mv.update_scale_table(table, force=force)
        updated |= self.entropy_bottleneck_res.update_scale_table(table, force=force)
        return updated

    def _check(self, ctx: Tensor | None, quality: int) -> Tensor | None:
        if int(quality) != 0:
            raise ValueError(f"DVC has a single quality (0), got {quality}")
        return ctx

    @staticmethod
    def latent_shape(padded_height: int, padded_width: int) -> tuple[int, int]:
        """What every frame payload's ``shape`` holds: the hyper-latent size (frame / 64)."""
        return padded_height // 64, padded_width // 64

    # ------------------------------------------------------------------ I frames (nvc.models.intra)
    def configure(self, intra: str | None = None, intra_qp: int | None = None,
                  intra_quality: int | None = None) -> None:
        """Chooses the I-frame coder: ``intra="nvc"`` (default; ``intra_quality`` one of its qualities, default
        nvc-lite's default quality, :func:`nvc.models.base.default_quality`) or
        ``"x265"`` (``intra_qp`` 0..51, default 27; the paper uses 22, 27, 32, 37). Sets ``weights_digest``:
        the DVC weights' digest, combined with the nvc-lite weights' when those code the I frames."""
        from ..errors import ModelError
        from .intra import INTRA_CODERS

        mode = intra or "nvc"
        if mode not in INTRA_CODERS:
            raise ModelError(f"dvc: unknown intra coder {mode!r}; use nvc or x265")
        if mode == "nvc" and intra_qp is not None:
            raise ModelError("dvc: --intra-qp applies to --intra x265 (nvc intra takes --intra-quality)")
        if mode == "x265" and intra_quality is not None:
            raise ModelError("dvc: --intra-quality applies to --intra nvc (x265 intra takes --intra-qp)")
        if intra_qp is not None and not 0 <= int(intra_qp) <= 51:
            raise ModelError(f"dvc: --intra-qp must be 0..51 (the DVC paper uses 22, 27, 32, 37), not {intra_qp}")
        self.intra = mode
        if intra_qp is not None:
            self.intra_qp = int(intra_qp)
        if intra_quality is not None:
            q = int(intra_quality)
            if not 0 <= q < self._lite_model().qualities:
                raise ModelError(f"dvc: --intra-quality must be 0..{self._lite_model().qualities - 1}, not {q}")
            self.intra_quality = q
        self.weights_digest = self._digest_for(mode)

    def _digest_for(self, mode: str) -> bytes:
        from . import trainable_state, weights_digest

        base = weights_digest(trainable_state(self))
        if mode == "x265":
            return base
        return hashlib.sha256(b"nvc:dvc+nvc-intra|" + base + self._lite_model().weights_digest).digest()[:16]

    def accept_stream_digest(self, digest: bytes) -> bool:
        """True when a stream header's digest names these weights (with x265 or with nvc intra frames);
        the stream's I frames must then use that intra coder (checked when they are decoded)."""
        for mode in ("x265", "nvc"):
            if digest == self._digest_for(mode):
                self._stream_intra = mode
                return True
        return False

    def _lite_model(self, device: torch.device | None = None) -> Any:
        lite = self._lite.get("model")
        if lite is None:
            from . import load

            lite = self._lite["model"] = load("nvc-lite")
        if device is not None and next(lite.parameters()).device != device:
            lite = self._lite["model"] = lite.to(device)
        return lite

    def _compress_intra(self, x: Tensor) -> tuple[list[bytes], tuple[int, ...], Tensor, Tensor]:
        from .intra import INTRA_CODERS, x265_decode, x265_encode

        h, w = int(x.shape[-2]), int(x.shape[-1])
        shape = self.latent_shape(h, w)
        tag = bytes([INTRA_CODERS[self.intra]])
        if self.intra == "x265":
            data = x265_encode(x, self.intra_qp)
            x_hat = x265_decode(data, w, h, x.device)
            return [tag + bytes([self.intra_qp]), data], shape, x_hat, x_hat
        lite = self._lite_model(x.device)
        q = model_default_quality(lite) if self.intra_quality is None else self.intra_quality
        strings, lshape, x_hat, _ = lite.compress_frame(x, None, q, refine=0, joint=False)  # y and z apart
        assert tuple(lshape) == shape, (lshape, shape)
        # y and z only: nvc-lite weights with block motion add an empty motion field to I frames
        return [tag + bytes([q]), *strings[:2]], shape, x_hat, x_hat

    def _decompress_intra(self, strings: list[bytes], shape: tuple[int, ...]) -> tuple[Tensor, Tensor]:
        from .intra import INTRA_NVC, INTRA_X265, x265_decode

        if not strings or len(strings[0]) != 2 or len(shape) != 2:
            raise ValueError("DVC I frame without its 2-byte intra tag")
        coder, param = strings[0]
        mode = {INTRA_NVC: "nvc", INTRA_X265: "x265"}.get(coder)
        if mode is None:
            raise ValueError(f"unknown intra coder id {coder}")
        if self._stream_intra is not None and mode != self._stream_intra:
            raise ValueError(f"I frame coded with {mode} intra but the stream header names {self._stream_intra}")
        device = next(self.parameters()).device
        h, w = int(shape[0]) * 64, int(shape[1]) * 64
        if mode == "x265":
            if len(strings) != 2:
                raise ValueError(f"x265 I frame carries 2 substreams, got {len(strings)}")
            x_hat = x265_decode(strings[1], w, h, device)
            return x_hat, x_hat
        lite = self._lite_model(device)
        if len(strings) != 3 or not 0 <= param < lite.qualities:
            raise ValueError(f"nvc I frame: {len(strings)} substreams, quality {param}")
        return lite.decompress_frame([*strings[1:], *[b""] * (lite.legacy_substreams - 2)], shape, None, param)

    @torch.inference_mode()
    def compress(self, cur: Tensor, ref: Tensor) -> dict[str, Any]:
        """Codes ``cur`` (B, 3, H, W; H, W multiples of 64) given ``ref``.

        -> ``{"strings": [mv, mvprior, res, resprior] (lists of bytes, one per batch item), "shape": hyper-latent
        size, "x_hat"}``; ``x_hat`` is what :meth:`decompress` computes, bit for bit (same device).
        """
        mv = self.mvEncoder(self.opticFlow(cur, ref))
        mv_z = self.mvpriorEncoder(mv)
        shape = tuple(int(s) for s in mv_z.shape[-2:])
        mv_z_strings = self.entropy_hyper_mv.compress(mv_z)
        mv_idx = self.entropy_bottleneck_mv.build_indexes(
            self.mvpriorDecoder(self.entropy_hyper_mv.decompress(mv_z_strings, shape)))
        mv_strings = self.entropy_bottleneck_mv.compress(mv, mv_idx)
        # The decoder's path from here on: reuse it so both sides compute the same prediction.
        prediction = self._predict(mv_strings, mv_z_strings, shape, ref)

        res = self.resEncoder(cur - prediction)
        res_z = self.respriorEncoder(res)
        res_z_strings = self.entropy_hyper_res.compress(res_z)
        res_idx = self.entropy_bottleneck_res.build_indexes(
            self.respriorDecoder(self.entropy_hyper_res.decompress(res_z_strings, shape)))
        res_strings = self.entropy_bottleneck_res.compress(res, res_idx)
        x_hat = self._reconstruct(prediction, res_strings, res_z_strings, shape)
        return {"strings": [mv_strings, mv_z_strings, res_strings, res_z_strings], "shape": shape, "x_hat": x_hat}

    def _predict(self, mv_strings: list[bytes], mv_z_strings: list[bytes], shape: tuple[int, int],
                 ref: Tensor) -> Tensor:
        mv_idx = self.entropy_bottleneck_mv.build_indexes(
            self.mvpriorDecoder(self.entropy_hyper_mv.decompress(_safe_z(self.entropy_hyper_mv, mv_z_strings, shape), shape)))
        mv_hat = self.entropy_bottleneck_mv.decompress(_safe(mv_strings, mv_idx), mv_idx)
        return self.motion_compensation(ref, self.mvDecoder(mv_hat))[0]

    def _reconstruct(self, prediction: Tensor, res_strings: list[bytes], res_z_strings: list[bytes],
                     shape: tuple[int, int]) -> Tensor:
        res_idx = self.entropy_bottleneck_res.build_indexes(
            self.respriorDecoder(self.entropy_hyper_res.decompress(_safe_z(self.entropy_hyper_res, res_z_strings, shape), shape)))
        res_hat = self.entropy_bottleneck_res.decompress(_safe(res_strings, res_idx), res_idx)
        return (prediction + self.resDecoder(res_hat)).clamp(0.0, 1.0)

    @torch.inference_mode()
    def decompress(self, strings: list[list[bytes]], shape: tuple[int, int], ref: Tensor) -> dict[str, Tensor]:
        """Inverse of :meth:`compress`: ``{"x_hat"}`` (clamped)."""
        shape = (int(shape[0]), int(shape[1]))
        prediction = self._predict(strings[0], strings[1], shape, ref)
        return {"x_hat": self._reconstruct(prediction, strings[2], strings[3], shape)}

    def compress_frame(
        self, x: Tensor, ctx: Tensor | None, quality: int
    ) -> tuple[list[bytes], tuple[int, ...], Tensor, Tensor]:
        """One padded frame (1, 3, H, W) -> (strings, hyper-latent size (H/64, W/64), x_hat, new ctx = x_hat).

        P frame: 4 strings (mv, mv prior, residual, residual prior). I frame (``ctx=None``): the intra tag
        ``[coder, parameter]`` then the intra coder's strings (see :mod:`nvc.models.intra`)."""
        ref = self._check(ctx, quality)
        if ref is None:
            return self._compress_intra(x)
        out = self.compress(x, ref)
        x_hat = out["x_hat"]
        return [s[0] for s in out["strings"]], out["shape"], x_hat, x_hat

    def decompress_frame(self, strings: list[bytes], shape: tuple[int, ...], ctx: Tensor | None,
                         quality: int) -> tuple[Tensor, Tensor]:
        ref = self._check(ctx, quality)
        if ref is None:
            return self._decompress_intra(list(strings), tuple(shape))
        if len(strings) != 4 or len(shape) != 2:
            raise ValueError(f"DVC frames carry 4 strings and a 2-int shape, got {len(strings)} and {shape}")
        x_hat = self.decompress([[s] for s in strings], (int(shape[0]), int(shape[1])), ref)["x_hat"]
        return x_hat, x_hat

"""The Wan2.1 video VAE: a causal 3D-conv encoder and decoder with per-channel latent normalisation.

Parameter names and shapes follow the original `Wan2.1_VAE.pth`. Every temporal operation looks
only backwards and keeps what it needs of the past in a `TemporalState`, so a video decoded (or
encoded) in chunks gives the same result as one pass, with memory bounded by the chunk.
Frame rule (Wan's): the first latent frame decodes to 1 frame, every later one to 4.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .temporal_state import TemporalState

# Per-channel statistics Wan normalises its latents with: latent = (mu - mean) / std.
WAN21_LATENT_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENT_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)


@dataclass(frozen=True)
class WanVAEConfig:
    """Shape of a Wan-style video VAE; the defaults are the released Wan2.1 VAE (dim 96)."""

    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    latent_mean: tuple[float, ...] = WAN21_LATENT_MEAN
    latent_std: tuple[float, ...] = WAN21_LATENT_STD

    def __post_init__(self) -> None:
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latent_mean", "latent_std"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            raise ValueError(
                f"temperal_downsample needs one entry per downsampling step ({len(self.dim_mult) - 1}), "
                f"got {len(self.temperal_downsample)}"
            )
        if len(self.latent_mean) != self.z_dim or len(self.latent_std) != self.z_dim:
            raise ValueError(f"latent_mean and latent_std need z_dim={self.z_dim} values each")

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along height and width (8 for Wan2.1)."""
        return 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        """Frames per latent frame after the first one (4 for Wan2.1)."""
        return 2 ** sum(bool(flag) for flag in self.temperal_downsample)

    def frames_for_latents(self, latent_frames: int) -> int:
        """How many frames `latent_frames` latent frames decode to (1 for the first, then 4 each)."""
        return 0 if latent_frames <= 0 else 1 + self.temporal_factor * (latent_frames - 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "WanVAEConfig":
        """Build from a mapping (e.g. golden-case metadata), ignoring keys that are not fields."""
        names = cls.__dataclass_fields__.keys()
        return cls(**{key: value for key, value in values.items() if key in names})


class CausalConv3d(nn.Conv3d):
    """A 3D convolution over time that sees only the current and past frames.

    The `2 * padding[0]` frames before each chunk come from the state (zeros at the video start),
    which makes chunked and whole-video passes identical.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0):
        pad_t, pad_h, pad_w = _triple(padding)
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=(0, pad_h, pad_w))
        self.past_frames = 2 * pad_t

    def forward(self, x: torch.Tensor, state: TemporalState | None = None) -> torch.Tensor:
        if self.past_frames:
            past = state.recall(self) if state is not None else None
            if past is None:
                past = x.new_zeros(x.shape[0], x.shape[1], self.past_frames, *x.shape[3:])
            x = torch.cat([past, x], dim=2)
            if state is not None:
                state.keep(self, x[:, :, -self.past_frames:].clone(memory_format=torch.contiguous_format))
        if _needs_mkldnn(x):
            return super().forward(x.to_mkldnn()).to_dense()
        return super().forward(x)


def _needs_mkldnn(x: torch.Tensor) -> bool:
    """Whether a float32 CPU input must be handed to oneDNN explicitly.

    PyTorch sends small single-video float32 3D convolutions (N*C*T*H <= 20480) to its unvectorised
    im2col kernel, which is 3x slower than oneDNN's on the VAE's streaming chunks (measured on a
    2-core CPU: 3.9 vs 1.2 ms at 64 channels, 5 frames of 16x16); a oneDNN input tensor takes oneDNN.
    Not while torch.compile traces (its backward cannot take oneDNN tensors) or with oneDNN turned off.
    """
    return (x.device.type == "cpu" and x.dtype == torch.float32 and x.shape[0] == 1
            and x.shape[1] * x.shape[2] * x.shape[3] <= 20480
            and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
            and not torch.compiler.is_compiling())


class RMSNorm(nn.Module):
    """Wan's channel norm: L2-normalise over channels, times sqrt(C) and a learned per-channel gain.

    The norm is reduced in at least float32 so fp16/bf16 activations cannot overflow it.
    """

    def __init__(self, dim: int, spatial_dims: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim, *([1] * spatial_dims)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduce_dtype = torch.promote_types(x.dtype, torch.float32)
        if x.device.type == "cpu":  # vector_norm over a non-innermost dim is ~10x slower than this on CPU
            norm = x.to(reduce_dtype).square().sum(dim=1, keepdim=True).clamp_min(1e-24).sqrt()
        else:
            norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=reduce_dtype).clamp_min(1e-12)
        return x * (self.scale / norm).to(x.dtype) * self.gamma.to(x.dtype)


class ResidualBlock(nn.Module):
    """Norm-SiLU-conv twice, plus a (1x1x1 conv when the width changes) shortcut."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # Index 5 was dropout in the original; it holds no weights, so the indices stay aligned.
        self.residual = nn.Sequential(
            RMSNorm(in_dim, 3), nn.SiLU(), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, 3), nn.SiLU(), nn.Identity(), CausalConv3d(out_dim, out_dim, 3, padding=1),
        )
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        return _run(self.residual, x, state) + self.shortcut(x)


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame (no mixing across time)."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim, 2)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = _frames_first(x)
        qkv = self.to_qkv(self.norm(frames)).reshape(b * t, 3 * c, h * w).transpose(1, 2)
        q, k, v = (part.unsqueeze(1) for part in qkv.chunk(3, dim=-1))
        attended = F.scaled_dot_product_attention(q, k, v).squeeze(1).transpose(1, 2).reshape(b * t, c, h, w)
        return x + _frames_back(self.proj(attended), b)


class Downsample(nn.Module):
    """Halve height and width; with `temporal`, also halve time with a stride-2 causal conv.

    In time, the video's first frame passes through unchanged and stride-2 windows of 3 frames
    start at it, so later chunks must bring an even number of frames (the encoder's chunks do).
    """

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(dim, dim, 3, stride=2))
        self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1)) if temporal else None

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        x = _per_frame(self.resample, x)
        if self.time_conv is None:
            return x
        last = state.recall(self)
        state.keep(self, x[:, :, -1:].clone(memory_format=torch.contiguous_format))
        if last is None:
            head, frames = x[:, :, :1], x
        else:
            head, frames = None, torch.cat([last, x], dim=2)
        pooled = self.time_conv(frames) if frames.shape[2] >= 3 else frames[:, :, :0]
        return pooled if head is None else torch.cat([head, pooled], dim=2)


class NearestUpsample2x(nn.Module):
    """Nearest-neighbour 2x upsampling of [N, C, H, W] frames, with the reference's float32 pass.

    The reference upsamples in float32 whatever the dtype, so float64 values are rounded to
    float32 here too: a no-op for fp32/fp16/bf16, and what float64 replays need to match it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float64:
            x = x.to(torch.float32).to(torch.float64)
        return F.interpolate(x, scale_factor=2.0, mode="nearest")


class Upsample(nn.Module):
    """Double height and width (halving the channels); with `temporal`, also double time.

    In time, the video's first frame is kept as one frame; every later frame becomes two, made
    by a causal conv over the later frames only (Wan's 1-then-4 frame rule comes from this).
    """

    def __init__(self, dim: int, temporal: bool):
        super().__init__()
        self.resample = nn.Sequential(NearestUpsample2x(), nn.Conv2d(dim, dim // 2, 3, padding=1))
        self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0)) if temporal else None

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        if self.time_conv is not None:
            x = self._double_frames(x, state)
        return _per_frame(self.resample, x)

    def _double_frames(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        started = state.recall(self)
        state.keep(self, True)
        head = None
        if not started:
            head, x = x[:, :, :1], x[:, :, 1:]
        if x.shape[2]:
            y = self.time_conv(x, state)
            b, c2, t, h, w = y.shape
            x = y.view(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c2 // 2, 2 * t, h, w)
        return x if head is None else torch.cat([head, x], dim=2)


class Encoder3d(nn.Module):
    """Frames [B, 3, T, H, W] -> mean and log-variance features [B, 2*z_dim, T', H/8, W/8]."""

    def __init__(self, config: WanVAEConfig):
        super().__init__()
        dims = [config.dim * mult for mult in (1, *config.dim_mult)]
        self.conv1 = CausalConv3d(3, dims[0], 3, padding=1)
        blocks: list[nn.Module] = []
        scale = 1.0
        for stage, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            for _ in range(config.num_res_blocks):
                blocks.append(ResidualBlock(in_dim, out_dim))
                if scale in config.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if stage < len(config.dim_mult) - 1:
                blocks.append(Downsample(out_dim, temporal=bool(config.temperal_downsample[stage])))
                scale /= 2.0
        self.downsamples = nn.ModuleList(blocks)
        width = dims[-1]
        self.middle = nn.ModuleList([ResidualBlock(width, width), AttentionBlock(width), ResidualBlock(width, width)])
        self.head = nn.ModuleList([RMSNorm(width, 3), nn.SiLU(), CausalConv3d(width, 2 * config.z_dim, 3, padding=1)])

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        x = self.conv1(x, state)
        for blocks in (self.downsamples, self.middle, self.head):
            x = _run(blocks, x, state)
        return x


class Decoder3d(nn.Module):
    """De-normalised latents (after conv2) [B, z_dim, T, h, w] -> frames [B, 3, T', 8h, 8w]."""

    def __init__(self, config: WanVAEConfig):
        super().__init__()
        mults = config.dim_mult
        dims = [config.dim * mult for mult in (mults[-1], *reversed(mults))]
        temporal_upsample = tuple(reversed(config.temperal_downsample))
        self.conv1 = CausalConv3d(config.z_dim, dims[0], 3, padding=1)
        width = dims[0]
        self.middle = nn.ModuleList([ResidualBlock(width, width), AttentionBlock(width), ResidualBlock(width, width)])
        blocks: list[nn.Module] = []
        scale = 1.0 / 2 ** (len(mults) - 2)
        for stage, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            if stage > 0:
                in_dim //= 2  # the previous stage's Upsample halved the channels
            for _ in range(config.num_res_blocks + 1):
                blocks.append(ResidualBlock(in_dim, out_dim))
                if scale in config.attn_scales:
                    blocks.append(AttentionBlock(out_dim))
                in_dim = out_dim
            if stage < len(mults) - 1:
                blocks.append(Upsample(out_dim, temporal=bool(temporal_upsample[stage])))
                scale *= 2.0
        self.upsamples = nn.ModuleList(blocks)
        self.head = nn.ModuleList([RMSNorm(dims[-1], 3), nn.SiLU(), CausalConv3d(dims[-1], 3, 3, padding=1)])

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        x = self.conv1(x, state)
        for blocks in (self.middle, self.upsamples, self.head):
            x = _run(blocks, x, state)
        return x


class WanVAE(nn.Module):
    """The Wan2.1 VAE: `encode` video to normalised latents, `decode` (or `decode_step`) them back.

    Videos are [B, 3, T, H, W] in [-1, 1]; latents are [B, z_dim, T, H/8, W/8], normalised with
    the config's per-channel mean/std. Decoded frames are not clamped. Inference only (no grad).
    """

    def __init__(self, config: WanVAEConfig | None = None):
        super().__init__()
        self.config = config or WanVAEConfig()
        z_dim = self.config.z_dim
        self.encoder = Encoder3d(self.config)
        self.conv1 = CausalConv3d(2 * z_dim, 2 * z_dim, 1)
        self.conv2 = CausalConv3d(z_dim, z_dim, 1)
        self.decoder = Decoder3d(self.config)

    @property
    def dtype(self) -> torch.dtype:
        return self.conv2.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.conv2.weight.device

    @property
    def latent_channels(self) -> int:
        return self.config.z_dim

    def frames_for_latents(self, latent_frames: int) -> int:
        """How many frames `latent_frames` latent frames decode to, at the start of a video."""
        return self.config.frames_for_latents(latent_frames)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Normalised latent means of `video` [B, 3, 1 + 4k, H, W]: its first frame alone, then groups of 4."""
        self._check_video(video)
        video = video.to(device=self.device, dtype=self.dtype)
        state = TemporalState()
        step = self.config.temporal_factor
        chunks = [video[:, :, :1]] + [video[:, :, start:start + step] for start in range(1, video.shape[2], step)]
        return torch.cat([self._encode_chunk(chunk, state) for chunk in chunks], dim=2)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk_frames: int = 1) -> torch.Tensor:
        """Frames of a whole latent video, decoded `chunk_frames` latent frames at a time (memory knob)."""
        if chunk_frames < 1:
            raise ValueError(f"chunk_frames must be at least 1, got {chunk_frames}")
        self._check_latents(latents)
        state = TemporalState()
        return torch.cat([self.decode_step(chunk, state) for chunk in latents.split(chunk_frames, dim=2)], dim=2)

    @torch.no_grad()
    def decode_step(self, latents: torch.Tensor, state: TemporalState) -> torch.Tensor:
        """Frames of the next latent frames of a video whose earlier latents `state` has seen."""
        self._check_latents(latents)
        z = latents.to(device=self.device, dtype=self.dtype)
        mean, std = self._latent_stats(z)
        return self.decoder(self.conv2(z * std + mean), state)

    def _encode_chunk(self, frames: torch.Tensor, state: TemporalState) -> torch.Tensor:
        mu = self.conv1(self.encoder(frames, state))[:, : self.config.z_dim]
        mean, std = self._latent_stats(mu)
        return (mu - mean) / std

    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, self.config.z_dim, 1, 1, 1)
        mean = torch.tensor(self.config.latent_mean, dtype=torch.float64).to(like).view(shape)
        std = torch.tensor(self.config.latent_std, dtype=torch.float64).to(like).view(shape)
        return mean, std

    def _check_video(self, video: torch.Tensor) -> None:
        factor, step = self.config.spatial_factor, self.config.temporal_factor
        if video.dim() != 5 or video.shape[1] != 3:
            raise ValueError(f"expected a video [B, 3, T, H, W] (channels second), got shape {tuple(video.shape)}")
        frames, height, width = video.shape[2:]
        if frames < 1 or (frames - 1) % step:
            raise ValueError(f"the encoder takes 1 + {step}k frames (1, {1 + step}, {1 + 2 * step}...), got {frames}")
        if height % factor or width % factor:
            raise ValueError(f"frame height and width must be multiples of {factor}, got {height}x{width}")

    def _check_latents(self, latents: torch.Tensor) -> None:
        z_dim = self.config.z_dim
        if latents.dim() != 5 or latents.shape[1] != z_dim:
            frame_major = latents.dim() == 5 and latents.shape[2] == z_dim
            hint = " (frame-major? use latents.permute(0, 2, 1, 3, 4))" if frame_major else ""
            raise ValueError(f"expected latents [B, {z_dim}, T, h, w], got shape {tuple(latents.shape)}{hint}")


def _triple(value) -> tuple[int, int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value, value)


def _run(layers: Iterable[nn.Module], x: torch.Tensor, state: TemporalState) -> torch.Tensor:
    """Apply `layers` in order, handing the state to the ones that have temporal memory."""
    for layer in layers:
        x = layer(x, state) if isinstance(layer, _TEMPORAL_LAYERS) else layer(x)
    return x


def _frames_first(x: torch.Tensor) -> torch.Tensor:
    """[B, C, T, H, W] -> [B*T, C, H, W], frames batch-major, for per-frame 2D layers."""
    b, c, t, h, w = x.shape
    return x.transpose(1, 2).reshape(b * t, c, h, w)


def _frames_back(frames: torch.Tensor, batch: int) -> torch.Tensor:
    """Inverse of `_frames_first`."""
    bt, c, h, w = frames.shape
    return frames.reshape(batch, bt // batch, c, h, w).transpose(1, 2).contiguous()


def _per_frame(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return _frames_back(module(_frames_first(x)), x.shape[0])


_TEMPORAL_LAYERS = (CausalConv3d, ResidualBlock, AttentionBlock, Downsample, Upsample)

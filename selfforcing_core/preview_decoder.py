"""A fast preview decoder for Wan2.1 latents, compatible with the public TAEHV weights (`taew2_1`).

TAEHV ("tiny autoencoder for video", madebyollin/taehv) decodes each frame with 2D convs; its
MemBlocks also see their previous frame's input, so it is causal with a one-frame memory per block
and streams exactly. It takes the sampler's normalised latents as they are. Parameter names follow
the released files (`decoder.<index>...`); only the decoder is built (the encoder keys are unused).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .temporal_state import TemporalState

# Indices of the layers whose shapes tell the configuration, in the released decoder layout.
_FIRST_CONV, _STAGE_CONVS, _TGROWS, _LAST_CONV = 1, (8, 14, 20), (7, 13, 19), 22


@dataclass(frozen=True)
class TAEHVConfig:
    """Shape of a TAEHV decoder; the defaults are `taew2_1` (16 latent channels, 8x space, 4x time)."""

    latent_channels: int = 16
    widths: tuple[int, int, int, int] = (256, 128, 64, 64)
    time_upscale: tuple[int, int, int] = (1, 2, 2)
    patch_size: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(self.widths))
        object.__setattr__(self, "time_upscale", tuple(self.time_upscale))
        if len(self.widths) != 4 or len(self.time_upscale) != 3:
            raise ValueError("a TAEHV decoder has 4 widths and 3 time-upscale factors")

    @property
    def temporal_factor(self) -> int:
        return math.prod(self.time_upscale)

    def frames_for_latents(self, latent_frames: int) -> int:
        """Frames out for `latent_frames` latents at a video start: the first few are trimmed to match Wan."""
        return max(0, latent_frames * self.temporal_factor - (self.temporal_factor - 1))


class MemBlock(nn.Module):
    """Three 3x3 convs over [this frame, the block's previous input frame], plus a residual skip."""

    def __init__(self, width: int):
        super().__init__()
        self.conv = nn.Sequential(
            _conv3x3(2 * width, width), nn.ReLU(), _conv3x3(width, width), nn.ReLU(), _conv3x3(width, width)
        )

    def forward(self, x: torch.Tensor, state: TemporalState) -> torch.Tensor:
        past = state.recall(self)
        if past is None:
            past = torch.zeros_like(x[:, :1])
        previous = torch.cat([past, x[:, :-1]], dim=1)
        state.keep(self, x[:, -1:].clone(memory_format=torch.contiguous_format))
        mixed = self.conv(torch.cat([x, previous], dim=2).flatten(0, 1))
        return F.relu(mixed.view_as(x) + x)


class TGrow(nn.Module):
    """Each frame becomes `stride` frames: a 1x1 conv makes stride x channels, split in time order."""

    def __init__(self, width: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(width, width * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c, h, w = x.shape
        return self.conv(x.flatten(0, 1)).reshape(b, t * self.stride, c, h, w)


class _SoftClamp(nn.Module):
    """Squash latents smoothly into (-3, 3), as TAEHV's decoder does first."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class TAEHVDecoder(nn.Module):
    """Normalised Wan latents [B, 16, T, h, w] -> frames [B, 3, F, 8h, 8w] in [-1, 1] (not clamped).

    Same frame rule as the Wan VAE: TAEHV makes 4 frames per latent and the first 3 frames of a
    video are trimmed, so the first latent gives 1 frame and every later one 4.
    """

    def __init__(self, config: TAEHVConfig | None = None):
        super().__init__()
        self.config = config or TAEHVConfig()
        w, grow = self.config.widths, self.config.time_upscale
        out_channels = 3 * self.config.patch_size**2
        self.decoder = nn.Sequential(
            _SoftClamp(), _conv3x3(self.config.latent_channels, w[0]), nn.ReLU(),
            MemBlock(w[0]), MemBlock(w[0]), MemBlock(w[0]), nn.Upsample(scale_factor=2.0), TGrow(w[0], grow[0]),
            _conv3x3(w[0], w[1], bias=False),
            MemBlock(w[1]), MemBlock(w[1]), MemBlock(w[1]), nn.Upsample(scale_factor=2.0), TGrow(w[1], grow[1]),
            _conv3x3(w[1], w[2], bias=False),
            MemBlock(w[2]), MemBlock(w[2]), MemBlock(w[2]), nn.Upsample(scale_factor=2.0), TGrow(w[2], grow[2]),
            _conv3x3(w[2], w[3], bias=False), nn.ReLU(), _conv3x3(w[3], out_channels),
        )

    @classmethod
    def config_from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> TAEHVConfig:
        """Read the configuration off the decoder's weight shapes (raises KeyError if a layer is missing)."""
        first = state_dict[f"decoder.{_FIRST_CONV}.weight"]
        widths = (first.shape[0], *(state_dict[f"decoder.{i}.weight"].shape[0] for i in _STAGE_CONVS))
        grow = tuple(state_dict[f"decoder.{i}.conv.weight"].shape[0] // widths[n] for n, i in enumerate(_TGROWS))
        patch = math.isqrt(state_dict[f"decoder.{_LAST_CONV}.weight"].shape[0] // 3)
        return TAEHVConfig(latent_channels=first.shape[1], widths=widths, time_upscale=grow, patch_size=patch)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder[_FIRST_CONV].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.decoder[_FIRST_CONV].weight.device

    @property
    def latent_channels(self) -> int:
        return self.config.latent_channels

    def frames_for_latents(self, latent_frames: int) -> int:
        return self.config.frames_for_latents(latent_frames)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Frames of a whole latent video (one pass, all frames in parallel)."""
        return self.decode_step(latents, TemporalState())

    @torch.no_grad()
    def decode_step(self, latents: torch.Tensor, state: TemporalState) -> torch.Tensor:
        """Frames of the next latent frames of a video whose earlier latents `state` has seen."""
        channels = self.config.latent_channels
        if latents.dim() != 5 or latents.shape[1] != channels:
            raise ValueError(f"expected latents [B, {channels}, T, h, w], got shape {tuple(latents.shape)}")
        x = latents.to(device=self.device, dtype=self.dtype).transpose(1, 2)
        for layer in self.decoder:
            if isinstance(layer, MemBlock):
                x = layer(x, state)
            elif isinstance(layer, TGrow):
                x = layer(x)
            else:
                x = layer(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        if self.config.patch_size > 1:
            x = F.pixel_shuffle(x.flatten(0, 1), self.config.patch_size).unflatten(0, x.shape[:2])
        return self._trim_start(x, state).transpose(1, 2).mul(2).sub(1)

    def _trim_start(self, frames: torch.Tensor, state: TemporalState) -> torch.Tensor:
        """Drop the first (temporal_factor - 1) frames of the video, wherever the chunks split them."""
        pending = state.recall(self)
        if pending is None:
            pending = self.config.temporal_factor - 1
        dropped = min(pending, frames.shape[1])
        state.keep(self, pending - dropped)
        return frames[:, dropped:]


def _conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)

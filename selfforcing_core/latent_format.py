"""Two ways to store Wan2.1 latents: normalised (what our sampler and decoders use) and raw VAE means
(what ComfyUI's LATENT holds for Wan: its model normalises on the way in, its VAE decodes raw)."""
from __future__ import annotations

import torch

from .wan_vae import WAN21_LATENT_MEAN, WAN21_LATENT_STD


def _stats(like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    if like.dim() != 5 or like.shape[1] != len(WAN21_LATENT_MEAN):
        raise ValueError(f"expected Wan2.1 latents [B, 16, T, h, w], got shape {tuple(like.shape)}")
    shape = (1, len(WAN21_LATENT_MEAN), 1, 1, 1)
    mean = torch.tensor(WAN21_LATENT_MEAN, dtype=torch.float64).to(like).view(shape)
    std = torch.tensor(WAN21_LATENT_STD, dtype=torch.float64).to(like).view(shape)
    return mean, std


def to_raw(latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> raw VAE means (ComfyUI's LATENT layout for Wan2.1)."""
    mean, std = _stats(latents)
    return latents * std + mean


def from_raw(raw: torch.Tensor) -> torch.Tensor:
    """Raw VAE means (ComfyUI's LATENT for Wan2.1) -> normalised latents."""
    mean, std = _stats(raw)
    return (raw - mean) / std

"""Replay of a golden Wan VAE case (format of tests/golden/wan_vae_tiny.*) with our VAE in float64.

`replay(path, meta)` builds the VAE from the case's `weight.*` tensors and `meta["vae"]` config,
encodes `video` (normalised mu) and decodes `latent` in one whole pass, and returns the largest
absolute difference to the recorded `encoded_mu` / `decoded` (raw decoder output, never clamped).
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from selfforcing_core.vae_loading import wan_vae_from_state_dict  # noqa: E402
from selfforcing_core.wan_vae import WanVAEConfig  # noqa: E402


def replay(path: str, meta: dict) -> float:
    """Max abs error of our float64 encode and whole decode against the case in `path`."""
    tensors = load_file(path)
    weights = {key[len("weight."):]: value for key, value in tensors.items() if key.startswith("weight.")}
    settings = dict(meta["vae"])
    for name in ("latent_mean", "latent_std"):
        if name in tensors:
            settings[name] = tensors[name].tolist()
    vae = wan_vae_from_state_dict(weights, WanVAEConfig.from_dict(settings), dtype=torch.float64, source=path)
    errors = []
    if "encoded_mu" in tensors:
        errors.append(_max_abs(vae.encode(tensors["video"]), tensors["encoded_mu"]))
    if "decoded" in tensors:
        errors.append(_max_abs(vae.decode(tensors["latent"]), tensors["decoded"]))
    if not errors:
        raise ValueError(f"{path}: no encoded_mu or decoded tensor to compare")
    return max(errors)


def _max_abs(ours: torch.Tensor, reference: torch.Tensor) -> float:
    if ours.shape != reference.shape:
        raise AssertionError(f"shape {tuple(ours.shape)} != reference {tuple(reference.shape)}")
    return (ours.double() - reference.double()).abs().max().item()

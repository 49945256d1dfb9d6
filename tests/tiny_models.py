"""Tiny random models for tests, in float64 so equivalence checks can be tight."""
from __future__ import annotations

import os

import torch

from selfforcing_core.config import WanConfig
from selfforcing_core.transformer import CausalWanModel

GOLDEN_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "golden")
TINY = WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=32, text_len=8, freq_dim=16)


def tiny_model(config: WanConfig = TINY, seed: int = 0, dtype: torch.dtype = torch.float64) -> CausalWanModel:
    """A tiny causal Wan DiT with every parameter random (none left at a trivial init)."""
    torch.manual_seed(seed)
    model = CausalWanModel(config, attention_backend="math")
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.2)
    return model.to(dtype).eval()

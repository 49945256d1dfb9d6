"""Toy models and data shared by the training tests (fast on a 2-core CPU)."""
from __future__ import annotations

import torch

from selfforcing_core.training.model_sizes import TOY
from selfforcing_core.training.teacher_training import Teacher, build_teacher
from selfforcing_core.training.world_scene import WorldConfig
from selfforcing_core.wan_vae import WanVAE

TOY_WORLD = WorldConfig(height=32, width=32, num_frames=5)


def toy_vae(seed: int = 0, dtype: torch.dtype = torch.float32) -> WanVAE:
    """The toy-size Wan VAE with random weights (every parameter perturbed from its init)."""
    torch.manual_seed(seed)
    vae = WanVAE(TOY.vae)
    with torch.no_grad():
        for param in vae.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return vae.to(dtype)


def toy_teacher(seed: int = 0) -> Teacher:
    """The toy teacher as training builds it, with a small random output head (so outputs depend on inputs)."""
    teacher = build_teacher(TOY.dit, TOY.text, seed, attention_backend="math")
    with torch.no_grad():
        teacher.dit.head.head.weight.normal_(0.0, 0.02, generator=torch.Generator().manual_seed(seed))
    return teacher

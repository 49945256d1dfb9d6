"""Tiny float32 pieces for the Training II tests: student, teacher, text encoder, clip bank, trainers."""
from __future__ import annotations

import torch
from torch import nn

from selfforcing_core.config import CausalSettings
from selfforcing_core.training.latent_bank import ClipBank
from selfforcing_core.training.trainer import TrainOptions, Trainer, make_accelerator

from tiny_models import TINY, tiny_model

SETTINGS = CausalSettings(chunk_frames=3, local_window=6, sink_frames=3, timestep_shift=3.0)
LATENT = (TINY.in_dim, 4, 4)  # (C, h, w)
FRAMES = 9


def student(seed: int = 0) -> nn.Module:
    """A tiny causal DiT in float32 with gradients on."""
    return tiny_model(seed=seed, dtype=torch.float32).requires_grad_(True)


class TinyText(nn.Module):
    """(ids, mask) -> embeddings [B, L, text_dim], zero past each caption, like the umT5 encoder."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(5)
        self.table = nn.Parameter(torch.randn(256, TINY.text_dim, generator=generator), requires_grad=False)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.table[ids] * mask[..., None]


def bank(count: int = 6, seed: int = 3) -> ClipBank:
    """Random latents with random byte captions."""
    generator = torch.Generator().manual_seed(seed)
    latents = torch.randn(count, LATENT[0], FRAMES, *LATENT[1:], generator=generator)
    ends = torch.randn(count, LATENT[0], 1, *LATENT[1:], generator=generator)
    ids = torch.randint(1, 256, (count, TINY.text_len), generator=generator)
    mask = torch.ones(count, TINY.text_len, dtype=torch.long)
    return ClipBank(latents, ends, ids, mask, [f"clip {i}" for i in range(count)])


def trainer(model: nn.Module, path: str | None, steps: int, lr: float = 1e-3) -> Trainer:
    options = TrainOptions(lr=lr, warmup_steps=1, steps=steps, checkpoint_every=1000, log_every=1000,
                           betas=(0.0, 0.999), ema_decay=0.9)
    return Trainer(model, options, make_accelerator("no", cpu=True), path)

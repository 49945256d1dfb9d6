"""Where the sampler's randomness comes from: a seeded source, or any object with the same two methods.

Noise is drawn on the CPU from one generator per batch item (seed, seed+1, ...), so a video does not
depend on the device it was made on, and item i of a batch equals a single run with seed + i.
"""
from __future__ import annotations

from typing import Protocol

import torch


class NoiseSource(Protocol):
    """Gives the starting noise of each chunk and the draws used to re-noise between steps."""

    def initial(self, start_frame: int, shape: torch.Size) -> torch.Tensor:
        """Noise for the chunk starting at `start_frame`, shape [B, C, F, H, W]."""

    def renoise(self, shape: torch.Size) -> torch.Tensor:
        """A fresh Gaussian draw of shape [B, C, F, H, W]."""


class SeededNoise:
    """Reproducible Gaussian noise: one CPU generator per batch item."""

    def __init__(self, seed: int, batch_size: int, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
        self.generators = [torch.Generator().manual_seed(int(seed) + i) for i in range(batch_size)]
        self.dtype = dtype
        self.device = torch.device(device)

    def _draw(self, shape: torch.Size) -> torch.Tensor:
        if shape[0] != len(self.generators):
            raise ValueError(f"noise for batch {shape[0]} asked of a source made for {len(self.generators)}")
        draws = [torch.randn(tuple(shape[1:]), generator=g, dtype=torch.float32) for g in self.generators]
        return torch.stack(draws).to(device=self.device, dtype=self.dtype)

    def initial(self, start_frame: int, shape: torch.Size) -> torch.Tensor:
        return self._draw(shape)

    def renoise(self, shape: torch.Size) -> torch.Tensor:
        return self._draw(shape)

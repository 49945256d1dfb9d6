"""The few-step flow-matching schedule: shifted sigma table, step warping, x0 and re-noising.

x_t = (1 - sigma) * x0 + sigma * noise, and the model predicts the flow (noise - x0). Sigmas come
from a 1000-entry table built in float32 and are looked up by the nearest table timestep; this is
what the official sampler does, and reproducing it (float32 table, float32 `1 - sigma` when
re-noising) is what makes our outputs equal theirs to float64 round-off.
"""
from __future__ import annotations

from typing import Sequence

import torch

NUM_TRAIN_TIMESTEPS = 1000


class FlowMatchSchedule:
    """Shifted flow-matching schedule over `NUM_TRAIN_TIMESTEPS` training timesteps."""

    def __init__(self, shift: float = 5.0):
        if shift <= 0:
            raise ValueError(f"timestep shift must be > 0, got {shift}")
        self.shift = shift
        base = torch.linspace(1.0, 0.0, NUM_TRAIN_TIMESTEPS + 1, dtype=torch.float32)[:-1]
        self.sigmas = shift * base / (1 + (shift - 1) * base)
        self.timesteps = self.sigmas * NUM_TRAIN_TIMESTEPS

    def warp(self, steps: Sequence[int | float]) -> torch.Tensor:
        """Map a denoising step list (1000 = pure noise, 0 = clean) onto the shifted timesteps.

        Returns float32 timesteps, e.g. 1000/750/500/250 with shift 5 -> 1000, 937.5, 833.33, 625.
        """
        table = torch.cat([self.timesteps, torch.zeros(1)])
        index = torch.tensor([NUM_TRAIN_TIMESTEPS - int(round(float(s))) for s in steps])
        if (index < 0).any() or (index > NUM_TRAIN_TIMESTEPS).any():
            raise ValueError(f"denoising steps must lie in 0..{NUM_TRAIN_TIMESTEPS}, got {list(steps)}")
        return table[index]

    def _index(self, timestep: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return (table[None, :] - timestep.reshape(-1, 1)).abs().argmin(dim=1)

    def sigma(self, timestep: torch.Tensor) -> torch.Tensor:
        """float32 sigma of the table entry nearest to each timestep (flat)."""
        table = self.timesteps.to(timestep.device)
        return self.sigmas.to(timestep.device)[self._index(timestep.to(torch.float32), table)]

    def flow_to_x0(self, flow: torch.Tensor, xt: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """x0 = x_t - sigma * flow, computed in float64; timestep is per frame [B, F] for [B, C, F, H, W]."""
        sigma = self._frame_sigma64(timestep, xt)
        return (xt.double() - sigma * flow.double()).to(flow.dtype)

    def x0_to_flow(self, x0: torch.Tensor, xt: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """The flow that turns x_t into x0 at this timestep: (x_t - x0) / sigma (float64)."""
        sigma = self._frame_sigma64(timestep, xt)
        return ((xt.double() - x0.double()) / sigma).to(x0.dtype)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """Re-noise x0 [B, C, F, H, W] to per-frame timesteps [B, F] (or one timestep for all)."""
        sigma = self._frame_view(self.sigma(self._per_frame(timestep, x0)), x0)
        return ((1 - sigma) * x0 + sigma * noise).to(noise.dtype)

    def _frame_sigma64(self, timestep: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        timestep = self._per_frame(timestep, like).double()
        table = self.timesteps.to(like.device).double()
        sigma = self.sigmas.to(like.device).double()[self._index(timestep, table)]
        return self._frame_view(sigma, like)

    @staticmethod
    def _per_frame(timestep: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor:
        """Timesteps as [B, F] for a [B, C, F, H, W] tensor, from a scalar, [B] or [B, F]."""
        t = torch.as_tensor(timestep, device=like.device)
        batch, frames = like.shape[0], like.shape[2]
        if t.dim() == 1:
            t = t[:, None]
        return t.expand(batch, frames)

    @staticmethod
    def _frame_view(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        batch, frames = like.shape[0], like.shape[2]
        return sigma.reshape(batch, 1, frames, 1, 1)

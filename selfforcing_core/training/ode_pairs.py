"""ODE pairs for the causal initialisation: the teacher's guided trajectories at the student's timesteps.

The teacher integrates the probability-flow ODE from noise with its N-step Euler sampler and
classifier-free guidance; the states at the student's warped timesteps (e.g. sigmas 1, 0.9, 0.75, 0.5
for steps 1000/750/500/250 at shift 3) and the final x0 are kept: [B, S + 1, C, F, h, w]. The teacher's
Euler grid must pass through those sigmas: with the same shift, N a multiple of 4 does for that list.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..config import CausalSettings
from ..transformer import CausalWanModel
from .sampling import euler_sigmas
from .self_forcing import student_timesteps


@dataclass
class ODEPairs:
    """Trajectories [N, S + 1, C, F, h, w] (student timesteps, then x0) and their captions' tokens."""

    states: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.states.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index = index.to(self.states.device)
        return self.states[index].float(), self.ids[index], self.mask[index]

    def save(self, path: str) -> None:
        from safetensors.torch import save_file

        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        save_file({"states": self.states.half().contiguous().cpu(), "ids": self.ids.contiguous().cpu(),
                   "mask": self.mask.contiguous().cpu()}, path)

    @classmethod
    def load(cls, path: str, device: torch.device | str = "cpu") -> "ODEPairs":
        from safetensors.torch import load_file

        tensors = load_file(path, device=str(device))
        return cls(tensors["states"], tensors["ids"], tensors["mask"])


def record_indices(settings: CausalSettings, steps: int, shift: float) -> list[int]:
    """Indices into the teacher's `steps`-step Euler grid of the student's timesteps (raises if absent)."""
    grid = euler_sigmas(steps, shift)
    indices = []
    for t in student_timesteps(settings, settings.denoising_steps).tolist():
        found = torch.nonzero((grid - t / 1000.0).abs() < 1e-4)
        if not len(found):
            raise ValueError(f"the teacher's {steps}-step grid (shift {shift}) misses the student's timestep "
                             f"{t:.2f}; use a multiple of the step list's spacing and the same shift")
        indices.append(int(found[0]))
    return indices


@torch.no_grad()
def teacher_trajectory(
    dit: CausalWanModel,
    context: torch.Tensor,
    uncond: torch.Tensor,
    noise: torch.Tensor,
    record: list[int],
    steps: int,
    guidance: float,
    shift: float,
) -> torch.Tensor:
    """Guided Euler from `noise` [B, C, F, h, w]; the states at grid indices `record`, then x0."""
    batch, frames = noise.shape[0], noise.shape[2]
    both = torch.cat([context, uncond.expand(batch, -1, -1)])
    x = noise.float()
    kept = []
    sigmas = euler_sigmas(steps, shift).tolist()
    for index, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:])):
        if index in record:
            kept.append(x)
        t = torch.full((2 * batch, frames), sigma * 1000.0, device=noise.device)
        cond, free = dit(torch.cat([x, x]), t, both).float().chunk(2)
        x = x + (sigma_next - sigma) * (free + guidance * (cond - free))
    return torch.stack(kept + [x], dim=1)


def make_ode_pairs(
    dit: CausalWanModel,
    encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ids: torch.Tensor,
    mask: torch.Tensor,
    uncond: torch.Tensor,
    latent_shape: tuple[int, int, int, int],
    settings: CausalSettings,
    generator: torch.Generator,
    steps: int = 24,
    guidance: float = 5.0,
    shift: float = 3.0,
    batch_size: int = 256,
    max_seconds: float | None = None,
) -> ODEPairs:
    """Trajectories for the captions `ids`/`mask` (stopping early after `max_seconds`).

    `encode(ids, mask)` gives text embeddings, `uncond` is the empty caption's; latent_shape is (C, F, h, w).
    """
    record = record_indices(settings, steps, shift)
    began, states = time.monotonic(), []
    device = uncond.device
    for first in range(0, ids.shape[0], batch_size):
        context = encode(ids[first:first + batch_size].to(device), mask[first:first + batch_size].to(device))
        noise = torch.randn((context.shape[0], *latent_shape), generator=generator, device=device)
        states.append(teacher_trajectory(dit, context, uncond, noise, record, steps, guidance, shift).half())
        if max_seconds is not None and time.monotonic() - began > max_seconds:
            break
    done = sum(s.shape[0] for s in states)
    return ODEPairs(torch.cat(states), ids[:done].to(device), mask[:done].to(device))

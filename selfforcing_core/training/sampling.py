"""The teacher's sampler: N-step Euler integration of the flow with classifier-free guidance."""
from __future__ import annotations

import torch

from ..transformer import CausalWanModel


def shifted_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    """Wan's timestep shift: sigma = shift u / (1 + (shift - 1) u), for u in [0, 1]."""
    return shift * u / (1.0 + (shift - 1.0) * u)


def euler_sigmas(steps: int, shift: float) -> torch.Tensor:
    """steps + 1 noise levels from 1 down to 0, evenly spaced before the shift (float64)."""
    return shifted_sigma(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift)


@torch.no_grad()
def sample_flow(
    dit: CausalWanModel,
    context: torch.Tensor,
    uncond: torch.Tensor,
    noise: torch.Tensor,
    steps: int = 30,
    guidance: float = 5.0,
    shift: float = 3.0,
) -> torch.Tensor:
    """Clean latents from noise [B, C, F, h, w]: Euler on the guided flow of a bidirectional DiT.

    `context`/`uncond` are text embeddings [B, L, text_dim] of the captions and of the empty caption;
    guided flow = uncond + guidance * (cond - uncond), one batched model call per step.
    """
    batch, frames = noise.shape[0], noise.shape[2]
    both = torch.cat([context, uncond.expand(batch, -1, -1)])
    x = noise.float()
    sigmas = euler_sigmas(steps, shift).tolist()
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        t = torch.full((2 * batch, frames), sigma * 1000.0, device=noise.device)
        flow = dit(torch.cat([x, x]).to(dit.dtype), t, both).float()
        cond, free = flow.chunk(2)
        x = x + (sigma_next - sigma) * (free + guidance * (cond - free))
    return x

"""Distribution matching distillation over the whole video (DMD, Yin et al. 2024; the Self-Forcing loss).

The generator's video x is noised to a random level shared by all frames; the real score (the frozen
bidirectional teacher, with classifier-free guidance) and the fake score (a critic, a copy of the
teacher trained on the generator's videos) each predict x0. Their difference, normalised by the
real prediction's error, is the gradient of the reverse KL between generated and real videos, and
the loss 0.5 * ||x - stopgrad(x - grad)||^2 hands exactly that gradient to the generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..transformer import CausalWanModel
from .sampling import shifted_sigma


@dataclass(frozen=True)
class DMDOptions:
    """Real-score guidance and the distribution of the score timesteps (shifted, clipped sigmas)."""

    guidance: float = 4.0
    shift: float = 3.0
    min_sigma: float = 0.02
    max_sigma: float = 0.98


def score_sigmas(batch: int, generator: torch.Generator, options: DMDOptions) -> torch.Tensor:
    """One noise level per clip [B]: uniform, shifted as in teacher training, clipped away from 0 and 1."""
    u = torch.rand(batch, generator=generator, device=generator.device)
    return shifted_sigma(u, options.shift).clamp(options.min_sigma, options.max_sigma)


def noised(video: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_sigma = (1 - sigma) x + sigma noise for video [B, C, F, h, w], and its timesteps [B, F]."""
    s = sigma.view(-1, 1, 1, 1, 1)
    return (1.0 - s) * video + s * noise, (sigma * 1000.0)[:, None].expand(video.shape[0], video.shape[2])


def predict_x0(dit: CausalWanModel, noisy: torch.Tensor, t: torch.Tensor, sigma: torch.Tensor,
               context: torch.Tensor) -> torch.Tensor:
    """A bidirectional DiT's x0 prediction: x_sigma - sigma * flow."""
    flow = dit(noisy, t, context).float()
    return noisy - sigma.view(-1, 1, 1, 1, 1) * flow


def guided_x0(dit: CausalWanModel, noisy: torch.Tensor, t: torch.Tensor, sigma: torch.Tensor,
              context: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """The teacher's classifier-free-guided x0 prediction (one batched call for both branches)."""
    batch = noisy.shape[0]
    both = predict_x0(dit, torch.cat([noisy, noisy]), torch.cat([t, t]), torch.cat([sigma, sigma]),
                      torch.cat([context, uncond.expand(batch, -1, -1)]))
    cond, free = both.chunk(2)
    return free + guidance * (cond - free)


def dmd_loss(
    video: torch.Tensor,
    teacher: CausalWanModel,
    critic: CausalWanModel,
    context: torch.Tensor,
    uncond: torch.Tensor,
    generator: torch.Generator,
    options: DMDOptions,
    first_frame: int = 0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The generator's DMD loss on video [B, C, F, h, w]; frames before `first_frame` (a clean prefix the
    generator did not make) are scored as context but left out of the loss."""
    with torch.no_grad():
        sigma = score_sigmas(video.shape[0], generator, options)
        noise = torch.randn(video.shape, generator=generator, device=video.device)
        noisy, t = noised(video.detach().float(), sigma, noise)
        real = guided_x0(teacher, noisy, t, sigma, context, uncond, options.guidance)
        fake = predict_x0(critic, noisy, t, sigma, context)
        grad = fake - real
        scale = (video.detach().float() - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
        grad = torch.nan_to_num(grad / scale.clamp_min(1e-6))
    own = video[:, :, first_frame:].float()
    target = (own - grad[:, :, first_frame:]).detach()
    loss = 0.5 * F.mse_loss(own, target)
    return loss, {"dmd_grad": grad.abs().mean(), "sigma": sigma.mean()}


def critic_loss(
    critic: CausalWanModel, video: torch.Tensor, context: torch.Tensor, generator: torch.Generator,
    options: DMDOptions,
) -> torch.Tensor:
    """Flow matching of the fake score on the generator's (detached) videos at the score timesteps."""
    video = video.detach().float()
    sigma = score_sigmas(video.shape[0], generator, options)
    noise = torch.randn(video.shape, generator=generator, device=video.device)
    noisy, t = noised(video, sigma, noise)
    return F.mse_loss(critic(noisy, t, context).float(), noise - video)

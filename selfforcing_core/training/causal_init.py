"""Causal initialisation: regress the chunk-wise student (teacher weights, causal attention) onto the
teacher's ODE pairs, so that it denoises in few steps before Self Forcing starts.

Each chunk is denoised from the teacher's state at one of the student's timesteps (drawn per clip and
chunk) towards the trajectory's x0, attending through the KV cache to the clean x0 of the chunks
before it, as the streaming sampler will; half of the batches start from a clean first frame (the
start-keyframe prefix), which also trains the shorter last chunk that it leaves.
"""
from __future__ import annotations

import torch

from ..config import CausalSettings
from ..sampler import plan_chunks
from ..schedule import FlowMatchSchedule
from ..transformer import CausalWanModel
from .self_forcing import new_training_cache, student_timesteps, write_prefix


def ode_regression_loss(
    model: CausalWanModel,
    states: torch.Tensor,
    context: torch.Tensor,
    settings: CausalSettings,
    generator: torch.Generator,
    prefix_probability: float = 0.5,
) -> torch.Tensor:
    """Mean squared x0 error over the generated frames of one batch of trajectories [B, S + 1, C, F, h, w]."""
    batch, _, _, frames, height, width = states.shape
    device = states.device
    x0 = states[:, -1]
    timesteps = student_timesteps(settings, settings.denoising_steps).to(device)
    if states.shape[1] != len(timesteps) + 1:
        raise ValueError(f"trajectories hold {states.shape[1] - 1} states; the student has {len(timesteps)} steps")
    schedule = FlowMatchSchedule(settings.timestep_shift)
    prefix_frames = int(torch.rand(1, generator=generator, device=device).item() < prefix_probability)
    cache = new_training_cache(model, settings, batch, height, width, frames)
    model.set_prompt(cache, context)
    if prefix_frames:
        write_prefix(model, cache, x0[:, :, :prefix_frames], settings)
    rows = torch.arange(batch, device=device)
    total = x0.new_zeros(())
    for chunk in plan_chunks(frames - prefix_frames, settings, start_frame=prefix_frames):
        span = slice(chunk.start_frame, chunk.start_frame + chunk.num_frames)
        index = torch.randint(len(timesteps), (batch,), generator=generator, device=device)
        noisy = states[rows, index][:, :, span]
        t = timesteps[index][:, None].expand(batch, chunk.num_frames)
        flow = model(noisy, t, cache=cache, start_frame=chunk.start_frame)
        total = total + (schedule.flow_to_x0(flow.float(), noisy, t) - x0[:, :, span]).square().sum()
        with torch.no_grad():
            clean_t = torch.full((batch, chunk.num_frames), float(settings.context_noise), device=device)
            model(x0[:, :, span], clean_t, cache=cache, start_frame=chunk.start_frame)
    return total / x0[:, :, prefix_frames:].numel()

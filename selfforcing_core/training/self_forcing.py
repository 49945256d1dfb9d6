"""Self Forcing's training rollout: the student makes the whole video chunk by chunk with the KV cache,
exactly as the streaming sampler does, with gradients kept at one denoising step per chunk.

Per chunk: the steps before the exit step run without gradients, the exit step's x0 prediction is the
chunk's output (it carries gradients), and the cache pass that follows runs without gradients, so
every cache write is detached (the paper's gradient truncation): memory holds one step's graph per
chunk, whatever the number of denoising steps. What the cache is given after a chunk is the context
writer's choice: the chunk itself (Self Forcing) or ground truth (the baselines in `baselines.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import torch

from ..config import CausalSettings
from ..kv_cache import KVCache
from ..noise import NoiseSource
from ..sampler import ChunkPlan, plan_chunks
from ..schedule import FlowMatchSchedule
from ..transformer import CausalWanModel


class ContextWriter(Protocol):
    """Chooses what the cache holds for a finished chunk: latents [B, C, F, h, w] and timesteps [B, F]."""

    def __call__(self, chunk: ChunkPlan, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass(frozen=True)
class SelfContext:
    """Self Forcing: the cache is written from the student's own (detached) chunk, as at inference."""

    context_noise: float = 0.0

    def __call__(self, chunk: ChunkPlan, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.full((generated.shape[0], chunk.num_frames), self.context_noise, device=generated.device)
        return generated.detach(), t


class GeneratorNoise:
    """A `NoiseSource` drawing from one torch.Generator (a trainer's), on that generator's device."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def initial(self, start_frame: int, shape: torch.Size) -> torch.Tensor:
        return self.renoise(shape)

    def renoise(self, shape: torch.Size) -> torch.Tensor:
        return torch.randn(tuple(shape), generator=self.generator, device=self.generator.device)


def student_timesteps(settings: CausalSettings, steps: Sequence[int]) -> torch.Tensor:
    """The model timesteps of a step list, warped by the shift as the streaming sampler does."""
    if settings.warp_steps:
        return FlowMatchSchedule(settings.timestep_shift).warp(steps)
    return torch.tensor([float(s) for s in steps], dtype=torch.float32)


def new_training_cache(model: CausalWanModel, settings: CausalSettings, batch: int, height: int, width: int,
                       total_frames: int) -> KVCache:
    """A cache laid out as the sampler lays it out for a video of `total_frames` latent frames."""
    max_frames = None if settings.local_window is not None else total_frames
    return model.new_cache(batch, height, width, max_frames, settings.local_window, settings.sink_frames,
                           settings.rebase_sink)


def write_prefix(model: CausalWanModel, cache: KVCache, prefix: torch.Tensor, settings: CausalSettings) -> None:
    """Write clean prefix latents [B, C, P, h, w] into the cache in chunk-sized pieces, without gradients."""
    with torch.no_grad():
        for start in range(0, prefix.shape[2], settings.chunk_frames):
            piece = prefix[:, :, start:start + settings.chunk_frames]
            t = torch.full((piece.shape[0], piece.shape[2]), float(settings.context_noise), device=piece.device)
            model(piece, t, cache=cache, start_frame=start)


def rollout(
    model: CausalWanModel,
    settings: CausalSettings,
    context: torch.Tensor,
    num_frames: int,
    latent_shape: tuple[int, int, int],
    noise: NoiseSource,
    exit_index: int,
    prefix: torch.Tensor | None = None,
    writer: ContextWriter | None = None,
) -> torch.Tensor:
    """Generate `num_frames` latent frames after `prefix`; returns them [B, C, F, h, w].

    `context` is the text embeddings [B, L, text_dim]; `latent_shape` is (C, h, w). Each chunk leaves
    at step `exit_index` of its step list (clamped to the list): under `torch.no_grad()` this is the
    plain few-step sampler when `exit_index` is the last step, otherwise its output keeps the exit
    step's graph. The prompt's cross-attention K/V are computed in the caller's grad mode.
    """
    writer = writer or SelfContext(float(settings.context_noise))
    batch = context.shape[0]
    channels, height, width = latent_shape
    prefix_frames = 0 if prefix is None else prefix.shape[2]
    device = model.device
    schedule = FlowMatchSchedule(settings.timestep_shift)
    cache = new_training_cache(model, settings, batch, height, width, prefix_frames + num_frames)
    model.set_prompt(cache, context)
    if prefix is not None:
        write_prefix(model, cache, prefix, settings)
    outputs = []
    plan = plan_chunks(num_frames, settings, start_frame=prefix_frames)
    for chunk in plan:
        timesteps = student_timesteps(settings, chunk.steps).tolist()
        exit_at = min(exit_index, len(timesteps) - 1)
        x = noise.initial(chunk.start_frame, torch.Size((batch, channels, chunk.num_frames, height, width)))
        x = x.to(device, torch.float32)
        for i in range(exit_at + 1):
            t = torch.full((batch, chunk.num_frames), timesteps[i], device=device)
            with torch.set_grad_enabled(torch.is_grad_enabled() and i == exit_at):
                flow = model(x, t, cache=cache, start_frame=chunk.start_frame)
                x0 = schedule.flow_to_x0(flow.float(), x, t)
            if i < exit_at:
                t_next = torch.full_like(t, timesteps[i + 1])
                x = schedule.add_noise(x0, noise.renoise(x0.shape).to(device, torch.float32), t_next)
        outputs.append(x0)
        if chunk is plan[-1]:
            break  # as in inference: nothing reads the last chunk's cache pass
        latents, t_context = writer(chunk, x0)
        with torch.no_grad():
            model(latents, t_context, cache=cache, start_frame=chunk.start_frame)
    return torch.cat(outputs, dim=2)

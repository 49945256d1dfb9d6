"""The baselines Self Forcing is measured against: the same student, loss and budget, other context.

Teacher forcing writes the ground-truth chunk into the cache after each generated chunk, so every
chunk is generated from real past frames; diffusion forcing writes the ground-truth chunk noised to
a random level per clip and chunk (timestep uniform in [0, 1000]). At inference both see their own
clean outputs instead: the train/test mismatch (exposure bias) that Self Forcing removes.
"""
from __future__ import annotations

import torch

from ..sampler import ChunkPlan
from .self_forcing import ContextWriter, SelfContext

METHODS = ("self_forcing", "teacher_forcing", "diffusion_forcing")


class TeacherForcingContext:
    """Cache context from ground-truth latents [B, C, F, h, w] (frames indexed as in the video), clean."""

    def __init__(self, truth: torch.Tensor, context_noise: float = 0.0):
        self.truth = truth
        self.context_noise = context_noise

    def __call__(self, chunk: ChunkPlan, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.truth[:, :, chunk.start_frame:chunk.start_frame + chunk.num_frames]
        t = torch.full((frames.shape[0], chunk.num_frames), self.context_noise, device=frames.device)
        return frames, t


class DiffusionForcingContext:
    """Cache context from ground-truth latents noised to a random timestep per clip and chunk."""

    def __init__(self, truth: torch.Tensor, generator: torch.Generator):
        self.truth = truth
        self.generator = generator

    def __call__(self, chunk: ChunkPlan, generated: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = self.truth[:, :, chunk.start_frame:chunk.start_frame + chunk.num_frames]
        batch, device = frames.shape[0], frames.device
        sigma = torch.rand(batch, generator=self.generator, device=device)
        noise = torch.randn(frames.shape, generator=self.generator, device=device)
        s = sigma.view(batch, 1, 1, 1, 1)
        noisy = (1.0 - s) * frames + s * noise
        return noisy, (sigma * 1000.0)[:, None].expand(batch, chunk.num_frames)


def context_writer(method: str, truth: torch.Tensor | None, generator: torch.Generator,
                   context_noise: float = 0.0) -> ContextWriter:
    """The cache context of a training method; `truth` is the ground-truth video (the baselines need it)."""
    if method == "self_forcing":
        return SelfContext(context_noise)
    if truth is None:
        raise ValueError(f"{method} needs the ground-truth latents")
    if method == "teacher_forcing":
        return TeacherForcingContext(truth, context_noise)
    if method == "diffusion_forcing":
        return DiffusionForcingContext(truth, generator)
    raise ValueError(f"unknown training method {method!r}; choose one of {METHODS}")

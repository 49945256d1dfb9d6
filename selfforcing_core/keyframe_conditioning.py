"""End-keyframe conditioning for models not trained with end frames (training-free).

The start keyframe needs nothing here: it is a clean prefix in the KV cache, as the official
image-to-video path does. The end keyframe is imposed on the x0 predictions of the sampler:
- the video's last latent frame is replaced by the end keyframe's latent after every step, so the
  final chunk is generated around it (the next step sees it re-noised, as inpainting does);
- every earlier frame is pulled towards it with weight `strength * (f / last) ** 2`, at every
  step but the last, so motion bends towards the goal and the final step can clean up the blend.
How well this works depends on the model: a pull in latent space moves colours and layout towards
the end frame more readily than it invents the motion that would get there, so a strong pull on a
short video can look like a cross-fade in the last second.
"""
from __future__ import annotations

import torch

from .sampler import ChunkPlan


class EndFrameGuidance:
    """x0 adjustment that lands the video's last latent frame on `end_latent` [B|1, C, 1, h, w]."""

    def __init__(self, end_latent: torch.Tensor, last_frame: int, strength: float = 0.5):
        if end_latent.dim() != 5 or end_latent.shape[2] != 1:
            raise ValueError(f"the end keyframe latent must be [B, C, 1, h, w], got {tuple(end_latent.shape)}")
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"end keyframe strength must lie in [0, 1], got {strength}")
        self.end_latent = end_latent
        self.last_frame = last_frame
        self.strength = strength

    def __call__(self, chunk: ChunkPlan, step: int, num_steps: int, x0: torch.Tensor) -> torch.Tensor:
        end = self.end_latent.to(x0)
        frames = torch.arange(chunk.start_frame, chunk.start_frame + chunk.num_frames, device=x0.device)
        final_step = step == num_steps - 1
        weight = torch.zeros_like(frames, dtype=x0.dtype)
        if not final_step and self.last_frame > 0:
            weight = self.strength * (frames.to(x0.dtype) / self.last_frame) ** 2
        weight = torch.where(frames == self.last_frame, torch.ones_like(weight), weight)
        return x0 + weight.view(1, 1, -1, 1, 1) * (end - x0)

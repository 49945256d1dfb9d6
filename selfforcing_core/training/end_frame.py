"""End-frame conditioning trained in: the end keyframe is a clean goal frame at the front of the KV cache.

Design: the end image's latent (encoded as the node pack encodes end keyframes,
`keyframes.end_keyframe_latent`) is written into the cache first, at latent frame 0, so every chunk
attends to it as to an attention sink (a sink slot keeps it when the window rolls); the video follows
from frame 1, after the start keyframe if one is given. The student learns to use it with Self Forcing
on its own rollouts (DMD on the video, the goal not part of it) plus a goal term: the squared error
between its last latent frame and the ground-truth clip's last latent frame. RoPE places the goal f + 1
frames behind frame f, so the remaining distance to the end is learned for the trained clip length.
The cache layout is the core's (`keyframe_prefix.KeyframePrefix`), so the product pipeline samples such a
model exactly as `sample_to_goal` does; compared with the training-free guidance
(`keyframe_conditioning.EndFrameGuidance`), which edits the sampler's x0 predictions, nothing changes at
sampling time but the prefix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..keyframe_prefix import KeyframePrefix
from ..noise import NoiseSource
from ..sampler import StreamingSampler, X0Adjustment


def goal_loss(generated: torch.Tensor, target_last: torch.Tensor) -> torch.Tensor:
    """Squared error between the generated video's last latent frame and the target's [B, C, 1, h, w]."""
    return F.mse_loss(generated[:, :, -1:].float(), target_last.float())


@torch.no_grad()
def sample_to_goal(
    sampler: StreamingSampler,
    context: torch.Tensor,
    noise: NoiseSource,
    goal: torch.Tensor,
    num_frames: int,
    start: torch.Tensor | None = None,
    adjust_x0: X0Adjustment | None = None,
) -> torch.Tensor:
    """Latents [B, C, num_frames, h, w] of a video that should end on `goal` (start keyframe included).

    `adjust_x0` sees the video's frames shifted by the goal frame (its last frame is num_frames).
    """
    prefix = KeyframePrefix.of(start, goal)
    batch, channels, _, height, width = goal.shape
    chunks = sampler.stream(prefix.plan(num_frames, sampler.settings), context, noise, (batch, channels, height, width),
                            prefix=prefix.latents, adjust_x0=adjust_x0)
    return torch.cat([chunk.latents for chunk in prefix.video(chunks)], dim=2)

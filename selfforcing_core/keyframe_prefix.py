"""The clean latents that keyframes put at the front of the KV cache, and where the video sits after them.

A start keyframe is the video's first latent frame, written to the cache before the generated chunks.
A model trained with end frames (`train end-frame`; its file's metadata hold "end_frame":
"goal_prefix") also takes the end keyframe as a clean goal at cache frame 0, before the start
keyframe: every chunk attends to it, but it is no frame of the video, so video latent frame f sits at
cache frame f + GOAL_FRAMES and the goal is never decoded. Models not trained so are steered to the
end keyframe by the training-free `keyframe_conditioning.EndFrameGuidance` instead.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Iterable, Iterator, Mapping, Sequence

import torch

from .config import CausalSettings
from .sampler import ChunkPlan, ChunkResult, plan_chunks

GOAL_FRAMES = 1
END_FRAME_KEY = "end_frame"
GOAL_PREFIX = "goal_prefix"
GUIDANCE = "guidance"
END_MODES = ("auto", GUIDANCE, GOAL_PREFIX)


def trained_with_goal(metadata: Mapping[str, str]) -> bool:
    """Whether a model file's metadata mark it as trained with the end keyframe as a goal prefix."""
    return metadata.get(END_FRAME_KEY) == GOAL_PREFIX


def end_mode_for(mode: str, trained: bool) -> str:
    """How an end keyframe is used ('guidance' or 'goal_prefix'): `mode`, 'auto' resolved by the model."""
    if mode not in END_MODES:
        raise ValueError(f"unknown end mode {mode!r}; choose one of {', '.join(END_MODES)}")
    if mode == "auto":
        return GOAL_PREFIX if trained else GUIDANCE
    if mode == GOAL_PREFIX and not trained:
        raise ValueError(f"end mode '{GOAL_PREFIX}' needs a model trained with end frames (`train end-frame`, "
                         f"whose metadata hold {END_FRAME_KEY}={GOAL_PREFIX}); this model was not: use "
                         f"'{GUIDANCE}' or 'auto'")
    return mode


def goal_prefix(goal: torch.Tensor, start: torch.Tensor | None = None) -> torch.Tensor:
    """The cache prefix [B, C, 1 (+ start frames), h, w]: the goal latent, then the start keyframe latent if any."""
    if goal.dim() != 5 or goal.shape[2] != GOAL_FRAMES:
        raise ValueError(f"the end keyframe latent must be [B, C, {GOAL_FRAMES}, h, w], got {tuple(goal.shape)}")
    return goal if start is None else torch.cat([goal, start], dim=2)


@dataclass(frozen=True)
class KeyframePrefix:
    """Clean latents [B, C, P, h, w] written before the generated chunks (or none); the first `hidden`
    of them (the goal) are not frames of the video."""

    latents: torch.Tensor | None = None
    hidden: int = 0

    @classmethod
    def of(cls, start: torch.Tensor | None = None, goal: torch.Tensor | None = None) -> "KeyframePrefix":
        """The start keyframe alone, or the goal then the start keyframe."""
        return cls(start) if goal is None else cls(goal_prefix(goal, start), GOAL_FRAMES)

    @property
    def frames(self) -> int:
        """Cache frames the prefix fills."""
        return 0 if self.latents is None else self.latents.shape[2]

    @property
    def start_frames(self) -> int:
        """Latent frames of the video that the prefix holds (the start keyframe's)."""
        return self.frames - self.hidden

    def check_kept(self, num_frames: int, settings: CausalSettings) -> None:
        """Refuse a goal that the cache would drop before the end: a rolling window keeps only its sink."""
        frames = num_frames + self.hidden
        window = settings.attention_window(frames)
        rolls = window is not None and frames > window + settings.sink_frames
        if self.hidden and rolls and settings.sink_frames < self.hidden:
            raise ValueError(
                f"the end image is a goal frame at the front of the cache, but this model's cache rolls (a "
                f"{window}-frame window, {settings.sink_frames} sink frames) and would drop it before the end; "
                "keep it with sink_frames >= 1 in the model loader, or use end_mode 'guidance'")

    def plan(self, num_frames: int, settings: CausalSettings, first_chunk_steps: Sequence[int] | None = None,
             prompt_starts: Sequence[int] = (), prompt_cuts: Sequence[bool] = ()) -> list[ChunkPlan]:
        """The chunks after the prefix for a video of `num_frames` latent frames (the start keyframe's
        included); `prompt_starts` are latent frames of the video, the plan's frames are the cache's."""
        return plan_chunks(num_frames - self.start_frames, settings, start_frame=self.frames,
                           first_chunk_steps=first_chunk_steps,
                           prompt_starts=[start + self.hidden for start in prompt_starts], prompt_cuts=prompt_cuts)

    def chunk_count(self, plan: Sequence[ChunkPlan], chunk_frames: int) -> int:
        """How many chunks `video` yields: the prefix's pieces (written `chunk_frames` at a time) that hold
        video frames, then the plan's."""
        pieces = range(0, self.frames, chunk_frames)
        return len(plan) + sum(1 for start in pieces if min(start + chunk_frames, self.frames) > self.hidden)

    def video(self, results: Iterable[ChunkResult]) -> Iterator[ChunkResult]:
        """The sampler's chunks in video latent frames, the hidden frames cut off (a chunk of them only is skipped)."""
        for result in results:
            first = max(result.start_frame, self.hidden)
            if first >= result.end_frame:
                continue
            yield replace(result, start_frame=first - self.hidden, end_frame=result.end_frame - self.hidden,
                          latents=result.latents[:, :, first - result.start_frame:])

"""What a streamed run hands back at its end: every latent and frame, or only the last of each.

Keeping everything is what a short clip's outputs need; keeping only the last frame is what a long
run needs (its frames go to a file chunk by chunk), so that its memory does not grow with its length.
"""
from __future__ import annotations

import torch


class VideoCollector:
    """Gathers the chunks of one streamed video [B, ...], cutting its frames at `num_frames`.

    With `keep_frames` the frames go into one buffer allocated for the whole video (no copy at the
    end); without it only the last latent frame and the last video frame are kept.
    """

    def __init__(self, num_frames: int, keep_frames: bool = True):
        if num_frames < 1:
            raise ValueError(f"a video needs at least 1 frame, got {num_frames}")
        self.num_frames = num_frames
        self.keep_frames = keep_frames
        self.frames_seen = 0
        self._latents: list[torch.Tensor] = []
        self._frames: torch.Tensor | None = None

    def add(self, latents: torch.Tensor, frames: torch.Tensor | None) -> torch.Tensor | None:
        """Take one chunk (latents [B, C, T, h, w], frames [B, T, H, W, 3] or None); returns its frames
        cut at the requested length (the decoder's last chunk may run a few frames past it)."""
        self._latents = [*self._latents, latents] if self.keep_frames else [latents[:, :, -1:].clone()]
        if frames is None:
            return None
        frames = frames[:, :max(0, self.num_frames - self.frames_seen)]
        if self.keep_frames:
            if self._frames is None:
                self._frames = frames.new_empty((frames.shape[0], self.num_frames, *frames.shape[2:]))
            self._frames[:, self.frames_seen:self.frames_seen + frames.shape[1]] = frames
        elif frames.shape[1]:
            self._frames = frames[:, -1:].clone()
        self.frames_seen += frames.shape[1]
        return frames

    def latents(self) -> torch.Tensor:
        """All latents [B, C, F, h, w] in order, or only the last latent frame [B, C, 1, h, w]."""
        if not self._latents:
            raise ValueError("no chunk was collected")
        return torch.cat(self._latents, dim=2) if len(self._latents) > 1 else self._latents[0]

    def frames(self) -> torch.Tensor | None:
        """All frames [B, T, H, W, 3] (T <= num_frames), or only the last [B, 1, H, W, 3]; None if none came."""
        if self._frames is None or not self.keep_frames:
            return self._frames
        return self._frames[:, :self.frames_seen]

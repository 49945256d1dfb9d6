"""Chunk-by-chunk decoding of a latent video while the sampler is still producing it.

Works with any decoder that has `decode_step(latents, state)` (the Wan VAE, the TAEHV preview
decoder): the stream owns the temporal state, so the frames of any chunk split equal one whole
decode, and memory stays bounded by the chunk (the state is a few frames per causal layer).
"""
from __future__ import annotations

from typing import Protocol

import torch

from .temporal_state import TemporalState


def pixels_to_frames(pixels: torch.Tensor) -> torch.Tensor:
    """Decoder output [B, 3, T, H, W] in [-1, 1] -> frames [B, T, H, W, 3] float32 in [0, 1]."""
    return (pixels.float() * 0.5 + 0.5).clamp(0, 1).permute(0, 2, 3, 4, 1)


class ChunkDecoder(Protocol):
    """A causal latent-to-frames decoder that carries its past in a `TemporalState`."""

    latent_channels: int

    def decode_step(self, latents: torch.Tensor, state: TemporalState) -> torch.Tensor: ...

    def frames_for_latents(self, latent_frames: int) -> int: ...


class StreamingDecoder:
    """Decodes one video chunk by chunk; `reset()` starts the next video.

    Latents are [B, C, T, h, w] (normalised, as the sampler makes them) on any device: they are
    moved to the decoder's device and dtype. Returns frames [B, 3, F, H, W] in [-1, 1], unclamped,
    in the decoder's dtype: 1 frame for the video's first latent frame, then 4 per latent frame.
    """

    def __init__(self, decoder: ChunkDecoder):
        self.decoder = decoder
        self.state = TemporalState()
        self.latent_frames_seen = 0
        self.frames_emitted = 0

    def reset(self) -> None:
        """Forget the current video (its causal memory and counters)."""
        self.state.clear()
        self.latent_frames_seen = 0
        self.frames_emitted = 0

    def decode_chunk(self, latents: torch.Tensor) -> torch.Tensor:
        """The frames of the next `latents.shape[2]` latent frames of the current video."""
        if latents.dim() != 5 or latents.shape[2] == 0:
            raise ValueError(f"expected a non-empty latent chunk [B, C, T, h, w], got shape {tuple(latents.shape)}")
        frames = self.decoder.decode_step(latents, self.state)
        self.latent_frames_seen += latents.shape[2]
        self.frames_emitted += frames.shape[2]
        return frames

    def state_nbytes(self) -> int:
        """Bytes of causal memory the stream holds between chunks (independent of the video length)."""
        return self.state.nbytes()

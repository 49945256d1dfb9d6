"""The KV-cache manager: preallocated self-attention K/V per layer, window + sink, text K/V per prompt.

Self-attention slots are laid out as [sink frames | ring of `local_window` frames]. Frame f < sink
lives in slot f; a later frame lives in the ring at `sink + (f - sink) % window`. Because every
query of a chunk may see every cached key (block-causal attention), slot order does not matter,
and the visible keys are always the contiguous prefix `[0, filled)` of the buffer: no copies, no
gathers and no reallocation, however long the video. Without a window the ring is as long as the
video and never wraps.

Keys are stored rotated by their absolute frame position (`frame_of_slot` records it). Two things
keep an unbounded video inside the distances a model was trained on:
- `rebase_sink`: once the window has rolled past them, the sink frames are re-rotated (from their
  unrotated keys, so no error accumulates) to sit just before the window, at a trained distance
  from every query instead of ever further away;
- `cut()`: a hard scene change forgets the window (optionally the sink too) and maps the next frame
  to the start of an empty ring.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class CacheLayout:
    """Where frames go: `capacity` frames of `frame_tokens` tokens each, split into sink and ring."""

    frame_tokens: int
    sink_frames: int
    ring_frames: int
    local_window: int | None

    @property
    def capacity(self) -> int:
        return self.sink_frames + self.ring_frames

    def slot(self, frame: int) -> int:
        if frame < self.sink_frames:
            return frame
        return self.sink_frames + (frame - self.sink_frames) % self.ring_frames

    def filled(self, end_frame: int) -> int:
        """Number of leading slots holding visible frames once frames [0, end_frame) are written."""
        return min(end_frame, self.capacity)


class KVCache:
    """Per-layer self-attention K/V buffers plus the cross-attention K/V of the current prompt."""

    def __init__(
        self,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        frame_tokens: int,
        max_frames: int | None = None,
        local_window: int | None = None,
        sink_frames: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
        rebase_sink: bool = False,
    ):
        if local_window is None and max_frames is None:
            raise ValueError("a KV cache needs max_frames (global attention) or a local_window")
        if local_window is not None and local_window < 1:
            raise ValueError(f"local_window must be >= 1 latent frame, got {local_window}")
        sink = sink_frames if local_window is not None else 0
        ring = local_window if local_window is not None else max_frames - sink
        self.layout = CacheLayout(frame_tokens, sink, ring, local_window)
        shape = (num_layers, batch_size, num_heads, self.layout.capacity * frame_tokens, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.frame_of_slot = torch.full((self.layout.capacity,), -1, dtype=torch.long)
        self.cross_keys: list[torch.Tensor | None] = [None] * num_layers
        self.cross_values: list[torch.Tensor | None] = [None] * num_layers
        self.end_frame = 0
        self.segment_offset = 0  # absolute frame f lives at local frame f - segment_offset
        sink_tokens = self.layout.sink_frames * frame_tokens
        self.sink_raw_keys = self.keys[:, :, :, :sink_tokens].clone() if rebase_sink and sink_tokens else None
        self.sink_position: int | None = None

    @property
    def batch_size(self) -> int:
        return self.keys.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.keys.dtype

    @property
    def device(self) -> torch.device:
        return self.keys.device

    def reset(self) -> None:
        """Forget the video and the prompt; buffers are kept for the next video."""
        self.frame_of_slot.fill_(-1)
        self.clear_prompt()
        self.end_frame = 0
        self.segment_offset = 0
        self.sink_position = None

    def cut(self, start_frame: int, keep_sink: bool = True) -> None:
        """Hard scene change at `start_frame`: forget the window, and the sink unless `keep_sink`."""
        sink = self.layout.sink_frames
        keep = keep_sink and sink > 0 and self.end_frame - self.segment_offset >= sink
        self.segment_offset = start_frame - (sink if keep else 0)
        self.frame_of_slot[sink if keep else 0:] = -1
        if not keep:
            self.sink_position = None
        self.end_frame = start_frame

    def sink_target(self, end_frame: int) -> int | None:
        """First frame position the sink should take for a chunk ending at `end_frame`, if it moved.

        None when sink re-basing is off, the window has not rolled past the sink yet, or the sink
        already sits there.
        """
        layout = self.layout
        if self.sink_raw_keys is None or end_frame - self.segment_offset <= layout.capacity:
            return None
        target = end_frame - layout.ring_frames - layout.sink_frames
        return None if target == self.sink_position else target

    def install_sink(self, layer: int, rotated_keys: torch.Tensor) -> None:
        """Replace the sink's keys with `rotated_keys` (the raw sink keys rotated to new positions)."""
        self.keys[layer, :, :, : rotated_keys.shape[2]] = rotated_keys

    def clear_prompt(self) -> None:
        """Invalidate the cross-attention K/V (the prompt changed)."""
        self.cross_keys = [None] * len(self.cross_keys)
        self.cross_values = [None] * len(self.cross_values)

    def has_prompt(self) -> bool:
        return all(k is not None for k in self.cross_keys)

    def set_prompt_kv(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.cross_keys[layer] = keys
        self.cross_values[layer] = values

    def prompt_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        keys, values = self.cross_keys[layer], self.cross_values[layer]
        if keys is None or values is None:
            raise RuntimeError("the prompt's cross-attention cache is empty; call set_prompt first")
        return keys, values

    def check_write(self, start_frame: int, num_frames: int) -> None:
        """Refuse writes that would break the layout (past a global cache's end, or a chunk > window)."""
        layout = self.layout
        if layout.local_window is None and start_frame + num_frames - self.segment_offset > layout.capacity:
            raise ValueError(
                f"frames {start_frame}..{start_frame + num_frames} do not fit a global KV cache of "
                f"{layout.capacity} frames; allocate more frames or use a local attention window"
            )
        if layout.local_window is not None and num_frames > layout.ring_frames:
            raise ValueError(f"a chunk of {num_frames} frames exceeds the window of {layout.ring_frames}")
        if start_frame > self.end_frame:
            raise ValueError(f"frame {start_frame} leaves a gap after cached frame {self.end_frame}")

    def write(
        self, layer: int, start_frame: int, keys: torch.Tensor, values: torch.Tensor,
        raw_keys: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store a chunk's K/V [B, heads, F*tokens, d] and return the K/V it may attend to.

        The buffers always hold detached values. When the chunk's K/V carry gradients (a training
        rollout's exit step), the returned K/V are a fresh copy with the chunk's grad-carrying
        tokens spliced in, so later in-place cache writes never touch what autograd saved. K/V come back
        in the cache's dtype whatever autocast made of them (on CUDA, bf16 autocast leaves v in bf16).
        """
        keys, values = keys.to(self.keys.dtype), values.to(self.values.dtype)
        layout = self.layout
        tokens = layout.frame_tokens
        num_frames = keys.shape[2] // tokens
        local_start = start_frame - self.segment_offset
        destinations = []
        frame = local_start
        while frame < local_start + num_frames:
            slot = layout.slot(frame)
            run = min(local_start + num_frames - frame, layout.capacity - slot)
            if frame < layout.sink_frames:
                run = min(run, layout.sink_frames - frame)
            src = slice((frame - local_start) * tokens, (frame - local_start + run) * tokens)
            dst = slice(slot * tokens, (slot + run) * tokens)
            self.keys[layer, :, :, dst] = keys[:, :, src].detach()
            self.values[layer, :, :, dst] = values[:, :, src].detach()
            if frame < layout.sink_frames:
                self.sink_position = None  # the sink holds its natural positions again
                if raw_keys is not None and self.sink_raw_keys is not None:
                    self.sink_raw_keys[layer, :, :, dst] = raw_keys[:, :, src].detach()
            destinations.append(torch.arange(dst.start, dst.stop))
            if layer == 0:
                absolute = frame + self.segment_offset
                self.frame_of_slot[slot : slot + run] = torch.arange(absolute, absolute + run)
            frame += run
        end = start_frame + num_frames
        if layer == self.keys.shape[0] - 1:
            self.end_frame = max(self.end_frame, end)
        visible = layout.filled(end - self.segment_offset) * tokens
        cached_k, cached_v = self.keys[layer, :, :, :visible], self.values[layer, :, :, :visible]
        if torch.is_grad_enabled() and (keys.requires_grad or values.requires_grad):
            index = torch.cat(destinations).to(keys.device)
            return cached_k.index_copy(2, index, keys), cached_v.index_copy(2, index, values)
        return cached_k, cached_v

    def hide_frames_from(self, end_frame: int) -> torch.Tensor | None:
        """Key mask [1, 1, 1, visible tokens] for a chunk ending at `end_frame` that is written again:
        False on slots holding frames at or after `end_frame` (None when there are none).

        Re-encoding a wrapped window chunk by chunk finds the later frames already in the ring; as
        when the chunk was generated, it must not see them.
        """
        visible = self.layout.filled(end_frame - self.segment_offset)
        keep = self.frame_of_slot[:visible] < end_frame
        if bool(keep.all()):
            return None
        mask = keep.repeat_interleave(self.layout.frame_tokens).to(self.keys.device)
        return mask.view(1, 1, 1, -1)

    def cached_frames(self) -> list[int]:
        """Frame indices currently held, in slot order."""
        return [f for f in self.frame_of_slot.tolist() if f >= 0]

    def memory_bytes(self) -> int:
        """Bytes held by the self- and cross-attention buffers."""
        tensors = [self.keys, self.values] + ([self.sink_raw_keys] if self.sink_raw_keys is not None else [])
        tensors += [t for t in self.cross_keys + self.cross_values if t is not None]
        return sum(t.numel() * t.element_size() for t in tensors)

"""The collector of a streamed run: all frames cut at the requested length in one buffer, or (long
videos) only the last frame, so that no earlier chunk stays alive."""
from __future__ import annotations

import gc
import weakref

import pytest
import torch

from selfforcing_core.video_collector import VideoCollector


def chunks(sizes: list[int], batch: int = 2) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(latents [B, 16, 3, 2, 2], frames [B, T, 4, 6, 3]) per chunk; frame t is filled with t."""
    out, first = [], 0
    for size in sizes:
        frames = torch.arange(first, first + size, dtype=torch.float32).view(1, size, 1, 1, 1)
        latents = torch.full((batch, 16, 3, 2, 2), float(len(out)))
        out.append((latents, frames.expand(batch, size, 4, 6, 3).clone()))
        first += size
    return out


def test_keeps_every_frame_cut_at_the_requested_length() -> None:
    collector = VideoCollector(num_frames=30)
    returned = [collector.add(latents, frames) for latents, frames in chunks([9, 12, 12])]
    assert [r.shape[1] for r in returned] == [9, 12, 9]
    frames = collector.frames()
    assert frames.shape == (2, 30, 4, 6, 3) and frames.is_contiguous()
    assert torch.equal(frames[:, :, 0, 0, 0], torch.arange(30.0).expand(2, 30))
    assert torch.equal(collector.latents()[0, 0, :, 0, 0], torch.tensor([0.0, 0, 0, 1, 1, 1, 2, 2, 2]))


def test_without_keep_frames_only_the_last_frame_is_held() -> None:
    collector = VideoCollector(num_frames=30, keep_frames=False)
    alive = []
    for latents, frames in chunks([9, 12, 12]):
        collector.add(latents, frames)
        alive += [weakref.ref(latents), weakref.ref(frames)]
        del latents, frames
    gc.collect()
    assert all(ref() is None for ref in alive)
    assert collector.frames().shape == (2, 1, 4, 6, 3) and collector.frames().eq(29).all()
    assert collector.latents().shape == (2, 16, 1, 2, 2) and collector.latents().eq(2).all()
    assert collector.frames_seen == 30


def test_latents_only_without_a_decoder() -> None:
    collector = VideoCollector(num_frames=25)
    assert collector.add(torch.zeros(1, 16, 3, 2, 2), None) is None
    assert collector.frames() is None and collector.latents().shape == (1, 16, 3, 2, 2)
    with pytest.raises(ValueError, match="no chunk was collected"):
        VideoCollector(num_frames=25).latents()
    with pytest.raises(ValueError, match="at least 1 frame"):
        VideoCollector(num_frames=0)

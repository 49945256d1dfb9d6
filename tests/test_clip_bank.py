"""The VAE's device-resident clip bank: what it holds after any number of refreshes, and its batches."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from selfforcing_core.training.data import WorldClipBank, world_clips
from selfforcing_core.training.stages import VAEStage, vae_clip_source
from training_helpers import TOY_WORLD


def _expected(seed: int, first: int, size: int) -> torch.Tensor:
    """The clips [first, first + size) of the stream, each in slot index mod size, as the bank quantises them."""
    video, _ = world_clips(seed, range(first, first + size), TOY_WORLD)
    slots = torch.arange(first, first + size) % size
    expected = torch.empty((size, *video.shape[1:]), dtype=torch.uint8)
    expected[slots] = video.add(1.0).mul(127.5).round().to(torch.uint8)
    return expected


def test_bank_slides_over_the_stream_and_resumes_to_the_same_clips():
    bank = WorldClipBank(seed=3, size=6, config=TOY_WORLD, device="cpu", refresh=4, render_batch=5)
    assert torch.equal(bank.clips, _expected(3, 0, 6))
    for refreshes in (1, 2, 3):
        bank.seek(refreshes)
        assert torch.equal(bank.clips, _expected(3, 4 * refreshes, 6))
    resumed = WorldClipBank(seed=3, size=6, config=TOY_WORLD, device="cpu", refresh=4)
    resumed.seek(3)
    assert torch.equal(resumed.clips, bank.clips)


def test_bank_batches_are_its_clips_in_range_some_mirrored():
    bank = WorldClipBank(seed=0, size=4, config=TOY_WORLD, device="cpu")
    video = bank.sample(64, torch.Generator().manual_seed(0))
    assert video.shape == (64, 3, TOY_WORLD.num_frames, TOY_WORLD.height, TOY_WORLD.width)
    assert video.min() >= -1.0 and video.max() <= 1.0
    clips = bank.clips.float() / 127.5 - 1.0
    straight = [(item == clips).flatten(1).all(1).any() for item in video]
    mirrored = [(item == clips.flip(-1)).flatten(1).all(1).any() for item in video]
    assert all(a or b for a, b in zip(straight, mirrored))
    assert 0 < sum(bool(m and not s) for s, m in zip(straight, mirrored)) < 64
    truth, _ = world_clips(0, range(4), TOY_WORLD)
    assert (clips - truth).abs().max() <= 0.5 / 127.5 + 1e-6


def test_the_vae_stage_moves_its_bank_on_every_few_steps():
    stage = VAEStage(out="unused", batch=2, bank_clips=4, bank_refresh_every=3)
    source = vae_clip_source(stage, TOY_WORLD, SimpleNamespace(device=torch.device("cpu"), process_index=0))
    generator = torch.Generator().manual_seed(0)
    for step in range(8):
        assert source(step, generator).shape == (2, 3, TOY_WORLD.num_frames, TOY_WORLD.height, TOY_WORLD.width)
        assert source.bank.refreshes == step // 3
    resumed = vae_clip_source(stage, TOY_WORLD, SimpleNamespace(device=torch.device("cpu"), process_index=0))
    resumed(7, generator)
    assert torch.equal(resumed.bank.clips, source.bank.clips)

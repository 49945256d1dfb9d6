"""The streaming sampler: seeds, batches, prefixes, per-chunk plans, prompts and interruption."""
from __future__ import annotations

import pytest
import torch

from selfforcing_core.config import CausalSettings
from selfforcing_core.noise import SeededNoise
from selfforcing_core.sampler import StreamingSampler, plan_chunks

from tiny_models import TINY

SETTINGS = CausalSettings(chunk_frames=3, denoising_steps=(1000, 750, 500))
SHAPE = (1, 16, 4, 4)


def _context(batch: int = 1, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 5, TINY.text_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def test_plan_covers_the_video_with_per_chunk_steps_and_prompts():
    plan = plan_chunks(10, SETTINGS, first_chunk_frames=1, first_chunk_steps=(1000, 750, 500, 250),
                       prompt_starts=(4,))
    assert [(c.start_frame, c.num_frames) for c in plan] == [(0, 1), (1, 3), (4, 3), (7, 3)]
    assert plan[0].steps == (1000, 750, 500, 250) and plan[1].steps == (1000, 750, 500)
    assert [c.prompt for c in plan] == [0, 0, 1, 1]
    assert [(c.start_frame, c.num_frames) for c in plan_chunks(7, SETTINGS)] == [(0, 3), (3, 3), (6, 1)]


def test_stream_yields_each_chunk_with_its_range_and_timing(model):
    sampler = StreamingSampler(model, SETTINGS)
    chunks = list(sampler.stream(plan_chunks(6, SETTINGS), _context(), SeededNoise(1, 1, torch.float64), SHAPE))
    assert [(c.start_frame, c.end_frame) for c in chunks] == [(0, 3), (3, 6)]
    assert all(c.latents.shape == (1, 16, 3, 4, 4) and c.seconds > 0 for c in chunks)


def test_same_seed_same_video_and_other_seed_differs(model):
    sampler = StreamingSampler(model, SETTINGS)
    plan = plan_chunks(6, SETTINGS)
    a = sampler.sample(plan, _context(), SeededNoise(5, 1, torch.float64), SHAPE)
    b = sampler.sample(plan, _context(), SeededNoise(5, 1, torch.float64), SHAPE)
    c = sampler.sample(plan, _context(), SeededNoise(6, 1, torch.float64), SHAPE)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (a - c).abs().max() > 1e-3


def test_batch_item_i_equals_a_single_run_with_seed_plus_i(model):
    sampler = StreamingSampler(model, SETTINGS)
    plan = plan_chunks(6, SETTINGS)
    contexts = _context(batch=2)
    batch = sampler.sample(plan, contexts, SeededNoise(10, 2, torch.float64), (2, 16, 4, 4))
    for i in range(2):
        single = sampler.sample(plan, contexts[i:i + 1], SeededNoise(10 + i, 1, torch.float64), SHAPE)
        torch.testing.assert_close(batch[i:i + 1], single, rtol=0, atol=1e-10)


def test_prefix_is_kept_and_conditions_what_follows(model):
    sampler = StreamingSampler(model, SETTINGS)
    prefix = torch.randn(1, 16, 1, 4, 4, dtype=torch.float64)
    plan = plan_chunks(6, SETTINGS, start_frame=1)
    chunks = list(sampler.stream(plan, _context(), SeededNoise(3, 1, torch.float64), SHAPE, prefix=prefix))
    assert chunks[0].is_prefix and torch.equal(chunks[0].latents, prefix)
    video = torch.cat([c.latents for c in chunks], dim=2)
    assert video.shape[2] == 7
    other = sampler.sample(plan, _context(), SeededNoise(3, 1, torch.float64), SHAPE, prefix=prefix + 1)
    assert (video[:, :, 1:] - other[:, :, 1:]).abs().max() > 1e-3


def test_prefix_and_plan_must_agree(model):
    sampler = StreamingSampler(model, SETTINGS)
    prefix = torch.randn(1, 16, 2, 4, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="plan starts at frame 0 but the prefix has 2"):
        list(sampler.stream(plan_chunks(3, SETTINGS), _context(), SeededNoise(0, 1), SHAPE, prefix=prefix))


def test_prompt_change_mid_video_switches_cross_attention(model):
    sampler = StreamingSampler(model, SETTINGS)
    plan_one = plan_chunks(6, SETTINGS)
    plan_two = plan_chunks(6, SETTINGS, prompt_starts=(3,))
    contexts = [_context(seed=0), _context(seed=1)]
    one = sampler.sample(plan_one, contexts, SeededNoise(0, 1, torch.float64), SHAPE)
    two = sampler.sample(plan_two, contexts, SeededNoise(0, 1, torch.float64), SHAPE)
    torch.testing.assert_close(one[:, :, :3], two[:, :, :3], rtol=0, atol=0)
    assert (one[:, :, 3:] - two[:, :, 3:]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="uses prompt 1 but 1 were given"):
        list(sampler.stream(plan_two, contexts[:1], SeededNoise(0, 1), SHAPE))


def test_interrupt_stops_between_model_calls(model):
    sampler = StreamingSampler(model, SETTINGS)
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) > 5:
            raise KeyboardInterrupt("stop")

    stream = sampler.stream(plan_chunks(9, SETTINGS), _context(), SeededNoise(0, 1, torch.float64), SHAPE,
                            interrupt=interrupt)
    first = next(stream)
    assert first.end_frame == 3
    with pytest.raises(KeyboardInterrupt):
        next(stream)
    assert len(calls) == 6


def test_float32_sampling_is_close_to_float64(model):
    sampler64 = StreamingSampler(model, SETTINGS)
    plan = plan_chunks(6, SETTINGS)
    exact = sampler64.sample(plan, _context(), SeededNoise(0, 1, torch.float64), SHAPE)
    sampler32 = StreamingSampler(model.to(torch.float32), SETTINGS)
    approx = sampler32.sample(plan, _context().float(), SeededNoise(0, 1), SHAPE)
    assert approx.dtype == torch.float32
    assert (approx.double() - exact).abs().max() < 1e-3

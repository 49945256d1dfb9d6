"""ODE pairs from the teacher, the causal initialisation, the clip bank and end-frame sampling (CPU)."""
from __future__ import annotations

import pytest
import torch

from selfforcing_core.noise import SeededNoise
from selfforcing_core.sampler import StreamingSampler
from selfforcing_core.training.causal_init import ode_regression_loss
from selfforcing_core.training.end_frame import sample_to_goal
from selfforcing_core.training.latent_bank import ClipBank
from selfforcing_core.training.ode_pairs import ODEPairs, make_ode_pairs, record_indices, teacher_trajectory
from selfforcing_core.training.sampling import sample_flow

from distill_helpers import FRAMES, LATENT, SETTINGS, TinyText, bank, student
from tiny_models import TINY


def test_the_students_timesteps_lie_on_the_teachers_euler_grid():
    assert record_indices(SETTINGS, 24, 3.0) == [0, 6, 12, 18]
    assert record_indices(SETTINGS, 8, 3.0) == [0, 2, 4, 6]
    with pytest.raises(ValueError, match="misses"):
        record_indices(SETTINGS, 10, 3.0)
    with pytest.raises(ValueError, match="misses"):
        record_indices(SETTINGS, 24, 5.0)


def test_trajectory_starts_at_the_noise_and_ends_at_the_teachers_sample():
    teacher = student(1).eval()
    context = torch.randn(2, TINY.text_len, TINY.text_dim)
    uncond = torch.zeros(1, TINY.text_len, TINY.text_dim)
    noise = torch.randn(2, LATENT[0], FRAMES, *LATENT[1:])
    states = teacher_trajectory(teacher, context, uncond, noise, [0, 2, 4, 6], 8, 4.0, 3.0)
    assert states.shape == (2, 5, LATENT[0], FRAMES, *LATENT[1:])
    torch.testing.assert_close(states[:, 0], noise)
    torch.testing.assert_close(states[:, -1], sample_flow(teacher, context, uncond, noise, 8, 4.0, 3.0))
    assert not torch.allclose(states[:, 1], states[:, 2])


def test_ode_pairs_cover_the_captions_and_survive_a_save(tmp_path):
    teacher, text = student(1).eval(), TinyText()
    clips = bank(count=5)
    uncond = text(torch.zeros(1, TINY.text_len, dtype=torch.long), torch.zeros(1, TINY.text_len, dtype=torch.long))
    pairs = make_ode_pairs(teacher, text, clips.ids, clips.mask, uncond, (LATENT[0], FRAMES, *LATENT[1:]), SETTINGS,
                           torch.Generator().manual_seed(0), steps=8, guidance=3.0, batch_size=2)
    assert len(pairs) == 5 and pairs.states.shape[1] == 5
    pairs.save(str(tmp_path / "pairs.safetensors"))
    loaded = ODEPairs.load(str(tmp_path / "pairs.safetensors"))
    torch.testing.assert_close(loaded.states, pairs.states)
    torch.testing.assert_close(loaded.ids, clips.ids)


def test_ode_regression_lowers_its_loss():
    teacher, model = student(1).eval(), student(0)
    context = torch.randn(4, TINY.text_len, TINY.text_dim, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(4, LATENT[0], FRAMES, *LATENT[1:], generator=torch.Generator().manual_seed(3))
    states = teacher_trajectory(teacher, context, torch.zeros(1, TINY.text_len, TINY.text_dim), noise,
                                [0, 6, 12, 18], 24, 3.0, 3.0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for step in range(25):
        loss = ode_regression_loss(model, states, context, SETTINGS, torch.Generator().manual_seed(step % 4))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) < 0.5 * sum(losses[:4])


def test_clip_bank_round_trip(tmp_path):
    clips = bank()
    clips.save(str(tmp_path / "bank.safetensors"))
    loaded = ClipBank.load(str(tmp_path / "bank.safetensors"))
    assert loaded.captions == clips.captions
    torch.testing.assert_close(loaded.latents.float(), clips.latents.half().float())
    latents, ends, ids, mask = loaded.batch(torch.tensor([4, 1]))
    assert latents.dtype == torch.float32 and latents.shape == (2, LATENT[0], FRAMES, *LATENT[1:])
    torch.testing.assert_close(ids, clips.ids[[4, 1]])


def test_the_goal_is_a_prefix_the_video_attends_to_but_does_not_contain():
    model = student().eval()
    sampler = StreamingSampler(model, SETTINGS)
    context = torch.randn(1, TINY.text_len, TINY.text_dim)
    start = torch.randn(1, LATENT[0], 1, *LATENT[1:])
    goals = torch.randn(2, 1, LATENT[0], 1, *LATENT[1:])
    first, second = (sample_to_goal(sampler, context, SeededNoise(0, 1), goal, FRAMES, start) for goal in goals)
    assert first.shape == (1, LATENT[0], FRAMES, *LATENT[1:])
    torch.testing.assert_close(first[:, :, :1], start)
    assert (first[:, :, 1:] - second[:, :, 1:]).abs().max() > 1e-4
    assert sampler.cache.cached_frames()[0] == 0 and len(sampler.cache.cached_frames()) == 9

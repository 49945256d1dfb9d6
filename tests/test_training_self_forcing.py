"""Self Forcing's training rollout, gradient truncation, DMD, the baselines' context and resuming (CPU)."""
from __future__ import annotations

import math

import pytest
import torch

from selfforcing_core.noise import SeededNoise
from selfforcing_core.sampler import StreamingSampler, plan_chunks
from selfforcing_core.training.baselines import DiffusionForcingContext, TeacherForcingContext, context_writer
from selfforcing_core.training.distillation import Distillation, DistillOptions
from selfforcing_core.training.dmd import DMDOptions, critic_loss, dmd_loss
from selfforcing_core.training.self_forcing import GeneratorNoise, rollout
from selfforcing_core.training.trainer import STOP_FILE

from distill_helpers import FRAMES, LATENT, SETTINGS, TinyText, bank, student, trainer
from tensor_memory import PeakTensorMemory
from tiny_models import TINY


def _context(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, TINY.text_len, TINY.text_dim, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("prefix_frames", [0, 1])
def test_rollout_at_the_last_exit_step_is_the_streaming_sampler(prefix_frames):
    """Exactly as inference: same chunks, same cache passes (none after the last), same noise draws, same latents."""
    model = student().eval()
    context = _context()
    prefix = torch.randn(2, LATENT[0], prefix_frames, *LATENT[1:]) if prefix_frames else None
    frames = FRAMES - prefix_frames
    with torch.no_grad():
        ours = rollout(model, SETTINGS, context, frames, LATENT, SeededNoise(4, 2), exit_index=3, prefix=prefix)
    plan = plan_chunks(frames, SETTINGS, start_frame=prefix_frames)
    reference = StreamingSampler(model, SETTINGS).sample(plan, context, SeededNoise(4, 2), (2, *LATENT),
                                                         prefix=prefix)
    torch.testing.assert_close(ours, reference[:, :, prefix_frames:], rtol=0, atol=1e-5)


def test_rollout_past_the_window_with_a_rebased_sink_is_the_streaming_sampler():
    model = student().eval()
    settings = SETTINGS.with_(rebase_sink=True)
    context = _context()
    with torch.no_grad():
        ours = rollout(model, settings, context, 15, LATENT, SeededNoise(2, 2), exit_index=3)
    reference = StreamingSampler(model, settings).sample(plan_chunks(15, settings), context, SeededNoise(2, 2),
                                                         (2, *LATENT))
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


class _CallLog:
    """Forward hook recording, per model call, its first timestep and whether its output carries grad."""

    def __init__(self, model):
        self.calls: list[tuple[float, int, bool]] = []
        model.register_forward_hook(self.hook, with_kwargs=True)

    def hook(self, module, args, kwargs, output):
        self.calls.append((float(args[1][0, 0]), kwargs.get("start_frame", 0), output.requires_grad))


@pytest.mark.parametrize("exit_index", [0, 2, 3])
def test_gradients_reach_only_the_exit_step_of_each_chunk(exit_index):
    model = student()
    calls = _CallLog(model)
    video = rollout(model, SETTINGS, _context(), FRAMES, LATENT, GeneratorNoise(torch.Generator().manual_seed(1)),
                    exit_index)
    grad_calls = [(t, start) for t, start, grad in calls.calls if grad]
    timesteps = [1000.0, 900.0, 750.0, 500.0]  # steps 1000/750/500/250 warped at shift 3
    assert grad_calls == [(pytest.approx(timesteps[exit_index]), start) for start in (0, 3, 6)]
    per_chunk = exit_index + 2  # steps up to the exit, then the cache pass (none after the last chunk)
    assert len(calls.calls) == 3 * per_chunk - 1
    cache_passes = [c for i, c in enumerate(calls.calls) if i % per_chunk == per_chunk - 1]
    assert len(cache_passes) == 2
    assert all(t == 0.0 and not grad for t, _, grad in cache_passes)
    video.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def _peak_bytes(steps: tuple[int, ...], frames: int) -> int:
    model = student()
    settings = SETTINGS.with_(denoising_steps=steps)
    with PeakTensorMemory() as probe:
        video = rollout(model, settings, _context(1), frames, LATENT, GeneratorNoise(torch.Generator().manual_seed(1)),
                        exit_index=len(steps) - 1)
        video.square().mean().backward()
    return probe.peak


def test_memory_does_not_grow_with_denoising_steps_and_grows_one_graph_per_chunk():
    one_step, four_steps = _peak_bytes((1000,), FRAMES), _peak_bytes((1000, 750, 500, 250), FRAMES)
    assert four_steps <= 1.05 * one_step
    # Per chunk: one exit-step graph, the same for every chunk however long the video.
    sizes = [_peak_bytes((1000, 750, 500, 250), 3 * chunks) for chunks in (2, 3, 4)]
    increments = [b - a for a, b in zip(sizes, sizes[1:])]
    assert increments[1] == pytest.approx(increments[0], rel=0.05)


def test_dmd_loss_hands_the_normalised_score_difference_to_the_generator():
    torch.manual_seed(0)
    teacher, critic = student(1).eval(), student(2).eval()
    video = torch.randn(2, LATENT[0], 6, *LATENT[1:], requires_grad=True)
    context, uncond = _context(), _context(1, seed=9)
    options = DMDOptions(guidance=3.0)
    loss, _ = dmd_loss(video, teacher, critic, context, uncond, torch.Generator().manual_seed(3), options)
    loss.backward()
    rng = torch.Generator().manual_seed(3)
    from selfforcing_core.training.dmd import guided_x0, noised, predict_x0, score_sigmas

    with torch.no_grad():
        sigma = score_sigmas(2, rng, options)
        noisy, t = noised(video, sigma, torch.randn(video.shape, generator=rng))
        real = guided_x0(teacher, noisy, t, sigma, context, uncond, 3.0)
        fake = predict_x0(critic, noisy, t, sigma, context)
        expected = (fake - real) / (video - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True) / video.numel()
    torch.testing.assert_close(video.grad, expected, rtol=1e-4, atol=1e-9)


def test_critic_loss_falls_while_it_fits_fixed_generator_samples():
    critic = student(2)
    optimizer = torch.optim.Adam(critic.parameters(), lr=3e-3)
    video = torch.randn(4, LATENT[0], 6, *LATENT[1:], generator=torch.Generator().manual_seed(1))
    context = _context(4)
    losses = []
    for step in range(30):
        loss = critic_loss(critic, video, context, torch.Generator().manual_seed(step % 3), DMDOptions())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) < 0.7 * sum(losses[:3])


def test_teacher_forcing_writes_ground_truth_and_diffusion_forcing_noises_it():
    truth = torch.randn(2, LATENT[0], FRAMES, *LATENT[1:])
    chunk = plan_chunks(FRAMES, SETTINGS)[1]
    generated = torch.randn(2, LATENT[0], 3, *LATENT[1:])
    latents, t = TeacherForcingContext(truth)(chunk, generated)
    torch.testing.assert_close(latents, truth[:, :, 3:6])
    assert t.eq(0).all()
    latents, t = DiffusionForcingContext(truth, torch.Generator().manual_seed(0))(chunk, generated)
    sigma = (t[:, 0] / 1000).view(2, 1, 1, 1, 1)
    assert (t > 0).all() and (t < 1000).all() and t.shape == (2, 3)
    assert not torch.allclose(latents, truth[:, :, 3:6])
    residual = (latents - (1 - sigma) * truth[:, :, 3:6]) / sigma
    assert 0.7 < float(residual.std()) < 1.3  # what is left is unit Gaussian noise
    with pytest.raises(ValueError, match="ground-truth"):
        context_writer("teacher_forcing", None, torch.Generator())


@pytest.mark.parametrize("method", ["self_forcing", "teacher_forcing", "diffusion_forcing"])
def test_rollouts_differ_only_in_the_cache_context(method):
    """The first chunk sees no context, so every method makes the same first chunk from the same noise."""
    model = student().eval()
    truth = torch.randn(2, LATENT[0], FRAMES, *LATENT[1:])
    with torch.no_grad():
        def run(name):
            rng = torch.Generator().manual_seed(7)
            return rollout(model, SETTINGS, _context(), FRAMES, LATENT, GeneratorNoise(rng), 3,
                           writer=context_writer(name, truth, torch.Generator().manual_seed(8)))
        ours, reference = run(method), run("self_forcing")
    torch.testing.assert_close(ours[:, :, :3], reference[:, :, :3])
    if method != "self_forcing":
        assert not torch.allclose(ours[:, :, 3:], reference[:, :, 3:])


def _distillation(tmp_path, steps: int, method: str = "self_forcing", end_frame: bool = False) -> Distillation:
    text = TinyText()
    uncond = text(torch.zeros(1, TINY.text_len, dtype=torch.long), torch.zeros(1, TINY.text_len, dtype=torch.long))
    generator = trainer(student(0), str(tmp_path / "generator"), steps)
    critic = trainer(student(1), str(tmp_path / "critic"), 2 * steps)
    options = DistillOptions(method=method, batch=2, critic_steps=2, end_frame=end_frame, dmd=DMDOptions(guidance=2.0))
    return Distillation(generator, critic, student(1).eval().requires_grad_(False), text, uncond, bank(), SETTINGS,
                        options)


@pytest.mark.parametrize("method, end_frame", [("self_forcing", False), ("teacher_forcing", False),
                                               ("diffusion_forcing", False), ("self_forcing", True)])
def test_a_distillation_step_updates_generator_and_critic(tmp_path, method, end_frame):
    distill = _distillation(tmp_path, steps=1, method=method, end_frame=end_frame)
    before = [p.detach().clone() for p in distill.student.parameters()]
    critic_before = [p.detach().clone() for p in distill.critic.unwrapped.parameters()]
    distill.run(checkpoint_every=1000, log_every=1000)
    assert distill.generator.state.step == 1 and distill.critic.state.step == 2
    assert all(math.isfinite(v) for v in distill.summary().values())
    assert any(not torch.equal(a, b) for a, b in zip(before, distill.student.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, distill.critic.unwrapped.parameters()))
    assert ("goal_mse" in distill.stats) == end_frame


def test_resumed_distillation_repeats_the_uninterrupted_run(tmp_path):
    straight = _distillation(tmp_path / "straight", steps=3)
    straight.run(checkpoint_every=1000, log_every=1000)
    interrupted = _distillation(tmp_path / "resumed", steps=3)
    step = interrupted.generator.step

    def killed_at_the_third_generator_step(loss_fn):
        if interrupted.generator.state.step == 2:
            raise KeyboardInterrupt
        return step(loss_fn)

    interrupted.generator.step = killed_at_the_third_generator_step
    with pytest.raises(KeyboardInterrupt):
        interrupted.run(checkpoint_every=2, log_every=1000)
    resumed = _distillation(tmp_path / "resumed", steps=3)
    assert resumed.generator.resume() and resumed.critic.resume()
    assert resumed.generator.state.step == 2 and resumed.critic.state.step == 4
    resumed.run(checkpoint_every=1000, log_every=1000)
    for a, b in zip(straight.student.parameters(), resumed.student.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(straight.critic.unwrapped.parameters(), resumed.critic.unwrapped.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_stop_file_ends_distillation_after_the_critic_steps_of_the_generator_step(tmp_path):
    distill = _distillation(tmp_path, steps=5)
    step = distill.generator.step

    def stop_during_the_second_generator_step(loss_fn):
        if distill.generator.state.step == 1:
            (tmp_path / STOP_FILE).touch()
        return step(loss_fn)

    distill.generator.step = stop_during_the_second_generator_step
    distill.run(checkpoint_every=1000, log_every=1000)
    assert distill.generator.state.step == 2 and distill.critic.state.step == 4
    assert not (tmp_path / STOP_FILE).exists()

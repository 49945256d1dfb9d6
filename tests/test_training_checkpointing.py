"""Resumable training: an interrupted run, resumed from its checkpoint, equals an uninterrupted one."""
from __future__ import annotations

import math

import pytest
import torch

from selfforcing_core.training.data import CaptionTokens, LatentBank
from selfforcing_core.training.ema import EMA
from selfforcing_core.training.model_sizes import TOY
from selfforcing_core.training.teacher_training import flow_matching_loss
from selfforcing_core.training.trainer import STOP_FILE, TrainOptions, Trainer, make_accelerator
from training_helpers import toy_teacher

CAPTIONS = ["a red circle moves right on a gray background", "a green square grows on a beige background",
            "a white star shrinks on a navy background", "a small pink triangle moves up on a teal background"]


def _bank(tokens: CaptionTokens) -> LatentBank:
    ids, mask = tokens(CAPTIONS)
    latents = torch.randn(len(CAPTIONS), 16, 3, 4, 4, generator=torch.Generator().manual_seed(5))
    return LatentBank(latents, ids, mask, CAPTIONS)


def _trainer(state_path: str, steps: int, **changes) -> tuple[Trainer, object]:
    tokens = CaptionTokens(TOY.text_len)
    bank = _bank(tokens)
    options = TrainOptions(**{"lr": 1e-3, "warmup_steps": 2, "steps": steps, "checkpoint_every": 1000, "log_every": 1,
                              "ema_decay": 0.9, **changes})
    trainer = Trainer(toy_teacher(), options, make_accelerator("no", cpu=True), state_path)

    def loss_fn(model, generator, step):
        index = torch.randint(len(bank), (2,), generator=generator)
        latents, ids, mask = bank.batch(index)
        return flow_matching_loss(model, latents, ids, mask, tokens.empty_ids, tokens.empty_mask, generator,
                                  shift=3.0, text_dropout=0.5)

    return trainer, loss_fn


def test_resumed_run_matches_the_uninterrupted_run(tmp_path):
    straight, loss_fn = _trainer(str(tmp_path / "straight"), steps=4)
    straight_losses = [float(straight.step(loss_fn)) for _ in range(4)]

    first, loss_fn = _trainer(str(tmp_path / "resumed"), steps=4)
    first_losses = [float(first.step(loss_fn)) for _ in range(2)]
    first.save()
    assert first_losses == straight_losses[:2]
    second, loss_fn = _trainer(str(tmp_path / "resumed"), steps=4)
    assert second.resume() and second.state.step == 2
    resumed_losses = [float(second.step(loss_fn)) for _ in range(2)]

    assert resumed_losses == straight_losses[2:]
    for (name, a), b in zip(straight.unwrapped.state_dict().items(), second.unwrapped.state_dict().values()):
        assert torch.equal(a, b), name
    for name, shadow in straight.ema.shadow.items():
        assert torch.equal(shadow, second.ema.shadow[name]), name
    assert straight.ema.updates == second.ema.updates == 4


def test_resume_without_a_checkpoint_starts_fresh(tmp_path):
    trainer, _ = _trainer(str(tmp_path / "none"), steps=1)
    assert not trainer.resume() and trainer.state.step == 0


def test_a_stop_file_written_during_a_run_ends_it_saved_and_is_consumed(tmp_path):
    trainer, loss_fn = _trainer(str(tmp_path / "state"), steps=1000)

    def stop_at_third_step(model, generator, step):
        if step == 2:
            (tmp_path / STOP_FILE).touch()
        return loss_fn(model, generator, step)

    trainer.run(stop_at_third_step, "toy")

    assert trainer.state.step == 3
    assert not (tmp_path / STOP_FILE).exists()
    resumed, _ = _trainer(str(tmp_path / "state"), steps=1000)
    assert resumed.resume() and resumed.state.step == 3


def _all_finite(tensors) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def test_a_step_with_a_non_finite_loss_is_skipped_and_the_weights_and_ema_stay_finite(tmp_path, caplog):
    trainer, loss_fn = _trainer(str(tmp_path / "state"), steps=4)

    def overflow_at_second_step(model, generator, step):
        loss = loss_fn(model, generator, step)
        return loss * float("inf") if step == 1 else loss

    losses = [float(trainer.step(overflow_at_second_step)) for _ in range(4)]

    assert not math.isfinite(losses[1]) and all(math.isfinite(v) for v in losses[::2] + losses[3:])
    assert _all_finite(trainer.unwrapped.parameters()) and _all_finite(trainer.ema.shadow.values())
    assert int(trainer.skipped) == 1
    assert math.isfinite(trainer.recent_loss())
    trainer.check_skipped("toy")  # one bad step of four: a warning, and the run goes on
    assert "skipped 1 of the last 4 steps" in caplog.text and int(trainer.skipped) == 0


def test_isolated_non_finite_steps_never_stop_a_run(tmp_path):
    trainer, loss_fn = _trainer(str(tmp_path / "state"), steps=8, diverged_after=2)

    trainer.run(lambda model, generator, step: loss_fn(model, generator, step) * (float("nan") if step % 2 else 1.0),
                "toy")

    assert trainer.state.step == 8 and _all_finite(trainer.unwrapped.parameters())


def test_a_run_whose_every_step_is_non_finite_stops_with_an_error(tmp_path):
    trainer, loss_fn = _trainer(str(tmp_path / "state"), steps=100, diverged_after=3)
    before = [p.detach().clone() for p in trainer.unwrapped.parameters()]
    rates = []

    def diverged(model, generator, step):
        rates.append(trainer.optimizer.param_groups[0]["lr"])
        return loss_fn(model, generator, step) * float("nan")

    with pytest.raises(FloatingPointError, match="the last 3 steps up to step 3"):
        trainer.run(diverged, "toy")

    # With zero gradients from the start, AdamW's moments stay zero: only the weight decay moved the weights.
    decay = math.prod(1.0 - lr * trainer.options.weight_decay for lr in rates)
    for a, b in zip(before, trainer.unwrapped.parameters()):
        assert torch.allclose(b, a * decay, atol=1e-7)


class _TwoProcessAccelerator:
    """Stands in for the main one of two accelerate processes, counting the reduces that sync them."""

    num_processes, process_index, is_main_process, device = 2, 0, True, torch.device("cpu")

    def __init__(self) -> None:
        self.reduces = 0

    def prepare(self, *objects):
        return objects

    def unwrap_model(self, model):
        return model

    def reduce(self, tensor: torch.Tensor, reduction: str) -> torch.Tensor:
        self.reduces += 1
        return tensor


def test_several_processes_agree_on_time_and_stop_only_every_log_every_steps(tmp_path):
    accelerator = _TwoProcessAccelerator()
    options = TrainOptions(minutes=60.0, log_every=10, checkpoint_every=1000)
    trainer = Trainer(toy_teacher(), options, accelerator, str(tmp_path / "state"))
    (tmp_path / STOP_FILE).touch()

    spent = []
    for step in range(25):
        trainer.state.step = step
        spent.append(trainer.budget_spent())

    assert accelerator.reduces == 3
    assert [step for step, over in enumerate(spent) if over] == [0, 10, 20]


def test_a_step_budget_ends_every_process_without_a_reduce(tmp_path):
    accelerator = _TwoProcessAccelerator()
    trainer = Trainer(toy_teacher(), TrainOptions(steps=7, log_every=5), accelerator, str(tmp_path / "state"))
    trainer.state.step = 7
    assert trainer.budget_spent() and accelerator.reduces == 0


def test_budget_needs_exactly_one_of_steps_and_minutes():
    with pytest.raises(ValueError):
        TrainOptions()
    with pytest.raises(ValueError):
        TrainOptions(steps=1, minutes=1.0)


def test_ema_follows_with_warm_up():
    model = torch.nn.Linear(2, 1, bias=False)
    ema = EMA(model, decay=0.99)
    with torch.no_grad():
        model.weight.fill_(1.0)
    start = ema.shadow["weight"].clone()
    ema.update(model)
    decay = 2.0 / 11.0
    torch.testing.assert_close(ema.shadow["weight"], decay * start + (1 - decay) * torch.ones(1, 2))
    target = torch.nn.Linear(2, 1, bias=False)
    ema.copy_to(target)
    assert torch.equal(target.weight, ema.shadow["weight"])


def test_ema_update_moves_every_parameter_by_its_own_shadow():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)).to(torch.bfloat16)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        for index, param in enumerate(model.parameters()):
            param.fill_(float(index + 1))
    expected = {name: value.clone() for name, value in ema.shadow.items()}
    decay = min(0.5, 2.0 / 11.0)
    for name, param in model.named_parameters():
        expected[name].lerp_(param.float(), 1.0 - decay)
    ema.update(model)
    for name, value in ema.shadow.items():
        assert value.dtype == torch.float32
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)


def test_the_ema_model_runs_in_float32_outside_the_training_autocast(fresh_accelerate_state):
    """The accelerator wraps the training model's forward in bf16 autocast; the EMA copy that is exported,
    evaluated and scored runs without it, while training keeps it."""
    trainer = Trainer(toy_teacher(), TrainOptions(steps=1), make_accelerator("bf16", cpu=True))
    latents, ids, mask = torch.randn(1, 16, 3, 4, 4), *CaptionTokens(TOY.text_len)(["a red circle"])
    t = torch.full((1, 3), 500.0)

    def head_dtype(model: torch.nn.Module) -> torch.dtype:
        seen = []
        hook = model.dit.head.head.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
        model(latents, t, ids, mask)
        hook.remove()
        return seen[0]

    assert head_dtype(trainer.model) == torch.bfloat16
    assert head_dtype(trainer.ema_model()) == torch.float32
    assert head_dtype(trainer.model) == torch.bfloat16

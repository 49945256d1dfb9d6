"""A small training loop over `accelerate`: one model, AdamW, EMA, a step or time budget, resumable.

The same code runs on CPU, one GPU or several (launched with `accelerate launch`); every random
draw of a step comes from the trainer's own generator, saved with the checkpoint, so a resumed run
repeats an uninterrupted one exactly. The learning rate warms up, then follows a cosine from 1 to
0.1 over the budget (steps, or wall-clock minutes when training is time-boxed). A file named STOP in the
folder of the training state ends a run at its next step as if the budget were spent (it saves, and the stage
goes on to export and evaluate), and is removed: a time-boxed run on a lent machine can be cut short, even
while its stage still prepares data.
"""
from __future__ import annotations

import copy
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from tqdm import tqdm

from .checkpointing import TrainingState, has_training_state, load_training_state, save_training_state
from .ema import EMA

log = logging.getLogger(__name__)
_FINAL_LR_FRACTION = 0.1
STOP_FILE = "STOP"


@dataclass(frozen=True)
class TrainOptions:
    """Optimisation settings; exactly one of `steps` and `minutes` bounds the run."""

    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.99)
    warmup_steps: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    steps: int | None = None
    minutes: float | None = None
    checkpoint_every: int = 500
    log_every: int = 50
    seed: int = 0
    diverged_after: int = 50  # this many non-finite steps in a row end the run (see `Trainer.check_skipped`)

    def __post_init__(self) -> None:
        if (self.steps is None) == (self.minutes is None):
            raise ValueError("give exactly one of steps and minutes as the training budget")


def make_accelerator(precision: str = "auto", cpu: bool = False):
    """An `accelerate.Accelerator`: bf16 autocast on GPU unless told otherwise, plain float32 on CPU.

    Also lets float32 matmuls and convolutions use TF32 and cuDNN pick its fastest kernels.
    """
    from accelerate import Accelerator

    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_available() and not cpu else "no"
    return Accelerator(mixed_precision=precision, cpu=cpu)


class Trainer:
    """Owns the prepared model and optimizer, the EMA, the generator and the counters."""

    def __init__(self, model: nn.Module, options: TrainOptions, accelerator, state_path: str | None = None):
        self.options = options
        self.accelerator = accelerator
        self.state_path = state_path
        optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, betas=options.betas,
                                      weight_decay=options.weight_decay)
        self.model, self.optimizer = accelerator.prepare(model, optimizer)
        self.ema = EMA(self.unwrapped, options.ema_decay)
        self.generator = torch.Generator(accelerator.device)
        self.generator.manual_seed(options.seed * 1000 + accelerator.process_index)
        self.state = TrainingState()
        self.losses: list[torch.Tensor] = []
        # Non-finite steps: how many since `checked_step` (the last `check_skipped`), and how many of the latest.
        self.skipped = torch.zeros((), dtype=torch.long, device=accelerator.device)
        self.skipped_in_a_row = torch.zeros_like(self.skipped)
        self.checked_step = 0

    @property
    def unwrapped(self) -> nn.Module:
        return self.accelerator.unwrap_model(self.model)

    def ema_model(self) -> nn.Module:
        """A float32 copy of the model in eval mode holding the EMA weights (for export and evaluation), without
        the autocast that the accelerator wraps around the training model's forward."""
        from accelerate.utils import extract_model_from_parallel

        model = extract_model_from_parallel(copy.deepcopy(self.unwrapped), keep_fp32_wrapper=False)
        model = model.float().eval()
        self.ema.copy_to(model)
        return model

    def resume(self) -> bool:
        """Load the saved state at `state_path` if there is one; True when it did."""
        if self.state_path is None or not has_training_state(self.state_path):
            return False
        self.state = load_training_state(self.state_path, self.unwrapped, self.ema, self.optimizer, self.generator)
        self.checked_step = self.state.step
        log.info("resumed from %s at step %d", self.state_path, self.state.step)
        return True

    def save(self, info: dict | None = None) -> None:
        """Write the resumable state (main process only)."""
        if self.state_path is None or not self.accelerator.is_main_process:
            return
        if info:
            self.state.info.update(info)
        save_training_state(self.state_path, self.unwrapped, self.ema, self.optimizer, self.generator, self.state)

    def progress(self) -> float:
        """Fraction of the budget spent, in [0, 1]."""
        if self.options.steps is not None:
            return min(1.0, self.state.step / self.options.steps)
        return min(1.0, self.state.elapsed_seconds / (60.0 * self.options.minutes))

    def learning_rate(self) -> float:
        warmup = min(1.0, (self.state.step + 1) / max(1, self.options.warmup_steps))
        cosine = 0.5 * (1.0 + math.cos(math.pi * self.progress()))
        return self.options.lr * warmup * (_FINAL_LR_FRACTION + (1.0 - _FINAL_LR_FRACTION) * cosine)

    def step(self, loss_fn: Callable[[nn.Module, torch.Generator, int], torch.Tensor]) -> torch.Tensor:
        """One optimisation step on `loss_fn(model, generator, step)`; returns the (detached) loss.

        Nothing here waits for the GPU, so the host queues the next step while this one runs. A step whose
        loss or gradients are not finite is skipped (see `_zero_non_finite`; under fp16 the grad scaler does it).
        """
        lr = self.learning_rate()
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with self.accelerator.autocast():
            loss = loss_fn(self.model, self.generator, self.state.step)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        if self.options.grad_clip:
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.options.grad_clip)
        if self.accelerator.scaler is None:  # fp16's grad scaler skips such steps itself, and must see them
            if not self.options.grad_clip:
                norm = torch.nn.utils.get_total_norm([p.grad for p in self.model.parameters() if p.grad is not None])
            self._zero_non_finite(torch.isfinite(loss.detach()) & torch.isfinite(norm))
        self.optimizer.step()
        self.ema.update(self.unwrapped)
        self.state.step += 1
        self.losses.append(loss.detach())
        del self.losses[:-self.options.log_every]
        return self.losses[-1]

    def _zero_non_finite(self, finite: torch.Tensor) -> None:
        """Zero every gradient unless `finite` (on every process), without waiting for the GPU.

        One batch that overflows (bf16 activations, a rare extreme sample) would otherwise write NaN into the
        weights, then the EMA and every later checkpoint, losing the whole run. The optimizer still steps on
        the zero gradients: its momentum and weight decay move the weights a little, no batch does.
        """
        if self.accelerator.num_processes > 1:  # the gradients are shared, the loss is not: all skip or none
            finite = self.accelerator.reduce(finite.float(), "min") > 0
        for param in self.model.parameters():
            if param.grad is not None:
                param.grad.masked_fill_(~finite, 0.0)
        bad = (~finite).long()
        self.skipped += bad
        self.skipped_in_a_row.mul_(bad).add_(bad)

    def recent_loss(self) -> float:
        """Mean finite loss over the last `log_every` steps (NaN before the first step or if none was finite)."""
        if not self.losses:
            return float("nan")
        losses = torch.stack(self.losses).float()
        return float(losses[torch.isfinite(losses)].mean())

    def check_skipped(self, desc: str) -> None:
        """Log the steps skipped since the last call; stop the run after `diverged_after` of them in a row.

        A run whose every recent step is non-finite has diverged (the weights themselves overflow): going on
        would only spend the budget, and the weights are still the last finite ones.
        """
        skipped, in_a_row = int(self.skipped), int(self.skipped_in_a_row)
        steps = self.state.step - self.checked_step
        self.skipped.zero_()
        self.checked_step = self.state.step
        if not skipped:
            return
        log.warning("%s: skipped %d of the last %d steps (non-finite loss or gradients)", desc, skipped, steps)
        if in_a_row >= self.options.diverged_after:
            raise FloatingPointError(
                f"{desc}: the last {in_a_row} steps up to step {self.state.step} all had a non-finite loss or "
                f"gradients; the weights are those before them, and the last checkpoint is in {self.state_path}")

    @property
    def stop_path(self) -> str | None:
        """Where a STOP file ends this run early (beside the training state), or None without a state path."""
        return None if self.state_path is None else os.path.join(os.path.dirname(self.state_path), STOP_FILE)

    def _stop_requested(self) -> bool:
        return self.stop_path is not None and self.accelerator.is_main_process and os.path.exists(self.stop_path)

    def budget_spent(self) -> bool:
        """True once the step or time budget is spent or a STOP file asks to end.

        Several processes agree on the clock and the STOP file only every `log_every` steps: each agreement is a
        reduce that waits for the GPU, which would otherwise stall the host once per step.
        """
        if self.options.steps is not None and self.state.step >= self.options.steps:
            return True
        several = self.accelerator.num_processes > 1
        if several and self.state.step % self.options.log_every:
            return False
        over = self._stop_requested() or (
            self.options.minutes is not None and self.state.elapsed_seconds >= 60.0 * self.options.minutes)
        if not several:
            return over
        agreed = self.accelerator.reduce(torch.tensor(float(over), device=self.accelerator.device), "max")
        return bool(agreed > 0)

    def run(self, loss_fn: Callable[[nn.Module, torch.Generator, int], torch.Tensor], desc: str) -> None:
        """Step until the budget is spent or a STOP file appears, logging and checkpointing on the way, then save."""
        total = self.options.steps
        bar = tqdm(total=total, initial=self.state.step, desc=desc, file=sys.stderr, mininterval=5.0,
                   disable=not self.accelerator.is_main_process)
        started = time.monotonic() - self.state.elapsed_seconds
        while not self.budget_spent():
            self.step(loss_fn)
            self.state.elapsed_seconds = time.monotonic() - started
            bar.update(1)
            if self.state.step % self.options.log_every == 0:
                self.check_skipped(desc)
                loss = self.recent_loss()
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{self.learning_rate():.2e}", refresh=False)
                log.info("%s step %d loss %.5f lr %.2e %.0fs", desc, self.state.step, loss, self.learning_rate(),
                         self.state.elapsed_seconds)
            if self.state.step % self.options.checkpoint_every == 0:
                self.save()
        bar.close()
        self.acknowledge_stop(desc)
        self.save()

    def acknowledge_stop(self, desc: str) -> None:
        """Remove the STOP file that ended the run, if one did, so that the stages after it run."""
        if self._stop_requested():
            log.warning("%s: stopped at step %d by %s", desc, self.state.step, self.stop_path)
            os.remove(self.stop_path)

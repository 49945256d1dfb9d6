"""The distillation loop shared by Self Forcing, its baselines and end-frame training.

One iteration updates the critic (fake score) on a fresh no-grad rollout; every `critic_steps`-th
iteration first updates the generator through a rollout with gradients at its exit step and the
video-level DMD loss. Each of the two has its own `Trainer` (AdamW, EMA, generator of random draws,
resumable state), so a resumed run repeats an uninterrupted one exactly.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ..config import CausalSettings
from ..keyframe_prefix import goal_prefix
from ..transformer import CausalWanModel
from .baselines import METHODS, context_writer
from .dmd import DMDOptions, critic_loss, dmd_loss
from .end_frame import goal_loss
from .latent_bank import ClipBank
from .self_forcing import GeneratorNoise, rollout
from .trainer import Trainer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillOptions:
    """What is trained and how: the context method, batch, critic ratio, keyframes and the DMD options."""

    method: str = "self_forcing"
    batch: int = 32
    critic_steps: int = 5
    start_probability: float = 0.5
    end_frame: bool = False
    goal_weight: float = 1.0
    dmd: DMDOptions = field(default_factory=DMDOptions)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {METHODS}")
        if self.end_frame and self.method != "self_forcing":
            raise ValueError("end-frame training runs on Self Forcing rollouts")


@dataclass
class Batch:
    """One draw from the bank: text, the ground-truth clip and the keyframe prefixes to use."""

    context: torch.Tensor
    truth: torch.Tensor
    end: torch.Tensor
    start_frames: int


class Distillation:
    """Generator (the causal student) and critic trainers around a frozen teacher and text encoder."""

    def __init__(
        self,
        generator: Trainer,
        critic: Trainer,
        teacher: CausalWanModel,
        encode: nn.Module,
        uncond: torch.Tensor,
        bank: ClipBank,
        settings: CausalSettings,
        options: DistillOptions,
    ):
        self.generator, self.critic = generator, critic
        self.teacher, self.encode, self.uncond = teacher, encode, uncond
        self.bank, self.settings, self.options = bank, settings, options
        self.stats: dict[str, torch.Tensor] = {}

    @property
    def student(self) -> CausalWanModel:
        return self.generator.unwrapped

    def draw(self, rng: torch.Generator) -> Batch:
        """Clips drawn with `rng`; a start-keyframe prefix for the whole batch with `start_probability`."""
        index = torch.randint(len(self.bank), (self.options.batch,), generator=rng, device=rng.device)
        truth, end, ids, mask = self.bank.batch(index)
        with torch.no_grad():
            context = self.encode(ids, mask)
        start = int(torch.rand(1, generator=rng, device=rng.device).item() < self.options.start_probability)
        return Batch(context, truth, end, start)

    def generate(self, model: CausalWanModel, batch: Batch, rng: torch.Generator) -> tuple[torch.Tensor, int]:
        """The video a training rollout makes (start prefix included) and its first generated frame."""
        exit_index = int(torch.randint(len(self.settings.denoising_steps), (1,), generator=rng, device=rng.device))
        start = batch.truth[:, :, :batch.start_frames] if batch.start_frames else None
        prefix = goal_prefix(batch.end, start) if self.options.end_frame else start
        writer = context_writer(self.options.method, batch.truth, rng, float(self.settings.context_noise))
        frames = batch.truth.shape[2] - batch.start_frames
        latent_shape = (batch.truth.shape[1], batch.truth.shape[3], batch.truth.shape[4])
        generated = rollout(model, self.settings, batch.context, frames, latent_shape, GeneratorNoise(rng), exit_index,
                            prefix, writer)
        video = generated if start is None else torch.cat([start, generated], dim=2)
        return video, batch.start_frames

    def generator_loss(self, model: nn.Module, rng: torch.Generator, step: int) -> torch.Tensor:
        batch = self.draw(rng)
        video, first = self.generate(self.student, batch, rng)
        loss, info = dmd_loss(video, self.teacher, self.critic.unwrapped, batch.context, self.uncond, rng,
                              self.options.dmd, first)
        self.stats.update(info)
        if self.options.end_frame:
            goal = goal_loss(video, batch.truth[:, :, -1:])
            self.stats["goal_mse"] = goal.detach()
            loss = loss + self.options.goal_weight * goal
        return loss

    def critic_loss(self, model: nn.Module, rng: torch.Generator, step: int) -> torch.Tensor:
        batch = self.draw(rng)
        with torch.no_grad():
            video, _ = self.generate(self.student, batch, rng)
        return critic_loss(model, video, batch.context, rng, self.options.dmd)

    def run(self, checkpoint_every: int = 100, log_every: int = 10) -> None:
        """Alternate critic and generator updates until the generator's budget is spent or a STOP file asks to
        end (finishing the critic updates of its last step), then save both."""
        started = time.monotonic() - self.generator.state.elapsed_seconds
        while not self.generator.budget_spent() or self.critic.state.step % self.options.critic_steps:
            if self.critic.state.step % self.options.critic_steps == 0:
                self.stats["generator_loss"] = self.generator.step(self.generator_loss)
            self.stats["critic_loss"] = self.critic.step(self.critic_loss)
            elapsed = time.monotonic() - started
            self.generator.state.elapsed_seconds = self.critic.state.elapsed_seconds = elapsed
            iteration = self.critic.state.step
            if iteration % log_every == 0:
                self.generator.check_skipped(f"{self.options.method} generator")
                self.critic.check_skipped(f"{self.options.method} critic")
                log.info("%s iteration %d (generator step %d) %s %.0fs", self.options.method, iteration,
                         self.generator.state.step, " ".join(f"{k} {v:.4f}" for k, v in sorted(self.summary().items())),
                         elapsed)
            if iteration % checkpoint_every == 0:
                self.save()
        self.generator.acknowledge_stop(self.options.method)
        self.save()

    def summary(self) -> dict[str, float]:
        """The latest losses and DMD statistics as numbers."""
        return {name: float(value) for name, value in self.stats.items()}

    def save(self) -> None:
        self.generator.save()
        self.critic.save()

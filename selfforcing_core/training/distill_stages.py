"""The Training II stages as the CLI runs them: ODE pairs, causal init, distillation (Self Forcing, its
baselines, end-frame training) and evaluation.

Each stage reads the exported files of the stages before it and writes into its output folder:
resumable state, exported weights (safetensors with the config, the causal settings, the native
resolution and the training length in the metadata), a metrics json and a log.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ..checkpoint import LoadedTransformer, load_transformer, save_transformer
from ..config import CausalSettings
from ..keyframe_prefix import END_FRAME_KEY, GOAL_PREFIX
from ..text_encoder_loading import load_text_encoder
from ..transformer import CausalWanModel
from ..vae_loading import load_wan_vae
from .causal_eval import Decoding, Scorer, causal_videos, held_out, video_bytes
from .causal_init import ode_regression_loss
from .data import CaptionTokens
from .distillation import Distillation, DistillOptions
from .evaluation import TEACHER_STAGE_SEED, teacher_videos
from .latent_bank import ClipBank, build_clip_bank
from .ode_pairs import ODEPairs, make_ode_pairs
from .stages import setup_logging, world_metadata, write_json
from .trainer import TrainOptions, Trainer, make_accelerator
from .world_scene import WorldConfig

log = logging.getLogger(__name__)
BANK_FILE = "clip_bank.safetensors"
PAIRS_FILE = "ode_pairs.safetensors"
INIT_FILE = "causal_init.safetensors"
BANK_SEED = 11  # a training stream of its own (the teacher's bank used seed 2 and up)
EVAL_SEED = 7
# The noise behind each evaluation's teacher samples: Training II's own, or the draws the teacher stage scores
# itself with at the end of `train teacher`, so both figures can be redone.
TEACHER_DRAW_SEEDS = {"distill": EVAL_SEED, "teacher": TEACHER_STAGE_SEED}


def student_settings(shift: float) -> CausalSettings:
    """The chunk-wise student: 3-frame chunks, 4 steps, the teacher's shift, and a cache of 9 frames
    (a one-chunk sink + a 6-frame window) that equals global attention at the training length; on
    longer videos the sink is re-based to sit just before the window, the distance it was trained at."""
    return CausalSettings(chunk_frames=3, local_window=6, sink_frames=3, denoising_steps=(1000, 750, 500, 250),
                          timestep_shift=shift, rebase_sink=True)


def _device(cpu: bool) -> torch.device:
    """The GPU unless told otherwise; float32 matmuls there may use TF32 (as the trainers' do)."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return torch.device("cuda" if torch.cuda.is_available() and not cpu else "cpu")


@dataclass
class World:
    """What the teacher's file says about the world it was trained on."""

    height: int
    width: int
    num_frames: int
    shift: float

    @classmethod
    def of(cls, loaded: LoadedTransformer) -> "World":
        width, height = (int(v) for v in loaded.metadata.get("resolution", "128x128").split("x"))
        return cls(height, width, int(loaded.metadata.get("num_frames", 33)),
                   float(loaded.metadata.get("timestep_shift", 3.0)))

    def config(self, length: int = 1) -> WorldConfig:
        return WorldConfig(height=self.height, width=self.width, num_frames=1 + (self.num_frames - 1) * length)

    def metadata(self, kind: str) -> dict[str, str]:
        return world_metadata(self.width, self.height, self.num_frames, self.shift, kind)


def load_dit(path: str, device: torch.device, trainable: bool = False) -> LoadedTransformer:
    """A DiT file in float32 (SDPA attention); trainable ones come back in train mode with gradients on."""
    loaded = load_transformer(path, dtype=torch.float32, device=device, attention_backend="sdpa")
    if trainable:
        loaded.model.requires_grad_(True).train()
    return loaded


def load_text(path: str, device: torch.device, text_len: int) -> torch.nn.Module:
    """The frozen text encoder module: (ids, mask) -> embeddings."""
    encoder = load_text_encoder(path, dtype=torch.float32, device=device, text_len=text_len).encoder
    return encoder.eval().requires_grad_(False)


def export_student(model: CausalWanModel, path: str, settings: CausalSettings, world: World, kind: str,
                   dtype: torch.dtype | None = None, goal_prefix: bool = False) -> None:
    """Save a student; `goal_prefix` marks one trained with the end keyframe as a goal prefix (the pipeline's
    'auto' end mode reads the mark)."""
    metadata = {**world.metadata(kind), **({END_FRAME_KEY: GOAL_PREFIX} if goal_prefix else {})}
    save_transformer(model, path, settings, family="self_forcing", extra_metadata=metadata, dtype=dtype)


@dataclass
class OdeStage:
    """Options of `train ode`: the clip bank and the teacher's ODE pairs."""

    out: str
    teacher: str
    vae: str
    text_encoder: str
    bank_clips: int = 4096
    bank_minutes: float = 0.4
    pairs: int = 2048
    pairs_minutes: float = 0.5
    teacher_steps: int = 24
    guidance: float = 5.0
    batch: int = 256
    workers: int = 0
    seed: int = 0
    cpu: bool = False


def run_ode_stage(stage: OdeStage) -> dict[str, float]:
    """Encode the clip bank, then record the teacher's guided trajectories for its captions (cycled
    when more pairs than clips are asked for: each pair has its own noise)."""
    setup_logging(stage.out, "ode")
    device = _device(stage.cpu)
    teacher = load_dit(stage.teacher, device)
    world = World.of(teacher)
    tokens = CaptionTokens(teacher.config.text_len)
    encode = load_text(stage.text_encoder, device, teacher.config.text_len)
    vae = load_wan_vae(stage.vae, dtype=torch.float32, device=device)
    began = time.monotonic()
    bank = build_clip_bank(vae, tokens, BANK_SEED, stage.bank_clips, world.config(), workers=stage.workers,
                           max_seconds=60.0 * stage.bank_minutes)
    bank.save(os.path.join(stage.out, BANK_FILE))
    bank_seconds = time.monotonic() - began
    log.info("clip bank: %d clips in %.1fs", len(bank), bank_seconds)
    began = time.monotonic()
    captions = torch.arange(stage.pairs, device=bank.ids.device) % len(bank)
    with torch.no_grad():
        uncond = encode(tokens.empty_ids.to(device), tokens.empty_mask.to(device))
    generator = torch.Generator(device).manual_seed(stage.seed)
    pairs = make_ode_pairs(teacher.model, encode, bank.ids[captions], bank.mask[captions], uncond,
                           tuple(bank.latents.shape[1:]), student_settings(world.shift), generator,
                           stage.teacher_steps, stage.guidance, world.shift, stage.batch, 60.0 * stage.pairs_minutes)
    pairs.save(os.path.join(stage.out, PAIRS_FILE))
    metrics = {"bank_clips": len(bank), "bank_seconds": bank_seconds, "pairs": len(pairs),
               "pairs_seconds": time.monotonic() - began, "teacher_steps": stage.teacher_steps,
               "guidance": stage.guidance}
    log.info("ode pairs: %d trajectories in %.1fs", len(pairs), metrics["pairs_seconds"])
    write_json(os.path.join(stage.out, "ode_metrics.json"), metrics)
    return metrics


@dataclass
class CausalInitStage:
    """Options of `train causal-init`: ODE regression of the causal student."""

    out: str
    teacher: str
    text_encoder: str
    pairs: str
    batch: int = 64
    prefix_probability: float = 0.5
    train: TrainOptions = field(default_factory=lambda: TrainOptions(lr=1e-4, warmup_steps=50, ema_decay=0.995,
                                                                     minutes=1.0))
    precision: str = "auto"
    cpu: bool = False


def run_causal_init_stage(stage: CausalInitStage) -> dict[str, float]:
    """Train the student from the teacher's weights on the ODE pairs and export its EMA weights."""
    setup_logging(stage.out, "causal_init")
    accelerator = make_accelerator(stage.precision, stage.cpu)
    device = accelerator.device
    teacher = load_dit(stage.teacher, device, trainable=True)
    world = World.of(teacher)
    settings = student_settings(world.shift)
    encode = load_text(stage.text_encoder, device, teacher.config.text_len)
    pairs = ODEPairs.load(stage.pairs, device)

    def fixed_batch_loss(model: CausalWanModel) -> float:
        """The ODE loss on the first pairs, with fixed draws (the same before and after training)."""
        states, ids, mask = pairs.batch(torch.arange(min(stage.batch, len(pairs))))
        with torch.no_grad():
            return float(ode_regression_loss(model, states, encode(ids, mask), settings,
                                             torch.Generator(device).manual_seed(0), stage.prefix_probability))

    loss_before = fixed_batch_loss(teacher.model)
    trainer = Trainer(teacher.model, stage.train, accelerator, os.path.join(stage.out, "causal_init_state"))
    trainer.resume()

    def loss_fn(model, generator: torch.Generator, step: int) -> torch.Tensor:
        index = torch.randint(len(pairs), (stage.batch,), generator=generator, device=generator.device)
        states, ids, mask = pairs.batch(index)
        with torch.no_grad():
            context = encode(ids, mask)
        return ode_regression_loss(trainer.unwrapped, states, context, settings, generator, stage.prefix_probability)

    trainer.run(loss_fn, "causal-init")
    if not accelerator.is_main_process:
        return {}
    model = trainer.ema_model()
    export_student(model, os.path.join(stage.out, INIT_FILE), settings, world, "causal init (ODE regression)")
    metrics = {"steps": trainer.state.step, "train_seconds": trainer.state.elapsed_seconds,
               "final_loss": trainer.recent_loss(), "fixed_batch_loss_teacher_weights": loss_before,
               "fixed_batch_loss_ema": fixed_batch_loss(model)}
    log.info("causal init: %d steps, ODE loss on a fixed batch %.4f (teacher weights) -> %.4f (EMA)",
             trainer.state.step, loss_before, metrics["fixed_batch_loss_ema"])
    write_json(os.path.join(stage.out, "causal_init_metrics.json"), metrics)
    return metrics


@dataclass
class DistillStage:
    """Options of `train self-forcing` / `train baseline` / `train end-frame`."""

    out: str
    init: str
    teacher: str
    text_encoder: str
    bank: str
    options: DistillOptions = field(default_factory=DistillOptions)
    train: TrainOptions = field(default_factory=lambda: TrainOptions(lr=5e-5, betas=(0.0, 0.999), warmup_steps=10,
                                                                     ema_decay=0.99, minutes=1.5))
    critic_lr: float = 5e-5
    export: str | None = None
    precision: str = "auto"
    cpu: bool = False

    @property
    def name(self) -> str:
        return "end_frame" if self.options.end_frame else self.options.method


def run_distill_stage(stage: DistillStage) -> dict[str, float]:
    """Distil the initialised student with DMD on rollouts of the stage's method; export its EMA weights."""
    setup_logging(stage.out, stage.name)
    accelerator = make_accelerator(stage.precision, stage.cpu)
    device = accelerator.device
    student = load_dit(stage.init, device, trainable=True)
    teacher = load_dit(stage.teacher, device)
    critic = load_dit(stage.teacher, device, trainable=True)
    world = World.of(teacher)
    settings = student.settings
    encode = load_text(stage.text_encoder, device, teacher.config.text_len)
    tokens = CaptionTokens(teacher.config.text_len)
    with torch.no_grad():
        uncond = encode(tokens.empty_ids.to(device), tokens.empty_mask.to(device))
    bank = ClipBank.load(stage.bank, device)
    critic_steps = stage.options.critic_steps
    critic_train = replace(stage.train, lr=stage.critic_lr,
                           steps=None if stage.train.steps is None else stage.train.steps * critic_steps)
    generator = Trainer(student.model, stage.train, accelerator, os.path.join(stage.out, f"{stage.name}_generator"))
    fake = Trainer(critic.model, critic_train, accelerator, os.path.join(stage.out, f"{stage.name}_critic"))
    generator.resume()
    fake.resume()
    distill = Distillation(generator, fake, teacher.model, encode, uncond, bank, settings, stage.options)
    distill.run(stage.train.checkpoint_every, stage.train.log_every)
    if not accelerator.is_main_process:
        return {}
    model = generator.ema_model()
    kind = f"{stage.name} (DMD, {stage.options.method} rollouts)"
    goal = stage.options.end_frame
    export_student(model, os.path.join(stage.out, f"{stage.name}.safetensors"), settings, world, kind, goal_prefix=goal)
    if stage.export:
        export_student(model, stage.export, settings, world, kind, dtype=torch.float16, goal_prefix=goal)
    metrics = {"generator_steps": generator.state.step, "critic_steps": fake.state.step,
               "train_seconds": generator.state.elapsed_seconds, **distill.summary()}
    write_json(os.path.join(stage.out, f"{stage.name}_metrics.json"), metrics)
    log.info("%s: %d generator steps in %.0fs", stage.name, generator.state.step, generator.state.elapsed_seconds)
    return metrics


@dataclass
class EvaluateStage:
    """Options of `train evaluate`: which generator (a causal model, the teacher, or ground truth) and runs."""

    out: str
    label: str
    vae: str
    text_encoder: str
    model: str | None = None
    teacher: str | None = None
    truth: bool = False
    lengths: tuple[int, ...] = (1, 2, 4)
    clips: int = 200
    long_clips: int = 100
    keyframe_modes: tuple[str, ...] = ()
    end_strength: float = 0.5
    local_window: int | None = None
    sink_frames: int | None = None
    teacher_steps: int = 30
    guidance: float = 5.0
    teacher_draws: str = "distill"
    samples: int = 2
    workers: int = 0
    cpu: bool = False


def _world_of(stage: EvaluateStage, device: torch.device) -> tuple[World, int, LoadedTransformer]:
    source = stage.model or stage.teacher
    if source is None:
        raise ValueError("give --model or --teacher (their metadata give the world's size and length)")
    loaded = load_dit(source, device)
    return World.of(loaded), loaded.config.text_len, loaded


def run_evaluate_stage(stage: EvaluateStage) -> dict[str, dict[str, float]]:
    """Score the stage's generator on held-out captions; write `eval_<label>.json` and sample clips."""
    setup_logging(stage.out, f"eval_{stage.label}")
    device = _device(stage.cpu)
    world, text_len, loaded = _world_of(stage, device)
    decoding = Decoding(load_wan_vae(stage.vae, dtype=torch.float32, device=device),
                        load_text(stage.text_encoder, device, text_len), CaptionTokens(text_len))
    scorer = Scorer(stage.workers)
    settings = None
    if stage.model:
        changes = {"local_window": stage.local_window, "sink_frames": stage.sink_frames}
        settings = loaded.settings.with_(**{k: v for k, v in changes.items() if v is not None})
    results: dict[str, dict[str, float]] = {}
    samples: dict[str, np.ndarray] = {}
    described: dict = {"label": stage.label, "runs": results}
    if settings is not None:
        described["settings"] = {"local_window": settings.local_window, "sink_frames": settings.sink_frames}

    def record(name: str, videos: torch.Tensor, scenes, start=None, end=None) -> None:
        """Score one run and rewrite the json at once (a stopped evaluation keeps what it finished)."""
        began = time.monotonic()
        results[name] = scorer.score(videos, scenes, start, end)
        write_json(os.path.join(stage.out, f"eval_{stage.label}.json"), described)
        samples[name] = video_bytes(videos[:stage.samples])
        log.info("%s %s: adherence %.1f drift %.4f object loss %.3f (%.0fs scoring)", stage.label, name,
                 results[name]["prompt_adherence"], results[name]["drift"], results[name]["object_loss"],
                 time.monotonic() - began)

    lengths = (1,) if stage.model is None and not stage.truth else stage.lengths
    for length in lengths:
        truth, scenes = held_out(stage.clips if length == 1 else stage.long_clips, world.config(length))
        if stage.truth:
            record(f"truth_{length}x", truth, scenes)
        if stage.teacher and length == 1:
            videos = teacher_videos(loaded.model, decoding.encode, decoding.vae, decoding.tokens, scenes,
                                    world.config(), stage.teacher_steps, stage.guidance, world.shift,
                                    TEACHER_DRAW_SEEDS[stage.teacher_draws])
            record("teacher_1x", videos, scenes)
        if stage.model:
            record(f"text_{length}x", causal_videos(loaded.model, settings, decoding, scenes, truth,
                                                    seed=EVAL_SEED), scenes)
    if stage.model and stage.keyframe_modes:
        truth, scenes = held_out(stage.clips, world.config())
        for mode in stage.keyframe_modes:
            videos = causal_videos(loaded.model, settings, decoding, scenes, truth, mode, stage.end_strength,
                                   EVAL_SEED)
            record(f"{mode}_1x", videos, scenes, truth[:, 0], None if mode == "start" else truth[:, -1])
    scorer.close()
    np.savez_compressed(os.path.join(stage.out, f"samples_{stage.label}.npz"), **samples)
    return results

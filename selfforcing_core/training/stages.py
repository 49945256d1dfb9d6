"""The training stages end to end, as the CLI runs them: VAE, then teacher (DiT + text encoder).

Each stage writes into its output folder: a resumable state (`*_state.safetensors` + `.json`), the
exported weights, a metrics json, a log, and sample videos (mp4, when imageio-ffmpeg is present).
"""
from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open

from ..checkpoint import load_transformer
from ..text_encoder_loading import load_text_encoder
from ..vae_loading import load_wan_vae
from ..vae_stream import pixels_to_frames
from ..wan_vae import WanVAE
from ..weights_io import count_blocks
from .caption_binding import binding_accuracy
from .checkpointing import read_ema_weights
from .data import (CaptionTokens, LatentBank, ScenePrefetcher, WorldClipBank, build_latent_bank, random_crop,
                   world_clips)
from .evaluation import HELD_OUT_SEED, evaluate_teacher, evaluate_vae, generate_videos
from .growth import load_grown
from .model_sizes import PRESETS
from .teacher_training import (BINDING_PREFIX, Teacher, bank_flow_loss, build_teacher, export_teacher,
                               fixed_draw_loss, load_binding_heads, save_binding_heads)
from .trainer import TrainOptions, Trainer, make_accelerator
from .vae_training import (
    VAEAutoencoder,
    VAELossWeights,
    export_vae,
    init_posterior,
    latent_statistics,
    set_latent_statistics,
    vae_loss,
)
from .world import sample_scenes
from .world_render import render_scenes
from .world_scene import WorldConfig

if TYPE_CHECKING:
    from accelerate import Accelerator

log = logging.getLogger(__name__)
VAE_TRAIN_SEED = 0
TEACHER_TRAIN_SEED = 1
STATS_SEED = 2
VAE_FILE = "world_vae.safetensors"
DIT_FILE = "world_teacher.safetensors"
TEXT_FILE = "world_text_encoder.safetensors"
HEADS_FILE = "world_binding_heads.safetensors"  # training only: the caption-binding heads, when a run has them
TEACHER_STATE = "teacher_state"
BINDING_EVAL_CAPTIONS = 512


@dataclass
class VAEStage:
    """Options of `train vae`."""

    out: str
    size: str = "world"
    resolution: int = 128
    frames: int = 33
    batch: int = 4
    crop: int = 128
    init: str | None = None
    decoder_only: bool = False
    train: TrainOptions = field(default_factory=lambda: TrainOptions(lr=1e-3, ema_decay=0.995, minutes=2.5))
    eval_clips: int = 64
    stats_clips: int = 128
    workers: int = 0
    bank_clips: int = 0
    bank_refresh_every: int = 16
    compile: bool = False
    precision: str = "auto"
    cpu: bool = False

    def __post_init__(self) -> None:
        if self.decoder_only and not self.init:
            raise ValueError("--decoder-only fine-tunes the decoder of an exported VAE: give it --init")


@dataclass
class TeacherStage:
    """Options of `train teacher`."""

    out: str
    vae: str
    size: str = "world"
    resolution: int = 128
    frames: int = 33
    batch: int = 64
    bank_clips: int = 16384
    bank_minutes: float = 1.0
    workers: int = 0
    shift: float = 3.0
    text_dropout: float = 0.1
    init: str | None = None
    text_layers: int | None = None
    dit_layers: int | None = None
    binding_weight: float = 0.0
    train: TrainOptions = field(default_factory=lambda: TrainOptions(lr=5e-4, minutes=5.0))
    eval_clips: int = 200
    eval_steps: int = 30
    loss_clips: int = 256
    guidance: float = 5.0
    compile: bool = False
    precision: str = "auto"
    cpu: bool = False


@dataclass
class SampleStage:
    """Options of `train sample`: videos from exported teacher files for held-out or given captions."""

    out: str
    vae: str
    teacher: str
    text_encoder: str
    prompts: list[str] = field(default_factory=list)
    count: int = 4
    resolution: int = 128
    frames: int = 33
    steps: int = 30
    guidance: float = 5.0
    shift: float = 3.0
    seed: int = 0


def setup_logging(out: str, name: str) -> None:
    """Log to stderr and to `<out>/<name>.log`."""
    os.makedirs(out, exist_ok=True)
    handlers = [logging.StreamHandler(), logging.FileHandler(os.path.join(out, f"{name}.log"))]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", handlers=handlers, force=True)


def write_json(path: str, values: dict) -> None:
    with open(path, "w") as handle:
        json.dump(values, handle, indent=1, sort_keys=True)


def write_sample_video(path: str, videos: torch.Tensor, fps: int, columns: int = 4) -> bool:
    """Tile up to `columns` clips [B, T, 3, H, W] in [-1, 1] side by side into an mp4; False without ffmpeg."""
    try:
        from ..video_export import write_video
    except ImportError:
        log.warning("imageio-ffmpeg is not installed: %s not written", path)
        return False
    frames = torch.cat(list(pixels_to_frames(videos[:columns].transpose(1, 2).cpu())), dim=2)
    write_video(path, frames, fps=fps)
    return True


class _RenderedClips:
    """Each step's own clips of the training stream, rendered on the device (scenes sampled ahead)."""

    def __init__(self, stage: VAEStage, config: WorldConfig, accelerator: Accelerator):
        self.device = accelerator.device
        self.scenes = ScenePrefetcher(VAE_TRAIN_SEED, stage.batch, config, accelerator.num_processes,
                                      accelerator.process_index, stage.workers)

    def __call__(self, step: int, generator: torch.Generator) -> torch.Tensor:
        return render_scenes(self.scenes.scenes(step), self.device).transpose(1, 2)

    def close(self) -> None:
        self.scenes.close()


class _BankClips:
    """Random clips of a `WorldClipBank` that moves on every `bank_refresh_every` steps (one stream per rank)."""

    def __init__(self, stage: VAEStage, config: WorldConfig, accelerator: Accelerator):
        self.batch, self.every = stage.batch, stage.bank_refresh_every
        self.bank = WorldClipBank(VAE_TRAIN_SEED + 1000 * accelerator.process_index, stage.bank_clips, config,
                             accelerator.device)

    def __call__(self, step: int, generator: torch.Generator) -> torch.Tensor:
        self.bank.seek(step // self.every)
        return self.bank.sample(self.batch, generator)

    def close(self) -> None:
        """Free the bank's device memory before the evaluation."""
        del self.bank


def vae_clip_source(stage: VAEStage, config: WorldConfig, accelerator: Accelerator) -> _RenderedClips | _BankClips:
    """Where the VAE's training clips come from: a device-resident bank, or rendered per step (`bank_clips` 0)."""
    if stage.bank_clips:
        return _BankClips(stage, config, accelerator)
    return _RenderedClips(stage, config, accelerator)


def run_vae_stage(stage: VAEStage) -> dict[str, float]:
    """Train the VAE, fit its latent statistics, export it and measure held-out PSNR on the export."""
    setup_logging(stage.out, "vae")
    accelerator = make_accelerator(stage.precision, stage.cpu)
    config = WorldConfig(height=stage.resolution, width=stage.resolution, num_frames=stage.frames)
    if stage.init:
        vae = load_wan_vae(stage.init, dtype=torch.float32).train().requires_grad_(True)
    else:
        vae = WanVAE(PRESETS[stage.size].vae)
        init_posterior(vae)
    if stage.compile:
        vae.encoder.compile()
        vae.decoder.compile()
    autoencoder = VAEAutoencoder(vae, train_encoder=not stage.decoder_only)
    trainer = Trainer(autoencoder, stage.train, accelerator, os.path.join(stage.out, "vae_state"))
    trainer.resume()
    clips = vae_clip_source(stage, config, accelerator)

    def loss_fn(model, generator: torch.Generator, step: int) -> torch.Tensor:
        video = random_crop(clips(step, generator), stage.crop, generator)
        return vae_loss(model, video, generator, VAELossWeights())[0]

    trainer.run(loss_fn, "vae")
    clips.close()
    if not accelerator.is_main_process:
        return {}
    vae = trainer.ema_model().vae
    path = os.path.join(stage.out, VAE_FILE)
    if stage.decoder_only:  # same encoder, same latents: the statistics folded into the --init file still hold
        with safe_open(stage.init, "pt") as source:
            export_vae(vae, path, folded_stats=(source.metadata() or {}).get("latent_stats_folded"))
    else:
        stats_videos = [world_clips(STATS_SEED, range(i, i + 16), config, vae.device)[0]
                        for i in range(0, stage.stats_clips, 16)]
        set_latent_statistics(vae, *latent_statistics(vae, stats_videos))
        export_vae(vae, path)
    exported = load_wan_vae(path, dtype=torch.float32, device=vae.device)
    eval_config = WorldConfig(height=stage.resolution, width=stage.resolution)
    metrics = evaluate_vae(exported, stage.eval_clips, eval_config)
    metrics.update({"steps": trainer.state.step, "train_seconds": trainer.state.elapsed_seconds,
                    "final_loss": trainer.recent_loss(), "latent_mean": list(vae.config.latent_mean),
                    "latent_std": list(vae.config.latent_std)})
    write_json(os.path.join(stage.out, "vae_metrics.json"), metrics)
    video, _ = world_clips(HELD_OUT_SEED, range(4), eval_config, vae.device)
    with torch.no_grad():
        recon = exported.decode(exported.encode(video), chunk_frames=3).clamp(-1, 1)
    write_sample_video(os.path.join(stage.out, "vae_reconstruction.mp4"),
                       torch.cat([video, recon], dim=-2).transpose(1, 2), eval_config.fps)
    log.info("vae: %d steps, held-out PSNR %.2f dB (min %.2f)", trainer.state.step, metrics["psnr"],
             metrics["psnr_min"])
    return metrics


def load_teacher_weights(teacher: Teacher, folder: str) -> None:
    """Start from a previous run's exported DiT and text encoder (`DIT_FILE`, `TEXT_FILE` in `folder`), so
    training can go on over several sessions even where the full resumable state cannot be carried. A
    teacher deeper than the files grows from them (`growth.load_grown`)."""
    dit = load_transformer(os.path.join(folder, DIT_FILE), dtype=torch.float32).model
    text = load_text_encoder(os.path.join(folder, TEXT_FILE), dtype=torch.float32, text_len=dit.config.text_len)
    for name, source, target in (("DiT", dit.config, teacher.dit.config),
                                 ("text encoder", text.encoder.config, teacher.text.config)):
        if replace(source, num_layers=target.num_layers) != target:
            raise ValueError(f"the {name} in {folder} differs from the one asked for in more than its depth: "
                             f"{source} against {target}")
    added_dit = load_grown(teacher.dit, dit.state_dict(), "DiT")
    added_text = load_grown(teacher.text, text.encoder.state_dict(), "text encoder")
    if added_dit or added_text:
        log.info("grown from %s: %d DiT and %d text-encoder layers added as identities", folder, added_dit, added_text)
    heads = os.path.join(folder, HEADS_FILE)
    if teacher.binding is not None and os.path.isfile(heads):
        load_binding_heads(teacher, heads)
        log.info("caption-binding heads continued from %s", heads)


def init_depths(folder: str) -> tuple[int, int]:
    """The text-encoder and DiT depths of the files in an `--init` folder, read from their keys, so that going
    on from a grown run needs no `--text-layers` / `--dit-layers`."""
    with safe_open(os.path.join(folder, TEXT_FILE), "pt") as text, safe_open(os.path.join(folder, DIT_FILE), "pt") as dit:
        return count_blocks(list(text.keys())), count_blocks(list(dit.keys()))


def held_out_losses(teacher: Teacher, bank: LatentBank, vae: WanVAE, tokens: CaptionTokens, config: WorldConfig,
                    stage: TeacherStage) -> dict[str, float]:
    """The fixed-draw flow loss on the bank's first `loss_clips` clips and on as many held-out ones."""
    held_out = build_latent_bank(vae, tokens, HELD_OUT_SEED, min(stage.loss_clips, len(bank)), config,
                                 workers=stage.workers)
    count = len(held_out)
    losses = {}
    for name, clips in (("bank", bank), ("held_out", held_out)):
        losses[f"loss_{name}_clips"] = fixed_draw_loss(teacher, clips.latents[:count], clips.ids[:count],
                                                       clips.mask[:count], tokens.empty_ids, tokens.empty_mask,
                                                       stage.shift)
    return losses


def world_metadata(width: int, height: int, frames: int, shift: float, kind: str) -> dict[str, str]:
    """What an exported world DiT (teacher or student) says about the clips it learnt; Training II and the
    evaluator read it back (`distill_stages.World.of`)."""
    return {"resolution": f"{width}x{height}", "num_frames": str(frames), "timestep_shift": str(shift), "kind": kind}


def snapshot_teacher(run: str, to: str, size: str = "world", resolution: int = 128, frames: int = 33,
                     shift: float = 3.0) -> int:
    """Export the EMA weights of a teacher run's latest saved state into `to`, as the files `--init` continues
    from, and return their step. It works while the run trains, so each poll of a detached run on a lent
    machine can bring home what it has learnt so far. The depths are read from the state; `size` gives the
    widths."""
    weights, step = read_ema_weights(os.path.join(run, TEACHER_STATE))
    sizes = PRESETS[size].with_layers(count_blocks(weights, "text.blocks.") or None,
                                      count_blocks(weights, "dit.blocks.") or None)
    teacher = build_teacher(sizes.dit, sizes.text, TEACHER_TRAIN_SEED,
                            binding=any(name.startswith(BINDING_PREFIX) for name in weights))
    params = dict(teacher.named_parameters())
    if set(weights) != set(params) or any(weights[name].shape != p.shape for name, p in params.items()):
        raise ValueError(f"the state in {run} does not hold a '{size}' teacher: pass the --size it was trained with")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(weights[name])
    os.makedirs(to, exist_ok=True)
    export_teacher(teacher, os.path.join(to, DIT_FILE), os.path.join(to, TEXT_FILE),
                   world_metadata(resolution, resolution, frames, shift,
                                  f"bidirectional teacher (EMA at step {step})"))
    if teacher.binding is not None:
        save_binding_heads(teacher, os.path.join(to, HEADS_FILE))
    log.info("teacher snapshot: EMA weights of step %d from %s written to %s", step, run, to)
    return step


def run_teacher_stage(stage: TeacherStage) -> dict[str, float]:
    """Encode a latent bank with the trained VAE, train DiT + text encoder, export and evaluate."""
    setup_logging(stage.out, "teacher")
    accelerator = make_accelerator(stage.precision, stage.cpu)
    text_layers, dit_layers = init_depths(stage.init) if stage.init else (None, None)
    sizes = PRESETS[stage.size].with_layers(stage.text_layers or text_layers, stage.dit_layers or dit_layers)
    config = WorldConfig(height=stage.resolution, width=stage.resolution, num_frames=stage.frames)
    vae = load_wan_vae(stage.vae, dtype=torch.float32, device=accelerator.device)
    tokens = CaptionTokens(sizes.text_len)
    began = time.monotonic()
    bank = build_latent_bank(vae, tokens, TEACHER_TRAIN_SEED + 1000 * accelerator.process_index, stage.bank_clips,
                             config, workers=stage.workers, max_seconds=60.0 * stage.bank_minutes)
    log.info("latent bank: %d clips %s in %.1fs (latent std %.3f)", len(bank), tuple(bank.latents.shape[1:]),
             time.monotonic() - began, float(bank.latents.std()))
    teacher = build_teacher(sizes.dit, sizes.text, stage.train.seed, binding=stage.binding_weight > 0)
    if stage.init:
        load_teacher_weights(teacher, stage.init)
    if stage.compile:
        # The whole teacher (text encoder + DiT) compiled fuses autocast's casts and the elementwise work:
        # 28.8 steps/s against 14.9 for the blocks' parts alone (H200, batch 128, bench_training_step.py).
        teacher.compile()
    trainer = Trainer(teacher, stage.train, accelerator, os.path.join(stage.out, TEACHER_STATE))
    trainer.resume()

    # On the device once: a copy from the host every step would wait for the GPU.
    empty_ids, empty_mask = tokens.empty_ids.to(accelerator.device), tokens.empty_mask.to(accelerator.device)

    trainer.run(bank_flow_loss(bank, stage.batch, empty_ids, empty_mask, stage.shift, stage.text_dropout,
                               stage.binding_weight), "teacher")
    if not accelerator.is_main_process:
        return {}
    ema = trainer.ema_model()
    export_teacher(ema, os.path.join(stage.out, DIT_FILE), os.path.join(stage.out, TEXT_FILE),
                   world_metadata(stage.resolution, stage.resolution, stage.frames, stage.shift,
                                  "bidirectional teacher"))
    if ema.binding is not None:
        save_binding_heads(ema, os.path.join(stage.out, HEADS_FILE))
    # final_loss is the training loss: with binding_weight > 0 it includes the weighted binding loss.
    metrics = {"steps": trainer.state.step, "train_seconds": trainer.state.elapsed_seconds, "bank_clips": len(bank),
               "final_loss": trainer.recent_loss(), "binding_weight": stage.binding_weight}
    if stage.loss_clips:
        metrics.update(held_out_losses(ema, bank, vae, tokens, config, stage))
        log.info("teacher: flow loss with fixed draws %.4f on bank clips, %.4f on held-out clips",
                 metrics["loss_bank_clips"], metrics["loss_held_out_clips"])
    if ema.binding is not None:
        captions = [scene.caption for scene in sample_scenes(HELD_OUT_SEED, range(BINDING_EVAL_CAPTIONS), config)]
        metrics.update(binding_accuracy(ema.encode_text, ema.binding, *tokens(captions), captions))
        log.info("teacher: caption binding on held-out captions %s", ", ".join(
            f"{key.split('/')[1]} {value:.3f}" for key, value in metrics.items() if key.startswith("binding_accuracy/")))
    if stage.eval_clips:
        began = time.monotonic()
        eval_config = WorldConfig(height=stage.resolution, width=stage.resolution, num_frames=stage.frames)
        scores, videos, _ = evaluate_teacher(ema, vae, tokens, stage.eval_clips, eval_config, stage.eval_steps,
                                             stage.guidance, stage.shift)
        metrics.update(scores)
        metrics["eval_seconds"] = time.monotonic() - began
        write_sample_video(os.path.join(stage.out, "teacher_samples.mp4"), videos, eval_config.fps)
        log.info("teacher: colour %.3f motion %.3f direction %.3f shape %.3f", scores["colour_accuracy"],
                 scores["motion_accuracy"], scores["direction_accuracy"], scores["shape_accuracy"])
    write_json(os.path.join(stage.out, "teacher_metrics.json"), metrics)
    return metrics


def run_sample_stage(stage: SampleStage) -> list[str]:
    """Write one mp4 per caption (given prompts, else held-out world captions) from exported files."""
    dit = load_transformer(stage.teacher, dtype=torch.float32).model
    text = load_text_encoder(stage.text_encoder, dtype=torch.float32, text_len=dit.config.text_len)
    vae = load_wan_vae(stage.vae, dtype=torch.float32)
    tokens = CaptionTokens(dit.config.text_len)
    config = WorldConfig(height=stage.resolution, width=stage.resolution, num_frames=stage.frames)
    captions = stage.prompts or [scene.caption for scene in sample_scenes(HELD_OUT_SEED, range(stage.count), config)]
    os.makedirs(stage.out, exist_ok=True)
    paths = []
    for index, caption in enumerate(captions):
        video = generate_videos(dit, text.encoder, vae, tokens, [caption], config, stage.steps, stage.guidance,
                                stage.shift, stage.seed + index)
        path = os.path.join(stage.out, f"sample_{index:02d}.mp4")
        if write_sample_video(path, video, config.fps):
            paths.append(path)
            log.info("%s: %s", path, caption)
    return paths

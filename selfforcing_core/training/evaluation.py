"""Scoring trained models with the world's evaluator: VAE reconstructions and teacher samples."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..text_encoder import UMT5Encoder
from ..transformer import CausalWanModel
from ..wan_vae import WanVAE
from .data import CaptionTokens, world_clips
from .evaluator import evaluate_clips, summarize
from .sampling import sample_flow
from .teacher_training import Teacher
from .vae_training import reconstruction_psnr
from .world import sample_scenes
from .world_scene import SceneParams, WorldConfig
from .world_vocab import DIRECTIONS

HELD_OUT_SEED = 1_000_003  # the training streams use small seeds; this stream is never trained on


def adherence(videos: torch.Tensor, scenes: list[SceneParams]) -> dict[str, float]:
    """The evaluator's summary of videos [B, T, 3, H, W], plus `direction_accuracy` (straight motions)."""
    results = evaluate_clips(videos, scenes)
    summary = summarize(results, scenes[0].config.fps)
    straight = [obj.motion_ok for clip in results for obj in clip.objects if obj.expected.motion in DIRECTIONS]
    summary["direction_accuracy"] = float(np.mean(straight)) if straight else float("nan")
    summary["direction_objects"] = float(len(straight))
    return summary


@torch.no_grad()
def evaluate_vae(vae: WanVAE, count: int, config: WorldConfig, batch_size: int = 16) -> dict[str, float]:
    """PSNR of held-out clips through encode/decode, and the evaluator's scores on ground truth and on
    the reconstructions (the ceiling any generator can reach through this VAE)."""
    psnrs, truths, recons, scenes = [], [], [], []
    for first in range(0, count, batch_size):
        video, part = world_clips(HELD_OUT_SEED, range(first, min(count, first + batch_size)), config, vae.device)
        clip_psnr, recon = reconstruction_psnr(vae, video.to(vae.dtype))
        psnrs.append(clip_psnr.cpu())
        truths.append(video.transpose(1, 2).float())
        recons.append(recon.transpose(1, 2))
        scenes += part
    values = torch.cat(psnrs)
    metrics = {"psnr": float(values.mean()), "psnr_min": float(values.min()), "clips": float(count)}
    metrics.update({f"truth/{k}": v for k, v in adherence(torch.cat(truths), scenes).items()})
    metrics.update({f"recon/{k}": v for k, v in adherence(torch.cat(recons), scenes).items()})
    return metrics


@torch.no_grad()
def generate_videos(
    dit: CausalWanModel,
    text: UMT5Encoder,
    vae: WanVAE,
    tokens: CaptionTokens,
    captions: list[str],
    config: WorldConfig,
    steps: int,
    guidance: float,
    shift: float,
    seed: int = 0,
) -> torch.Tensor:
    """Teacher samples for `captions` at the world's size, decoded: videos [B, T, 3, H, W] in [-1, 1]."""
    device = dit.device
    ids, mask = tokens(captions)
    context = text(ids.to(device), mask.to(device))
    uncond = text(tokens.empty_ids.to(device), tokens.empty_mask.to(device))
    factor = vae.config.spatial_factor
    shape = (len(captions), vae.config.z_dim, 1 + (config.num_frames - 1) // vae.config.temporal_factor,
             config.height // factor, config.width // factor)
    noise = torch.randn(shape, generator=torch.Generator(device).manual_seed(seed), device=device)
    latents = sample_flow(dit, context, uncond, noise, steps, guidance, shift)
    return vae.decode(latents.to(vae.dtype), chunk_frames=3).float().clamp(-1.0, 1.0).transpose(1, 2)


TEACHER_STAGE_SEED = 0  # the noise seed of the teacher stage's own evaluation (batch i: seed + i * batch_size)


def teacher_videos(dit: CausalWanModel, text: UMT5Encoder, vae: WanVAE, tokens: CaptionTokens,
                   scenes: Sequence[SceneParams], config: WorldConfig, steps: int, guidance: float, shift: float,
                   seed: int, batch_size: int = 50) -> torch.Tensor:
    """Teacher samples of the scenes' captions in batches, batch i drawn with noise seed `seed + i * batch_size`
    (so the same scenes and seed give the same videos whichever evaluation asks)."""
    return torch.cat([
        generate_videos(dit, text, vae, tokens, [s.caption for s in scenes[first : first + batch_size]], config,
                        steps, guidance, shift, seed + first).cpu()
        for first in range(0, len(scenes), batch_size)
    ])


def evaluate_teacher(
    teacher: Teacher,
    vae: WanVAE,
    tokens: CaptionTokens,
    count: int,
    config: WorldConfig,
    steps: int = 30,
    guidance: float = 5.0,
    shift: float = 3.0,
    batch_size: int = 50,
) -> tuple[dict[str, float], torch.Tensor, list[SceneParams]]:
    """Adherence of teacher samples for `count` held-out captions; also the videos and their scenes."""
    scenes = sample_scenes(HELD_OUT_SEED, range(count), config)
    videos = teacher_videos(teacher.dit, teacher.text, vae, tokens, scenes, config, steps, guidance, shift,
                            TEACHER_STAGE_SEED, batch_size)
    metrics = adherence(videos, scenes)
    metrics.update({"sample_steps": float(steps), "guidance": guidance, "shift": shift})
    return metrics, videos, scenes

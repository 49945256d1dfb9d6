"""Scoring causal students with the world's evaluator: prompt adherence, keyframes and drift at any length.

Videos are generated as the node pack streams them (`StreamingSampler` with the model's CausalSettings,
whose local window + sink cache runs any length in bounded memory), decoded by the VAE and scored on
held-out captions, in worker processes. Drift compares the last second with the first, per clip:
`drift` = |saturation change| + |contrast change|, `object_loss` = the fraction of requested objects
detected in the first second but not in the last. `end_jump` is the largest frame-to-frame move of
any matched object in the last second (shorter-side units): a cut to an end keyframe shows there.
"""
from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn

from ..config import CausalSettings
from ..keyframe_conditioning import EndFrameGuidance
from ..keyframe_prefix import GOAL_FRAMES
from ..keyframes import end_keyframe_latent, start_keyframe_latent
from ..noise import SeededNoise
from ..sampler import StreamingSampler, plan_chunks
from ..transformer import CausalWanModel
from ..video_geometry import SPATIAL_FACTOR, latent_frames_for
from ..wan_vae import WanVAE
from .data import CaptionTokens, world_clips
from .end_frame import sample_to_goal
from .evaluation import HELD_OUT_SEED
from .evaluator import ClipResult, evaluate_clips, summarize
from .evaluator_metrics import largest_jump
from .world_scene import SceneParams, WorldConfig
from .world_vocab import DIRECTIONS

KEYFRAME_MODES = ("none", "start", "guidance", "goal", "goal_pinned")


@dataclass
class Decoding:
    """The frozen pieces every generator needs: VAE, text encoder (ids, mask -> embeddings), tokens."""

    vae: WanVAE
    encode: nn.Module
    tokens: CaptionTokens

    @torch.no_grad()
    def embed(self, captions: Sequence[str]) -> torch.Tensor:
        ids, mask = self.tokens(list(captions))
        device = self.vae.device
        return self.encode(ids.to(device), mask.to(device))

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Videos [B, T, 3, H, W] in [-1, 1] on the CPU."""
        video = self.vae.decode(latents.to(self.vae.dtype), chunk_frames=3).float().clamp(-1.0, 1.0)
        return video.transpose(1, 2).cpu()

    @torch.no_grad()
    def encode_start(self, images: torch.Tensor) -> torch.Tensor:
        """Start keyframe latents [B, C, 1, h, w] of images [B, 3, H, W] in [-1, 1], each encoded on its own."""
        return start_keyframe_latent(self.vae, images.to(self.vae.device, self.vae.dtype)).float()

    @torch.no_grad()
    def encode_end(self, images: torch.Tensor) -> torch.Tensor:
        """End keyframe latents [B, C, 1, h, w] of images [B, 3, H, W] in [-1, 1], as the node pack encodes them."""
        return end_keyframe_latent(self.vae, images.to(self.vae.device, self.vae.dtype)).float()


def held_out(count: int, config: WorldConfig) -> tuple[torch.Tensor, list[SceneParams]]:
    """The evaluator's held-out clips [B, T, 3, H, W] (the teacher's evaluation captions) and scenes."""
    video, scenes = world_clips(HELD_OUT_SEED, range(count), config)
    return video.transpose(1, 2), scenes


@torch.no_grad()
def causal_videos(
    model: CausalWanModel,
    settings: CausalSettings,
    decoding: Decoding,
    scenes: Sequence[SceneParams],
    truth: torch.Tensor,
    mode: str = "none",
    end_strength: float = 0.5,
    seed: int = 0,
    batch_size: int = 50,
) -> torch.Tensor:
    """Decoded videos [B, T, 3, H, W] of a causal model for `scenes`; keyframes come from `truth`.

    Modes: 'none' (text only), 'start' (start keyframe prefix), 'guidance' (start + the pack's
    training-free end guidance), 'goal' (start + the end frame as a trained goal prefix) and
    'goal_pinned' (goal, and the last latent frame replaced by the end keyframe as guidance does).
    """
    if mode not in KEYFRAME_MODES:
        raise ValueError(f"unknown keyframe mode {mode!r}; choose one of {KEYFRAME_MODES}")
    total = latent_frames_for(scenes[0].config.num_frames)
    sampler = StreamingSampler(model, settings)
    videos = []
    for first in range(0, len(scenes), batch_size):
        part = slice(first, first + batch_size)
        context = decoding.embed([scene.caption for scene in scenes[part]])
        noise = SeededNoise(seed + first, context.shape[0])
        start = decoding.encode_start(truth[part, 0]) if mode != "none" else None
        end = decoding.encode_end(truth[part, -1]) if mode not in ("none", "start") else None
        if mode.startswith("goal"):
            pin = None
            if mode == "goal_pinned":
                pin = EndFrameGuidance(end, last_frame=total - 1 + GOAL_FRAMES, strength=0.0)
            latents = sample_to_goal(sampler, context, noise, end, total, start, pin)
        else:
            prefix_frames = 0 if start is None else 1
            plan = plan_chunks(total - prefix_frames, settings, start_frame=prefix_frames)
            guide = EndFrameGuidance(end, last_frame=total - 1, strength=end_strength) if end is not None else None
            shape = (context.shape[0], model.config.in_dim) + tuple(s // SPATIAL_FACTOR for s in truth.shape[-2:])
            latents = sampler.sample(plan, context, noise, shape, prefix=start, adjust_x0=guide)
        videos.append(decoding.decode(latents))
    return torch.cat(videos)


def video_bytes(videos: torch.Tensor) -> np.ndarray:
    """Videos in [-1, 1] as uint8 levels: the form clips take to worker processes and into samples files."""
    return ((videos.float() + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def _from_bytes(array: np.ndarray | None) -> torch.Tensor | None:
    return None if array is None else torch.from_numpy(array).float() / 127.5 - 1.0


def _score_part(videos: np.ndarray, scenes: list[SceneParams], start: np.ndarray | None,
                end: np.ndarray | None) -> list[ClipResult]:
    torch.set_num_threads(1)
    return evaluate_clips(_from_bytes(videos), scenes, _from_bytes(start), _from_bytes(end))


class Scorer:
    """The world evaluator spread over worker processes (inline with `workers=0`)."""

    def __init__(self, workers: int = 0, clips_per_task: int = 4):
        self.pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 0 else None
        self.clips_per_task = clips_per_task

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()

    def results(self, videos: torch.Tensor, scenes: Sequence[SceneParams], start: torch.Tensor | None = None,
                end: torch.Tensor | None = None) -> list[ClipResult]:
        """Per-clip results of videos [B, T, 3, H, W] (and keyframe images [B, 3, H, W]) in [-1, 1]."""
        tasks = []
        for first in range(0, len(scenes), self.clips_per_task):
            part = slice(first, first + self.clips_per_task)
            tasks.append((video_bytes(videos[part]), list(scenes[part]),
                          None if start is None else video_bytes(start[part]),
                          None if end is None else video_bytes(end[part])))
        run: Callable = self.pool.map if self.pool is not None else map
        return [result for part in run(_score_part, *zip(*tasks)) for result in part]

    def score(self, videos: torch.Tensor, scenes: Sequence[SceneParams], start: torch.Tensor | None = None,
              end: torch.Tensor | None = None) -> dict[str, float]:
        return summary(self.results(videos, scenes, start, end), scenes[0].config)


def _last_second_jump(clip: ClipResult, config: WorldConfig) -> float:
    to_short = np.array([config.width, config.height]) / config.short_side
    jumps = [largest_jump(obj.detected.track[-config.fps - 1:] * to_short)
             for obj in clip.objects if obj.detected is not None]
    jumps = [j for j in jumps if not np.isnan(j)]
    return max(jumps) if jumps else float("nan")


def summary(results: list[ClipResult], config: WorldConfig) -> dict[str, float]:
    """The evaluator's summary plus prompt adherence (mean of colour, shape and motion accuracy, in
    points), direction accuracy of straight motions, drift, object loss and the last-second jump."""
    fps = config.fps
    values = summarize(results, fps)
    values["prompt_adherence"] = 100.0 * float(np.mean([values["colour_accuracy"], values["shape_accuracy"],
                                                        values["motion_accuracy"]]))
    straight = [obj.motion_ok for clip in results for obj in clip.objects if obj.expected.motion in DIRECTIONS]
    values["direction_accuracy"] = float(np.mean(straight)) if straight else float("nan")
    values["drift"] = float(np.mean([abs(c.saturation_drift) + abs(c.contrast_drift) for c in results]))
    values["object_loss"] = float(np.mean([c.detection_rate[:fps].mean() - c.detection_rate[-fps:].mean()
                                           for c in results]))
    jumps = [jump for jump in (_last_second_jump(c, config) for c in results) if not np.isnan(jump)]
    values["end_jump"] = float(np.mean(jumps)) if jumps else float("nan")
    return values

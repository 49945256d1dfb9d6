"""Training data from the procedural world: clips in VAE layout, caption tokens, and a latent bank.

Clip `i` of stream `seed` is the world's clip (seed, i), so a step's batch depends only on the step
number (and the process's rank): training resumes on exactly the clips it would have seen.
"""
from __future__ import annotations

import time
import warnings
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from typing import NamedTuple

import torch

from ..keyframes import end_keyframe_latent
from ..tokenizers import ByteTokenizer, PromptWarning
from ..wan_vae import WanVAE
from .world import sample_scenes
from .world_render import render_scenes
from .world_scene import SceneParams, WorldConfig


def world_clips(
    seed: int, indices: range, config: WorldConfig, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, list[SceneParams]]:
    """Clips `indices` of stream `seed` as video [B, 3, T, H, W] in [-1, 1] (VAE layout) and their scenes."""
    scenes = sample_scenes(seed, indices, config)
    return render_scenes(scenes, device).transpose(1, 2), scenes


def random_crop(video: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """One random `size` x `size` window of a batch of videos [..., H, W] (the whole frame if not smaller)."""
    height, width = video.shape[-2:]
    if size >= min(height, width):
        return video
    top, left = (torch.randint(0, limit - size + 1, (1,), generator=generator, device=generator.device).item()
                 for limit in (height, width))
    return video[..., top : top + size, left : left + size]


class WorldClipBank:
    """A sliding window of the stream's world clips, rendered in bulk and kept as uint8 on the device.

    Rendering a few clips per step is dozens of small kernels that leave a small model's training
    step waiting; rendering `refresh` clips at once every few steps costs a fraction of that. The bank
    after `r` refreshes holds clips [r * refresh, r * refresh + size) of stream `seed` (clip i in slot
    i mod size), so a resumed run rebuilds exactly the bank it left.
    """

    def __init__(self, seed: int, size: int, config: WorldConfig, device: torch.device | str,
                 refresh: int = 64, render_batch: int = 64):
        if size < 1 or refresh < 1:
            raise ValueError(f"a clip bank needs size >= 1 and refresh >= 1, got {size} and {refresh}")
        self.seed, self.size, self.config, self.refresh = seed, size, config, min(refresh, size)
        self.render_batch = render_batch
        self.clips = torch.empty((size, 3, config.num_frames, config.height, config.width), dtype=torch.uint8,
                                 device=device)
        self.refreshes = 0
        self._render(range(size))

    def seek(self, refreshes: int) -> None:
        """Hold what the bank holds after `refreshes` refreshes: one step on replaces the `refresh`
        oldest clips with the stream's next ones; any other jump (a resume) re-renders the bank."""
        if refreshes == self.refreshes:
            return
        first = refreshes * self.refresh
        indices = range(first + self.size - self.refresh, first + self.size)
        if refreshes != self.refreshes + 1:
            indices = range(first, first + self.size)
        self.refreshes = refreshes
        self._render(indices)

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """`batch` random clips as video [B, 3, T, H, W] in [-1, 1], each flipped left-right at random."""
        device = generator.device
        index = torch.randint(self.size, (batch,), generator=generator, device=device).to(self.clips.device)
        flip = (torch.rand(batch, generator=generator, device=device) < 0.5).to(self.clips.device)
        video = self.clips[index].float().div_(127.5).sub_(1.0)
        return torch.where(flip.view(-1, 1, 1, 1, 1), video.flip(-1), video)

    def _render(self, indices: range) -> None:
        for first in range(indices.start, indices.stop, self.render_batch):
            part = range(first, min(indices.stop, first + self.render_batch))
            video, _ = world_clips(self.seed, part, self.config, self.clips.device)
            slots = torch.arange(part.start, part.stop, device=self.clips.device) % self.size
            self.clips[slots] = video.add(1.0).mul_(127.5).round_().to(torch.uint8)


def _scene_chunk(args: tuple[int, range, WorldConfig]) -> list[SceneParams]:
    return sample_scenes(*args)


def sample_scenes_parallel(
    seed: int, indices: range, config: WorldConfig, workers: int, chunk: int = 256
) -> list[SceneParams]:
    """`sample_scenes` spread over worker processes (scene sampling is per-clip numpy work)."""
    parts = [(seed, indices[i : i + chunk], config) for i in range(0, len(indices), chunk)]
    if workers < 2:
        return [scene for part in parts for scene in _scene_chunk(part)]
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        return [scene for scenes in pool.map(_scene_chunk, parts) for scene in scenes]


class ScenePrefetcher:
    """Scenes of each training step's clips, sampled `ahead` steps early in worker processes.

    Step s of rank r (of n) takes clips [(s n + r) B, (s n + r + 1) B) of stream `seed`.
    """

    def __init__(self, seed: int, batch: int, config: WorldConfig, ranks: int = 1, rank: int = 0,
                 workers: int = 0, ahead: int = 8):
        self.seed, self.batch, self.config = seed, batch, config
        self.ranks, self.rank, self.ahead = ranks, rank, ahead
        self.pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn")) if workers > 0 else None
        self.pending: dict[int, Future] = {}

    def indices(self, step: int) -> range:
        first = (step * self.ranks + self.rank) * self.batch
        return range(first, first + self.batch)

    def scenes(self, step: int) -> list[SceneParams]:
        """The scenes of `step` (and queue the next `ahead` steps)."""
        if self.pool is None:
            return sample_scenes(self.seed, self.indices(step), self.config)
        for future_step in range(step, step + self.ahead):
            if future_step not in self.pending:
                self.pending[future_step] = self.pool.submit(_scene_chunk, (self.seed, self.indices(future_step),
                                                                           self.config))
        for old in [s for s in self.pending if s < step]:
            self.pending.pop(old).cancel()
        return self.pending.pop(step).result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


class CaptionTokens:
    """Byte-tokenizes captions to fixed-length ids/masks, and holds the empty caption (for CFG)."""

    def __init__(self, text_len: int):
        self.tokenizer = ByteTokenizer(text_len)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PromptWarning)
            empty = self.tokenizer([""])
        self.empty_ids, self.empty_mask = empty.ids, empty.mask

    def __call__(self, captions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.tokenizer(captions)
        return batch.ids, batch.mask


@dataclass
class LatentBank:
    """Normalised VAE latents [N, C, F, h, w] of N world clips, their caption tokens, and the captions."""

    latents: torch.Tensor
    ids: torch.Tensor
    mask: torch.Tensor
    captions: list[str]

    def __len__(self) -> int:
        return self.latents.shape[0]

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Latents, ids and mask of the clips at `index` (a long tensor on any device)."""
        index = index.to(self.latents.device)
        return self.latents[index], self.ids[index], self.mask[index]


class EncodedStream(NamedTuple):
    """Clips of a world stream as latents, their last frames as end keyframe latents (if asked), and captions."""

    latents: torch.Tensor
    end_latents: torch.Tensor | None
    ids: torch.Tensor
    mask: torch.Tensor
    captions: list[str]


@torch.no_grad()
def encode_stream(
    vae: WanVAE,
    tokens: CaptionTokens,
    seed: int,
    count: int,
    config: WorldConfig,
    batch_size: int,
    dtype: torch.dtype,
    workers: int = 0,
    max_seconds: float | None = None,
    end_frames: bool = False,
) -> EncodedStream:
    """Render and encode clips 0..count-1 of stream `seed` batch by batch, stopping early after
    `max_seconds` (scene sampling included), with the tokens of the captions of the clips encoded."""
    began = time.monotonic()
    scenes = sample_scenes_parallel(seed, range(count), config, workers)
    latents, ends, done = [], [], 0
    for first in range(0, len(scenes), batch_size):
        part = scenes[first : first + batch_size]
        video = render_scenes(part, vae.device, vae.dtype).transpose(1, 2)
        latents.append(vae.encode(video).to(dtype))
        if end_frames:
            ends.append(end_keyframe_latent(vae, video[:, :, -1]).to(dtype))
        done += len(part)
        if max_seconds is not None and time.monotonic() - began > max_seconds:
            break
    captions = [scene.caption for scene in scenes[:done]]
    ids, mask = tokens(captions)
    encoded = torch.cat(latents)
    return EncodedStream(encoded, torch.cat(ends) if end_frames else None, ids.to(encoded.device),
                         mask.to(encoded.device), captions)


def build_latent_bank(
    vae: WanVAE,
    tokens: CaptionTokens,
    seed: int,
    count: int,
    config: WorldConfig,
    batch_size: int = 64,
    workers: int = 1,
    max_seconds: float | None = None,
    dtype: torch.dtype = torch.float32,
) -> LatentBank:
    """Encode clips 0..count-1 of stream `seed` (stopping early after `max_seconds`) into a bank."""
    stream = encode_stream(vae, tokens, seed, count, config, batch_size, dtype, workers, max_seconds)
    return LatentBank(stream.latents, stream.ids, stream.mask, stream.captions)

"""The procedural captioned video world: an infinite, seeded source of training clips.

Clip `index` of stream `seed` is drawn from its own Generator seeded with (seed, index), so a
clip depends on nothing but those two numbers: `sample_batch(seed, n)` returns the first n clips
of stream `seed`, and `WorldDataset(seed=seed)` yields the same clips in order.

Video layout: [T, 3, H, W] per clip ([B, T, 3, H, W] per batch), float in [-1, 1], RGB,
`config.fps` frames per second, T = 1 + 4k frames (33 by default = 9 Wan VAE latent frames).
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import count
from typing import Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

from .world_render import render_scenes
from .world_scene import SceneParams, WorldConfig, sample_scene


@dataclass(frozen=True)
class Clip:
    """One rendered clip: video [T, 3, H, W] in [-1, 1], its caption and its parameters."""

    video: torch.Tensor
    caption: str
    params: SceneParams


def sample_scenes(seed: int, indices: range | list[int], config: WorldConfig) -> list[SceneParams]:
    """The parameters of clips `indices` of stream `seed`, without rendering them."""
    return [sample_scene(config, (seed, index)) for index in indices]


def sample_batch(
    seed: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    config: WorldConfig = WorldConfig(),
    dtype: torch.dtype = torch.float32,
) -> tuple[torch.Tensor, list[str], list[SceneParams]]:
    """The first `batch_size` clips of stream `seed`: video [B, T, 3, H, W], captions, params."""
    scenes = sample_scenes(seed, range(batch_size), config)
    return render_scenes(scenes, device, dtype), [scene.caption for scene in scenes], scenes


def sample_clip(
    seed: int, index: int = 0, device: torch.device | str = "cpu", config: WorldConfig = WorldConfig()
) -> Clip:
    """Clip `index` of stream `seed`."""
    scene = sample_scene(config, (seed, index))
    return Clip(render_scenes([scene], device)[0], scene.caption, scene)


class WorldDataset(IterableDataset):
    """An endless stream of clips as dicts {"video": [T, 3, H, W], "caption": str, "index": int}.

    With DataLoader workers, worker w of n takes clips w, w + n, w + 2n, ...; the parameters of a
    yielded clip are `sample_scene(config, (seed, index))`.
    """

    def __init__(self, seed: int = 0, config: WorldConfig = WorldConfig(), start: int = 0):
        super().__init__()
        self.seed = seed
        self.config = config
        self.start = start

    def __iter__(self) -> Iterator[dict]:
        worker = get_worker_info()
        offset, step = (worker.id, worker.num_workers) if worker else (0, 1)
        for index in count(self.start + offset, step):
            scene = sample_scene(self.config, (self.seed, index))
            yield {"video": render_scenes([scene])[0], "caption": scene.caption, "index": index}

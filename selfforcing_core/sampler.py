"""The streaming few-step sampler: plans chunks, denoises each with the KV cache, yields it at once.

Per chunk: one model call per denoising step (x0 prediction, then re-noise to the next step), the
finished chunk is yielded, then one call at `context_noise` on the clean chunk writes the cache
that later chunks attend to. A clean prefix (start image, video to extend) is written first.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol, Sequence

import torch

from .config import CausalSettings
from .kv_cache import KVCache
from .noise import NoiseSource
from .schedule import FlowMatchSchedule
from .transformer import CausalWanModel


@dataclass(frozen=True)
class ChunkPlan:
    """One chunk of the video: where it starts, how many latent frames, its steps and its prompt."""

    index: int
    start_frame: int
    num_frames: int
    steps: tuple[int, ...]
    prompt: int = 0


@dataclass
class ChunkResult:
    """A finished chunk: clean latents [B, C, F, H, W] for frames [start_frame, end_frame)."""

    index: int
    start_frame: int
    end_frame: int
    latents: torch.Tensor
    seconds: float
    prompt: int
    is_prefix: bool = False


class X0Adjustment(Protocol):
    """Changes each x0 prediction of a chunk (keyframe conditioning, guidance)."""

    def __call__(self, chunk: ChunkPlan, step: int, num_steps: int, x0: torch.Tensor) -> torch.Tensor: ...


def plan_chunks(
    num_frames: int,
    settings: CausalSettings,
    start_frame: int = 0,
    first_chunk_frames: int | None = None,
    first_chunk_steps: Sequence[int] | None = None,
    prompt_starts: Sequence[int] = (),
) -> list[ChunkPlan]:
    """Split `num_frames` latent frames into chunks with their step lists and prompt indices.

    `first_chunk_frames`/`first_chunk_steps` serve models whose first chunk differs (a single
    first frame, or more steps for it). `prompt_starts[i]` is the latent frame from which prompt
    i + 1 applies; a chunk takes the last prompt started at or before its first frame.
    """
    if num_frames < 1:
        raise ValueError(f"a video needs at least one latent frame, got {num_frames}")
    if list(prompt_starts) != sorted(prompt_starts):
        raise ValueError(f"prompt start frames must be increasing, got {list(prompt_starts)}")
    plan: list[ChunkPlan] = []
    frame, end = start_frame, start_frame + num_frames
    while frame < end:
        first = not plan
        size = first_chunk_frames if first and first_chunk_frames else settings.chunk_frames
        steps = tuple(first_chunk_steps) if first and first_chunk_steps else tuple(settings.denoising_steps)
        size = min(size, end - frame)
        prompt = sum(1 for s in prompt_starts if s <= frame)
        plan.append(ChunkPlan(len(plan), frame, size, steps, prompt))
        frame += size
    return plan


def _synchronize(device: torch.device) -> None:
    """Wait for this thread's stream only, so a decoder on another stream keeps running."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


class StreamingSampler:
    """Runs a `CausalWanModel` chunk by chunk with a reusable KV cache."""

    def __init__(self, model: CausalWanModel, settings: CausalSettings | None = None):
        self.model = model
        self.settings = settings or CausalSettings()
        self.schedule = FlowMatchSchedule(self.settings.timestep_shift)
        self.cache: KVCache | None = None

    @property
    def latent_dtype(self) -> torch.dtype:
        """Latents are kept in float32 (float64 for exact replays) whatever the weights' dtype."""
        return torch.float64 if self.model.dtype == torch.float64 else torch.float32

    def _cache_for(self, batch: int, height: int, width: int, total_frames: int) -> KVCache:
        """Reuse the cache when the shape still fits; reallocate only when it must."""
        s = self.settings
        max_frames = None if s.local_window is not None else total_frames
        cache = self.cache
        tokens = self.model.frame_tokens(height, width)
        fits = (
            cache is not None
            and cache.batch_size == batch
            and cache.layout.frame_tokens == tokens
            and cache.layout.local_window == s.local_window
            and cache.layout.sink_frames == (s.sink_frames if s.local_window is not None else 0)
            and (s.local_window is not None or cache.layout.capacity >= total_frames)
            and cache.dtype == self.model.dtype
            and cache.device == self.model.device
        )
        if not fits:
            self.cache = None
            cache = self.model.new_cache(batch, height, width, max_frames, s.local_window, s.sink_frames)
            self.cache = cache
        cache.reset()
        return cache

    def release(self) -> None:
        """Drop the KV cache (frees its memory); the next video allocates a new one."""
        self.cache = None

    def stream(
        self,
        plan: Sequence[ChunkPlan],
        contexts: torch.Tensor | Sequence[torch.Tensor],
        noise: NoiseSource,
        latent_shape: tuple[int, int, int, int],
        prefix: torch.Tensor | None = None,
        interrupt: Callable[[], None] | None = None,
        adjust_x0: X0Adjustment | None = None,
    ) -> Iterator[ChunkResult]:
        """Yield each chunk of `plan` as soon as it is denoised (its cache pass runs on resumption).

        latent_shape is (B, C, H, W); contexts are text embeddings [B, L, text_dim], one per prompt
        index used by the plan; prefix is clean latents [B, C, P, H, W] written before the plan
        (the plan must then start at frame P). `interrupt` is called before every model call and
        may raise to stop the run; `adjust_x0` may change every x0 prediction (keyframes).
        """
        contexts = [contexts] if torch.is_tensor(contexts) else list(contexts)
        batch, channels, height, width = latent_shape
        prefix_frames = 0 if prefix is None else prefix.shape[2]
        if plan and plan[0].start_frame != prefix_frames:
            raise ValueError(f"the plan starts at frame {plan[0].start_frame} but the prefix has {prefix_frames}")
        if max(c.prompt for c in plan) >= len(contexts):
            raise ValueError(f"the plan uses prompt {max(c.prompt for c in plan)} but {len(contexts)} were given")
        total = prefix_frames + sum(c.num_frames for c in plan)
        cache = self._cache_for(batch, height, width, total)
        device = self.model.device
        active_prompt = -1

        def use_prompt(index: int) -> None:
            nonlocal active_prompt
            if index != active_prompt:
                cache.clear_prompt()
                self.model.set_prompt(cache, contexts[index].to(device))
                active_prompt = index

        with torch.no_grad():
            if prefix is not None:
                use_prompt(plan[0].prompt if plan else 0)
                yield from self._write_prefix(prefix.to(device, self.latent_dtype), cache, interrupt)
            for chunk in plan:
                use_prompt(chunk.prompt)
                shape = (batch, channels, chunk.num_frames, height, width)
                result = self._denoise_chunk(chunk, noise, shape, cache, interrupt, adjust_x0)
                yield result
                self._context_pass(result.latents, chunk.start_frame, cache, interrupt)

    def _write_prefix(
        self, prefix: torch.Tensor, cache: KVCache, interrupt: Callable[[], None] | None
    ) -> Iterator[ChunkResult]:
        step = self.settings.chunk_frames
        for index, start in enumerate(range(0, prefix.shape[2], step)):
            began = time.perf_counter()
            clean = prefix[:, :, start : start + step]
            self._context_pass(clean, start, cache, interrupt)
            _synchronize(clean.device)
            yield ChunkResult(index, start, start + clean.shape[2], clean, time.perf_counter() - began,
                              -1, is_prefix=True)

    def _context_pass(
        self, clean: torch.Tensor, start: int, cache: KVCache, interrupt: Callable[[], None] | None
    ) -> None:
        if interrupt is not None:
            interrupt()
        t = torch.full(clean.shape[:1] + clean.shape[2:3], float(self.settings.context_noise), device=clean.device)
        self.model(clean, t, cache=cache, start_frame=start)

    def _timesteps(self, steps: Sequence[int]) -> torch.Tensor:
        if self.settings.warp_steps:
            return self.schedule.warp(steps)
        return torch.tensor([float(s) for s in steps], dtype=torch.float32)

    def _denoise_chunk(
        self,
        chunk: ChunkPlan,
        noise: NoiseSource,
        shape: tuple[int, ...],
        cache: KVCache,
        interrupt: Callable[[], None] | None,
        adjust_x0: X0Adjustment | None = None,
    ) -> ChunkResult:
        began = time.perf_counter()
        device = self.model.device
        timesteps = self._timesteps(chunk.steps).to(device)
        x = noise.initial(chunk.start_frame, torch.Size(shape)).to(device, self.latent_dtype)
        frame_t = torch.ones(shape[0], shape[2], device=device)
        for i, t in enumerate(timesteps):
            if interrupt is not None:
                interrupt()
            flow = self.model(x, frame_t * t, cache=cache, start_frame=chunk.start_frame)
            x0 = self.schedule.flow_to_x0(flow.to(self.latent_dtype), x, frame_t * t)
            if adjust_x0 is not None:
                x0 = adjust_x0(chunk, i, len(timesteps), x0)
            if i + 1 < len(timesteps):
                draw = noise.renoise(x0.shape).to(device, self.latent_dtype)
                x = self.schedule.add_noise(x0, draw, frame_t * timesteps[i + 1])
        _synchronize(device)
        return ChunkResult(chunk.index, chunk.start_frame, chunk.start_frame + chunk.num_frames, x0,
                           time.perf_counter() - began, chunk.prompt)

    def sample(self, *args, **kwargs) -> torch.Tensor:
        """Run `stream` to the end and return all latents [B, C, frames, H, W] (prefix included)."""
        return torch.cat([chunk.latents for chunk in self.stream(*args, **kwargs)], dim=2)

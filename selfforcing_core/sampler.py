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
    cut: bool = False


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
    prompt_cuts: Sequence[bool] = (),
) -> list[ChunkPlan]:
    """Split `num_frames` latent frames into chunks with their step lists and prompt indices.

    `first_chunk_frames`/`first_chunk_steps` serve models whose first chunk differs (a single
    first frame, or more steps for it). `prompt_starts[i]` is the latent frame from which prompt
    i + 1 applies; a chunk takes the last prompt started at or before its first frame. Where
    `prompt_cuts[i]` is true, prompt i + 1 starts with a hard cut (the cache forgets the scene).
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
        cut = bool(plan) and prompt != plan[-1].prompt and prompt > 0 and prompt - 1 < len(prompt_cuts) \
            and bool(prompt_cuts[prompt - 1])
        plan.append(ChunkPlan(len(plan), frame, size, steps, prompt, cut))
        frame += size
    return plan


def _runs(frames: list[int]) -> list[list[int]]:
    """Consecutive runs of sorted frame indices: [0, 1, 5, 6] -> [[0, 1], [5, 6]]."""
    runs: list[list[int]] = []
    for frame in frames:
        if runs and frame == runs[-1][-1] + 1:
            runs[-1].append(frame)
        else:
            runs.append([frame])
    return runs


class CleanFrames:
    """The clean latents of the frames still in the KV cache, kept for re-encoding on a prompt change."""

    def __init__(self) -> None:
        self.frames: dict[int, torch.Tensor] = {}

    def add(self, start: int, latents: torch.Tensor, cached: list[int]) -> None:
        for offset in range(latents.shape[2]):
            self.frames[start + offset] = latents[:, :, offset : offset + 1]
        self.keep_only(cached)

    def keep_only(self, cached: list[int]) -> None:
        held = set(cached)
        self.frames = {f: x for f, x in self.frames.items() if f in held}

    def latents(self, start: int, stop: int) -> torch.Tensor:
        return torch.cat([self.frames[f] for f in range(start, stop)], dim=2)


def _synchronize(device: torch.device) -> None:
    """Wait for this thread's stream only, so a decoder on another stream keeps running."""
    if device.type == "cuda":
        torch.cuda.current_stream(device).synchronize()


class StreamingSampler:
    """Runs a `CausalWanModel` chunk by chunk with a reusable KV cache."""

    def __init__(self, model: CausalWanModel, settings: CausalSettings | None = None, cache_last_chunk: bool = False):
        """`cache_last_chunk` also runs the cache pass after a video's last chunk, which nothing reads; the
        reference does (its golden call traces include it), so only replays of those traces need it."""
        self.model = model
        self.settings = settings or CausalSettings()
        self.cache_last_chunk = cache_last_chunk
        self.schedule = FlowMatchSchedule(self.settings.timestep_shift)
        self.cache: KVCache | None = None

    @property
    def latent_dtype(self) -> torch.dtype:
        """Latents are kept in float32 (float64 for exact replays) whatever the weights' dtype."""
        return torch.float64 if self.model.dtype == torch.float64 else torch.float32

    def _cache_for(self, batch: int, height: int, width: int, total_frames: int) -> KVCache:
        """Reuse the cache when the shape still fits; reallocate only when it must."""
        s = self.settings
        window = s.attention_window(total_frames)
        max_frames = None if window is not None else total_frames
        cache = self.cache
        tokens = self.model.frame_tokens(height, width)
        fits = (
            cache is not None
            and cache.batch_size == batch
            and cache.layout.frame_tokens == tokens
            and cache.layout.local_window == window
            and cache.layout.sink_frames == (s.sink_frames if window is not None else 0)
            and (window is not None or cache.layout.capacity >= total_frames)
            and (cache.sink_raw_keys is not None) == (s.rebase_sink and cache.layout.sink_frames > 0)
            and cache.dtype == self.model.dtype
            and cache.device == self.model.device
        )
        if not fits:
            self.cache = None
            cache = self.model.new_cache(batch, height, width, max_frames, window, s.sink_frames, s.rebase_sink)
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
        """Yield each chunk of `plan` as soon as it is denoised (its cache pass runs on resumption; the
        last chunk's only with `cache_last_chunk`).

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
        clean = CleanFrames()

        def use_prompt(chunk: ChunkPlan) -> None:
            nonlocal active_prompt
            if chunk.cut:
                cache.cut(chunk.start_frame, keep_sink=True)
                clean.keep_only(cache.cached_frames())
            if chunk.prompt != active_prompt:
                cache.clear_prompt()
                self.model.set_prompt(cache, contexts[chunk.prompt].to(device))
                if active_prompt >= 0 and not chunk.cut and self.settings.recache_on_prompt_change:
                    self._recache(cache, clean, interrupt)
                active_prompt = chunk.prompt

        with torch.no_grad():
            if prefix is not None:
                use_prompt(plan[0] if plan else ChunkPlan(0, 0, 0, ()))
                for result in self._write_prefix(prefix.to(device, self.latent_dtype), cache, interrupt):
                    clean.add(result.start_frame, result.latents, cache.cached_frames())
                    yield result
            for chunk in plan:
                use_prompt(chunk)
                shape = (batch, channels, chunk.num_frames, height, width)
                result = self._denoise_chunk(chunk, noise, shape, cache, interrupt, adjust_x0)
                yield result
                if chunk is plan[-1] and not self.cache_last_chunk:
                    break  # no chunk follows that would read its cache pass
                self._context_pass(result.latents, chunk.start_frame, cache, interrupt)
                clean.add(chunk.start_frame, result.latents, cache.cached_frames())

    def _recache(self, cache: KVCache, clean: "CleanFrames", interrupt: Callable[[], None] | None) -> None:
        """Re-encode the cached frames under the new prompt (LongLive-style KV re-cache).

        Frames are rewritten chunk by chunk in order, and each chunk sees only the cached frames before
        its end (block-causal); in a wrapped window the later frames, already in the ring, are masked
        out. This approximates how they were generated: frames that have left the window are gone.
        A sink kept across a hard cut is an anchor from the scene before and stays as it is.
        """
        frames = sorted(f for f in cache.cached_frames() if f >= cache.segment_offset)
        if not frames:
            return
        step = self.settings.chunk_frames
        for run in _runs(frames):
            for start in range(run[0], run[-1] + 1, step):
                stop = min(start + step, run[-1] + 1)
                self._context_pass(clean.latents(start, stop), start, cache, interrupt, cache.hide_frames_from(stop))

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
        self, clean: torch.Tensor, start: int, cache: KVCache, interrupt: Callable[[], None] | None,
        key_mask: torch.Tensor | None = None,
    ) -> None:
        if interrupt is not None:
            interrupt()
        t = torch.full(clean.shape[:1] + clean.shape[2:3], float(self.settings.context_noise), device=clean.device)
        self.model(clean, t, cache=cache, start_frame=start, attn_mask=key_mask)

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

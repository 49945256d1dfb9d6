"""Unbounded streaming: the sink kept at a trained distance, prompt switches with re-cache, hard cuts."""
from __future__ import annotations

import torch

from selfforcing_core.config import CausalSettings
from selfforcing_core.sampler import CleanFrames, StreamingSampler, plan_chunks

from tiny_models import TINY

SHAPE = (1, 16, 4, 4)


class ConstantNoise:
    """The same noise for every chunk, so chunks with the same context must come out equal."""

    def __init__(self) -> None:
        self.noise = torch.randn(1, 16, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def initial(self, start_frame, shape):
        return self.noise[:, :, : shape[2]]

    def renoise(self, shape):
        return self.noise[:, :, : shape[2]]


def _context(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 5, TINY.text_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def _last_chunk_output(model, chunks: list[torch.Tensor], rebase: bool) -> torch.Tensor:
    """Write chunks through a sink-3 / window-6 cache; return the model output for the last one."""
    cache = model.new_cache(1, 4, 4, local_window=6, sink_frames=3, rebase_sink=rebase)
    t = torch.full((1, 3), 300.0, dtype=torch.float64)
    context = _context()
    for index, chunk in enumerate(chunks[:-1]):
        model(chunk, t, context, cache=cache, start_frame=3 * index)
    return model(chunks[-1], t, context, cache=cache, start_frame=3 * (len(chunks) - 1))


def test_rebased_sink_makes_late_chunks_independent_of_absolute_position(model):
    """Same sink, same window content: with re-basing the output no longer depends on how far along
    the video is; without it, the ever-growing sink distance changes it."""
    g = torch.Generator().manual_seed(4)
    sink, filler, y, q = (torch.randn(1, 16, 3, 4, 4, dtype=torch.float64, generator=g) for _ in range(4))
    short = [sink, filler, y, q]
    long = [sink, filler, filler, filler, filler, y, q]
    rebased = (_last_chunk_output(model, short, True), _last_chunk_output(model, long, True))
    fixed = (_last_chunk_output(model, short, False), _last_chunk_output(model, long, False))
    torch.testing.assert_close(rebased[0], rebased[1], rtol=0, atol=1e-10)
    assert (fixed[0] - fixed[1]).abs().max() > 1e-6


def test_rebasing_changes_nothing_before_the_window_rolls(model):
    g = torch.Generator().manual_seed(5)
    chunks = [torch.randn(1, 16, 3, 4, 4, dtype=torch.float64, generator=g) for _ in range(3)]
    torch.testing.assert_close(_last_chunk_output(model, chunks, True), _last_chunk_output(model, chunks, False),
                               rtol=0, atol=0)


def test_sink_memory_stays_flat_with_rebasing(model):
    settings = CausalSettings(chunk_frames=3, local_window=6, sink_frames=3, rebase_sink=True, denoising_steps=(1000,))
    sampler = StreamingSampler(model, settings)
    seen = set()
    for _ in sampler.stream(plan_chunks(60, settings), _context(), ConstantNoise(), SHAPE):
        seen.add((sampler.cache.memory_bytes(), sampler.cache.keys.data_ptr()))
    assert len(seen) == 1


def test_switching_to_the_same_prompt_with_recache_changes_nothing(model):
    """Re-encoding the cached frames under an identical prompt rewrites identical keys and values."""
    settings = CausalSettings(chunk_frames=3, denoising_steps=(1000, 500))
    sampler = StreamingSampler(model, settings)
    one = sampler.sample(plan_chunks(9, settings), [_context()], ConstantNoise(), SHAPE)
    two = sampler.sample(plan_chunks(9, settings, prompt_starts=(6,)), [_context(), _context()], ConstantNoise(), SHAPE)
    torch.testing.assert_close(one, two, rtol=0, atol=1e-12)


def test_recache_makes_the_switch_take_hold_of_the_past_frames(model):
    switched = [_context(0), _context(1)]
    results = []
    for recache in (False, True):
        settings = CausalSettings(chunk_frames=3, denoising_steps=(1000, 500), recache_on_prompt_change=recache)
        plan = plan_chunks(9, settings, prompt_starts=(6,))
        results.append(StreamingSampler(model, settings).sample(plan, switched, ConstantNoise(), SHAPE))
    torch.testing.assert_close(results[0][:, :, :6], results[1][:, :, :6], rtol=0, atol=0)
    assert (results[0][:, :, 6:] - results[1][:, :, 6:]).abs().max() > 1e-6


def test_recache_in_a_wrapped_window(model):
    settings = CausalSettings(chunk_frames=3, local_window=6, sink_frames=3, rebase_sink=True, denoising_steps=(1000,))
    plan = plan_chunks(24, settings, prompt_starts=(18,))
    video = StreamingSampler(model, settings).sample(plan, [_context(0), _context(1)], ConstantNoise(), SHAPE)
    assert video.shape[2] == 24 and torch.isfinite(video).all()


def test_a_cut_starts_a_fresh_scene(model):
    """After a cut (global attention, no sink) the next chunks equal the start of a new video."""
    settings = CausalSettings(chunk_frames=3, denoising_steps=(1000,))
    plan = plan_chunks(12, settings, prompt_starts=(6,), prompt_cuts=(True,))
    assert [c.cut for c in plan] == [False, False, True, False]
    video = StreamingSampler(model, settings).sample(plan, [_context(), _context()], ConstantNoise(), SHAPE)
    torch.testing.assert_close(video[:, :, 6:], video[:, :, :6], rtol=0, atol=1e-10)
    uncut = StreamingSampler(model, settings).sample(plan_chunks(12, settings), [_context()], ConstantNoise(), SHAPE)
    assert (uncut[:, :, 6:] - video[:, :, 6:]).abs().max() > 1e-6


def _stream(model, settings: CausalSettings, frames: int) -> tuple[torch.Tensor, int]:
    """All latents of a `frames`-frame video, and the KV cache's size in bytes."""
    sampler = StreamingSampler(model, settings)
    chunks = [c.latents for c in sampler.stream(plan_chunks(frames, settings), _context(), ConstantNoise(), SHAPE)]
    return torch.cat(chunks, dim=2), sampler.cache.memory_bytes()


def test_bounded_global_attention_rolls_past_its_trained_length_like_a_window(model):
    """Global attention over a cache of the trained length (the reference's) becomes a rolling window of
    that length on longer videos, so memory stops growing there."""
    steps = dict(chunk_frames=3, denoising_steps=(1000, 500))
    bounded = CausalSettings(global_cache_frames=6, **steps)
    short_bounded, _ = _stream(model, bounded, 6)
    short_global, _ = _stream(model, CausalSettings(**steps), 6)
    torch.testing.assert_close(short_bounded, short_global, rtol=0, atol=0)
    long_bounded, memory = _stream(model, bounded, 15)
    long_window, window_memory = _stream(model, CausalSettings(local_window=6, **steps), 15)
    long_global, global_memory = _stream(model, CausalSettings(**steps), 15)
    torch.testing.assert_close(long_bounded, long_window, rtol=0, atol=0)
    assert (long_bounded - long_global).abs().max() > 1e-6
    assert memory == window_memory < global_memory


def test_a_wrapped_window_is_re_encoded_block_causally(model):
    """After a prompt switch, a chunk re-encoded in a wrapped window must not see the frames after it,
    even though they are already in the ring (as when it was generated)."""
    settings = CausalSettings(chunk_frames=3, local_window=6, sink_frames=3, denoising_steps=(1000,))
    generator = torch.Generator().manual_seed(7)
    video = torch.randn(1, 16, 18, 4, 4, dtype=torch.float64, generator=generator)
    t = torch.zeros(1, 3, dtype=torch.float64)

    def recached_keys(later: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cache keys of frames 12-14 and 15-17 after a switch, with frames 15-17 set to `later`."""
        frames = video.clone()
        frames[:, :, 15:] = later
        cache = model.new_cache(1, 4, 4, local_window=6, sink_frames=3)
        clean = CleanFrames()
        for start in range(0, 18, 3):
            model(frames[:, :, start : start + 3], t, _context(0), cache=cache, start_frame=start)
            clean.add(start, frames[:, :, start : start + 3], cache.cached_frames())
        model.set_prompt(cache, _context(1))
        StreamingSampler(model, settings)._recache(cache, clean, None)
        tokens = cache.layout.frame_tokens
        first, second = (cache.layout.slot(frame) * tokens for frame in (12, 15))
        return (cache.keys[:, :, :, first : first + 3 * tokens].clone(),
                cache.keys[:, :, :, second : second + 3 * tokens].clone())

    one = recached_keys(torch.randn(1, 16, 3, 4, 4, dtype=torch.float64, generator=generator))
    other = recached_keys(torch.randn(1, 16, 3, 4, 4, dtype=torch.float64, generator=generator))
    torch.testing.assert_close(one[0], other[0], rtol=0, atol=0)
    assert (one[1] - other[1]).abs().max() > 1e-6


def test_a_smooth_switch_after_a_cut_re_encodes_only_the_new_scene(model):
    """The sink kept across a cut is an anchor from before it; a later switch re-encodes the frames since."""
    settings = CausalSettings(chunk_frames=3, local_window=6, sink_frames=3, rebase_sink=True, denoising_steps=(1000,))
    for cut_at in (12, 15):
        plan = plan_chunks(30, settings, prompt_starts=(cut_at, 24), prompt_cuts=(True, False))
        contexts = [_context(0), _context(1), _context(2)]
        video = StreamingSampler(model, settings).sample(plan, contexts, ConstantNoise(), SHAPE)
        assert video.shape[2] == 30 and torch.isfinite(video).all()

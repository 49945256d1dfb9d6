"""The KV-cache manager: bounded window + sink, flat memory, reuse without reallocation."""
from __future__ import annotations

import pytest
import torch

from selfforcing_core.config import CausalSettings
from selfforcing_core.kv_cache import KVCache
from selfforcing_core.noise import SeededNoise
from selfforcing_core.sampler import StreamingSampler, plan_chunks

from tiny_models import TINY


def _cache(**kwargs) -> KVCache:
    return KVCache(num_layers=2, batch_size=1, num_heads=2, head_dim=4, frame_tokens=3, **kwargs)


def _write_chunks(cache: KVCache, chunk: int, chunks: int) -> list[list[int]]:
    held = []
    for i in range(chunks):
        k = torch.full((1, 2, chunk * 3, 4), float(i))
        for layer in range(2):
            keys, _ = cache.write(layer, i * chunk, k, k)
        held.append(cache.cached_frames())
        assert keys.shape[2] == len(cache.cached_frames()) * 3
    return held


def test_window_and_sink_hold_exactly_the_visible_frames():
    cache = _cache(local_window=6, sink_frames=3)
    held = _write_chunks(cache, chunk=3, chunks=10)
    assert sorted(held[0]) == [0, 1, 2]
    assert sorted(held[2]) == list(range(9))
    assert sorted(held[9]) == [0, 1, 2] + list(range(24, 30))
    assert max(len(h) for h in held) == 9


def test_cache_memory_is_flat_over_ten_times_the_length():
    """With a window, buffers never grow or move however many frames stream through."""
    cache = _cache(local_window=6, sink_frames=3)
    before = (cache.memory_bytes(), cache.keys.data_ptr())
    _write_chunks(cache, chunk=3, chunks=70)
    assert (cache.memory_bytes(), cache.keys.data_ptr()) == before
    assert cache.memory_bytes() == 2 * 2 * 1 * 2 * 9 * 3 * 4 * 4


def test_grad_carrying_writes_in_another_dtype_come_back_in_the_cache_dtype():
    """A training rollout under bf16 autocast writes bf16 K/V into a float32 cache (the H200 run of
    2026-12-02 stopped here); they are spliced in as float32 and the gradient reaches the bf16 source."""
    cache = _cache(local_window=6, sink_frames=3)
    keys = torch.randn(1, 2, 3 * 3, 4, dtype=torch.bfloat16, requires_grad=True)
    values = torch.randn(1, 2, 3 * 3, 4, dtype=torch.bfloat16, requires_grad=True)
    k, v = cache.write(0, 0, keys, values)
    assert k.dtype == v.dtype == torch.float32
    (k.sum() + 2 * v.sum()).backward()
    assert keys.grad.dtype == torch.bfloat16 and torch.all(keys.grad == 1) and torch.all(values.grad == 2)


def test_global_cache_refuses_to_overflow():
    cache = _cache(max_frames=6)
    _write_chunks(cache, chunk=3, chunks=2)
    with pytest.raises(ValueError, match="do not fit a global KV cache of 6 frames"):
        cache.check_write(6, 3)


def test_cache_needs_a_size():
    with pytest.raises(ValueError, match="max_frames"):
        _cache()


def test_sampler_reuses_cache_between_videos_without_reallocation(model):
    settings = CausalSettings(chunk_frames=3, local_window=6, sink_frames=3, denoising_steps=(1000, 500))
    sampler = StreamingSampler(model, settings)
    context = torch.randn(1, 4, TINY.text_dim, dtype=torch.float64)
    plan = plan_chunks(6, settings)
    first = sampler.sample(plan, context, SeededNoise(0, 1, torch.float64), (1, 16, 4, 4))
    pointer = sampler.cache.keys.data_ptr()
    again = sampler.sample(plan, context, SeededNoise(0, 1, torch.float64), (1, 16, 4, 4))
    assert sampler.cache.keys.data_ptr() == pointer
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    sampler.release()
    assert sampler.cache is None


def test_long_windowed_generation_keeps_memory_flat(model):
    """Ten times the training length through a sink + window: cache bytes and address never change."""
    settings = CausalSettings(chunk_frames=3, local_window=6, sink_frames=3, denoising_steps=(1000,))
    sampler = StreamingSampler(model, settings)
    context = torch.randn(1, 4, TINY.text_dim, dtype=torch.float64)
    sizes = []
    for chunk in sampler.stream(plan_chunks(63, settings), context, SeededNoise(0, 1, torch.float64), (1, 16, 2, 2)):
        sizes.append((sampler.cache.memory_bytes(), sampler.cache.keys.data_ptr(), len(sampler.cache.cached_frames())))
    assert len({s[:2] for s in sizes}) == 1
    assert max(s[2] for s in sizes) <= 9

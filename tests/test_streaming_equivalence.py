"""Streaming with the KV cache must equal the whole-sequence block-causal forward (float64)."""
from __future__ import annotations

import pytest
import torch

from selfforcing_core.attention import block_causal_mask

from tiny_models import TINY


def _stream(model, x, t, context, chunk_sizes, window=None, sink=0):
    cache = model.new_cache(x.shape[0], x.shape[3], x.shape[4], max_frames=x.shape[2],
                            local_window=window, sink_frames=sink)
    outputs, start = [], 0
    for size in chunk_sizes:
        outputs.append(model(x[:, :, start:start + size], t[:, start:start + size], context,
                             cache=cache, start_frame=start))
        start += size
    return torch.cat(outputs, dim=2), cache


def _whole(model, x, t, context, chunk_sizes, window=None, sink=0):
    tokens = model.frame_tokens(x.shape[3], x.shape[4])
    mask = block_causal_mask(chunk_sizes, tokens, window, sink)
    return model(x, t, context, attn_mask=mask)


@pytest.mark.parametrize(
    "chunk_sizes, window, sink",
    [
        ([3, 3, 3], None, 0),          # chunk-wise, global attention
        ([1] * 7, None, 0),            # frame-wise
        ([1, 3, 3], None, 0),          # independent first frame, then chunks
        ([3] * 6, 6, 0),               # local window, no sink
        ([3] * 6, 6, 3),               # window + one-chunk sink
        ([1] * 9, 4, 1),               # frame-wise window + sink
        ([2] * 6, 5, 2),               # window not a multiple of the chunk: the ring wraps mid-chunk
    ],
)
def test_streaming_equals_block_causal_whole_sequence(model, chunk_sizes, window, sink):
    torch.manual_seed(1)
    frames = sum(chunk_sizes)
    x = torch.randn(2, TINY.in_dim, frames, 4, 6, dtype=torch.float64)
    t = torch.rand(2, frames, dtype=torch.float64) * 1000
    context = torch.randn(2, 5, TINY.text_dim, dtype=torch.float64)
    streamed, cache = _stream(model, x, t, context, chunk_sizes, window, sink)
    whole = _whole(model, x, t, context, chunk_sizes, window, sink)
    assert streamed.shape == x.shape
    torch.testing.assert_close(streamed, whole, rtol=0, atol=1e-11)
    if window is not None:
        assert len(cache.cached_frames()) <= window + sink


def test_window_changes_the_result(model):
    """The windowed path must really drop old frames: a window of 3 differs from global attention."""
    torch.manual_seed(2)
    x = torch.randn(1, TINY.in_dim, 9, 4, 4, dtype=torch.float64)
    t = torch.full((1, 9), 500.0, dtype=torch.float64)
    context = torch.randn(1, 3, TINY.text_dim, dtype=torch.float64)
    windowed, _ = _stream(model, x, t, context, [3, 3, 3], window=3)
    full, _ = _stream(model, x, t, context, [3, 3, 3])
    torch.testing.assert_close(windowed[:, :, :3], full[:, :, :3], rtol=0, atol=1e-12)
    assert (windowed[:, :, 6:] - full[:, :, 6:]).abs().max() > 1e-3


def test_gradients_through_a_streaming_step_equal_the_whole_sequence_ones(model):
    """A training rollout's exit step: grads reach the chunk's input through its own K/V, and a later
    (detached) cache write does not break the saved graph."""
    torch.manual_seed(3)
    x = torch.randn(1, TINY.in_dim, 6, 4, 4, dtype=torch.float64)
    t = torch.full((1, 6), 400.0, dtype=torch.float64)
    context = torch.randn(1, 5, TINY.text_dim, dtype=torch.float64)
    mask = block_causal_mask([3, 3], model.frame_tokens(4, 4))

    chunk = x[:, :, 3:].clone().requires_grad_(True)
    cache = model.new_cache(1, 4, 4, max_frames=6)
    with torch.no_grad():
        model(x[:, :, :3], t[:, :3], context, cache=cache, start_frame=0)
    streamed = model(chunk, t[:, 3:], context, cache=cache, start_frame=3)
    with torch.no_grad():
        model(x[:, :, 3:], t[:, 3:] * 0, context, cache=cache, start_frame=3)
    streamed.square().sum().backward()

    whole_input = x.clone().requires_grad_(True)
    whole = model(whole_input, t, context, attn_mask=mask)[:, :, 3:]
    whole.square().sum().backward()
    torch.testing.assert_close(streamed, whole.detach(), rtol=0, atol=1e-11)
    torch.testing.assert_close(chunk.grad, whole_input.grad[:, :, 3:], rtol=0, atol=1e-10)
    assert whole_input.grad[:, :, :3].abs().sum() > 0 and chunk.grad.abs().sum() > 0

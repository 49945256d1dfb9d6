"""Low-VRAM block streaming and piecewise decoding change memory, never results."""
from __future__ import annotations

import torch

from selfforcing_core.config import CausalSettings
from selfforcing_core.offload import BlockStreamer
from selfforcing_core.pipeline import GenerationRequest, PromptSegment, VideoPipeline
from selfforcing_core.preview_decoder import TAEHVConfig, TAEHVDecoder

from tiny_models import TINY, tiny_model

SETTINGS = CausalSettings(chunk_frames=3, denoising_steps=(1000, 500))


def _request() -> GenerationRequest:
    text = torch.randn(1, 4, TINY.text_dim, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    return GenerationRequest([PromptSegment(text)], 32, 32, 17, seed=3)


def test_streamed_blocks_give_the_same_video_and_go_back_after_each_call():
    reference = VideoPipeline(tiny_model(), SETTINGS).generate(_request())[0]
    model = tiny_model()
    streamer = BlockStreamer(model, "cpu")
    masters = [dict(m) for m in streamer.masters]
    streamed = VideoPipeline(model, SETTINGS).generate(_request())[0]
    torch.testing.assert_close(streamed, reference, rtol=0, atol=0)
    for block, block_masters in zip(model.blocks, masters):
        for param in block.parameters():
            assert param.data.data_ptr() == block_masters[param].data_ptr()
    assert not streamer.ready or set(streamer.ready) == {0}
    streamer.remove()
    assert all(not block._forward_pre_hooks for block in model.blocks)


def test_decoding_one_latent_frame_per_call_equals_whole_chunks():
    torch.manual_seed(0)
    decoder = TAEHVDecoder(TAEHVConfig(widths=(8, 8, 8, 8))).double().eval()
    whole = VideoPipeline(tiny_model(), SETTINGS, decoder).generate(_request())[1]
    pieces = VideoPipeline(tiny_model(), SETTINGS, decoder, decode_frames_per_call=1).generate(_request())[1]
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-12)


def test_prompt_keys_are_computed_with_streamed_blocks_and_hooks_come_off():
    model = tiny_model()
    streamer = BlockStreamer(model, "cpu")
    cache = model.new_cache(1, 4, 4, max_frames=3)
    model.set_prompt(cache, torch.randn(1, 4, TINY.text_dim, dtype=torch.float64))
    assert cache.has_prompt() and not streamer.ready.keys() - {0, 1}
    streamer.remove()
    assert "context_kv" not in vars(model.blocks[0].cross_attn)

"""The pipeline: prompts and keyframes in, decoded chunks out; sizes, schedules and end frames."""
from __future__ import annotations

import copy

import pytest
import torch

from selfforcing_core.config import CausalSettings
from selfforcing_core.pipeline import GenerationRequest, PromptSegment, VideoPipeline
from selfforcing_core.video_geometry import latent_frames_for, video_frames_for

from tiny_models import TINY

SETTINGS = CausalSettings(chunk_frames=3, denoising_steps=(1000, 750, 500))


def _prompt(seed: int = 0, start: int = 0) -> PromptSegment:
    g = torch.Generator().manual_seed(seed)
    return PromptSegment(torch.randn(1, 5, TINY.text_dim, generator=g, dtype=torch.float64), start)


def _request(**changes) -> GenerationRequest:
    values = dict(prompts=[_prompt()], width=32, height=32, num_frames=25, seed=1)
    values.update(changes)
    return GenerationRequest(**values)


def test_frames_and_latents_convert_both_ways():
    assert latent_frames_for(81) == 21 and video_frames_for(21) == 81
    assert latent_frames_for(1) == 1 and latent_frames_for(2) == 2 and video_frames_for(2) == 5


def test_stream_covers_the_requested_frames_in_order(model):
    pipeline = VideoPipeline(model, SETTINGS)
    chunks = list(pipeline.stream(_request()))
    assert [(c.start_frame, c.end_frame) for c in chunks] == [(0, 9), (9, 21), (21, 25)]
    assert all(c.num_chunks == 3 and c.frames is None for c in chunks)
    assert sum(c.latents.shape[2] for c in chunks) == latent_frames_for(25)


@pytest.mark.parametrize("width, height, message", [(500, 32, "width 500 is not a multiple of 16; use 496 or 512"),
                                                    (32, 8, "height 8 is not a multiple of 16")])
def test_sizes_must_be_multiples_of_16(model, width, height, message):
    with pytest.raises(ValueError, match=message):
        list(VideoPipeline(model, SETTINGS).stream(_request(width=width, height=height)))


def test_start_keyframe_is_the_first_latent_frame(model):
    start = torch.randn(1, 16, 1, 4, 4, dtype=torch.float64)
    latents, _ = VideoPipeline(model, SETTINGS).generate(_request(start_latent=start))
    assert latents.shape[2] == latent_frames_for(25)
    assert torch.equal(latents[:, :, :1], start)


def test_start_keyframe_of_another_size_is_refused(model):
    with pytest.raises(ValueError, match="encode the keyframe at the video's size"):
        list(VideoPipeline(model, SETTINGS).stream(_request(start_latent=torch.zeros(1, 16, 1, 8, 8))))


def test_end_keyframe_lands_on_the_last_frame_and_pulls_the_ones_before(model):
    end = torch.randn(1, 16, 1, 4, 4, dtype=torch.float64) * 2
    free, _ = VideoPipeline(model, SETTINGS).generate(_request())
    guided, _ = VideoPipeline(model, SETTINGS).generate(_request(end_latent=end, end_strength=0.8))
    torch.testing.assert_close(guided[:, :, -1:], end, rtol=0, atol=1e-12)
    distance = lambda video, f: (video[:, :, f] - end[:, :, 0]).abs().mean()  # noqa: E731
    assert distance(guided, 5) < distance(free, 5)
    change = lambda f: (guided[:, :, f] - free[:, :, f]).abs().mean()  # noqa: E731
    assert change(0) < change(5)


def test_prompt_schedule_switches_at_the_given_frame(model):
    one = VideoPipeline(model, SETTINGS).generate(_request(prompts=[_prompt(0)]))[0]
    two = VideoPipeline(model, SETTINGS).generate(_request(prompts=[_prompt(0), _prompt(1, start=13)]))[0]
    torch.testing.assert_close(one[:, :, :3], two[:, :, :3], rtol=0, atol=0)
    assert (one[:, :, 3:] - two[:, :, 3:]).abs().max() > 1e-3


def test_custom_steps_change_the_number_of_model_calls(model):
    calls = []
    model.register_forward_pre_hook(lambda *a: calls.append(1))
    VideoPipeline(model, SETTINGS).generate(_request(num_frames=9, steps=(1000, 500)))
    assert len(calls) == 3 * 1  # one chunk of 3 latent frames: 2 steps + 1 cache pass


def test_overlapped_stream_equals_the_sequential_one(model):
    """Running the sampler in a worker thread (decode beside denoise) changes nothing in the result."""
    from selfforcing_core.preview_decoder import TAEHVConfig, TAEHVDecoder

    torch.manual_seed(0)
    decoder = TAEHVDecoder(TAEHVConfig(widths=(8, 8, 8, 8))).double().eval()
    pipeline = VideoPipeline(model, SETTINGS, decoder)
    sequential = [(c.start_frame, c.frames) for c in pipeline.stream(_request(), overlap=False)]
    overlapped = [(c.start_frame, c.frames) for c in pipeline.stream(_request(), overlap=True)]
    assert [s for s, _ in sequential] == [s for s, _ in overlapped]
    for (_, a), (_, b) in zip(sequential, overlapped):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_overlapped_stream_passes_errors_and_stops_when_closed(model):
    calls = []

    def interrupt():
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("interrupted by user")

    pipeline = VideoPipeline(model, SETTINGS)
    with pytest.raises(RuntimeError, match="interrupted by user"):
        list(pipeline.stream(_request(), interrupt=interrupt, overlap=True))
    stream = pipeline.stream(_request(), overlap=True)
    next(stream)
    stream.close()


def test_compiled_blocks_give_the_same_outputs(model):
    eager = VideoPipeline(model, SETTINGS).generate(_request(num_frames=9))[0]
    model.compile_blocks(backend="eager")
    compiled = VideoPipeline(model, SETTINGS).generate(_request(num_frames=9))[0]
    torch.testing.assert_close(compiled, eager, rtol=0, atol=1e-12)


def test_a_copy_of_a_compiled_model_computes_with_its_own_weights(model):
    compiled = copy.deepcopy(model).compile_blocks(backend="eager")
    duplicate = copy.deepcopy(compiled)
    with torch.no_grad():
        for parameter in duplicate.parameters():
            parameter.mul_(0.5)
    halved = copy.deepcopy(model)
    with torch.no_grad():
        for parameter in halved.parameters():
            parameter.mul_(0.5)
    expected = VideoPipeline(halved, SETTINGS).generate(_request(num_frames=5))[0]
    torch.testing.assert_close(VideoPipeline(duplicate, SETTINGS).generate(_request(num_frames=5))[0], expected,
                               rtol=0, atol=1e-12)

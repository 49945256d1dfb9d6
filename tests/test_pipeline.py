"""The pipeline: prompts and keyframes in, decoded chunks out; sizes, schedules, end frames (guided or
as a trained goal prefix)."""
from __future__ import annotations

import copy

import pytest
import torch

from selfforcing_core.checkpoint import load_transformer, save_transformer
from selfforcing_core.config import CausalSettings
from selfforcing_core.keyframe_prefix import trained_with_goal
from selfforcing_core.noise import SeededNoise
from selfforcing_core.pipeline import GenerationRequest, PromptSegment, VideoPipeline
from selfforcing_core.sampler import StreamingSampler, plan_chunks
from selfforcing_core.training.end_frame import sample_to_goal
from selfforcing_core.video_geometry import latent_frames_for, video_frames_for

from tiny_models import TINY

SETTINGS = CausalSettings(chunk_frames=3, denoising_steps=(1000, 750, 500))
GOAL_SETTINGS = CausalSettings(chunk_frames=3, local_window=3, sink_frames=3, rebase_sink=True,
                               denoising_steps=(1000, 500))  # the window rolls and the sink (goal included) is re-based


def _prompt(seed: int = 0, start: int = 0) -> PromptSegment:
    g = torch.Generator().manual_seed(seed)
    return PromptSegment(torch.randn(1, 5, TINY.text_dim, generator=g, dtype=torch.float64), start)


def _request(**changes) -> GenerationRequest:
    values = dict(prompts=[_prompt()], width=32, height=32, num_frames=25, seed=1)
    values.update(changes)
    return GenerationRequest(**values)


def _keyframe(seed: int) -> torch.Tensor:
    return torch.randn(1, 16, 1, 4, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


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
    VideoPipeline(model, SETTINGS).generate(_request(num_frames=21, steps=(1000, 500)))
    assert len(calls) == 3 + 2  # two chunks of 3 latent frames: 2 steps + 1 cache pass, then 2 steps


def test_the_last_chunk_gets_a_cache_pass_only_when_asked_and_the_video_is_the_same(model):
    """Nothing reads the cache after the last chunk; the reference writes it anyway (cache_last_chunk)."""
    calls = []
    handle = model.register_forward_pre_hook(lambda *a: calls.append(1))
    lean = VideoPipeline(model, SETTINGS).generate(_request())[0]
    lean_calls, calls[:] = len(calls), []
    pipeline = VideoPipeline(model, SETTINGS)
    pipeline.sampler.cache_last_chunk = True
    full = pipeline.generate(_request())[0]
    handle.remove()
    assert (lean_calls, len(calls)) == (3 * 4 - 1, 3 * 4)  # 3 chunks of 3 steps + 1 cache pass each
    torch.testing.assert_close(lean, full, rtol=0, atol=0)


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


def test_first_frame_is_handed_out_alone_and_the_frames_do_not_change(model):
    """The first chunk comes as its first frame, then the rest; together they equal one whole decode."""
    from selfforcing_core.preview_decoder import TAEHVConfig, TAEHVDecoder

    torch.manual_seed(0)
    decoder = TAEHVDecoder(TAEHVConfig(widths=(8, 8, 8, 8))).double().eval()
    early = list(VideoPipeline(model, SETTINGS, decoder).stream(_request()))
    whole = list(VideoPipeline(model, SETTINGS, decoder, first_frame_early=False).stream(_request()))
    assert [(c.start_frame, c.end_frame) for c in early] == [(0, 1), (1, 9), (9, 21), (21, 25)]
    assert [(c.start_frame, c.end_frame) for c in whole] == [(0, 9), (9, 21), (21, 25)]
    assert [c.index for c in early] == [0, 0, 1, 2] and {c.num_chunks for c in early} == {3}
    assert early[0].frames.shape[1] == 1 and early[0].latents.shape[2] == 1
    assert early[0].model_seconds > 0 and early[1].model_seconds == 0
    assert [c.continues for c in early] == [False, True, False, False]
    for name, time_dim in (("frames", 1), ("latents", 2)):
        joined = torch.cat([getattr(c, name) for c in early], dim=time_dim)
        torch.testing.assert_close(joined, torch.cat([getattr(c, name) for c in whole], dim=time_dim), rtol=0, atol=0)


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


@pytest.mark.parametrize("with_start", [False, True])
def test_goal_prefix_samples_exactly_as_training_does(model, with_start):
    """A model marked as trained with end frames gets the end keyframe as a goal before the video, as
    `sample_to_goal` (training, evaluation) gives it: the same latents, the goal frame not among them."""
    start, end = (_keyframe(1) if with_start else None), _keyframe(2)
    request = _request(start_latent=start, end_latent=end)
    streamed, _ = VideoPipeline(model, GOAL_SETTINGS, goal_prefix_trained=True).generate(request)
    total = latent_frames_for(25)
    sampler = StreamingSampler(model, GOAL_SETTINGS)
    trained = sample_to_goal(sampler, request.prompts[0].embeddings, SeededNoise(1, 1), end, total, start)
    assert streamed.shape[2] == total
    torch.testing.assert_close(streamed, trained, rtol=0, atol=0)
    video_prefix = int(with_start)
    plan = plan_chunks(total - video_prefix, GOAL_SETTINGS, start_frame=1 + video_prefix)
    prefix = end if start is None else torch.cat([end, start], dim=2)
    cache = sampler.sample(plan, request.prompts[0].embeddings, SeededNoise(1, 1), (1, 16, 4, 4), prefix=prefix)
    torch.testing.assert_close(streamed, cache[:, :, 1:], rtol=0, atol=0)


@pytest.mark.parametrize("chunk_frames, with_start, spans", [
    (3, False, [(0, 9), (9, 21), (21, 25)]),
    (3, True, [(0, 1), (1, 13), (13, 25)]),
    (1, True, [(0, 1), (1, 5), (5, 9)]),
])
def test_goal_frame_is_never_streamed_or_decoded(model, chunk_frames, with_start, spans):
    from selfforcing_core.preview_decoder import TAEHVConfig, TAEHVDecoder

    torch.manual_seed(0)
    decoder = TAEHVDecoder(TAEHVConfig(widths=(8, 8, 8, 8))).double().eval()
    settings = GOAL_SETTINGS.with_(chunk_frames=chunk_frames)
    num_frames = spans[-1][1]
    request = _request(num_frames=num_frames, start_latent=_keyframe(1) if with_start else None,
                       end_latent=_keyframe(2))
    chunks = list(VideoPipeline(model, settings, decoder, goal_prefix_trained=True,
                                first_frame_early=False).stream(request))
    assert [(c.start_frame, c.end_frame) for c in chunks] == spans
    assert [c.index for c in chunks] == list(range(len(spans))) and {c.num_chunks for c in chunks} == {len(spans)}
    assert sum(c.latents.shape[2] for c in chunks) == latent_frames_for(num_frames)
    assert sum(c.frames.shape[1] for c in chunks) == num_frames
    if with_start:
        assert torch.equal(chunks[0].latents, request.start_latent)


def test_goal_prefix_keeps_the_prompt_schedule_in_video_frames(model):
    plain = list(VideoPipeline(model, GOAL_SETTINGS).stream(_request(prompts=[_prompt(0), _prompt(1, start=13)])))
    goal = list(VideoPipeline(model, GOAL_SETTINGS, goal_prefix_trained=True).stream(
        _request(prompts=[_prompt(0), _prompt(1, start=13)], end_latent=_keyframe(2))))
    assert [(c.start_frame, c.prompt) for c in goal] == [(c.start_frame, c.prompt) for c in plain] == \
        [(0, 0), (9, 0), (21, 1)]


def test_end_mode_auto_follows_the_model_and_either_mode_can_be_forced(model):
    end = _keyframe(2)
    short = lambda **changes: _request(num_frames=13, end_latent=end, **changes)  # noqa: E731
    guided = VideoPipeline(model, GOAL_SETTINGS).generate(short())[0]
    torch.testing.assert_close(guided[:, :, -1:], end, rtol=0, atol=1e-12)
    trained = VideoPipeline(model, GOAL_SETTINGS, goal_prefix_trained=True)
    goal = trained.generate(short())[0]
    assert (goal[:, :, -1:] - end).abs().max() > 1e-3
    torch.testing.assert_close(trained.generate(short(end_mode="guidance"))[0], guided, rtol=0, atol=0)
    torch.testing.assert_close(trained.generate(short(end_mode="goal_prefix"))[0], goal, rtol=0, atol=0)


def test_the_goal_prefix_mark_is_read_from_the_models_file(tmp_path, model):
    marked, plain = str(tmp_path / "marked.safetensors"), str(tmp_path / "plain.safetensors")
    save_transformer(model, marked, GOAL_SETTINGS, extra_metadata={"end_frame": "goal_prefix"})
    save_transformer(model, plain, GOAL_SETTINGS)
    assert trained_with_goal(load_transformer(marked, dtype=torch.float64).metadata)
    assert not trained_with_goal(load_transformer(plain, dtype=torch.float64).metadata)


@pytest.mark.parametrize("changes, trained, message", [
    (dict(end_mode="goal_prefix"), False, "end mode 'goal_prefix' needs a model trained with end frames"),
    (dict(end_mode="pinned"), True, "unknown end mode 'pinned'; choose one of auto, guidance, goal_prefix"),
    (dict(end_latent=torch.zeros(1, 16, 1, 8, 8)), True, "the end keyframe latent is .* encode the keyframe"),
    (dict(end_latent=torch.zeros(1, 16, 2, 4, 4)), True, r"the end keyframe latent must be \[B, C, 1, h, w\]"),
])
def test_end_mode_errors(model, changes, trained, message):
    request = _request(**{"end_latent": _keyframe(2), **changes})
    with pytest.raises(ValueError, match=message):
        list(VideoPipeline(model, GOAL_SETTINGS, goal_prefix_trained=trained).stream(request))


@pytest.mark.parametrize("settings", [GOAL_SETTINGS.with_(sink_frames=0),
                                      CausalSettings(chunk_frames=3, global_cache_frames=6, denoising_steps=(1000,))])
def test_a_goal_the_rolling_cache_would_drop_is_refused(model, settings):
    request = _request(end_latent=_keyframe(2), end_mode="goal_prefix")
    with pytest.raises(ValueError, match="would drop it before the end"):
        next(VideoPipeline(model, settings, goal_prefix_trained=True).stream(request))
    short = _request(num_frames=5, end_latent=_keyframe(2), end_mode="goal_prefix")  # goal + 2 frames: no roll
    assert len(list(VideoPipeline(model, settings, goal_prefix_trained=True).stream(short))) == 1

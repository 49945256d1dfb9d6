"""The world's evaluator: near-perfect on ground truth, and worse on every kind of damaged clip."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from selfforcing_core.training.evaluator import evaluate, evaluate_clips, summarize
from selfforcing_core.training.evaluator_metrics import psnr, ssim
from selfforcing_core.training.world import sample_batch, sample_scenes
from selfforcing_core.training.world_render import render_scenes
from selfforcing_core.training.world_scene import MIN_OBJECT_CONTRAST, WorldConfig, background_contrast
from selfforcing_core.training.world_vocab import OBJECT_COLOURS, SHAPES

SMALL = WorldConfig(height=64, width=64, num_frames=17)
SMALL_VIDEO = (SMALL.num_frames, 3, SMALL.height, SMALL.width)
GROUND_TRUTH_CLIPS = 100
MOVING = {"left", "right", "up", "down", "up_left", "up_right", "down_left", "down_right", "bounce", "orbit_cw", "orbit_ccw"}


@pytest.fixture(scope="module")
def truth():
    video, _, params = sample_batch(99, GROUND_TRUTH_CLIPS, config=SMALL)
    return video, params, evaluate_clips(video, params, video[:, 0], video[:, -1])


def blur(video: torch.Tensor, sigma: float) -> torch.Tensor:
    offsets = torch.arange(-4, 5, dtype=video.dtype)
    kernel = torch.exp(-offsets.square() / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    frames = video.flatten(0, 1)
    frames = F.conv2d(F.pad(frames, (4, 4, 0, 0), mode="replicate"), kernel.view(1, 1, 1, 9).repeat(3, 1, 1, 1), groups=3)
    frames = F.conv2d(F.pad(frames, (0, 0, 4, 4), mode="replicate"), kernel.view(1, 1, 9, 1).repeat(3, 1, 1, 1), groups=3)
    return frames.view_as(video)


def test_ground_truth_scores_at_least_98_percent(truth):
    _, params, results = truth
    summary = summarize(results, SMALL.fps)
    assert summary["objects"] >= 150
    for key in ("colour_accuracy", "shape_accuracy", "motion_accuracy"):
        assert summary[key] >= 0.98, (key, summary[key])
    assert summary["detection_rate"] > 0.99
    assert summary["extra_objects"] < 0.02
    assert summary["track_error"] < 0.01
    assert summary["frame_difference_ratio"] == pytest.approx(1.0)
    assert summary["start_psnr"] > 60 and summary["end_ssim"] == pytest.approx(1.0)


def test_blurred_ground_truth_is_still_recognised(truth):
    video, params, _ = truth
    summary = evaluate(blur(video[:30], sigma=1.0), params[:30])
    for key in ("colour_accuracy", "shape_accuracy", "motion_accuracy"):
        assert summary[key] >= 0.95, (key, summary[key])


def _first_scene_where(params, accept):
    return next(index for index, scene in enumerate(params) if accept(scene))


def test_a_wrong_colour_is_caught(truth):
    _, params, _ = truth
    index = _first_scene_where(params, lambda s: len(s.objects) == 2 and s.objects[0].motion != "colour_change")
    scene = params[index]
    target = scene.objects[0]
    used = {name for obj in scene.objects for name in (obj.colour, obj.end_colour)}
    colour = next(
        name for name, rgb in OBJECT_COLOURS.items()
        if name not in used and background_contrast(rgb, scene.background) >= MIN_OBJECT_CONTRAST
    )
    rgb = OBJECT_COLOURS[colour]
    recoloured = replace(target, colour=colour, rgb=rgb, rgb_track=np.tile(rgb, (SMALL.num_frames, 1)))
    video = render_scenes([replace(scene, objects=(recoloured, *scene.objects[1:]))])
    (result,) = evaluate_clips(video, [scene])
    wrong, right = result.objects
    assert not wrong.colour_ok and wrong.detected.colour == colour
    assert wrong.shape_ok and wrong.motion_ok
    summary = summarize([result], SMALL.fps)
    assert summary["matched_objects"] == 1.0 and summary["colour_accuracy_matched"] == 0.5
    assert summary["colour_accuracy/objects_2"] == 0.5 and "colour_accuracy/objects_1" not in summary
    assert right.colour_ok and right.shape_ok and right.motion_ok


def test_a_wrong_shape_is_caught(truth):
    _, params, _ = truth
    for index in range(5):
        scene = params[index]
        target = scene.objects[0]
        others = [shape for shape in SHAPES if shape != target.shape]
        reshaped = replace(target, shape=others[index % len(others)])
        video = render_scenes([replace(scene, objects=(reshaped, *scene.objects[1:]))])
        (result,) = evaluate_clips(video, [scene])
        assert not result.objects[0].shape_ok
        assert result.objects[0].detected.shape == reshaped.shape


def test_shuffled_frames_make_a_big_track_jump(truth):
    video, params, results = truth
    chosen = [i for i, scene in enumerate(params) if any(obj.motion in MOVING for obj in scene.objects)][:12]
    order = torch.randperm(SMALL.num_frames, generator=torch.Generator().manual_seed(0))
    shuffled = evaluate_clips(video[chosen][:, order], [params[i] for i in chosen])
    for index, result in zip(chosen, shuffled):
        assert result.max_jump > results[index].max_jump + 0.05
    assert summarize(shuffled, SMALL.fps)["jerk"] > 3 * summarize([results[i] for i in chosen], SMALL.fps)["jerk"]


def test_noise_lowers_keyframe_psnr_and_ssim(truth):
    video, params, results = truth
    noisy = video[:8] + 0.2 * torch.randn(video[:8].shape, generator=torch.Generator().manual_seed(1))
    summary = evaluate(noisy.clamp(-1, 1), params[:8], video[:8, 0], video[:8, -1])
    clean = summarize(results[:8], SMALL.fps)
    assert summary["start_psnr"] < 25 < clean["start_psnr"]
    assert summary["end_ssim"] < 0.8 < clean["end_ssim"]
    assert summary["frame_difference_ratio"] > 2


def test_a_frozen_video_fails_every_motion(truth):
    video, params, _ = truth
    frozen = video[:20, :1].expand_as(video[:20]).clone()
    results = evaluate_clips(frozen, params[:20])
    verdicts = [(obj.expected.motion, obj.motion_ok) for result in results for obj in result.objects]
    assert any(motion in MOVING for motion, _ in verdicts)
    assert not any(ok for motion, ok in verdicts if motion != "static")
    assert summarize(results, SMALL.fps)["frame_difference_ratio"] == 0.0


def test_fading_shows_as_drift(truth):
    video, params, results = truth
    fade = torch.linspace(0.0, 0.9, SMALL.num_frames).view(1, -1, 1, 1, 1)
    faded = torch.lerp(video[:10], torch.zeros_like(video[:10]), fade)
    summary = evaluate(faded, params[:10])
    clean = summarize(results[:10], SMALL.fps)
    assert summary["saturation_drift"] < clean["saturation_drift"] - 0.1
    assert summary["contrast_drift"] < clean["contrast_drift"] - 0.03
    assert summary["visibility_drift"] < -0.5
    assert summary["detection_rate_s1"] < 0.5 < summary["detection_rate_s0"]


def test_an_extra_object_is_counted(truth):
    _, params, _ = truth
    index = _first_scene_where(params, lambda s: len(s.objects) == 1 and s.objects[0].motion == "static")
    scene = params[index]
    visitor = next(
        obj for other in sample_scenes(7, range(50), SMALL) for obj in other.objects
        if obj.colour != scene.objects[0].colour
        and background_contrast(obj.rgb, scene.background) >= MIN_OBJECT_CONTRAST
        and np.all(np.linalg.norm((obj.track - scene.objects[0].track) * 64, axis=1) > 40)
    )
    video = render_scenes([replace(scene, objects=(*scene.objects, visitor))])
    (result,) = evaluate_clips(video, [scene])
    assert result.extra_objects == 1
    assert result.objects[0].colour_ok and result.objects[0].shape_ok


def test_an_empty_video_scores_zero_without_failing(truth):
    _, params, _ = truth
    summary = evaluate(torch.zeros(3, *SMALL_VIDEO), params[:3])
    assert summary["detection_rate"] == 0.0 and summary["extra_objects"] == 0.0
    assert summary["colour_accuracy"] == summary["shape_accuracy"] == summary["motion_accuracy"] == 0.0
    assert np.isnan(summary["max_jump"])
    assert summary["matched_objects"] == 0.0 and np.isnan(summary["colour_accuracy_matched"])


def test_psnr_and_ssim_known_values():
    grey = torch.zeros(2, 3, 32, 32)
    brighter = grey + 0.2  # 0.1 higher on the [0, 1] scale
    torch.testing.assert_close(psnr(brighter, grey), torch.full((2,), 20.0))
    a, b = 0.5 + 0.5 * grey, 0.5 + 0.5 * brighter  # the constants on the [0, 1] scale
    luminance = (2 * a * b + 0.01**2) / (a * a + b * b + 0.01**2)
    torch.testing.assert_close(ssim(brighter, grey), luminance[:, 0, 0, 0], atol=1e-4, rtol=0)
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    other = (image + 0.3 * torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(3))).clamp(-1, 1)
    assert float(ssim(image, image)) == pytest.approx(1.0)
    assert float(ssim(image, other)) == pytest.approx(float(ssim(other, image)))
    assert float(ssim(image, other)) < 0.9

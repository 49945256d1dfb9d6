"""The procedural video world: determinism, captions that match their parameters, valid frames."""
from __future__ import annotations

import math
import re
from dataclasses import replace

import numpy as np
import pytest
import torch

from selfforcing_core.training.world import WorldDataset, sample_batch, sample_clip, sample_scenes
from selfforcing_core.training.world_render import render_scenes, signed_distance
from selfforcing_core.training.world_scene import MIN_OBJECT_CONTRAST, WorldConfig, background_contrast
from selfforcing_core.training.world_vocab import (
    BACKGROUND_COLOURS,
    BACKGROUND_KINDS,
    MOTIONS,
    OBJECT_COLOURS,
    SHAPES,
)

SMALL = WorldConfig(height=64, width=64, num_frames=17)

# The caption wording, written out independently of the generator's tables.
MOTION_WORDS = {
    "stays still": "static",
    "moves right": "right",
    "moves left": "left",
    "moves up": "up",
    "moves down": "down",
    "moves toward the top right": "up_right",
    "moves toward the top left": "up_left",
    "moves toward the bottom right": "down_right",
    "moves toward the bottom left": "down_left",
    "bounces": "bounce",
    "circles clockwise": "orbit_cw",
    "circles counterclockwise": "orbit_ccw",
    "grows": "grow",
    "shrinks": "shrink",
}
OBJECT_PATTERN = re.compile(r"^(a|an) (?:(small|large) )?(\w+) (\w+) (.+)$")
CAPTION_PATTERN = re.compile(r"^(?P<objects>.+) on a (?P<background>.+) background(?:, while the camera pans (?P<pan>\w+))?$")


def parse_caption(caption: str) -> tuple[list[dict], dict]:
    """Recover object and background parameters from a caption's words."""
    match = CAPTION_PATTERN.match(caption)
    assert match, caption
    objects = []
    for phrase in re.split(r", | and (?=an? )", match["objects"]):
        article, size, colour, shape, action = OBJECT_PATTERN.match(phrase).groups()
        assert article == ("an" if (size or colour)[0] in "aeiou" else "a"), phrase
        turn = re.fullmatch(r"turns (\w+)", action)
        objects.append(
            {
                "size": size or "medium",
                "colour": colour,
                "shape": shape,
                "motion": "colour_change" if turn else MOTION_WORDS[action],
                "end_colour": turn.group(1) if turn else None,
            }
        )
    text = match["background"]
    if gradient := re.fullmatch(r"(.+) to (.+) gradient", text):
        background = {"kind": "gradient", "colour": gradient[1], "end_colour": gradient[2]}
    elif texture := re.fullmatch(r"(.+) (striped|checkered)", text):
        background = {"kind": {"striped": "stripes", "checkered": "checker"}[texture[2]], "colour": texture[1]}
    else:
        background = {"kind": "solid", "colour": text}
    background["pan"] = match["pan"]
    return objects, background


@pytest.fixture(scope="module")
def scenes():
    return sample_scenes(11, range(400), WorldConfig())


@pytest.fixture(scope="module")
def small_batch():
    return sample_batch(5, 6, config=SMALL)


def test_config_rejects_sizes_the_vae_cannot_take():
    with pytest.raises(ValueError):
        WorldConfig(num_frames=32)
    with pytest.raises(ValueError):
        WorldConfig(height=120)
    assert WorldConfig(height=64, width=96, num_frames=9).short_side == 64


def test_same_seed_gives_identical_clips_and_captions(small_batch):
    video, captions, params = small_batch
    again, captions_again, params_again = sample_batch(5, 6, config=SMALL)
    assert torch.equal(video, again)
    assert captions == captions_again
    for scene, other in zip(params, params_again):
        for obj, obj_again in zip(scene.objects, other.objects, strict=True):
            np.testing.assert_array_equal(obj.track, obj_again.track)
            np.testing.assert_array_equal(obj.rgb_track, obj_again.rgb_track)


def test_different_seeds_differ(small_batch):
    video, captions, _ = small_batch
    other, other_captions, _ = sample_batch(6, 6, config=SMALL)
    assert not torch.equal(video, other)
    assert captions != other_captions
    assert len(set(captions)) == len(captions)


def test_a_clip_does_not_depend_on_its_batch(small_batch):
    video, captions, _ = small_batch
    clip = sample_clip(5, 3, config=SMALL)
    torch.testing.assert_close(clip.video, video[3], atol=1e-6, rtol=0)
    assert clip.caption == captions[3]
    stream = iter(WorldDataset(seed=5, config=SMALL))
    for index in range(2):
        item = next(stream)
        assert item["index"] == index and item["caption"] == captions[index]
        torch.testing.assert_close(item["video"], video[index], atol=1e-6, rtol=0)


def test_frames_have_the_documented_layout_and_range(small_batch):
    video, _, _ = small_batch
    assert video.shape == (6, 17, 3, 64, 64)
    assert video.dtype == torch.float32
    assert video.min() >= -1.0 and video.max() <= 1.0
    assert video.std() > 0.1


def test_non_square_frames_render_with_objects_in_view():
    config = WorldConfig(height=64, width=96, num_frames=9)
    video, _, params = sample_batch(2, 4, config=config)
    assert video.shape == (4, 9, 3, 64, 96)
    for scene in params:
        for obj in scene.objects:
            assert np.all((obj.track > 0) & (obj.track < 1))


def test_captions_match_their_parameters(scenes):
    for scene in scenes:
        objects, background = parse_caption(scene.caption)
        assert len(objects) == len(scene.objects)
        for words, obj in zip(objects, scene.objects):
            assert words == {
                "size": obj.size,
                "colour": obj.colour,
                "shape": obj.shape,
                "motion": obj.motion,
                "end_colour": obj.end_colour,
            }
        bg = scene.background
        assert background["kind"] == bg.kind and background["colour"] == bg.colour
        assert background.get("end_colour") == bg.end_colour
        assert background["pan"] == bg.pan


def test_sampling_covers_the_vocabulary(scenes):
    objects = [obj for scene in scenes for obj in scene.objects]
    assert {obj.shape for obj in objects} == set(SHAPES)
    assert {obj.motion for obj in objects} == set(MOTIONS)
    assert {obj.colour for obj in objects} == set(OBJECT_COLOURS)
    assert {scene.background.kind for scene in scenes} == set(BACKGROUND_KINDS)
    assert {scene.background.colour for scene in scenes} == set(BACKGROUND_COLOURS)
    assert {len(scene.objects) for scene in scenes} == {1, 2, 3}
    assert {scene.background.pan for scene in scenes} >= {None, "left", "right", "up", "down"}


def test_objects_stay_visible_distinct_and_apart(scenes):
    config = WorldConfig()
    size = np.array([config.width, config.height])
    for scene in scenes:
        names = [name for obj in scene.objects for name in (obj.colour, obj.end_colour) if name]
        assert len(names) == len(set(names)), scene.caption
        for obj in scene.objects:
            assert background_contrast(obj.rgb, scene.background) >= MIN_OBJECT_CONTRAST
            centre, reach = obj.track * size, obj.extent(config.short_side)[:, None]
            assert np.all(centre - reach >= 0) and np.all(centre + reach <= size), scene.caption
        for i, first in enumerate(scene.objects):
            for second in scene.objects[i + 1 :]:
                gap = np.linalg.norm((first.track - second.track) * size, axis=1)
                assert np.all(gap > first.extent(config.short_side) + second.extent(config.short_side))


def test_motions_do_what_their_names_say(scenes):
    for obj in (obj for scene in scenes for obj in scene.objects):
        shift = obj.track[-1] - obj.track[0]
        if obj.motion == "right":
            assert shift[0] > 0.2 and abs(shift[1]) < 1e-9
        elif obj.motion == "up_left":
            assert shift[0] < -0.1 and shift[1] < -0.1
        elif obj.motion in ("static", "grow", "shrink", "colour_change"):
            assert np.ptp(obj.track, axis=0).max() == 0
        if obj.motion == "grow":
            assert obj.scale[-1] > 1.5 * obj.scale[0]
        if obj.motion == "colour_change":
            np.testing.assert_allclose(obj.rgb_track[-1], OBJECT_COLOURS[obj.end_colour])
        else:
            np.testing.assert_allclose(obj.rgb_track, np.broadcast_to(obj.rgb, obj.rgb_track.shape))


def test_rendered_pixels_follow_the_parameters(small_batch):
    video, _, params = small_batch
    frames = (video + 1) / 2
    size = np.array([SMALL.width, SMALL.height])
    for clip, scene in enumerate(params):
        for obj in scene.objects:
            for t in (0, SMALL.num_frames // 2, SMALL.num_frames - 1):
                x, y = (obj.track[t] * size).astype(int)
                expected = torch.tensor(obj.rgb_track[t], dtype=torch.float32)
                torch.testing.assert_close(frames[clip, t, :, y, x], expected, atol=1e-5, rtol=0)
        corner_clear = all(
            np.all(np.linalg.norm(obj.track * size - 0.5, axis=1) > obj.extent(SMALL.short_side) + 1)
            for obj in scene.objects
        )
        if scene.background.kind == "solid" and corner_clear:
            expected = torch.tensor(scene.background.rgb, dtype=torch.float32)
            torch.testing.assert_close(frames[clip, :, :, 0, 0], expected.expand(SMALL.num_frames, 3))


def test_camera_pan_moves_the_texture_against_the_pan():
    scene = sample_scenes(3, [0], SMALL)[0]
    one_pixel_per_frame = np.outer(np.arange(SMALL.num_frames), [1.0, 0.0]) / SMALL.short_side
    background = replace(scene.background, kind="stripes", angle=0.0, period=0.2, contrast=0.05,
                         pan="right", camera=one_pixel_per_frame)
    frames = render_scenes([replace(scene, background=background, objects=())])[0]
    moved = SMALL.num_frames - 1
    torch.testing.assert_close(frames[-1, ..., : -moved], frames[0, ..., moved:], atol=1e-4, rtol=0)
    assert (frames[-1, ..., : -moved] - frames[0, ..., moved - 1 : -1]).abs().max() > 0.02


def test_signed_distance_of_known_shapes():
    def sdf(x: float, y: float, points: int, outer: float, inner_ratio: float, phase: float) -> float:
        value = signed_distance(
            torch.tensor(x), torch.tensor(y), torch.tensor(outer), torch.tensor(float(points)),
            torch.tensor(inner_ratio), torch.tensor(phase),
        )
        return float(value)

    assert sdf(3.0, 4.0, 0, 2.0, 1.0, 0.0) == pytest.approx(3.0)
    square = (4, math.sqrt(2.0), math.cos(math.pi / 4), math.pi / 4)  # half side 1
    assert sdf(0.0, 0.0, *square) == pytest.approx(-1.0)
    assert sdf(3.0, 0.0, *square) == pytest.approx(2.0)
    assert sdf(2.0, 2.0, *square) == pytest.approx(math.sqrt(2.0))
    star = (5, 1.0, 0.4, -math.pi / 2)
    assert sdf(0.0, -1.0, *star) == pytest.approx(0.0, abs=1e-6)
    assert sdf(0.0, 0.0, *star) < -0.3
    assert sdf(0.0, 0.6, *star) > 0.0  # between the two lower arms


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_render_matches_cpu(small_batch):
    video, _, params = small_batch
    torch.testing.assert_close(render_scenes(params, "cuda").cpu(), video, atol=1e-4, rtol=0)

"""Keyframe images -> VAE latents: the cover-and-centre-crop rule, input forms, and clear refusals."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from selfforcing_core.keyframes import (
    encode_clip,
    encode_continuation,
    encode_end_keyframe,
    encode_keyframe,
    encode_keyframes,
    prepare_keyframe,
)
from selfforcing_core.training.data import CaptionTokens, encode_stream, world_clips
from selfforcing_core.training.world_scene import WorldConfig
from selfforcing_core.vae_loading import load_wan_vae, wan_vae_from_state_dict

CASE = Path(__file__).parent / "golden" / "wan_vae_tiny.safetensors"
SHIPPED_VAE = Path(__file__).parent.parent / "models" / "world_vae.safetensors"


@pytest.fixture(scope="module")
def vae():
    weights = {key[7:]: value for key, value in load_file(str(CASE)).items() if key.startswith("weight.")}
    return wan_vae_from_state_dict(weights, dtype=torch.float32)


def _bands(height: int, width: int, axis: int) -> torch.Tensor:
    """An RGB image in three equal bands (red, green, blue) along `axis` (0: rows, 1: columns)."""
    image = torch.zeros(height, width, 3)
    size = (height, width)[axis] // 3
    for band in range(3):
        index = [slice(None), slice(None), band]
        index[axis] = slice(band * size, (band + 1) * size)
        image[tuple(index)] = 1.0
    return image


def test_wide_image_is_scaled_to_cover_then_centre_cropped():
    frame = prepare_keyframe(_bands(30, 90, axis=1), width=32, height=32)
    assert frame.shape == (1, 3, 32, 32)
    assert torch.allclose(frame[0, :, :, 8:24].mean(dim=(1, 2)), torch.tensor([-1.0, 1.0, -1.0]), atol=1e-6)


def test_tall_image_keeps_its_middle_rows():
    frame = prepare_keyframe(_bands(120, 40, axis=0), width=32, height=16)
    assert frame.shape == (1, 3, 16, 32)
    assert torch.allclose(frame[0].mean(dim=(1, 2)), torch.tensor([-1.0, 1.0, -1.0]), atol=1e-6)


def test_uint8_and_float_images_agree_and_exact_sizes_pass_through():
    pixels = torch.randint(0, 256, (32, 48, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    from_bytes = prepare_keyframe(pixels, width=48, height=32)
    from_floats = prepare_keyframe(pixels.float() / 255, width=48, height=32)
    assert torch.equal(from_bytes, from_floats)
    assert torch.equal(from_bytes[0], pixels.permute(2, 0, 1).float() / 255 * 2 - 1)


def test_odd_sized_batched_and_grey_images_are_resized():
    assert prepare_keyframe(torch.rand(37, 53, 3), width=48, height=32).shape == (1, 3, 32, 48)
    assert prepare_keyframe(torch.rand(2, 7, 5, 3), width=16, height=32).shape == (2, 3, 32, 16)
    grey = prepare_keyframe(torch.rand(20, 20, 1), width=16, height=16)
    assert torch.equal(grey[:, 0], grey[:, 2])


def test_start_and_end_keyframes_become_one_latent_frame_each(vae):
    start, end = torch.rand(40, 40, 3), torch.randint(0, 256, (33, 61, 3), dtype=torch.uint8)
    latents = encode_keyframes(vae, width=48, height=32, start=start, end=end)
    assert latents.start.shape == latents.end.shape == (1, 16, 1, 4, 6)
    assert torch.equal(latents.start, vae.encode(prepare_keyframe(start, 48, 32).unsqueeze(2)))
    only_end = encode_keyframes(vae, width=48, height=32, end=end)
    assert only_end.start is None and torch.equal(only_end.end, latents.end)
    with pytest.raises(ValueError, match="start and/or an end"):
        encode_keyframes(vae, width=48, height=32)


def test_a_clip_of_frames_is_encoded_as_one_causal_video(vae):
    frames = torch.randint(0, 256, (9, 40, 40, 3), dtype=torch.uint8)
    latents = encode_clip(vae, frames, width=48, height=32)
    assert latents.shape == (1, 16, 3, 4, 6)
    clip = prepare_keyframe(frames, 48, 32).transpose(0, 1).unsqueeze(0)
    assert torch.equal(latents, vae.encode(clip))
    assert torch.equal(latents[:, :, :1], encode_keyframe(vae, frames[0], 48, 32))
    with pytest.raises(ValueError, match="1 \\+ 4k frames"):
        encode_clip(vae, frames[:8], width=48, height=32)


def test_a_continuation_starts_from_the_last_frames_of_a_video(vae):
    video = torch.randint(0, 256, (12, 32, 48, 3), dtype=torch.uint8)
    latents = encode_keyframes(vae, width=48, height=32, start=video, continue_video=True)
    assert torch.equal(latents.start, encode_clip(vae, video[-9:], width=48, height=32))
    assert encode_continuation(vae, video[:6], width=48, height=32).shape[2] == 2  # its last 5 frames
    assert torch.equal(encode_continuation(vae, video[:1], 48, 32), encode_keyframe(vae, video[0], 48, 32))


def test_alpha_channel_is_refused_with_a_fix(vae):
    with pytest.raises(ValueError, match=r"alpha channel .*RGB.*image\[\.\.\., :3\]"):
        encode_keyframe(vae, torch.rand(32, 32, 4), width=32, height=32)
    with pytest.raises(ValueError, match="alpha"):
        prepare_keyframe(torch.rand(32, 32, 2), width=32, height=32)


@pytest.mark.parametrize("width, height, nearest", [(833, 480, "832"), (832, 470, "464"), (8, 16, "16")])
def test_target_size_must_be_a_multiple_of_16(width, height, nearest):
    with pytest.raises(ValueError, match=f"not a multiple of 16.*use e.g. {nearest}"):
        prepare_keyframe(torch.rand(64, 64, 3), width=width, height=height)


@pytest.mark.parametrize(
    "image, message",
    [
        (torch.rand(32, 32), r"\[H, W, C\]"),
        (torch.rand(1, 1, 32, 32, 3), r"\[H, W, C\]"),
        (torch.rand(3, 32, 32), "channels first"),
        (torch.rand(0, 32, 3), "empty"),
        (torch.rand(32, 32, 3) * 255, r"\[0, 1\].*divide 0-255 images by 255"),
        (torch.randint(0, 9, (8, 8, 3), dtype=torch.int64), "uint8 or float"),
    ],
    ids=["2d", "5d", "chw", "empty", "0-255-float", "int64"],
)
def test_malformed_images_are_refused(image, message):
    with pytest.raises(ValueError, match=message):
        prepare_keyframe(image, width=32, height=32)


@torch.no_grad()
def test_end_keyframe_decodes_as_the_last_frames_of_a_video():
    """The end keyframe's latent replaces a video's last latent frame, which the VAE decodes into four frames
    after the ones before it. Encoded as such a time step (the shipped world VAE, ground-truth clips), the last
    frame comes back far closer to the keyframe than when it is encoded like a start frame."""
    vae = load_wan_vae(str(SHIPPED_VAE), dtype=torch.float32)
    video, _ = world_clips(7, range(2), WorldConfig(height=128, width=128, num_frames=33))
    latents = vae.encode(video)
    end_image = video[:, :, -1].permute(0, 2, 3, 1).add(1).div(2)

    def last_frame_psnr(end_latent: torch.Tensor) -> float:
        decoded = vae.decode(torch.cat([latents[:, :, :-1], end_latent], dim=2))[:, :, -1].clamp(-1, 1)
        return float(10 * torch.log10(4.0 / (decoded - video[:, :, -1]).pow(2).mean()))

    as_end = last_frame_psnr(encode_end_keyframe(vae, end_image, 128, 128))
    as_start = last_frame_psnr(encode_keyframe(vae, end_image, 128, 128))
    assert as_end > 25.0 and as_end > as_start + 4.0, (as_end, as_start)
    both = encode_keyframes(vae, width=128, height=128, start=end_image, end=end_image)
    assert torch.equal(both.end, encode_end_keyframe(vae, end_image, 128, 128))
    assert torch.equal(both.start, encode_keyframe(vae, end_image, 128, 128))


@torch.no_grad()
def test_the_training_clip_bank_encodes_end_keyframes_as_the_pack_does(vae):
    """End-frame training and the evaluator's guidance runs see the end latents a user's end image gets."""
    config = WorldConfig(height=32, width=32, num_frames=5)
    stream = encode_stream(vae, CaptionTokens(256), 3, 2, config, 2, torch.float32, end_frames=True)
    video, _ = world_clips(3, range(2), config)
    last_images = video[:, :, -1].permute(0, 2, 3, 1).add(1).div(2)
    torch.testing.assert_close(stream.end_latents, encode_end_keyframe(vae, last_images, 32, 32), rtol=0, atol=1e-5)
    assert not torch.allclose(stream.end_latents, encode_keyframe(vae, last_images, 32, 32))

"""Start / end keyframe images -> normalised Wan VAE latents at the video's width and height.

Resize rule ("cover, then centre crop"): the image is scaled uniformly, keeping its aspect ratio,
by the smallest factor that makes it cover width x height (one side fits exactly, the other
overhangs); bilinear resampling, antialiased when shrinking. The overhang is then cut equally from
both sides (centre crop). Nothing is stretched and no borders are added. An image that already has
the target size is used as it is.

Each keyframe gives one latent frame [B, 16, 1, height/8, width/8] of the sampler's video. The start
keyframe is the video's first latent frame, which the VAE encodes from one pixel frame: it is encoded as a
one-frame video. The end keyframe stands in for a later latent frame, which the VAE decodes into four pixel
frames after the ones before it: it is encoded as such a time step, the image held for 1 + 4 frames and the
second latent kept. Encoded like a start frame instead, it decodes there at about 20 dB against 28 dB (the
world VAE, ground-truth clips with their last latent replaced; tests/test_keyframes.py).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .wan_vae import WanVAE

SIZE_MULTIPLE = 16  # 8x VAE downsampling, then the transformer's 2x2 latent patches

# A continuation starts from the last 9 frames of a video: one chunk of 3 latent frames.
CONTINUATION_FRAMES = 9


class KeyframeLatents(NamedTuple):
    """Latents of the start and end keyframes; None where no keyframe was given."""

    start: torch.Tensor | None
    end: torch.Tensor | None


def encode_keyframes(
    vae: WanVAE, width: int, height: int, start: torch.Tensor | None = None, end: torch.Tensor | None = None,
    continue_video: bool = False,
) -> KeyframeLatents:
    """Encode the given start and/or end keyframe images (see `prepare_keyframe` for the input forms).

    With `continue_video`, `start` is the end of a video [T, H, W, C] that the new one continues
    (`encode_continuation`) instead of one start image (or one per video of a batch).
    """
    if start is None and end is None:
        raise ValueError("give a start and/or an end keyframe image")
    encode_start = encode_continuation if continue_video else encode_keyframe
    return KeyframeLatents(
        start=None if start is None else encode_start(vae, start, width, height),
        end=None if end is None else encode_end_keyframe(vae, end, width, height),
    )


def encode_keyframe(vae: WanVAE, image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Normalised latent [B, z_dim, 1, height/8, width/8] of one keyframe image (or a batch of them)."""
    return start_keyframe_latent(vae, prepare_keyframe(image, width, height))


def encode_end_keyframe(vae: WanVAE, image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Normalised latent [B, z_dim, 1, height/8, width/8] of an end keyframe image (or a batch of them),
    encoded as a later time step of a video (see the module docstring)."""
    return end_keyframe_latent(vae, prepare_keyframe(image, width, height))


def start_keyframe_latent(vae: WanVAE, frames: torch.Tensor) -> torch.Tensor:
    """The latent of a video's first time step showing `frames` [B, 3, H, W] in [-1, 1] (a one-frame video)."""
    return vae.encode(frames.unsqueeze(2))


def end_keyframe_latent(vae: WanVAE, frames: torch.Tensor) -> torch.Tensor:
    """The latent a video's later time step has when its frames all show `frames` [B, 3, H, W] in [-1, 1]."""
    held = frames.unsqueeze(2).expand(-1, -1, 1 + vae.config.temporal_factor, -1, -1)  # time steps 0 and 1
    return vae.encode(held)[:, :, 1:2]


def encode_clip(vae: WanVAE, frames: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Normalised latents [1, z_dim, 1 + (T - 1) / 4, height/8, width/8] of a clip's frames [T, H, W, C],
    T = 1 + 4k: the last frames of a video that a continuation takes as its clean prefix."""
    count = frames.shape[0]
    if count < 1 or (count - 1) % 4:
        raise ValueError(f"a clip to encode needs 1 + 4k frames (the VAE's time steps), got {count}")
    clip = prepare_keyframe(frames, width, height)
    return vae.encode(clip.transpose(0, 1).unsqueeze(0))


def encode_continuation(vae: WanVAE, frames: torch.Tensor, width: int, height: int,
                        max_frames: int = CONTINUATION_FRAMES) -> torch.Tensor:
    """Latents of the last 1 + 4k <= `max_frames` frames of a video [T, H, W, C]: the clean prefix a
    continuation starts from, so it carries on the video's motion and not only its last image."""
    if frames.shape[0] < 1 or max_frames < 1:
        raise ValueError("a continuation needs at least one frame of the video it continues")
    usable = 1 + 4 * ((min(frames.shape[0], max_frames) - 1) // 4)
    return encode_clip(vae, frames[-usable:], width, height)


def prepare_keyframe(image: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """An image [H, W, C] or batch [B, H, W, C] (uint8, or float in [0, 1]) -> [B, 3, height, width] in [-1, 1].

    C may be 3 (RGB) or 1 (grey, repeated to RGB); alpha channels are refused.
    """
    _check_target(width, height)
    pixels = _as_rgb_batch(image)
    pixels = _cover_and_crop(pixels, width, height)
    return pixels * 2 - 1


def _check_target(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"target {name} must be a positive integer, got {value!r}")
        if value % SIZE_MULTIPLE:
            nearest = max(SIZE_MULTIPLE, round(value / SIZE_MULTIPLE) * SIZE_MULTIPLE)
            raise ValueError(
                f"target {name} {value} is not a multiple of {SIZE_MULTIPLE} (Wan needs 8x VAE downsampling "
                f"and 2x2 latent patches); use e.g. {nearest}"
            )


def _as_rgb_batch(image: torch.Tensor) -> torch.Tensor:
    """Validate and convert to float [B, 3, H, W] in [0, 1]."""
    if not torch.is_tensor(image) or image.dim() not in (3, 4):
        shape = tuple(image.shape) if torch.is_tensor(image) else type(image).__name__
        raise ValueError(f"expected a keyframe image [H, W, C] or a batch [B, H, W, C] (channels last), got {shape}")
    batch = image if image.dim() == 4 else image.unsqueeze(0)
    channels = batch.shape[-1]
    if channels in (2, 4):
        raise ValueError(
            f"the keyframe has an alpha channel ({channels} channels); use an RGB image: drop the alpha "
            "(image[..., :3]) or composite it onto a background first"
        )
    if channels not in (1, 3):
        hint = " (channels first? use image.permute(1, 2, 0))" if batch.shape[1] in (1, 3, 4) else ""
        raise ValueError(f"a keyframe needs 3 (RGB) or 1 (grey) channels last, got shape {tuple(image.shape)}{hint}")
    if batch.shape[1] == 0 or batch.shape[2] == 0:
        raise ValueError(f"the keyframe image is empty (shape {tuple(image.shape)})")
    return _to_unit_float(batch).permute(0, 3, 1, 2).expand(-1, 3, -1, -1)


def _to_unit_float(batch: torch.Tensor) -> torch.Tensor:
    if batch.dtype == torch.uint8:
        return batch.to(torch.float32) / 255.0
    if not batch.is_floating_point():
        raise ValueError(f"keyframe images must be uint8 or float in [0, 1], got {batch.dtype}")
    pixels = batch.to(torch.promote_types(batch.dtype, torch.float32))
    low, high = pixels.min().item(), pixels.max().item()
    if not (math.isfinite(low) and math.isfinite(high)) or low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"float keyframe values must lie in [0, 1], these span [{low:g}, {high:g}] "
            "(divide 0-255 images by 255; map [-1, 1] images with (x + 1) / 2)"
        )
    return pixels.clamp(0, 1)


def _cover_and_crop(pixels: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Scale to cover width x height keeping the aspect ratio, then cut the centre."""
    src_h, src_w = pixels.shape[-2:]
    if (src_h, src_w) != (height, width):
        scale = max(width / src_w, height / src_h)
        size = (max(height, round(src_h * scale)), max(width, round(src_w * scale)))
        pixels = F.interpolate(pixels, size=size, mode="bilinear", align_corners=False, antialias=scale < 1)
    top = (pixels.shape[-2] - height) // 2
    left = (pixels.shape[-1] - width) // 2
    return pixels[:, :, top:top + height, left:left + width]

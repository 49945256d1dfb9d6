"""Video <-> latent sizes of the Wan VAE + DiT: 8x spatial, 4x temporal (first frame alone), 2x2 patches."""
from __future__ import annotations

import math

FPS = 16
SPATIAL_FACTOR = 8
TEMPORAL_FACTOR = 4
SIZE_MULTIPLE = 16  # VAE factor 8 x DiT patch 2


def check_size(width: int, height: int, multiple: int = SIZE_MULTIPLE) -> None:
    """Refuse frame sizes the VAE + DiT cannot produce, saying which sizes would work."""
    for name, value in (("width", width), ("height", height)):
        if value < multiple or value % multiple:
            lower = max(multiple, value // multiple * multiple)
            raise ValueError(
                f"{name} {value} is not a multiple of {multiple}; use {lower} or {lower + multiple}"
            )


def latent_frames_for(video_frames: int) -> int:
    """Latent frames needed for at least `video_frames` frames (1 for the first, then 4 each)."""
    if video_frames < 1:
        raise ValueError(f"a video needs at least 1 frame, got {video_frames}")
    return 1 + math.ceil((video_frames - 1) / TEMPORAL_FACTOR)


def video_frames_for(latent_frames: int) -> int:
    """Frames that `latent_frames` latent frames decode to."""
    return 0 if latent_frames < 1 else 1 + TEMPORAL_FACTOR * (latent_frames - 1)


def seconds_to_frames(seconds: float, fps: int = FPS) -> int:
    """Video frames of a clip `seconds` long (at least one)."""
    return max(1, round(seconds * fps))


def latent_frame_of(video_frame: int) -> int:
    """The latent frame that holds video frame `video_frame`."""
    return 0 if video_frame <= 0 else 1 + (video_frame - 1) // TEMPORAL_FACTOR

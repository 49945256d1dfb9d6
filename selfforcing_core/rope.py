"""3D rotary position embedding (frame, height, width) as Wan uses it, for any frame positions.

The head dimension is split into a frame part and two equal spatial parts; each consecutive pair of
channels is rotated by position x frequency. Angles are computed from the formula for the exact
positions asked for, so there is no table to run off the end of (Wan's ends at 1024 frames) and a
rolled window can be given new positions at will.
"""
from __future__ import annotations

import torch

THETA = 10000.0


def rope_split(head_dim: int) -> tuple[int, int, int]:
    """Number of rotated channel pairs given to frame, height and width."""
    pairs = head_dim // 2
    spatial = pairs // 3
    return pairs - 2 * spatial, spatial, spatial


def _inverse_frequencies(pairs: int, device: torch.device | None) -> torch.Tensor:
    exponent = torch.arange(0, 2 * pairs, 2, dtype=torch.float64, device=device) / (2 * pairs)
    return 1.0 / torch.pow(THETA, exponent)


def rope_cos_sin(
    frame_positions: torch.Tensor,
    height: int,
    width: int,
    head_dim: int,
    dtype: torch.dtype = torch.float64,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin tables of shape [F*H*W, head_dim/2] for the tokens of frames at `frame_positions`.

    Tokens are ordered frame-major, then row, then column, as the patch embedding flattens them.
    Angles are built in float64 (as the reference does) and only then cast to `dtype`.
    """
    device = frame_positions.device
    frame_pairs, height_pairs, width_pairs = rope_split(head_dim)
    frames = frame_positions.to(torch.float64)[:, None] * _inverse_frequencies(frame_pairs, device)
    rows = torch.arange(height, dtype=torch.float64, device=device)[:, None] * _inverse_frequencies(
        height_pairs, device
    )
    cols = torch.arange(width, dtype=torch.float64, device=device)[:, None] * _inverse_frequencies(
        width_pairs, device
    )
    count = frames.shape[0]
    angles = torch.cat(
        [
            frames[:, None, None, :].expand(count, height, width, frame_pairs),
            rows[None, :, None, :].expand(count, height, width, height_pairs),
            cols[None, None, :, :].expand(count, height, width, width_pairs),
        ],
        dim=-1,
    ).reshape(count * height * width, -1)
    return torch.cos(angles).to(dtype), torch.sin(angles).to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs of x [B, heads, L, head_dim] by tables [L, head_dim/2]; returns x's dtype.

    The rotation runs in the tables' dtype (float64 for exact replays, float32 for half precision).
    """
    pairs = x.to(cos.dtype).unflatten(-1, (-1, 2))
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack((real * cos - imag * sin, real * sin + imag * cos), dim=-1)
    return rotated.flatten(-2).to(x.dtype)

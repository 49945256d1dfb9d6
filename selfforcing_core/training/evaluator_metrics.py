"""Image and video quality measures used by the world's evaluator: PSNR, SSIM, flicker, drift, tracks.

Images and videos use the world's layout: [..., 3, H, W] floats in [-1, 1]. Track measures take
centres in shorter-side units, NaN where an object was not seen.
"""
from __future__ import annotations

import math
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F

_SSIM_C1 = 0.01**2
_SSIM_C2 = 0.03**2


def _unit(images: torch.Tensor) -> torch.Tensor:
    return ((images.float() + 1.0) / 2.0).clamp(0.0, 1.0)


def psnr(images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image of [..., 3, H, W] pairs (signal range [0, 1])."""
    error = (_unit(images) - _unit(targets)).square().mean(dim=(-3, -2, -1))
    return 10.0 * torch.log10(1.0 / error.clamp_min(1e-10))


def ssim(images: torch.Tensor, targets: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Structural similarity per image of [..., 3, H, W] pairs: Gaussian window, per channel, averaged.

    The standard formulation of Wang et al. (2004) on [0, 1] signals, over valid window positions.
    """
    batch_shape, (channels, height, width) = images.shape[:-3], images.shape[-3:]
    x = _unit(images).reshape(-1, channels, height, width)
    y = _unit(targets).reshape(-1, channels, height, width)
    offsets = torch.arange(window, device=x.device, dtype=x.dtype) - (window - 1) / 2
    kernel = torch.exp(-offsets.square() / (2.0 * sigma**2))
    kernel = kernel / kernel.sum()
    across = kernel.view(1, 1, 1, window).expand(channels, 1, 1, window)
    down = kernel.view(1, 1, window, 1).expand(channels, 1, window, 1)

    def local_mean(values: torch.Tensor) -> torch.Tensor:
        """Gaussian-weighted mean over each window (separable: across, then down)."""
        return F.conv2d(F.conv2d(values, across, groups=channels), down, groups=channels)

    mean_x, mean_y = local_mean(x), local_mean(y)
    var_x = local_mean(x * x) - mean_x.square()
    var_y = local_mean(y * y) - mean_y.square()
    covariance = local_mean(x * y) - mean_x * mean_y
    numerator = (2.0 * mean_x * mean_y + _SSIM_C1) * (2.0 * covariance + _SSIM_C2)
    denominator = (mean_x.square() + mean_y.square() + _SSIM_C1) * (var_x + var_y + _SSIM_C2)
    return (numerator / denominator).mean(dim=(1, 2, 3)).reshape(batch_shape)


def frame_changes(videos: torch.Tensor) -> torch.Tensor:
    """Mean absolute change from each frame to the next of [B, T, 3, H, W] ([0, 1] scale), [B, T - 1]."""
    frames = _unit(videos)
    return (frames[:, 1:] - frames[:, :-1]).abs().mean(dim=(2, 3, 4))


def frame_difference(videos: torch.Tensor) -> torch.Tensor:
    """Mean absolute change between consecutive frames per clip of [B, T, 3, H, W] ([0, 1] scale)."""
    return frame_changes(videos).mean(dim=1)


def saturation(videos: torch.Tensor) -> torch.Tensor:
    """Mean HSV saturation per frame of [B, T, 3, H, W], [B, T]."""
    frames = _unit(videos)
    high, low = frames.amax(dim=2), frames.amin(dim=2)
    return ((high - low) / high.clamp_min(1e-6)).mean(dim=(2, 3))


def contrast(videos: torch.Tensor) -> torch.Tensor:
    """Standard deviation of luma per frame of [B, T, 3, H, W], [B, T]."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=videos.device)
    luma = (_unit(videos) * weights[:, None, None]).sum(dim=2)
    return luma.std(dim=(2, 3))


def window_change(values: np.ndarray, window: int) -> float:
    """Mean of the last `window` entries minus mean of the first `window` of a per-frame series."""
    return float(np.mean(values[-window:]) - np.mean(values[:window]))


def track_steps(track: np.ndarray) -> np.ndarray:
    """The move from each frame to the next of a track [T, 2], [T - 1]; NaN where either was unseen."""
    return np.linalg.norm(np.diff(track, axis=0), axis=1)


def largest_jump(track: np.ndarray) -> float:
    """The largest move between consecutive frames in which the object was seen, track [T, 2]."""
    steps = track_steps(track)
    steps = steps[~np.isnan(steps)]
    return float(steps.max()) if steps.size else math.nan


def mean_jerk(track: np.ndarray) -> float:
    """Mean magnitude of the third difference of a track [T, 2] over fully seen stretches."""
    jerk = np.linalg.norm(np.diff(track, n=3, axis=0), axis=1)
    jerk = jerk[~np.isnan(jerk)]
    return float(jerk.mean()) if jerk.size else math.nan


def nan_mean(values: Iterable[float]) -> float:
    """Mean ignoring NaN (NaN when nothing is left)."""
    array = np.asarray(list(values), dtype=float)
    return float(np.nanmean(array)) if np.any(~np.isnan(array)) else math.nan


def nan_max(values: Iterable[float]) -> float:
    """Maximum ignoring NaN (NaN when nothing is left)."""
    array = np.asarray(list(values), dtype=float)
    return float(np.nanmax(array)) if np.any(~np.isnan(array)) else math.nan

"""Scoring long streamed videos with the world's evaluator: windows at any time, drift, switch seams.

A long video is scored in windows of the clip length its scenes were sampled with (the model's training
length, so motions keep their trained speed): `causal_eval.Scorer` on each window, plus the drift of the
window against the video's opening window (`drift_from_start` = |saturation change| + |contrast change|,
the per-clip drift of `causal_eval.summary` taken across the video; `object_loss_from_start` = the drop of
the detection rate). `seam_continuity` tells a smooth prompt switch from a jump cut at a given frame.
Videos are [B, T, 3, H, W], the world's layout: floats in [-1, 1], or bytes (uint8, 0..255) for a long
video kept in memory; windows are converted as they are scored.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from .causal_eval import Scorer
from .evaluator_detect import detect
from .evaluator_metrics import contrast, frame_changes, nan_max, nan_mean, saturation, track_steps
from .world_scene import SceneParams

# Frame-to-frame pairs on each side of a seam that count as "at the seam" (the VAE spreads a latent
# step over the four frames it decodes to), and the smallest typical change a seam is compared with
# (0.1 % of the pixel range: a still scene has no motion to compare with).
SEAM_PAIRS = 2
MIN_CHANGE = 1e-3


def _world(videos: torch.Tensor) -> torch.Tensor:
    """Floats in [-1, 1] of a window of bytes or floats."""
    return videos.float() / 127.5 - 1.0 if videos.dtype == torch.uint8 else videos


def _tone(videos: torch.Tensor) -> torch.Tensor:
    """Mean saturation and contrast per clip of videos [B, T, 3, H, W], [B, 2]."""
    return torch.stack([saturation(videos).mean(dim=1), contrast(videos).mean(dim=1)], dim=1)


def window_scores(
    scorer: Scorer, videos: torch.Tensor, scenes: Sequence[SceneParams], end_frames: Sequence[int]
) -> dict[int, dict[str, float]]:
    """Scores of the windows ending at each of `end_frames` (and of the opening window), by end frame.

    Each window has `scenes[0].config.num_frames` frames; its entry is `causal_eval.summary` of the window
    plus `drift_from_start` and `object_loss_from_start` against the opening window.
    """
    length = scenes[0].config.num_frames
    opening = _world(videos[:, :length])
    reference = _tone(opening)
    scores = {}
    for end in (length, *end_frames):
        if not length <= end <= videos.shape[1]:
            raise ValueError(f"a window ending at frame {end} does not fit a {videos.shape[1]}-frame video")
        clip = _world(videos[:, end - length : end])
        values = scorer.score(clip, scenes)
        values["drift_from_start"] = float((_tone(clip) - reference).abs().sum(dim=1).mean())
        scores[end] = values
    for values in scores.values():
        values["object_loss_from_start"] = scores[length]["detection_rate"] - values["detection_rate"]
    return scores


def seam_continuity(videos: torch.Tensor, seam: int, reach: int = 8) -> dict[str, float]:
    """How smoothly videos [B, T, 3, H, W] pass from frame `seam - 1` to frame `seam`, averaged over clips.

    Looks at frames [seam - reach, seam + reach]. `change_ratio`: the largest frame-to-frame pixel change
    at the seam over the median change elsewhere (about 1 for smooth motion, far above for a cut).
    `tracks_kept`: of the objects seen just before the seam, the fraction the detector still follows just
    after it (a jump cut ends every track). `seam_step` / `other_step`: the largest move of a tracked
    object at / away from the seam, in shorter-side units. NaN where nothing was tracked.
    """
    if seam - reach < 0 or seam + reach >= videos.shape[1] or reach <= 2 * SEAM_PAIRS:
        raise ValueError(f"frames {seam - reach}..{seam + reach} around the seam do not fit {videos.shape[1]} frames "
                         f"(reach must exceed {2 * SEAM_PAIRS})")
    span = _world(videos[:, seam - reach : seam + reach + 1])
    at_seam = np.zeros(2 * reach, dtype=bool)
    at_seam[reach - SEAM_PAIRS : reach + SEAM_PAIRS] = True
    changes = frame_changes(span).cpu().numpy()
    ratios = changes[:, at_seam].max(axis=1) / np.maximum(np.median(changes[:, ~at_seam], axis=1), MIN_CHANGE)
    height, width = span.shape[-2:]
    to_short = np.array([width, height]) / min(height, width)
    kept, seam_steps, other_steps = [], [], []
    for clip in detect(span):
        before = [obj for obj in clip.objects if obj.present[reach - SEAM_PAIRS : reach].any()]
        kept.append(nan_mean(obj.present[reach : reach + SEAM_PAIRS].any() for obj in before))
        steps = np.stack([track_steps(obj.track * to_short) for obj in clip.objects]) if clip.objects else None
        seam_steps.append(nan_max(steps[:, at_seam].ravel()) if steps is not None else math.nan)
        other_steps.append(nan_max(steps[:, ~at_seam].ravel()) if steps is not None else math.nan)
    return {"change_ratio": float(np.mean(ratios)), "tracks_kept": nan_mean(kept),
            "seam_step": nan_mean(seam_steps), "other_step": nan_mean(other_steps)}


def mean_scores(scores: Sequence[dict[str, float]]) -> dict[str, float]:
    """Key-wise mean (NaN ignored) of several score dicts with the same keys (seeds, seams)."""
    return {key: nan_mean(values[key] for values in scores) for key in scores[0]}

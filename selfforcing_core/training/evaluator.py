"""The quality meter for every model trained on the procedural world.

`evaluate(videos, params)` detects the objects in generated (or reconstructed) videos, matches
them to the objects their captions asked for, and scores prompt adherence (colour, shape and
motion accuracy), temporal consistency (flicker against the ground-truth clip, track jerk, the
largest track jump, which flags jump cuts), drift between the first and last second (saturation,
contrast, visibility, detection rate per second), and, when keyframes are given, PSNR/SSIM of
the first and last frames. Videos use the world's layout [B, T, 3, H, W] in [-1, 1].
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .evaluator_detect import ClipDetection, DetectedObject, detect
from .evaluator_metrics import (
    contrast,
    frame_difference,
    largest_jump,
    mean_jerk,
    nan_max,
    nan_mean,
    psnr,
    saturation,
    ssim,
    window_change,
)
from .world_render import render_scenes
from .world_scene import ObjectParams, SceneParams

# Matching costs: a detected object is paired with the requested one it resembles most.
_MISMATCH_COST = {"colour": 4.0, "shape": 2.0, "motion": 1.0}
_UNMATCHED_COST = 5.0


@dataclass(frozen=True, eq=False)
class ObjectResult:
    """A requested object, the detected object matched to it (None if none), and the verdicts.

    `track_error` is the mean distance between the detected and requested centres, in
    shorter-side units; it is meaningful when positions were given (reconstruction, keyframes).
    """

    expected: ObjectParams
    detected: DetectedObject | None
    colour_ok: bool
    shape_ok: bool
    motion_ok: bool
    track_error: float


@dataclass(frozen=True, eq=False)
class ClipResult:
    """Every measure of one clip; track measures are in shorter-side units (NaN with no match)."""

    objects: tuple[ObjectResult, ...]
    extra_objects: int
    detection_rate: np.ndarray
    max_jump: float
    jerk: float
    frame_difference: float
    reference_frame_difference: float
    saturation_drift: float
    contrast_drift: float
    visibility_drift: float
    keyframes: dict[str, float] = field(default_factory=dict)


def evaluate(
    videos: torch.Tensor,
    params: Sequence[SceneParams],
    start_images: torch.Tensor | None = None,
    end_images: torch.Tensor | None = None,
) -> dict[str, float]:
    """Summary metrics of videos [B, T, 3, H, W] against the scenes that were asked for."""
    results = evaluate_clips(videos, params, start_images, end_images)
    return summarize(results, params[0].config.fps)


def evaluate_clips(
    videos: torch.Tensor,
    params: Sequence[SceneParams],
    start_images: torch.Tensor | None = None,
    end_images: torch.Tensor | None = None,
    clips_per_chunk: int = 8,
) -> list[ClipResult]:
    """Per-clip results; start/end images [B, 3, H, W] are the keyframes the clips should hit."""
    config = params[0].config
    expected_shape = (len(params), config.num_frames, 3, config.height, config.width)
    if tuple(videos.shape) != expected_shape:
        raise ValueError(f"videos of shape {tuple(videos.shape)}; the scenes ask for {expected_shape}")
    results: list[ClipResult] = []
    for first in range(0, len(params), clips_per_chunk):
        chunk = slice(first, first + clips_per_chunk)
        clips = videos[chunk]
        scenes = params[chunk]
        reference = render_scenes(scenes, clips.device)
        keyframes = _keyframe_scores(clips, _part(start_images, chunk), _part(end_images, chunk))
        window = max(1, min(scenes[0].config.fps, clips.shape[1] // 2))
        visual = {
            "frame_difference": frame_difference(clips).tolist(),
            "reference_frame_difference": frame_difference(reference).tolist(),
            "saturation": saturation(clips).cpu().numpy(),
            "contrast": contrast(clips).cpu().numpy(),
        }
        for index, (scene, detection) in enumerate(zip(scenes, detect(clips))):
            clip_visual = {name: values[index] for name, values in visual.items()}
            clip_keyframes = {name: values[index] for name, values in keyframes.items()}
            results.append(_clip_result(scene, detection, clip_visual, clip_keyframes, window))
    return results


def _part(images: torch.Tensor | None, chunk: slice) -> torch.Tensor | None:
    return None if images is None else images[chunk]


def _keyframe_scores(
    clips: torch.Tensor, start: torch.Tensor | None, end: torch.Tensor | None
) -> dict[str, list[float]]:
    scores: dict[str, list[float]] = {}
    for name, frame, target in (("start", clips[:, 0], start), ("end", clips[:, -1], end)):
        if target is not None:
            target = target.to(clips.device)
            scores[f"{name}_psnr"] = psnr(frame, target).tolist()
            scores[f"{name}_ssim"] = ssim(frame, target).tolist()
    return scores


def _clip_result(
    scene: SceneParams, detection: ClipDetection, visual: dict, keyframes: dict[str, float], window: int
) -> ClipResult:
    config = scene.config
    to_short = np.array([config.width, config.height]) / config.short_side
    matches = match_objects(scene.objects, detection.objects)
    objects = tuple(_object_result(obj, found, to_short) for obj, found in zip(scene.objects, matches))
    matched = [found for found in matches if found is not None]
    absent = np.zeros(config.num_frames, dtype=bool)
    seen = np.stack([absent if found is None else found.present for found in matches])
    tracks = [found.track * to_short for found in matched]
    return ClipResult(
        objects=objects,
        extra_objects=len(detection.objects) - len(matched),
        detection_rate=seen.mean(axis=0),
        max_jump=nan_max(largest_jump(track) for track in tracks),
        jerk=nan_mean(mean_jerk(track) for track in tracks),
        frame_difference=visual["frame_difference"],
        reference_frame_difference=visual["reference_frame_difference"],
        saturation_drift=window_change(visual["saturation"], window),
        contrast_drift=window_change(visual["contrast"], window),
        visibility_drift=_relative_change(detection.foreground, window),
        keyframes=keyframes,
    )


def _relative_change(values: np.ndarray, window: int) -> float:
    return window_change(values, window) / max(float(np.mean(values[:window])), 1e-6)


def _object_result(expected: ObjectParams, found: DetectedObject | None, to_short: np.ndarray) -> ObjectResult:
    if found is None:
        return ObjectResult(expected, None, False, False, False, math.nan)
    error = np.linalg.norm((found.track - expected.track) * to_short, axis=1)
    return ObjectResult(
        expected=expected,
        detected=found,
        colour_ok=_colour_ok(expected, found),
        shape_ok=found.shape == expected.shape,
        motion_ok=found.motion == expected.motion,
        track_error=float(np.nanmean(error)) if found.present.any() else math.nan,
    )


def _colour_ok(expected: ObjectParams, found: DetectedObject) -> bool:
    return found.colour == expected.colour and found.end_colour == (expected.end_colour or expected.colour)


def _pair_cost(expected: ObjectParams, found: DetectedObject) -> float:
    cost = _MISMATCH_COST["colour"] * (not _colour_ok(expected, found))
    cost += _MISMATCH_COST["shape"] * (found.shape != expected.shape)
    cost += _MISMATCH_COST["motion"] * (found.motion != expected.motion)
    return cost + 1.0 - float(found.present.mean())


def match_objects(
    expected: Sequence[ObjectParams], detected: Sequence[DetectedObject]
) -> list[DetectedObject | None]:
    """The detected object (or None) for each requested one, minimising the total mismatch cost."""
    costs = [[_pair_cost(obj, found) for found in detected] for obj in expected]
    best: tuple[float, tuple[int, ...]] = (math.inf, ())

    def search(row: int, used: tuple[int, ...], total: float) -> None:
        nonlocal best
        if total >= best[0]:
            return
        if row == len(expected):
            best = (total, used)
            return
        for column in range(len(detected)):
            if column not in used:
                search(row + 1, used + (column,), total + costs[row][column])
        search(row + 1, used + (-1,), total + _UNMATCHED_COST)

    search(0, (), 0.0)
    return [detected[column] if column >= 0 else None for column in best[1]]


def summarize(results: Sequence[ClipResult], fps: int) -> dict[str, float]:
    """Averages over clips and objects. Per-motion accuracies appear as `motion_accuracy/<motion>`,
    the detection rate of second k (frames [k*fps, (k+1)*fps)) as `detection_rate_s<k>`.

    Two breakdowns tell a missing object from a wrong one: `matched_objects` (requested objects
    that were found at all) with `colour_accuracy_matched` (right colour among those), and
    `colour_accuracy/objects_<n>` (colour accuracy in captions that ask for n objects, where
    colour binding across objects shows)."""
    objects = [obj for clip in results for obj in clip.objects]
    summary = {
        "clips": float(len(results)),
        "objects": float(len(objects)),
        "colour_accuracy": nan_mean(obj.colour_ok for obj in objects),
        "shape_accuracy": nan_mean(obj.shape_ok for obj in objects),
        "motion_accuracy": nan_mean(obj.motion_ok for obj in objects),
        "object_accuracy": nan_mean(_all_ok(obj) for obj in objects),
        "clip_accuracy": nan_mean(all(_all_ok(obj) for obj in clip.objects) for clip in results),
        "extra_objects": nan_mean(clip.extra_objects for clip in results),
        "track_error": nan_mean(obj.track_error for obj in objects),
        "max_jump": nan_mean(clip.max_jump for clip in results),
        "max_jump_worst": nan_max(clip.max_jump for clip in results),
        "jerk": nan_mean(clip.jerk for clip in results),
        "frame_difference": nan_mean(clip.frame_difference for clip in results),
        "frame_difference_ratio": nan_mean(clip.frame_difference for clip in results)
        / max(nan_mean(clip.reference_frame_difference for clip in results), 1e-9),
        "saturation_drift": nan_mean(clip.saturation_drift for clip in results),
        "contrast_drift": nan_mean(clip.contrast_drift for clip in results),
        "visibility_drift": nan_mean(clip.visibility_drift for clip in results),
    }
    rates = np.stack([clip.detection_rate for clip in results])
    summary["detection_rate"] = float(rates.mean())
    for second, start in enumerate(range(0, rates.shape[1], fps)):
        summary[f"detection_rate_s{second}"] = float(rates[:, start : start + fps].mean())
    by_motion: dict[str, list[bool]] = defaultdict(list)
    for obj in objects:
        by_motion[obj.expected.motion].append(obj.motion_ok)
    for motion, verdicts in sorted(by_motion.items()):
        summary[f"motion_accuracy/{motion}"] = nan_mean(verdicts)
    matched = [obj for obj in objects if obj.detected is not None]
    summary["matched_objects"] = nan_mean(obj.detected is not None for obj in objects)
    summary["colour_accuracy_matched"] = nan_mean(obj.colour_ok for obj in matched)
    by_count: dict[int, list[bool]] = defaultdict(list)
    for clip in results:
        by_count[len(clip.objects)].extend(obj.colour_ok for obj in clip.objects)
    for count, verdicts in sorted(by_count.items()):
        summary[f"colour_accuracy/objects_{count}"] = nan_mean(verdicts)
    for key in results[0].keyframes:
        summary[key] = nan_mean(clip.keyframes[key] for clip in results)
    return summary


def _all_ok(result: ObjectResult) -> bool:
    return result.colour_ok and result.shape_ok and result.motion_ok

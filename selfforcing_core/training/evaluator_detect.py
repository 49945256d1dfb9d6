"""The world's object detector: recovers each object's colour, shape, motion and track from frames.

Blobs found per frame (evaluator_segment) are linked into tracks by nearest position; each track is
then classified: colour by the palette votes of its first and last quarter, shape by the angular
harmonics of its mass (a star is 5-fold, a triangle 3-fold, a square and a diamond 4-fold with
opposite phase, a circle none), motion by the geometry of its path and the change of its area.
Works on videos [B, T, 3, H, W] in [-1, 1], the world's layout.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .evaluator_segment import HARMONICS, PALETTE_NAMES, Blobs, segment
from .world_vocab import DIRECTIONS

# Linking: the farthest a centre may move between observations (shorter-side units), and the
# extra cost of linking blobs of different colours.
LINK_DISTANCE = 0.35
_COLOUR_SWITCH_COST = 0.1
# Tracks seen in fewer frames than this fraction are noise.
MIN_PRESENCE = 0.25
# Shape: below this harmonic strength a blob is round.
ROUND_LIMIT = 0.05
# Motion thresholds, in shorter-side units.
MOVE_DISTANCE = 0.12
ORBIT_WINDING = 1.2 * math.pi
BOUNCE_HEIGHT = 0.12
BOUNCE_SWING = 0.04
SIZE_CHANGE = 1.35


@dataclass(frozen=True, eq=False)
class DetectedObject:
    """One tracked object: its classes, and per frame its centre (fractions of width/height) and
    area (pixels); both NaN in frames where it was not seen."""

    colour: str
    end_colour: str
    shape: str
    motion: str
    track: np.ndarray
    area: np.ndarray

    @property
    def present(self) -> np.ndarray:
        return ~np.isnan(self.area)


@dataclass(frozen=True, eq=False)
class ClipDetection:
    """The objects found in one clip and the foreground fraction of each frame [T]."""

    objects: tuple[DetectedObject, ...]
    foreground: np.ndarray


def detect(videos: torch.Tensor, clips_per_chunk: int = 8) -> list[ClipDetection]:
    """Detect and track the objects of videos [B, T, 3, H, W] in [-1, 1]."""
    batch, frames_per_clip, _, height, width = videos.shape
    results: list[ClipDetection] = []
    for first in range(0, batch, clips_per_chunk):
        chunk = videos[first : first + clips_per_chunk].float()
        frames = ((chunk + 1.0) / 2.0).clamp(0.0, 1.0).flatten(0, 1)
        blobs, foreground = segment(frames)
        blobs = Blobs(*(value.cpu() for value in vars(blobs).values()))
        foreground = foreground.cpu().numpy().reshape(-1, frames_per_clip)
        for clip in range(chunk.shape[0]):
            rows = (blobs.frame // frames_per_clip == clip).nonzero(as_tuple=True)[0]
            objects = _track_objects(blobs, rows, clip * frames_per_clip, frames_per_clip, height, width)
            results.append(ClipDetection(tuple(objects), foreground[clip]))
    return results


def _track_objects(
    blobs: Blobs, rows: torch.Tensor, first_frame: int, length: int, height: int, width: int
) -> list[DetectedObject]:
    short = min(height, width)
    frame = blobs.frame[rows].numpy() - first_frame
    centre = blobs.centre[rows].double().numpy()
    area = blobs.area[rows].double().numpy()
    votes = blobs.votes[rows].double().numpy()
    harmonics = blobs.harmonics[rows].numpy()
    colour = votes.argmax(axis=1)
    objects = []
    for members in _link(frame, centre / short, colour, length):
        if len(members) < MIN_PRESENCE * length:
            continue
        at = frame[members]
        track = np.full((length, 2), np.nan)
        track[at] = centre[members] / np.array([width, height])
        sizes = np.full(length, np.nan)
        sizes[at] = area[members]
        quarter = max(1, math.ceil(len(members) / 4))
        start_colour = PALETTE_NAMES[int(votes[members[:quarter]].sum(axis=0).argmax())]
        end_colour = PALETTE_NAMES[int(votes[members[-quarter:]].sum(axis=0).argmax())]
        mean_harmonics = (harmonics[members] * area[members, None]).sum(axis=0) / area[members].sum()
        path = _fill_gaps(track) * np.array([width, height]) / short
        objects.append(
            DetectedObject(
                colour=start_colour,
                end_colour=end_colour,
                shape=classify_shape(mean_harmonics),
                motion=classify_motion(path, _fill_gaps(sizes[:, None])[:, 0], start_colour != end_colour),
                track=track,
                area=sizes,
            )
        )
    return objects


def _link(frame: np.ndarray, position: np.ndarray, colour: np.ndarray, length: int) -> list[list[int]]:
    """Greedy frame-by-frame linking of blobs into tracks (lists of blob indices, in frame order)."""
    tracks: list[list[int]] = []
    for t in range(length):
        current = np.flatnonzero(frame == t)
        if len(current) == 0:
            continue
        last = np.array([track[-1] for track in tracks], dtype=int)
        cost = np.full((len(tracks), len(current)), np.inf)
        if len(tracks):
            cost = np.linalg.norm(position[last][:, None] - position[current][None], axis=2)
            cost = cost + _COLOUR_SWITCH_COST * (colour[last][:, None] != colour[current][None])
        taken_tracks, taken_blobs = set(), set()
        for flat in np.argsort(cost, axis=None):
            i, j = np.unravel_index(flat, cost.shape)
            if cost[i, j] > LINK_DISTANCE:
                break
            if i not in taken_tracks and j not in taken_blobs:
                tracks[i].append(int(current[j]))
                taken_tracks.add(i)
                taken_blobs.add(j)
        tracks.extend([int(current[j])] for j in range(len(current)) if j not in taken_blobs)
    return tracks


def _fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linear interpolation over NaN rows of values [T, C] (held constant beyond the ends)."""
    seen = ~np.isnan(values[:, 0])
    times = np.arange(len(values))
    return np.stack([np.interp(times, times[seen], column[seen]) for column in values.T], axis=1)


def classify_shape(harmonics: np.ndarray) -> str:
    """Shape from the mean angular harmonics (k = 3, 4, 5) of an object's mass."""
    strength = np.abs(harmonics)
    strongest = int(strength.argmax())
    if strength[strongest] < ROUND_LIMIT:
        return "circle"
    order = HARMONICS[strongest]
    if order == 4:
        return "square" if harmonics[strongest].real < 0 else "diamond"
    return "triangle" if order == 3 else "star"


def classify_motion(path: np.ndarray, area: np.ndarray, colour_changed: bool) -> str:
    """Motion from a gap-free path [T, 2] (shorter-side units, y down) and area [T] per frame."""
    ends = max(1, len(path) // 8)
    net = path[-ends:].mean(axis=0) - path[:ends].mean(axis=0)
    extent = path.max(axis=0) - path.min(axis=0)
    if min(extent) >= MOVE_DISTANCE and _winding(path) >= ORBIT_WINDING:
        return "orbit_cw" if _winding(path, signed=True) > 0 else "orbit_ccw"
    if extent[1] >= BOUNCE_HEIGHT and extent[0] < 0.5 * extent[1] and _turns(path[:, 1]) >= 2:
        return "bounce"
    if np.linalg.norm(net) >= MOVE_DISTANCE:
        return _direction(net)
    if colour_changed:
        return "colour_change"
    growth = area[-ends:].mean() / max(area[:ends].mean(), 1e-6)
    if growth >= SIZE_CHANGE:
        return "grow"
    if growth <= 1.0 / SIZE_CHANGE:
        return "shrink"
    return "static"


def _winding(path: np.ndarray, signed: bool = False) -> float:
    """Total turning of the path about its mean (radians; positive is clockwise on screen)."""
    offset = path - path.mean(axis=0)
    angle = np.arctan2(offset[:, 1], offset[:, 0])
    step = (np.diff(angle) + math.pi) % (2.0 * math.pi) - math.pi
    step = step[np.abs(step) < 0.75 * math.pi]
    total = float(step.sum())
    return total if signed else abs(total)


def _turns(values: np.ndarray) -> int:
    """How many times a 1-D signal reverses direction by more than BOUNCE_SWING."""
    turns, direction, extreme = 0, 0, values[0]
    for value in values[1:]:
        if direction >= 0 and value < extreme - BOUNCE_SWING:
            turns += direction > 0
            direction, extreme = -1, value
        elif direction <= 0 and value > extreme + BOUNCE_SWING:
            turns += direction < 0
            direction, extreme = 1, value
        elif (direction > 0 and value > extreme) or (direction < 0 and value < extreme):
            extreme = value
    return turns


def _direction(net: np.ndarray) -> str:
    """The nearest of the eight straight directions to a displacement."""
    names = list(DIRECTIONS)
    vectors = np.array([DIRECTIONS[name] for name in names])
    return names[int((vectors @ (net / np.linalg.norm(net))).argmax())]

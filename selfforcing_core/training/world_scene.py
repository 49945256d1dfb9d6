"""Scene sampling for the procedural video world: the structured parameters behind every clip.

A scene is drawn from one numpy Generator seeded per clip, so the same seed always gives the same
scene (and, through the renderer, the same frames and caption). Positions are fractions of the
frame (x of the width, y of the height, y pointing down); sizes are fractions of the shorter side.
Motions are defined over the whole clip, so a longer clip shows the same motion more slowly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .world_caption import describe
from .world_vocab import (
    BACKGROUND_COLOURS,
    BACKGROUND_KINDS,
    DIRECTIONS,
    MOTIONS,
    OBJECT_COLOURS,
    PAN_DIRECTIONS,
    RGB,
    SHAPE_GEOMETRY,
    SHAPES,
    SIZES,
    TEXTURED_KINDS,
    colour_distance,
    segment_distance,
)

# An object colour must stand this far (RGB distance) from every background colour under it.
MIN_OBJECT_CONTRAST = 0.45
# A colour change must stay this visible at every step of its blend.
MIN_TRANSITION_CONTRAST = 0.3
_OBJECT_COUNT_WEIGHTS = (0.45, 0.35, 0.2)
MOST_OBJECTS = len(_OBJECT_COUNT_WEIGHTS)  # the largest max_objects a world can have
_BACKGROUND_KIND_WEIGHTS = (0.4, 0.25, 0.2, 0.15)
_PAN_PROBABILITY = 0.5
_EDGE_PAD_PX = 2.0
_GAP_PX = 3.0
_ATTEMPTS = 40

SceneSeed = int | Sequence[int]


@dataclass(frozen=True)
class WorldConfig:
    """Clip geometry: frame size (multiples of 16), length (1 + 4k frames, the Wan VAE rule), fps."""

    height: int = 128
    width: int = 128
    num_frames: int = 33
    fps: int = 16
    max_objects: int = 3

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32 or self.height % 16 or self.width % 16:
            raise ValueError(
                f"height and width must be multiples of 16, at least 32; got {self.height}x{self.width}"
            )
        if self.num_frames < 5 or (self.num_frames - 1) % 4:
            raise ValueError(f"num_frames must be 1 + 4k with k >= 1; got {self.num_frames}")
        if not 1 <= self.max_objects <= MOST_OBJECTS:
            raise ValueError(f"max_objects must be 1..{MOST_OBJECTS}; got {self.max_objects}")
        if self.fps <= 0:
            raise ValueError(f"fps must be positive; got {self.fps}")

    @property
    def short_side(self) -> int:
        return min(self.height, self.width)


@dataclass(frozen=True, eq=False)
class BackgroundParams:
    """What is behind the objects: a solid colour, a linear gradient, or low-contrast stripes/checker.

    `angle` orients the gradient or stripes (radians, image coordinates); `period` and `contrast`
    describe the texture (period as a fraction of the shorter side, contrast as RGB amplitude);
    `camera` [T, 2] is the camera offset per frame in shorter-side units (non-zero only with a pan).
    """

    kind: str
    colour: str
    rgb: RGB
    end_colour: str | None
    end_rgb: RGB | None
    angle: float
    period: float
    contrast: float
    pan: str | None
    camera: np.ndarray


@dataclass(frozen=True, eq=False)
class ObjectParams:
    """One object: what it is, how it moves, and its exact per-frame state.

    `track` [T, 2] is the centre per frame (fractions of width/height), `scale` [T] multiplies
    `radius` (fraction of the shorter side), `rgb_track` [T, 3] is the colour per frame.
    `end_colour` is set only for the colour_change motion.
    """

    shape: str
    colour: str
    rgb: RGB
    size: str
    radius: float
    motion: str
    end_colour: str | None
    start: tuple[float, float]
    end: tuple[float, float]
    track: np.ndarray
    scale: np.ndarray
    rgb_track: np.ndarray

    def extent(self, short_side: int) -> np.ndarray:
        """Per-frame radius in pixels of the circle that holds the shape, [T]."""
        return SHAPE_GEOMETRY[self.shape].outer * self.radius * short_side * self.scale


@dataclass(frozen=True, eq=False)
class SceneParams:
    """Everything needed to render a clip and to judge a generated one against its caption."""

    config: WorldConfig
    seed: tuple[int, ...]
    background: BackgroundParams
    objects: tuple[ObjectParams, ...]
    caption: str


def sample_scene(config: WorldConfig, seed: SceneSeed) -> SceneParams:
    """Draw one scene from a Generator seeded with `seed` (an int or a sequence of ints)."""
    seed_tuple = (int(seed),) if isinstance(seed, (int, np.integer)) else tuple(int(s) for s in seed)
    rng = np.random.default_rng(list(seed_tuple))
    weights = np.asarray(_OBJECT_COUNT_WEIGHTS[: config.max_objects])
    count = 1 + int(rng.choice(len(weights), p=weights / weights.sum()))
    background = _sample_background(rng, config)
    objects: list[ObjectParams] = []
    while len(objects) < count:
        placed = _place_object(rng, config, background, objects)
        if placed is None and objects:
            break
        if placed is not None:
            objects.append(placed)
    return SceneParams(config, seed_tuple, background, tuple(objects), describe(background, objects))


def background_contrast(rgb: RGB, background: BackgroundParams) -> float:
    """The smallest RGB distance between `rgb` and any colour the background shows."""
    if background.kind == "gradient":
        distance = segment_distance(rgb, background.rgb, background.end_rgb)
    else:
        distance = colour_distance(rgb, background.rgb)
    return distance - background.contrast * math.sqrt(3.0)


def _visible_colours(background: BackgroundParams) -> list[str]:
    return [
        name for name, rgb in OBJECT_COLOURS.items()
        if background_contrast(rgb, background) >= MIN_OBJECT_CONTRAST
    ]


def _sample_background(rng: np.random.Generator, config: WorldConfig) -> BackgroundParams:
    names = list(BACKGROUND_COLOURS)
    while True:
        kind = BACKGROUND_KINDS[rng.choice(len(BACKGROUND_KINDS), p=_BACKGROUND_KIND_WEIGHTS)]
        colour = names[rng.integers(len(names))]
        end_colour = None
        if kind == "gradient":
            end_colour = names[rng.integers(len(names))]
            if colour_distance(BACKGROUND_COLOURS[colour], BACKGROUND_COLOURS[end_colour]) < 0.2:
                continue
        textured = kind in TEXTURED_KINDS
        if kind == "gradient":
            angle = float(rng.uniform(0.0, 2.0 * math.pi))
        else:
            angle = float(rng.integers(4)) * math.pi / 4
        pan = None
        if textured and rng.random() < _PAN_PROBABILITY:
            pan = PAN_DIRECTIONS[rng.integers(len(PAN_DIRECTIONS))]
        background = BackgroundParams(
            kind=kind,
            colour=colour,
            rgb=BACKGROUND_COLOURS[colour],
            end_colour=end_colour,
            end_rgb=BACKGROUND_COLOURS[end_colour] if end_colour else None,
            angle=angle,
            period=float(rng.uniform(0.12, 0.25)) if textured else 0.0,
            contrast=float(rng.uniform(0.03, 0.06)) if textured else 0.0,
            pan=pan,
            camera=_camera_track(rng, config, pan),
        )
        if len(_visible_colours(background)) >= config.max_objects + 1:
            return background


def _camera_track(rng: np.random.Generator, config: WorldConfig, pan: str | None) -> np.ndarray:
    progress = np.linspace(0.0, 1.0, config.num_frames)
    if pan is None:
        return np.zeros((config.num_frames, 2))
    distance = rng.uniform(0.25, 0.5)
    return np.outer(progress * distance, DIRECTIONS[pan])


def _place_object(
    rng: np.random.Generator, config: WorldConfig, background: BackgroundParams, placed: list[ObjectParams]
) -> ObjectParams | None:
    """Try a few random objects; return the first that fits in frame without touching the others."""
    taken = {name for obj in placed for name in (obj.colour, obj.end_colour) if name}
    colours = [name for name in _visible_colours(background) if name not in taken]
    for _ in range(_ATTEMPTS):
        candidate = _sample_object(rng, config, background, colours)
        if candidate is not None and all(not _collide(candidate, other, config) for other in placed):
            return candidate
    return None


def _sample_object(
    rng: np.random.Generator, config: WorldConfig, background: BackgroundParams, colours: list[str]
) -> ObjectParams | None:
    if not colours:
        return None
    shape = SHAPES[rng.integers(len(SHAPES))]
    size = list(SIZES)[rng.integers(len(SIZES))]
    radius = SIZES[size] * float(rng.uniform(0.95, 1.05))
    motion = MOTIONS[rng.integers(len(MOTIONS))]
    colour = colours[rng.integers(len(colours))]
    end_colour = None
    if motion == "colour_change":
        options = [c for c in colours if c != colour and _transition_visible(colour, c, background)]
        if not options:
            return None
        end_colour = options[rng.integers(len(options))]
    progress = np.linspace(0.0, 1.0, config.num_frames)
    scales = {"grow": 0.65 + 0.7 * progress, "shrink": 1.35 - 0.7 * progress}
    scale = scales.get(motion, np.ones_like(progress))
    extent = SHAPE_GEOMETRY[shape].outer * radius * config.short_side * scale.max() + _EDGE_PAD_PX
    track_px = _sample_track(rng, config, motion, extent, progress)
    if track_px is None:
        return None
    track = track_px / np.array([config.width, config.height])
    rgb = OBJECT_COLOURS[colour]
    end_rgb = OBJECT_COLOURS[end_colour] if end_colour else rgb
    return ObjectParams(
        shape=shape,
        colour=colour,
        rgb=rgb,
        size=size,
        radius=radius,
        motion=motion,
        end_colour=end_colour,
        start=(float(track[0, 0]), float(track[0, 1])),
        end=(float(track[-1, 0]), float(track[-1, 1])),
        track=track,
        scale=scale,
        rgb_track=_blend(np.array(rgb), np.array(end_rgb), _transition_weight(progress)),
    )


def _transition_weight(progress: np.ndarray) -> np.ndarray:
    """Colour changes blend smoothly through the middle half of the clip."""
    x = np.clip((progress - 0.25) / 0.5, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _blend(start: np.ndarray, end: np.ndarray, weight: np.ndarray) -> np.ndarray:
    return start[None, :] + (end - start)[None, :] * weight[:, None]


def _transition_visible(colour: str, end_colour: str, background: BackgroundParams) -> bool:
    start, end = np.array(OBJECT_COLOURS[colour]), np.array(OBJECT_COLOURS[end_colour])
    path = _blend(start, end, np.linspace(0.0, 1.0, 9))
    return all(background_contrast(tuple(rgb), background) >= MIN_TRANSITION_CONTRAST for rgb in path)


def _sample_track(
    rng: np.random.Generator, config: WorldConfig, motion: str, extent: float, progress: np.ndarray
) -> np.ndarray | None:
    """Centre per frame in pixels, keeping a disc of radius `extent` inside the frame; None if it cannot.

    Straight motions cover 0.25-0.55 of the shorter side at constant speed; a bounce makes two
    hops up from a floor; an orbit makes one full turn (clockwise on screen for orbit_cw).
    """
    lo = np.array([extent, extent])
    hi = np.array([config.width - extent, config.height - extent])
    room = hi - lo
    if np.any(room <= 0):
        return None
    short = config.short_side
    if motion in DIRECTIONS:
        direction = np.array(DIRECTIONS[motion])
        distance = rng.uniform(0.3, 0.55) * short
        with np.errstate(divide="ignore"):
            distance = min(distance, float(np.min(room / np.abs(direction))))
        if distance < 0.25 * short:
            return None
        shift = direction * distance
        low = lo + np.maximum(0.0, -shift)
        start = rng.uniform(low, np.maximum(low, hi - np.maximum(0.0, shift)))
        return start[None, :] + shift[None, :] * progress[:, None]
    if motion == "bounce":
        height = min(rng.uniform(0.25, 0.4) * short, room[1])
        if height < 0.2 * short:
            return None
        x = rng.uniform(lo[0], hi[0])
        floor = rng.uniform(lo[1] + height, hi[1])
        y = floor - height * np.abs(np.sin(2.0 * math.pi * progress))
        return np.stack([np.full_like(y, x), y], axis=1)
    if motion in ("orbit_cw", "orbit_ccw"):
        radius = rng.uniform(0.14, 0.22) * short
        if np.any(room <= 2.0 * radius):
            return None
        centre = rng.uniform(lo + radius, hi - radius)
        sign = 1.0 if motion == "orbit_cw" else -1.0
        angle = rng.uniform(0.0, 2.0 * math.pi) + sign * 2.0 * math.pi * progress
        return centre[None, :] + radius * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    position = rng.uniform(lo, hi)
    return np.repeat(position[None, :], len(progress), axis=0)


def _collide(a: ObjectParams, b: ObjectParams, config: WorldConfig) -> bool:
    """Whether two objects come closer than their extents plus a small gap in any frame."""
    size = np.array([config.width, config.height])
    distance = np.linalg.norm((a.track - b.track) * size, axis=1)
    reach = a.extent(config.short_side) + b.extent(config.short_side) + _GAP_PX
    return bool(np.any(distance < reach))

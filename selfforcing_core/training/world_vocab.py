"""The fixed vocabulary of the procedural video world: shapes, colours, sizes, motions, backgrounds.

The generator samples from these tables and the evaluator classifies into them, so both sides
agree by construction. Colours are RGB in [0, 1]; lengths are in units of the frame's shorter side.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

RGB = tuple[float, float, float]

# Saturated, well separated object colours (pairwise RGB distance >= 0.44).
OBJECT_COLOURS: dict[str, RGB] = {
    "red": (0.90, 0.08, 0.08),
    "orange": (1.00, 0.50, 0.00),
    "yellow": (0.95, 0.92, 0.10),
    "green": (0.10, 0.75, 0.20),
    "cyan": (0.05, 0.80, 0.90),
    "blue": (0.10, 0.25, 0.95),
    "purple": (0.55, 0.15, 0.80),
    "pink": (1.00, 0.45, 0.75),
    "white": (0.97, 0.97, 0.97),
    "black": (0.04, 0.04, 0.04),
}

# Muted background colours; an object is only drawn on a background it stands out from.
BACKGROUND_COLOURS: dict[str, RGB] = {
    "black": (0.06, 0.06, 0.06),
    "dark gray": (0.25, 0.25, 0.25),
    "gray": (0.50, 0.50, 0.50),
    "light gray": (0.78, 0.78, 0.78),
    "navy": (0.08, 0.10, 0.30),
    "dark green": (0.07, 0.25, 0.10),
    "brown": (0.35, 0.22, 0.10),
    "beige": (0.86, 0.80, 0.64),
    "maroon": (0.35, 0.05, 0.10),
    "teal": (0.05, 0.30, 0.32),
}


@dataclass(frozen=True)
class ShapeGeometry:
    """A shape as a regular star polygon: `points`-fold symmetric, vertices at `outer` x size.

    `inner_ratio` places the in-between vertices (cos(pi/points) gives a plain polygon);
    `phase` is the angle of the first vertex in image coordinates (y pointing down).
    `points == 0` is a circle of radius `outer` x size.
    """

    points: int
    outer: float
    inner_ratio: float
    phase: float


SHAPE_GEOMETRY: dict[str, ShapeGeometry] = {
    "circle": ShapeGeometry(0, 1.0, 1.0, 0.0),
    "square": ShapeGeometry(4, 0.88 * math.sqrt(2.0), math.cos(math.pi / 4), math.pi / 4),
    "diamond": ShapeGeometry(4, 1.2, math.cos(math.pi / 4), 0.0),
    "triangle": ShapeGeometry(3, 1.3, 0.5, -math.pi / 2),
    "star": ShapeGeometry(5, 1.35, 0.45, -math.pi / 2),
}
SHAPES: tuple[str, ...] = tuple(SHAPE_GEOMETRY)

# Base object size (radius-like) as a fraction of the frame's shorter side.
SIZES: dict[str, float] = {"small": 0.085, "medium": 0.11, "large": 0.14}

# Straight motions: unit direction in image coordinates (x right, y down).
DIRECTIONS: dict[str, tuple[float, float]] = {
    "right": (1.0, 0.0),
    "left": (-1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
    "up_right": (math.sqrt(0.5), -math.sqrt(0.5)),
    "up_left": (-math.sqrt(0.5), -math.sqrt(0.5)),
    "down_right": (math.sqrt(0.5), math.sqrt(0.5)),
    "down_left": (-math.sqrt(0.5), math.sqrt(0.5)),
}
MOTIONS: tuple[str, ...] = (
    "static",
    *DIRECTIONS,
    "bounce",
    "orbit_cw",
    "orbit_ccw",
    "grow",
    "shrink",
    "colour_change",
)

BACKGROUND_KINDS: tuple[str, ...] = ("solid", "gradient", "stripes", "checker")
TEXTURED_KINDS: tuple[str, ...] = ("stripes", "checker")
PAN_DIRECTIONS: tuple[str, ...] = ("left", "right", "up", "down")


def colour_distance(a: RGB, b: RGB) -> float:
    """Euclidean RGB distance, the separation measure used by sampling and detection alike."""
    return math.dist(a, b)


def segment_distance(colour: RGB, start: RGB, end: RGB) -> float:
    """Distance from `colour` to the straight RGB segment start..end (a linear gradient's colours)."""
    direction = [e - s for s, e in zip(start, end)]
    length2 = sum(d * d for d in direction)
    if length2 == 0.0:
        return colour_distance(colour, start)
    t = sum((c - s) * d for c, s, d in zip(colour, start, direction)) / length2
    t = min(1.0, max(0.0, t))
    return colour_distance(colour, tuple(s + t * d for s, d in zip(start, direction)))

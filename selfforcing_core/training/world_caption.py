"""Plain-English captions for procedural scenes, one fixed phrase per parameter value.

Every word in a caption comes from a parameter, so a caption can be parsed back (tests do) and
two different scenes never share a caption unless their described parameters are equal.
Example: "a small red circle moves right and a blue star bounces on a navy striped background,
while the camera pans left".
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from .world_scene import BackgroundParams, ObjectParams

SIZE_WORDS: dict[str, str] = {"small": "small", "medium": "", "large": "large"}
MOTION_PHRASES: dict[str, str] = {
    "static": "stays still",
    "right": "moves right",
    "left": "moves left",
    "up": "moves up",
    "down": "moves down",
    "up_right": "moves toward the top right",
    "up_left": "moves toward the top left",
    "down_right": "moves toward the bottom right",
    "down_left": "moves toward the bottom left",
    "bounce": "bounces",
    "orbit_cw": "circles clockwise",
    "orbit_ccw": "circles counterclockwise",
    "grow": "grows",
    "shrink": "shrinks",
    "colour_change": "turns {end_colour}",
}
BACKGROUND_PHRASES: dict[str, str] = {
    "solid": "{colour} background",
    "gradient": "{colour} to {end_colour} gradient background",
    "stripes": "{colour} striped background",
    "checker": "{colour} checkered background",
}


def describe(background: "BackgroundParams", objects: Sequence["ObjectParams"]) -> str:
    """The caption of a scene: its objects, then the background, then the camera."""
    phrases = [_object_phrase(obj) for obj in objects]
    subject = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    setting = BACKGROUND_PHRASES[background.kind].format(
        colour=background.colour, end_colour=background.end_colour
    )
    caption = f"{subject} on a {setting}"
    if background.pan:
        caption += f", while the camera pans {background.pan}"
    return caption


def _object_phrase(obj: "ObjectParams") -> str:
    noun = " ".join(word for word in (SIZE_WORDS[obj.size], obj.colour, obj.shape) if word)
    article = "an" if noun[0] in "aeiou" else "a"
    return f"{article} {noun} {MOTION_PHRASES[obj.motion].format(end_colour=obj.end_colour)}"

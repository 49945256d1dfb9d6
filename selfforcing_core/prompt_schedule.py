"""Prompt schedules written as text: one `TIME: prompt` per line, TIME in seconds ("2.5", "2.5s")
or in video frames ("40f"); the first entry must start at 0. Blank lines and `#` comments are skipped."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .video_geometry import FPS

_LINE = re.compile(r"^\s*(?P<time>\d+(?:\.\d+)?)\s*(?P<unit>[sf]?)\s*:\s*(?P<text>.*?)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class ScheduledPrompt:
    """A prompt and the video frame (at 16 fps) from which it applies."""

    start_frame: int
    text: str


def parse_schedule(text: str, fps: int = FPS) -> list[ScheduledPrompt]:
    """Parse a schedule; raises ValueError naming the line that is wrong and how to write it."""
    entries: list[ScheduledPrompt] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LINE.match(line)
        if match is None:
            raise ValueError(f"schedule line {number} ({line.strip()[:60]!r}) is not 'TIME: prompt'; write e.g. "
                             "'0: a red fox in snow' or '2.5s: the fox jumps' or '40f: it lands'")
        if not match["text"]:
            raise ValueError(f"schedule line {number} has no prompt text after the colon")
        time = float(match["time"])
        frame = int(time) if match["unit"].lower() == "f" else round(time * fps)
        if match["unit"].lower() == "f" and not time.is_integer():
            raise ValueError(f"schedule line {number}: a frame number must be whole, got {match['time']}f")
        if entries and frame <= entries[-1].start_frame:
            raise ValueError(f"schedule line {number} starts at frame {frame}, not after the previous prompt "
                             f"(frame {entries[-1].start_frame}); list prompts in time order")
        entries.append(ScheduledPrompt(frame, match["text"]))
    if not entries:
        raise ValueError("the prompt schedule is empty; write at least one line like '0: a red fox in snow'")
    if entries[0].start_frame != 0:
        raise ValueError(f"the first prompt starts at frame {entries[0].start_frame}; the schedule must start at 0")
    return entries

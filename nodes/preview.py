"""Live preview of the sampler: each decoded chunk goes to the browser widget at once (event
`selfforcing.frames`, base64 JPEG frames) and into a small looping clip in the temp folder, which
the widget replays after a page reload (node output `selfforcing_clip`)."""
from __future__ import annotations

import base64
import io
import os
import uuid
from typing import Any

import folder_paths
import numpy as np
from PIL import Image

from ..selfforcing_core.video_export import VideoWriter, to_uint8_frames
from .comfy_glue import send_event

FRAMES_EVENT = "selfforcing.frames"
CLIP_KEY = "selfforcing_clip"
MAX_SIDE = 512
JPEG_QUALITY = 85


def preview_size(width: int, height: int, max_side: int = MAX_SIDE) -> tuple[int, int]:
    """The preview's frame size: the video's, shrunk to fit `max_side`, kept even."""
    scale = min(1.0, max_side / max(width, height))
    return max(2, int(width * scale) // 2 * 2), max(2, int(height * scale) // 2 * 2)


def to_jpeg_base64(frames: np.ndarray) -> list[str]:
    """uint8 frames [T, H, W, 3] -> base64 JPEGs."""
    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=JPEG_QUALITY)
        encoded.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return encoded


class LivePreview:
    """Pushes one video's chunks to the widget of sampler node `node_id` and records its clip."""

    def __init__(self, node_id: str, prompt_id: str | None, width: int, height: int, total_frames: int,
                 fps: float, text: str = ""):
        self.node_id, self.prompt_id = node_id, prompt_id
        self.size = preview_size(width, height)
        self.total_frames, self.fps, self.text = total_frames, fps, text
        self.filename = f"selfforcing_{uuid.uuid4().hex[:12]}.webm"
        self.writer = VideoWriter(os.path.join(folder_paths.get_temp_directory(), self.filename), fps=fps, crf=40)

    def push(self, chunk_index: int, num_chunks: int, frames: Any, text: str | None = None) -> None:
        """Send the frames [T, H, W, 3] (one video of the batch) of chunk `chunk_index`."""
        small = np.stack([np.asarray(Image.fromarray(f).resize(self.size, Image.BILINEAR))
                          for f in to_uint8_frames(frames)])
        self.writer.write(small)
        send_event(FRAMES_EVENT, {
            "node": self.node_id, "prompt_id": self.prompt_id, "chunk": chunk_index, "chunks": num_chunks,
            "total_frames": self.total_frames, "fps": self.fps, "width": self.size[0], "height": self.size[1],
            "mime": "image/jpeg", "frames": to_jpeg_base64(small),
            "text": self.text if text is None else text,
        })

    def finish(self) -> dict[str, Any]:
        """Close the clip; returns the node's UI output that points the widget at it."""
        self.writer.close()
        clip = {"filename": self.filename, "subfolder": "", "type": "temp", "fps": self.fps,
                "frames": self.writer.frames_written}
        return {CLIP_KEY: [clip]}

    def abandon(self) -> None:
        """Drop a half-written clip (the run failed or was interrupted)."""
        self.writer.abort()

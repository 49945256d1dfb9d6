"""Save node: IMAGE frames -> mp4 (H.264) or webm (VP9) in ComfyUI's output folder, shown in the UI."""
from __future__ import annotations

import os

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..selfforcing_core.video_export import FORMATS, VideoWriter
from . import types

FRAMES_PER_WRITE = 16


class SelfForcingSaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfForcingSaveVideo",
            display_name="Self-Forcing Save Video",
            category=types.CATEGORY,
            description="Saves frames (any IMAGE batch) as an mp4 (H.264) or webm (VP9) video.",
            inputs=[
                io.Image.Input("images", tooltip="Frames in order (an IMAGE batch)."),
                io.String.Input("filename_prefix", default="SelfForcing/video",
                                tooltip="Sub-folder and file name start inside ComfyUI's output folder."),
                io.Combo.Input("format", options=list(FORMATS), default="mp4"),
                io.Float.Input("fps", default=16.0, min=1.0, max=120.0, step=1.0),
                io.Int.Input("crf", default=19, min=0, max=63,
                             tooltip="Quality: lower is better and larger (mp4 0-51, webm 0-63)."),
            ],
            outputs=[],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, images: torch.Tensor, filename_prefix: str, format: str, fps: float, crf: int) -> io.NodeOutput:
        height, width = images.shape[1:3]
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), width, height)
        file = f"{name}_{counter:05}_.{format}"
        with VideoWriter(os.path.join(folder, file), fps=fps, crf=crf, fmt=format) as writer:
            for start in range(0, images.shape[0], FRAMES_PER_WRITE):
                writer.write(images[start:start + FRAMES_PER_WRITE])
        return io.NodeOutput(ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))


NODES = [SelfForcingSaveVideo]

"""Save node: IMAGE frames -> mp4 (H.264) or webm (VP9) in ComfyUI's output folder, shown in the UI; and
the output file names that the streaming sampler writes its videos to."""
from __future__ import annotations

import os

import folder_paths
import torch
from comfy_api.latest import io, ui

from ..selfforcing_core.video_export import FORMATS, VideoWriter
from . import types

FRAMES_PER_WRITE = 16


def output_files(filename_prefix: str, width: int, height: int, count: int, fmt: str
                 ) -> tuple[list[str], list[ui.SavedResult]]:
    """Paths for `count` new videos under `filename_prefix` in ComfyUI's output folder (numbered on
    from the files already there), and the UI results that show them."""
    folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
        filename_prefix, folder_paths.get_output_directory(), width, height)
    files = [f"{name}_{counter + index:05}_.{fmt}" for index in range(count)]
    return ([os.path.join(folder, file) for file in files],
            [ui.SavedResult(file, subfolder, io.FolderType.output) for file in files])


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
        (path,), saved = output_files(filename_prefix, width, height, 1, format)
        with VideoWriter(path, fps=fps, crf=crf, fmt=format) as writer:
            for start in range(0, images.shape[0], FRAMES_PER_WRITE):
                writer.write(images[start:start + FRAMES_PER_WRITE])
        return io.NodeOutput(ui=ui.PreviewVideo(saved))


NODES = [SelfForcingSaveVideo]

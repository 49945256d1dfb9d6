"""Keyframes node: optional START and END images with the VAE that encodes them (at the sampler's size)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from comfy_api.latest import io

from ..selfforcing_core.keyframe_prefix import END_MODES
from . import types


@dataclass
class KeyframeImages:
    """What flows through a SELFFORCING_KEYFRAMES socket; encoded by the sampler at its width/height."""

    vae: Any
    start: torch.Tensor | None
    end: torch.Tensor | None
    end_strength: float
    end_mode: str


def check_images(start: torch.Tensor | None, end: torch.Tensor | None) -> None:
    """At least one keyframe; start and end framed alike (same size); one end image (several start
    images are the end of a video to continue)."""
    if start is None and end is None:
        raise ValueError("connect a start_image and/or an end_image to the keyframes node")
    if end is not None and end.shape[0] != 1:
        raise ValueError(f"end_image is a batch of {end.shape[0]} images; pass one image (e.g. ImageFromBatch)")
    if start is not None and end is not None and start.shape[1:3] != end.shape[1:3]:
        raise ValueError(
            f"end_image is {end.shape[2]}x{end.shape[1]} but start_image is {start.shape[2]}x{start.shape[1]}; "
            "give both keyframes the same size (e.g. with ImageScale) so they are framed alike")


class SelfForcingKeyframes(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfForcingKeyframes",
            display_name="Self-Forcing Keyframes",
            category=types.CATEGORY,
            description="Start image: the video begins on it (a clean prefix in the cache). End image: models "
                        "trained with end frames take it as a goal frame in the cache; others land the last frame "
                        "on it and pull earlier chunks towards it, which may look like a cross-fade at high strength.",
            inputs=[
                io.MultiType.Input("vae", types=[io.Vae, types.Vae],
                                   tooltip="The Wan2.1 VAE (VAELoader wan_2.1_vae, or the Self-Forcing VAE loader)."),
                io.Image.Input("start_image", optional=True,
                               tooltip="The first frame of the video; or several frames (the end of a video, e.g. "
                                       "a sampler's images): the new video continues their motion from the last 9, "
                                       "which it re-decodes as its first frames."),
                io.Image.Input("end_image", optional=True, tooltip="The frame the video should end on."),
                io.Float.Input("end_strength", default=0.5, min=0.0, max=1.0, step=0.05,
                               tooltip="How strongly the chunks before the last are pulled towards the end image "
                                       "(guidance mode)."),
                io.Combo.Input("end_mode", options=list(END_MODES), default="auto", optional=True,
                               tooltip="How the end image is used: goal_prefix (models trained with end frames), "
                                       "guidance (any model), auto (goal_prefix if the model's file says so)."),
            ],
            outputs=[types.Keyframes.Output(display_name="keyframes")],
        )

    @classmethod
    def execute(cls, vae: Any, end_strength: float, start_image: torch.Tensor | None = None,
                end_image: torch.Tensor | None = None, end_mode: str = "auto") -> io.NodeOutput:
        check_images(start_image, end_image)
        return io.NodeOutput(KeyframeImages(vae, start_image, end_image, end_strength, end_mode))


NODES = [SelfForcingKeyframes]

"""Decode node: a LATENT to frames, streamed a few latent frames at a time (memory bounded by a chunk)."""
from __future__ import annotations

from typing import Any

import torch
from comfy_api.latest import io

from ..selfforcing_core.latent_format import from_raw
from ..selfforcing_core.vae_stream import StreamingDecoder, pixels_to_frames
from . import types
from .comfy_glue import interrupt_check, progress_bar
from .vae_adapter import chunk_decoder


class SelfForcingDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SelfForcingDecode",
            display_name="Self-Forcing Streaming Decode",
            category=types.CATEGORY,
            description="Decodes a Wan2.1 LATENT chunk by chunk with the full VAE or the fast TAEHV preview "
                        "decoder; memory stays bounded by one chunk whatever the video length.",
            inputs=[
                io.Latent.Input("latent"),
                io.MultiType.Input("vae", types=[io.Vae, types.Vae],
                                   tooltip="VAELoader (wan_2.1_vae) or the Self-Forcing VAE / preview decoder loader."),
                io.Int.Input("chunk_frames", default=3, min=1, max=64,
                             tooltip="Latent frames decoded at a time (memory vs. speed)."),
            ],
            outputs=[io.Image.Output(display_name="images")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, latent: dict[str, Any], vae: Any, chunk_frames: int) -> io.NodeOutput:
        samples = latent["samples"]
        if samples.dim() != 5:
            raise ValueError(f"expected a video LATENT [B, 16, T, h, w], got shape {tuple(samples.shape)}")
        stream = StreamingDecoder(chunk_decoder(vae))
        pieces = samples.split(chunk_frames, dim=2)
        bar = progress_bar(len(pieces), str(cls.hidden.unique_id))
        check = interrupt_check()
        frames = []
        for index, piece in enumerate(pieces):
            check()
            frames.append(pixels_to_frames(stream.decode_chunk(from_raw(piece))).cpu())
            bar.update_absolute(index + 1)
        video = torch.cat(frames, dim=1)
        return io.NodeOutput(video.reshape(-1, *video.shape[2:]))


NODES = [SelfForcingDecode]

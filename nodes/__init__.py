"""The ComfyUI extension: gathers the pack's nodes (thin adapters over `selfforcing_core`)."""
from __future__ import annotations

from comfy_api.latest import ComfyExtension, io

from . import decode, keyframes, loaders, paths, sampler, text, video


class SelfForcingExtension(ComfyExtension):
    """Registers every Self-Forcing node with ComfyUI."""

    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        paths.register_folders()
        return [*loaders.NODES, *text.NODES, *keyframes.NODES, *sampler.NODES, *decode.NODES, *video.NODES]

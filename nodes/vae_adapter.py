"""Decoders from either VAE socket: ComfyUI's native VAE (VAELoader with wan_2.1_vae) becomes our
streaming Wan VAE built from its weights (cached); our own VAE / TAEHV decoder passes through."""
from __future__ import annotations

from typing import Any

from ..selfforcing_core.preview_decoder import TAEHVDecoder
from ..selfforcing_core.vae_loading import wan_vae_from_state_dict
from ..selfforcing_core.wan_vae import WanVAE
from .comfy_glue import torch_device
from .loaders import pick_dtype
from .model_cache import cached


def chunk_decoder(vae: Any) -> WanVAE | TAEHVDecoder:
    """A streaming decoder for a VAE socket value (native VAE or ours)."""
    if isinstance(vae, (WanVAE, TAEHVDecoder)):
        return vae
    native = getattr(vae, "first_stage_model", None)
    if native is None:
        raise ValueError(f"the vae input is a {type(vae).__name__}, not a VAE; connect VAELoader (wan_2.1_vae) "
                         "or the Self-Forcing VAE loader")
    first = next(native.parameters())
    key = (id(native), first.data_ptr(), tuple(first.shape))
    return cached("native_vae", key, lambda: wan_vae_from_state_dict(
        native.state_dict(), dtype=pick_dtype("auto"), device=torch_device(), source="the connected VAE"))


def keyframe_encoder(vae: Any) -> WanVAE:
    """The Wan VAE to encode keyframes with; a decode-only preview decoder is refused."""
    decoder = chunk_decoder(vae)
    if not isinstance(decoder, WanVAE):
        raise ValueError("keyframes need the full Wan2.1 VAE to encode them; the TAEHV preview decoder only "
                         "decodes. Connect wan_2.1_vae to the keyframes node")
    return decoder

"""What kind of weights a file holds (DiT, VAE, preview decoder, text encoder, ...), told by key names and shapes.

Every loader asks `identify` before it reads a layout, so a file picked in the wrong loader gets the
same fix-it message everywhere (`wrong_file`): what the file looks like, where it belongs, what was
expected. Keys match whatever prefix they carry, and nested training-checkpoint sections are looked into.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from enum import Enum
from typing import Any

_SELF_FORCING_SECTIONS = ("generator_ema", "generator", "critic")
_WAN22_CHANNELS = 48  # Wan2.2 VAE latents (Wan2.1: 16); also a DiT input of TI2V-5B or Fun control models
_I2V_IN_CHANNELS = 36  # Wan I2V/FLF2V DiT input: 16 noise + 4 mask + 16 image-latent channels


class FileKind(Enum):
    """A kind of weight file: how to name it, and what to do with it instead."""

    LORA = ("a LoRA", "a LoRA only adjusts a base model and cannot run alone")
    CLIP = ("a CLIP model (e.g. clip_vision_h or clip_l)",
            "Wan2.1 text-to-video uses no CLIP; its text encoder is umT5-XXL (umt5_xxl_fp16 or "
            "umt5_xxl_fp8_e4m3fn_scaled)")
    DIFFUSERS_WAN = ("a diffusers-layout Wan transformer", "use the original or ComfyUI-format file of that model")
    WAN_T2V = ("a Wan text-to-video diffusion transformer (DiT)", "load it with the model loader")
    WAN_I2V = ("a Wan image-to-video (I2V/FLF2V) diffusion transformer",
               "this pack runs causal text-to-video models (start/end frames are handled by the keyframe nodes)")
    WAN_48_CHANNEL = ("a Wan diffusion transformer with 48 input channels (e.g. Wan2.2 TI2V-5B or a Fun control "
                      "model)", "this pack runs causal Wan2.1 text-to-video models (16 input channels)")
    UMT5 = ("a T5 / umT5 text encoder", "load it with the text encoder loader")
    TAEHV = ("a TAEHV preview decoder",
             "load it with the VAE loader as a fast preview decoder (it only decodes; keyframes need the Wan2.1 "
             "VAE)")
    WAN21_VAE = ("a Wan2.1 VAE", "load it with the VAE loader")
    WAN22_VAE = ("a Wan2.2 VAE (48 latent channels)", "Wan2.1 models need the 16-channel Wan2.1 VAE (wan_2.1_vae)")
    OTHER_VAE = ("a VAE of another model family (not Wan)", "Wan2.1 models need the Wan2.1 VAE (wan_2.1_vae)")
    UNKNOWN = ("unrecognised weights", "")

    def __init__(self, description: str, fix: str) -> None:
        self.description = description
        self.fix = fix


def _keys(*endings: str) -> re.Pattern[str]:
    """Matches, in newline-joined key names, a key ending with one of `endings` after any dotted prefix."""
    return re.compile(r"(?:^|\.)(?:" + "|".join(endings) + r")$", re.M)


_LORA = _keys(r"lora_(?:down|up|A|B)\.weight", r"lora\.(?:down|up)\.weight")
_CLIP = _keys(r"(?:vision_model|text_model|visual|textual)\..*", r"transformer\.resblocks\..*")
_DIFFUSERS_WAN = _keys(r"condition_embedder\..*")
_DIT = _keys(r"patch_embedding\.weight", r"head\.modulation", r"blocks\.\d+\.(?:self_attn\.q|cross_attn\.k)\.weight")
_DIT_PATCH = _keys(r"patch_embedding\.weight")
_DIT_IMAGE = _keys(r"img_emb\..*", r"k_img\.weight")
_TEXT = _keys(r"(?:token_embedding|shared|embed_tokens)\.weight", r"SelfAttention\.q\.weight",
              r"blocks\.\d+\.attn\.q\.weight")
_TAEHV = _keys(r"(?:taehv_)?decoder\.3\.conv\.0\.weight")
_WAN_VAE = _keys(r"(?:encoder|decoder)\.(?:conv1|middle|downsamples|upsamples|head)\..*",
                 r"decoder\.mid_block\.resnets\.0\.norm1\.gamma")
_WAN_VAE_INPUT = _keys(r"decoder\.(?:conv1|conv_in)\.weight")
_OTHER_VAE = _keys(r"(?:encoder|decoder)\.(?:conv_in|mid|mid_block|up|up_blocks|down|down_blocks)\..*")


def identify(state_dict: Mapping[str, Any]) -> FileKind:
    """The kind of weights a (possibly nested) state dict holds."""
    flat = _flatten(state_dict)
    keys = "\n".join(flat)
    if _LORA.search(keys):
        return FileKind.LORA
    if _CLIP.search(keys):
        return FileKind.CLIP
    if _DIFFUSERS_WAN.search(keys):
        return FileKind.DIFFUSERS_WAN
    if _DIT.search(keys):
        in_channels = _in_channels(flat, _DIT_PATCH)
        if in_channels == _WAN22_CHANNELS:
            return FileKind.WAN_48_CHANNEL
        if in_channels == _I2V_IN_CHANNELS or _DIT_IMAGE.search(keys):
            return FileKind.WAN_I2V
        return FileKind.WAN_T2V
    if _TEXT.search(keys):
        return FileKind.UMT5
    if _TAEHV.search(keys):
        return FileKind.TAEHV
    if _WAN_VAE.search(keys):
        wan22 = _in_channels(flat, _WAN_VAE_INPUT) == _WAN22_CHANNELS
        return FileKind.WAN22_VAE if wan22 else FileKind.WAN21_VAE
    if _OTHER_VAE.search(keys):
        return FileKind.OTHER_VAE
    return FileKind.UNKNOWN


def wrong_file(state_dict: Mapping[str, Any], wanted: str, expected: str) -> str:
    """The fix-it message for a file given in place of `wanted`: what it is, what to do, what was expected."""
    kind = identify(state_dict)
    what = kind.description
    if kind is FileKind.UNKNOWN:
        what += f" (first keys: {', '.join(repr(key) for key in list(_flatten(state_dict))[:3]) or 'none'})"
    sections = [key for key, value in state_dict.items() if isinstance(value, Mapping)]
    if sections:
        trainer = "Self-Forcing " if any(name in _SELF_FORCING_SECTIONS for name in sections) else ""
        what = f"a {trainer}training checkpoint with sections {sections} holding {what}"
    return "; ".join(part for part in (f"this looks like {what}, not {wanted}", kind.fix, expected) if part)


def _flatten(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested sections' entries under dotted names, e.g. {'generator': {'x': t}} -> {'generator.x': t}."""
    flat: dict[str, Any] = {}
    for key, value in state_dict.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _in_channels(flat: Mapping[str, Any], pattern: re.Pattern[str]) -> int | None:
    """Dimension 1 (input channels) of the first weight whose key matches `pattern`, if it has one."""
    for key, value in flat.items():
        if pattern.search(key):
            shape = getattr(value, "shape", ())
            return int(shape[1]) if len(shape) > 1 else None
    return None

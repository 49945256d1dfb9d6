"""Loading video decoder weight files, with the configuration read off the weight shapes.

Wan VAE files: the original `Wan2.1_VAE.pth` layout and ComfyUI's `wan_2.1_vae.safetensors`
(ComfyUI keeps the original names), pruned variants of it (e.g. LightX2V's `lightvaew2_1`, a
narrower `dim`), and diffusers' `AutoencoderKLWan` layout, renamed here. TAEHV preview decoders:
`taew2_1` / `lighttaew2_1` (`.pth` or `.safetensors`). Any fp32/fp16/bf16 file loads into any dtype.
A file of another kind (a DiT, a text encoder, ...) raises `CheckpointError` saying what it is.
"""
from __future__ import annotations

import os
import re
from collections import Counter
from typing import Any, Mapping

import torch

from .file_kinds import FileKind, identify, wrong_file
from .preview_decoder import TAEHVDecoder
from .wan_vae import WAN21_LATENT_MEAN, WanVAE, WanVAEConfig
from .weights_io import FP8_DTYPES, CheckpointError, dequantize, read_weights, strip_prefix

_DIFFUSERS_MARKER = "decoder.mid_block.resnets.0.norm1.gamma"
_PREFIXES = ("first_stage_model.", "vae.", "model.")
_EXPECTED = (
    "expected the Wan2.1 VAE (Wan2.1_VAE.pth, or ComfyUI's wan_2.1_vae.safetensors) "
    "or a TAEHV preview decoder (taew2_1)"
)

# diffusers AutoencoderKLWan residual-block names -> the original `residual.<index>` names.
_DIFFUSERS_RESNET = {
    "norm1.gamma": "residual.0.gamma", "conv1.weight": "residual.2.weight", "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma", "conv2.weight": "residual.6.weight", "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight", "conv_shortcut.bias": "shortcut.bias",
}
_DIFFUSERS_RENAMES = (
    ("encoder.conv_in.", "encoder.conv1."), ("decoder.conv_in.", "decoder.conv1."),
    ("encoder.norm_out.", "encoder.head.0."), ("encoder.conv_out.", "encoder.head.2."),
    ("decoder.norm_out.", "decoder.head.0."), ("decoder.conv_out.", "decoder.head.2."),
    ("quant_conv.", "conv1."), ("post_quant_conv.", "conv2."),
)


def load_video_decoder(
    path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> WanVAE | TAEHVDecoder:
    """The Wan VAE or the TAEHV preview decoder in `path`, whichever the file holds."""
    state_dict = _read_flat(path)
    if identify(state_dict) is FileKind.TAEHV:
        return preview_decoder_from_state_dict(state_dict, dtype, device, source=path)
    return wan_vae_from_state_dict(state_dict, dtype=dtype, device=device, source=path)


def load_wan_vae(
    path: str | os.PathLike, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> WanVAE:
    """The Wan VAE in `path` (original, ComfyUI or diffusers layout); dtype None keeps the file's."""
    return wan_vae_from_state_dict(_read_flat(path), dtype=dtype, device=device, source=path)


def load_preview_decoder(
    path: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    latent_channels: int = 16,
) -> TAEHVDecoder:
    """The TAEHV preview decoder in `path` (e.g. taew2_1.pth); its encoder weights are not used."""
    return preview_decoder_from_state_dict(_read_flat(path), dtype, device, latent_channels, source=path)


def wan_vae_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    config: WanVAEConfig | None = None,
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    source: str | os.PathLike = "<state dict>",
) -> WanVAE:
    """A WanVAE holding `state_dict`; `config` None infers it from the shapes."""
    state_dict = strip_prefix(state_dict, _PREFIXES)
    if identify(state_dict) is not FileKind.WAN21_VAE:
        raise CheckpointError(source, wrong_file(state_dict, "a Wan2.1 VAE", _EXPECTED))
    if _DIFFUSERS_MARKER in state_dict:
        state_dict = diffusers_to_original(state_dict)
    config = config or infer_wan_vae_config(state_dict, source)
    return _build(WanVAE, config, state_dict, dtype, device, source)


def preview_decoder_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    dtype: torch.dtype | None = None,
    device: str | torch.device = "cpu",
    latent_channels: int = 16,
    source: str | os.PathLike = "<state dict>",
) -> TAEHVDecoder:
    """A TAEHVDecoder holding the decoder half of a TAEHV `state_dict` (shapes decide the config)."""
    renamed = {re.sub(r"^taehv_decoder\.", "decoder.", key): value for key, value in state_dict.items()}
    decoder_weights = {key: value for key, value in renamed.items() if key.startswith("decoder.")}
    if "decoder.0.weight" in decoder_weights:
        raise CheckpointError(source, "a TAEHV 'super' decoder (e.g. taew2_2_super) is not supported; use taew2_1")
    if identify(state_dict) is not FileKind.TAEHV:
        raise CheckpointError(source, wrong_file(state_dict, "a TAEHV decoder", _EXPECTED))
    try:
        config = TAEHVDecoder.config_from_state_dict(decoder_weights)
    except KeyError as exc:
        raise CheckpointError(source, f"TAEHV decoder weight {exc} is missing; is the file complete?") from exc
    if config.latent_channels != latent_channels:
        raise CheckpointError(
            source,
            f"this TAEHV decodes {config.latent_channels}-channel latents; Wan2.1 needs {latent_channels} "
            "(use taew2_1, not the Wan2.2/HunyuanVideo variants)",
        )
    return _build(TAEHVDecoder, config, decoder_weights, dtype, device, source)


def infer_wan_vae_config(
    state_dict: Mapping[str, torch.Tensor], source: str | os.PathLike = "<state dict>"
) -> WanVAEConfig:
    """dim, z_dim, dim_mult, num_res_blocks, attn_scales and temperal_downsample read off the encoder's shapes."""
    try:
        dim = state_dict["encoder.conv1.weight"].shape[0]
        z_dim = state_dict["conv2.weight"].shape[0]
    except KeyError as exc:
        raise CheckpointError(source, f"Wan VAE weight {exc} is missing (decoder-only files are not supported)") \
            from exc
    widths, res_per_stage, temporal, attn_scales = [], [0], [], []
    width = dim
    prefix = "encoder.downsamples."
    for index in sorted({int(key[len(prefix):].split(".")[0]) for key in state_dict if key.startswith(prefix)}):
        block = f"{prefix}{index}."
        if block + "residual.0.gamma" in state_dict:
            res_per_stage[-1] += 1
            width = state_dict[block + "residual.6.weight"].shape[0]
        elif block + "to_qkv.weight" in state_dict:
            attn_scales.append(1.0 / 2 ** (len(res_per_stage) - 1))
        elif block + "resample.1.weight" in state_dict:
            widths.append(width)
            temporal.append(block + "time_conv.weight" in state_dict)
            res_per_stage.append(0)
        else:
            raise CheckpointError(source, f"unrecognised Wan VAE encoder block {block[:-1]}")
    widths.append(width)
    if len(set(res_per_stage)) != 1 or any(w % dim for w in widths):
        raise CheckpointError(source, f"irregular Wan VAE encoder (stage widths {widths}, blocks {res_per_stage})")
    if z_dim != len(WAN21_LATENT_MEAN):
        raise CheckpointError(source, f"a {z_dim}-channel VAE; the Wan2.1 VAE has 16 latent channels")
    return WanVAEConfig(
        dim=dim, z_dim=z_dim, dim_mult=tuple(w // dim for w in widths), num_res_blocks=res_per_stage[0],
        attn_scales=tuple(attn_scales), temperal_downsample=tuple(temporal),
    )


def diffusers_to_original(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename diffusers `AutoencoderKLWan` (Wan2.1) keys to the original Wan layout (shapes are equal)."""
    first_block = (re.match(r"decoder\.up_blocks\.0\.resnets\.(\d+)\.", key) for key in state_dict)
    resnets_per_up_block = 1 + max((int(match.group(1)) for match in first_block if match), default=0)
    return {_original_name(key, resnets_per_up_block): value for key, value in state_dict.items()}


def _read_flat(path: str | os.PathLike) -> dict[str, Any]:
    """The file's tensors, unwrapped from a 'state_dict' entry when the file nests them there."""
    state_dict = read_weights(path)
    nested = state_dict.get("state_dict")
    return dict(nested) if isinstance(nested, Mapping) else state_dict


def _original_name(key: str, resnets_per_up_block: int) -> str:
    for old, new in _DIFFUSERS_RENAMES:
        if key.startswith(old):
            return new + key[len(old):]
    if match := re.match(r"(encoder|decoder)\.mid_block\.(resnets|attentions)\.(\d+)\.(.+)$", key):
        part, kind, index, rest = match.groups()
        slot = 1 if kind == "attentions" else 2 * int(index)
        return f"{part}.middle.{slot}.{_DIFFUSERS_RESNET.get(rest, rest)}"
    if match := re.match(r"encoder\.down_blocks\.(\d+)\.(.+)$", key):
        index, rest = match.groups()
        return f"encoder.downsamples.{index}.{_DIFFUSERS_RESNET.get(rest, rest)}"
    if match := re.match(r"decoder\.up_blocks\.(\d+)\.(resnets\.(\d+)|upsamplers\.0)\.(.+)$", key):
        block, _, resnet, rest = match.groups()
        offset = int(resnet) if resnet is not None else resnets_per_up_block
        index = int(block) * (resnets_per_up_block + 1) + offset
        return f"decoder.upsamples.{index}.{_DIFFUSERS_RESNET.get(rest, rest)}"
    return key


def _build(model_class, config, state_dict, dtype, device, source):
    """Instantiate `model_class(config)` without allocating, then adopt the (cast) weights."""
    tensors = {key: value for key, value in state_dict.items() if torch.is_tensor(value)}
    dtype = dtype or _file_dtype(tensors)
    with torch.device("meta"):
        model = model_class(config)
    try:
        model.load_state_dict(dequantize(tensors, dtype), strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(source, f"weights do not fit the {model_class.__name__} their shapes suggest: {exc}") \
            from exc
    return model.to(device).eval().requires_grad_(False)


def _file_dtype(tensors: Mapping[str, torch.Tensor]) -> torch.dtype:
    """The file's most common floating dtype (fp8 files compute in bfloat16)."""
    counts = Counter(t.dtype for t in tensors.values() if t.is_floating_point())
    if not counts:
        return torch.float32
    dtype = counts.most_common(1)[0][0]
    return torch.bfloat16 if dtype in FP8_DTYPES else dtype

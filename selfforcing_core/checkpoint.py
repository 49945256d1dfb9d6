"""Transformer checkpoints: format detection, key mapping, config inference, loading and saving.

Accepted: the official Self-Forcing `.pt` (`generator_ema` / `generator`, keys prefixed `model.`),
ComfyUI-format Wan safetensors (bare keys or `model.diffusion_model.`), our own safetensors (with
the config in their metadata); fp32/fp16/bf16/fp8 weights, computed in the dtype asked for.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import torch

from .config import PRESETS, CausalSettings, WanConfig
from .families import Family, detect_family
from .file_kinds import FileKind, identify, wrong_file
from .transformer import CausalWanModel
from .weights_io import (CheckpointError, count_blocks, dequantize, read_safetensors_metadata, read_weights,
                         strip_prefix)

_PREFIXES = ("model.diffusion_model.", "diffusion_model.", "model.", "_orig_mod.")
_WRAPPERS = ("generator_ema", "generator", "state_dict", "model")
HEAD_DIM = 128  # every released Wan2.1 size uses 128-channel heads; our own files state theirs
_EXPECTED = ("expected a causal Wan2.1 text-to-video diffusion model (e.g. self_forcing_dmd.pt or a ComfyUI-format "
             "Wan2.1 T2V safetensors, with keys like 'patch_embedding.weight', 'blocks.0.self_attn.q.weight')")


@dataclass
class LoadedTransformer:
    """A ready model and what was learned about its file."""

    model: CausalWanModel
    config: WanConfig
    family: Family
    settings: CausalSettings
    path: str
    metadata: dict[str, str]


def _unwrap(raw: Mapping[str, Any], use_ema: bool) -> Mapping[str, Any]:
    """Pick the generator's weights out of a training checkpoint (EMA first unless told otherwise)."""
    order = _WRAPPERS if use_ema else tuple(w for w in _WRAPPERS if w != "generator_ema")
    for name in order:
        inner = raw.get(name)
        if isinstance(inner, Mapping) and inner:
            return _unwrap(inner, use_ema)
    return raw


def read_transformer_state(path: str, use_ema: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A transformer's state dict with original key names, and the file's metadata."""
    raw = read_weights(path)
    state = strip_prefix(_unwrap(raw, use_ema), _PREFIXES)
    tensors = {k: v for k, v in state.items() if torch.is_tensor(v)}
    if not tensors:
        raise CheckpointError(path, "holds no tensors")
    return tensors, read_safetensors_metadata(path)



def infer_config(state_dict: Mapping[str, torch.Tensor], metadata: Mapping[str, str], path: str) -> WanConfig:
    """The model's shape, from its metadata when present, else from tensor shapes."""
    if "config" in metadata:
        return WanConfig.from_dict(json.loads(metadata["config"]))
    try:
        patch = state_dict["patch_embedding.weight"]
        dim, in_dim = patch.shape[:2]
        patch_size = tuple(patch.shape[2:])
        head = state_dict["head.head.weight"]
        shapes = dict(
            dim=dim, in_dim=in_dim, patch_size=patch_size,
            ffn_dim=state_dict["blocks.0.ffn.0.weight"].shape[0],
            text_dim=state_dict["text_embedding.0.weight"].shape[1],
            freq_dim=state_dict["time_embedding.0.weight"].shape[1],
            out_dim=head.shape[0] // (patch_size[0] * patch_size[1] * patch_size[2]),
            num_layers=count_blocks(state_dict),
            qk_norm="blocks.0.self_attn.norm_q.weight" in state_dict,
            cross_attn_norm="blocks.0.norm3.weight" in state_dict,
        )
    except KeyError as exc:
        raise CheckpointError(path, f"missing key {exc.args[0]!r} needed to infer the model size") from exc
    for preset in PRESETS.values():
        if preset.dim == dim:
            return WanConfig.from_dict({**preset.to_dict(), **shapes, "num_heads": preset.num_heads})
    if dim % HEAD_DIM:
        raise CheckpointError(
            path, f"unknown model size (dim {dim}): the number of attention heads cannot be inferred; "
                  f"known sizes are {', '.join(f'{n} (dim {p.dim})' for n, p in PRESETS.items())}, and files we "
                  "write carry their config in metadata")
    return WanConfig(**shapes, num_heads=dim // HEAD_DIM)


def _check_keys(model: CausalWanModel, state_dict: Mapping[str, torch.Tensor], path: str) -> None:
    expected = dict(model.state_dict())
    missing = sorted(set(expected) - set(state_dict))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise CheckpointError(path, f"missing {len(missing)} key(s): {shown}; the file is incomplete or not a "
                                    "Wan2.1 T2V transformer")
    for key, tensor in expected.items():
        if tuple(state_dict[key].shape) != tuple(tensor.shape):
            raise CheckpointError(path, f"key {key!r} has shape {list(state_dict[key].shape)}, expected "
                                        f"{list(tensor.shape)} for the inferred config")


def load_transformer(
    path: str,
    dtype: torch.dtype = torch.bfloat16,
    device: str | torch.device = "cpu",
    attention_backend: str = "auto",
    use_ema: bool = True,
) -> LoadedTransformer:
    """Load a causal Wan transformer from any supported file, ready for the streaming sampler."""
    path = os.fspath(path)
    state, metadata = read_transformer_state(path, use_ema)
    if identify(state) is not FileKind.WAN_T2V:
        raise CheckpointError(path, wrong_file(state, "a Wan2.1 text-to-video DiT", _EXPECTED))
    config = infer_config(state, metadata, path)
    with torch.device("meta"):
        model = CausalWanModel(config, attention_backend=attention_backend)
    _check_keys(model, state, path)
    weights = dequantize(state, dtype)
    weights = {k: weights[k] for k in model.state_dict()}
    model.load_state_dict(weights, strict=True, assign=True)
    model = model.to(device).eval().requires_grad_(False)
    family = detect_family(path, metadata.get("family"))
    settings = family.settings
    if "causal_settings" in metadata:
        settings = CausalSettings(**_settings_from_json(metadata["causal_settings"]))
    return LoadedTransformer(model, config, family, settings, path, metadata)


def _settings_from_json(text: str) -> dict[str, Any]:
    values = json.loads(text)
    if "denoising_steps" in values:
        values["denoising_steps"] = tuple(values["denoising_steps"])
    return values


def save_transformer(
    model: CausalWanModel,
    path: str,
    settings: CausalSettings | None = None,
    family: str | None = None,
    extra_metadata: Mapping[str, str] | None = None,
    dtype: torch.dtype | None = None,
) -> None:
    """Write a transformer as safetensors with its config (and causal settings) in the metadata.

    `extra_metadata` holds free-form strings, e.g. "resolution": "128x128" for the native size.
    """
    from safetensors.torch import save_file

    metadata = {**(extra_metadata or {}), "config": json.dumps(model.config.to_dict())}
    if settings is not None:
        metadata["causal_settings"] = json.dumps(asdict(settings))
    if family:
        metadata["family"] = family
    tensors = {k: v.detach().to(dtype or v.dtype).contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, path, metadata=metadata)

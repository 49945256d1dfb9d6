"""Reading weight files from disk: safetensors and weights-only torch pickles, fp8 dequantisation.

Every model loader (transformer, VAE, text encoder) reads its file through here, so the safety
rules (never unpickle arbitrary objects) and the error wording are the same everywhere.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import torch

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
FP8_DTYPES = tuple(
    getattr(torch, name) for name in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, name)
)
# Per-layer scale keys that ComfyUI's "scaled" fp8 files store beside each quantised weight:
# the older layout (`scale_weight`) and the newer one (`weight_scale`).
_SCALE_SUFFIXES = (".scale_weight", ".weight_scale")
_FP8_MARKER_KEYS = ("scaled_fp8",)
_DROPPED_SUFFIXES = (".scale_input", ".input_scale", ".comfy_quant")


class CheckpointError(ValueError):
    """A weight file that cannot be used; the message names the file and what was expected."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = str(path)
        super().__init__(f"{os.path.basename(self.path)}: {problem} (file: {self.path})")


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """Read a weight file into a (possibly nested) mapping of tensors, without running pickled code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(path, "file not found")
    lower = path.lower()
    if lower.endswith(SAFETENSORS_SUFFIXES):
        return _read_safetensors(path)
    if lower.endswith(PICKLE_SUFFIXES):
        return _read_pickle(path)
    raise CheckpointError(
        path, f"unknown weight format; expected one of {SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES}"
    )


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The string metadata of a safetensors file (empty for other formats)."""
    path = os.fspath(path)
    if not path.lower().endswith(SAFETENSORS_SUFFIXES):
        return {}
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises several error types for damaged headers
        raise CheckpointError(path, f"not a readable safetensors file ({exc})") from exc


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    _check_safetensors_size(path)
    try:
        return load_file(path, device="cpu")
    except Exception as exc:
        raise CheckpointError(path, f"not a readable safetensors file ({exc})") from exc


def _check_safetensors_size(path: str) -> None:
    """Catch truncated downloads with a clear message before safetensors' own terse error."""
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise CheckpointError(path, "file is truncated (shorter than a safetensors header)")
        header_len = int.from_bytes(head, "little")
        if header_len <= 0 or 8 + header_len > size:
            raise CheckpointError(path, "file is truncated or is not a safetensors file")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(path, "safetensors header is damaged") from exc
    data_end = max(
        (entry["data_offsets"][1] for name, entry in header.items() if name != "__metadata__"),
        default=0,
    )
    if 8 + header_len + data_end > size:
        missing = 8 + header_len + data_end - size
        raise CheckpointError(path, f"file is truncated ({missing} bytes missing); download it again")


def _read_pickle(path: str) -> dict[str, Any]:
    try:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):
                raise
            # legacy (non-zip) pickles cannot be memory-mapped; read them whole, still weights-only
            loaded = torch.load(path, map_location="cpu", weights_only=True)
    except RuntimeError as exc:
        if "zip" in str(exc).lower() or "truncat" in str(exc).lower():
            raise CheckpointError(path, f"file is truncated or damaged ({exc})") from exc
        raise CheckpointError(path, f"cannot be read as torch weights ({exc})") from exc
    except Exception as exc:  # weights_only refuses arbitrary objects with an UnpicklingError
        raise CheckpointError(
            path, f"refused: it holds more than plain tensors, and we never unpickle code ({exc})"
        ) from exc
    if not isinstance(loaded, Mapping):
        raise CheckpointError(path, f"expected a state dict, found {type(loaded).__name__}")
    return dict(loaded)


def dequantize(state_dict: Mapping[str, torch.Tensor], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Cast every floating tensor to `dtype`, applying per-layer fp8 scales where the file has them."""
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        if key in _FP8_MARKER_KEYS or key.endswith(_SCALE_SUFFIXES + _DROPPED_SUFFIXES):
            continue
        if not torch.is_tensor(tensor) or not tensor.is_floating_point():
            out[key] = tensor
            continue
        value = tensor.to(torch.float32) if tensor.dtype in FP8_DTYPES else tensor
        scale = _scale_for(state_dict, key)
        if scale is not None:
            value = value.to(torch.float32) * scale.to(torch.float32)
        out[key] = value.to(dtype)
    return out


def _scale_for(state_dict: Mapping[str, torch.Tensor], key: str) -> torch.Tensor | None:
    if not key.endswith(".weight"):
        return None
    stem = key[: -len(".weight")]
    for suffix in _SCALE_SUFFIXES:
        scale = state_dict.get(stem + suffix)
        if scale is not None:
            return scale if scale.numel() == 1 else scale.reshape(-1, *([1] * (state_dict[key].dim() - 1)))
    return None


def strip_prefix(state_dict: Mapping[str, Any], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """Remove the first of `prefixes` that every key carries (e.g. ComfyUI's `model.diffusion_model.`)."""
    for prefix in prefixes:
        if state_dict and all(key.startswith(prefix) for key in state_dict):
            return {key[len(prefix):]: value for key, value in state_dict.items()}
    return dict(state_dict)


def count_blocks(state_dict: Mapping[str, Any], prefix: str = "blocks.") -> int:
    """How many numbered blocks (`<prefix><i>.`) a state dict holds: a model's depth, read from its weights."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(match.group(1)) for key in state_dict if (match := pattern.match(key))}
    return max(indices) + 1 if indices else 0

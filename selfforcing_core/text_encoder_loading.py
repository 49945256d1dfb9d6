"""Loading the umT5 text encoder from the user's files, whatever layout and precision they are in.

Accepted: the original `models_t5_umt5-xxl-enc-bf16.pth` layout, and ComfyUI / HuggingFace
T5-style safetensors (`umt5_xxl_fp16`, `umt5_xxl_fp8_e4m3fn_scaled`, ...: `shared.weight`,
`encoder.block.N.layer.0.SelfAttention.q.weight`, ...) in fp32/fp16/bf16/scaled fp8. The config
is read off the tensor shapes; ComfyUI's embedded `spiece_model` tensor becomes the tokenizer.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from .file_kinds import FileKind, identify, wrong_file
from .text_encoder import TextEncoder, UMT5Config, UMT5Encoder
from .tokenizers import DEFAULT_TEXT_LEN, Tokenizer, find_tokenizer, load_tokenizer
from .weights_io import CheckpointError, count_blocks, dequantize, read_weights, strip_prefix

SPIECE_KEY = "spiece_model"
_MARKER_KEYS = ("scaled_fp8",)
_PREFIXES = (
    "text_encoders.umt5xxl.transformer.",
    "umt5xxl.transformer.",
    "transformer.",
    "text_encoder.",
    "model.",
    "module.",
)
_EXPECTED = (
    "expected a umT5 text encoder: the original layout (keys like 'blocks.0.attn.q.weight') or "
    "ComfyUI/HuggingFace T5 names (keys like 'encoder.block.0.layer.0.SelfAttention.q.weight')"
)
# HuggingFace/ComfyUI T5 encoder names -> original Wan layout. `_DROP` for keys the encoder does
# not use: the decoder, the LM head, and the encoder's tied copy of the embedding.
_DROP = ""
_HF_TO_ORIGINAL: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), target)
    for pattern, target in (
        (r"shared\.weight", "token_embedding.weight"),
        (r"encoder\.embed_tokens\.weight", _DROP),
        (r"encoder\.final_layer_norm\.weight", "norm.weight"),
        (r"encoder\.block\.(\d+)\.layer\.0\.layer_norm\.weight", r"blocks.\1.norm1.weight"),
        (r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.weight", r"blocks.\1.attn.\2.weight"),
        (
            r"encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.relative_attention_bias\.weight",
            r"blocks.\1.pos_embedding.embedding.weight",
        ),
        (r"encoder\.block\.(\d+)\.layer\.1\.layer_norm\.weight", r"blocks.\1.norm2.weight"),
        (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_0\.weight", r"blocks.\1.ffn.gate.0.weight"),
        (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wi_1\.weight", r"blocks.\1.ffn.fc1.weight"),
        (r"encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.wo\.weight", r"blocks.\1.ffn.fc2.weight"),
        (r"(decoder\..*|lm_head\.weight)", _DROP),
    )
)


@dataclass
class UMT5Checkpoint:
    """A text encoder file read into the original layout: weights, their config, the embedded tokenizer."""

    state_dict: dict[str, torch.Tensor]
    config: UMT5Config
    spiece_model: bytes | None


def read_umt5_checkpoint(path: str | os.PathLike, dtype: torch.dtype = torch.bfloat16) -> UMT5Checkpoint:
    """Read a umT5 encoder file in any supported layout, cast (and fp8-dequantise) to `dtype`."""
    raw = read_weights(path)
    if identify(raw) is not FileKind.UMT5:
        raise CheckpointError(path, wrong_file(raw, "a umT5 text encoder", _EXPECTED))
    spiece = _pop_spiece(raw)
    for key in [key for key in raw if key.rsplit(".", 1)[-1] in _MARKER_KEYS]:
        del raw[key]
    raw = strip_prefix(raw, _PREFIXES)
    if not _is_original_layout(raw) and not _is_hf_layout(raw):
        raise CheckpointError(path, f"no text encoder weights found (keys: {_sample(raw)}); {_EXPECTED}")
    weights = _cast_each(raw, dtype)
    if _is_hf_layout(weights):
        weights = hf_to_original(weights, path)
    return UMT5Checkpoint(weights, infer_config(weights, path), spiece)


def hf_to_original(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike = "<state dict>") -> dict[str, torch.Tensor]:
    """Rename ComfyUI/HF T5 encoder keys to the original layout; T5's single bias table becomes shared."""
    if "encoder.block.0.layer.1.DenseReluDense.wi.weight" in state_dict:
        raise CheckpointError(path, "a T5 v1.0 encoder (ungated FFN); Wan uses the gated umT5")
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state_dict.items():
        target = _rename(key)
        if target is None:
            raise CheckpointError(path, f"unexpected key {key!r} for a T5 encoder; {_EXPECTED}")
        if target:
            out[target] = tensor
    if "token_embedding.weight" not in out and "encoder.embed_tokens.weight" in state_dict:
        out["token_embedding.weight"] = state_dict["encoder.embed_tokens.weight"]
    bias_keys = [key for key in out if key.endswith("pos_embedding.embedding.weight")]
    if bias_keys == ["blocks.0.pos_embedding.embedding.weight"] and count_blocks(out) > 1:
        out["pos_embedding.embedding.weight"] = out.pop(bias_keys[0])
    return out


def _rename(key: str) -> str | None:
    """The original-layout name of a HF/ComfyUI key, `_DROP` for unused keys, None for unknown ones."""
    for pattern, target in _HF_TO_ORIGINAL:
        match = pattern.fullmatch(key)
        if match:
            return match.expand(target) if target else _DROP
    return None


def infer_config(state_dict: Mapping[str, torch.Tensor], path: str | os.PathLike = "<state dict>") -> UMT5Config:
    """The encoder's shape, read from an original-layout state dict."""
    shared = "pos_embedding.embedding.weight" in state_dict
    try:
        vocab, dim = state_dict["token_embedding.weight"].shape
        num_buckets, num_heads = state_dict[
            "pos_embedding.embedding.weight" if shared else "blocks.0.pos_embedding.embedding.weight"
        ].shape
        return UMT5Config(
            vocab=vocab,
            dim=dim,
            dim_attn=state_dict["blocks.0.attn.q.weight"].shape[0],
            dim_ffn=state_dict["blocks.0.ffn.fc1.weight"].shape[0],
            num_heads=num_heads,
            num_layers=count_blocks(state_dict),
            num_buckets=num_buckets,
            shared_pos=shared,
        )
    except (KeyError, ValueError) as exc:
        raise CheckpointError(path, f"incomplete text encoder weights (missing or bad {exc}); {_EXPECTED}") from exc


def build_encoder(checkpoint: UMT5Checkpoint, device: torch.device | str = "cpu", path: str | os.PathLike = "<state dict>") -> UMT5Encoder:
    """An eval-mode, frozen encoder holding the checkpoint's tensors (built on meta: no double copy)."""
    with torch.device("meta"):
        encoder = UMT5Encoder(checkpoint.config)
    try:
        encoder.load_state_dict(checkpoint.state_dict, strict=True, assign=True)
    except RuntimeError as exc:
        raise CheckpointError(path, f"weights do not fit a {checkpoint.config} encoder: {exc}") from exc
    return encoder.to(device).eval().requires_grad_(False)


def load_text_encoder(
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.bfloat16,
    device: torch.device | str = "cpu",
    tokenizer: Tokenizer | str | os.PathLike | None = None,
    text_len: int = DEFAULT_TEXT_LEN,
) -> TextEncoder:
    """Encoder file (+ tokenizer: given, embedded in the file, or found beside it) -> `TextEncoder`."""
    checkpoint = read_umt5_checkpoint(path, dtype)
    encoder = build_encoder(checkpoint, device, path)
    if tokenizer is None:
        tokenizer = find_tokenizer(path, checkpoint.spiece_model, checkpoint.config.vocab, text_len)
    elif not isinstance(tokenizer, Tokenizer):
        tokenizer = load_tokenizer(tokenizer, text_len)
    return TextEncoder(encoder, tokenizer)


def _cast_each(state_dict: dict[str, Any], dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """`dequantize` one layer at a time, freeing each source tensor as it goes (peak ~ one copy)."""
    groups: dict[str, list[str]] = {}
    for key in state_dict:
        groups.setdefault(key.rsplit(".", 1)[0], []).append(key)
    out: dict[str, torch.Tensor] = {}
    for keys in groups.values():
        out.update(dequantize({key: state_dict.pop(key) for key in keys}, dtype))
    return out


def _pop_spiece(state_dict: dict[str, Any]) -> bytes | None:
    keys = [key for key in state_dict if key.rsplit(".", 1)[-1] == SPIECE_KEY]
    blobs = [state_dict.pop(key) for key in keys]
    return blobs[0].cpu().numpy().tobytes() if blobs else None


def _is_original_layout(state_dict: Mapping[str, Any]) -> bool:
    return "token_embedding.weight" in state_dict and "blocks.0.attn.q.weight" in state_dict


def _is_hf_layout(state_dict: Mapping[str, Any]) -> bool:
    return "encoder.block.0.layer.0.SelfAttention.q.weight" in state_dict



def _sample(state_dict: Mapping[str, Any], count: int = 4) -> str:
    return ", ".join(repr(key) for key in list(state_dict)[:count]) or "none"

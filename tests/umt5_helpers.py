"""Tiny random umT5 encoders, their files in each supported layout, and a tiny sentencepiece model."""
from __future__ import annotations

import io
import random

import torch

from selfforcing_core.text_encoder import UMT5Config, UMT5Encoder

# vocab 259 = the byte tokenizer's, so these models run on real prompts without a tokenizer file.
TINY = UMT5Config(vocab=259, dim=32, dim_attn=48, dim_ffn=64, num_heads=4, num_layers=3, num_buckets=32)
_WORDS = (
    "a cat walks along the river bank at sunset while golden light dances over water and birds "
    "fly above the quiet town a dog runs through tall grass under a cloudy sky camera pans slowly"
).split()


def random_encoder(config: UMT5Config = TINY, seed: int = 0) -> UMT5Encoder:
    """An encoder with every parameter random, float32, eval mode.

    Norm gains near 1, linear weights ~ N(0, 1/fan_in) (q also / sqrt(head_dim), as T5 folds the
    attention scale into it), so outputs are not hypersensitive to weight rounding.
    """
    generator = torch.Generator().manual_seed(seed)
    encoder = UMT5Encoder(config).eval()
    head_dim = config.dim_attn // config.num_heads
    with torch.no_grad():
        for name, param in encoder.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if "norm" in name:
                param.copy_(1.0 + 0.1 * noise)
            elif param.dim() == 2 and "embedding" not in name:
                scale = (param.shape[1] * (head_dim if ".attn.q." in name else 1)) ** -0.5
                param.copy_(noise * scale)
            else:
                param.copy_(noise)
    return encoder


def comfy_names(state_dict: dict[str, torch.Tensor], num_layers: int) -> dict[str, torch.Tensor]:
    """The ComfyUI / HF T5 names of an original-layout umT5 state dict (written out independently)."""
    out = {"shared.weight": state_dict["token_embedding.weight"], "encoder.final_layer_norm.weight": state_dict["norm.weight"]}
    for i in range(num_layers):
        block, src = f"encoder.block.{i}.layer.", f"blocks.{i}."
        out[block + "0.layer_norm.weight"] = state_dict[src + "norm1.weight"]
        for proj in "qkvo":
            out[block + f"0.SelfAttention.{proj}.weight"] = state_dict[src + f"attn.{proj}.weight"]
        out[block + "0.SelfAttention.relative_attention_bias.weight"] = state_dict[src + "pos_embedding.embedding.weight"]
        out[block + "1.layer_norm.weight"] = state_dict[src + "norm2.weight"]
        out[block + "1.DenseReluDense.wi_0.weight"] = state_dict[src + "ffn.gate.0.weight"]
        out[block + "1.DenseReluDense.wi_1.weight"] = state_dict[src + "ffn.fc1.weight"]
        out[block + "1.DenseReluDense.wo.weight"] = state_dict[src + "ffn.fc2.weight"]
    return out


def fp8_scaled(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ComfyUI's scaled fp8 layout: 2-D linear weights as e4m3fn with a per-tensor `scale_weight`."""
    out: dict[str, torch.Tensor] = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, tensor in state_dict.items():
        if tensor.dim() == 2 and key.startswith("encoder.block.") and "relative_attention_bias" not in key:
            scale = tensor.abs().max().float() / 448.0
            out[key] = (tensor.float() / scale).to(torch.float8_e4m3fn)
            out[key[: -len("weight")] + "scale_weight"] = scale.reshape(())
        else:
            out[key] = tensor.half()
    return out


def train_spiece(vocab_size: int = 48) -> bytes:
    """A tiny unigram sentencepiece model with T5's special ids (pad 0, EOS 1, unk 2), offline."""
    import sentencepiece

    rng = random.Random(0)
    lines = [" ".join(rng.choice(_WORDS) for _ in range(12)) for _ in range(300)]
    buffer = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=buffer, vocab_size=vocab_size, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    return buffer.getvalue()

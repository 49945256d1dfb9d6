"""Tiny random-weight model files for the e2e tests, written where a ComfyUI server looks for them."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from selfforcing_core.checkpoint import save_transformer
from selfforcing_core.config import CausalSettings, WanConfig
from selfforcing_core.text_encoder import UMT5Config, UMT5Encoder
from selfforcing_core.tokenizers import ByteTokenizer
from selfforcing_core.transformer import CausalWanModel
from selfforcing_core.wan_vae import WanVAE, WanVAEConfig

TEXT_DIM = 32
TRANSFORMER = WanConfig(dim=64, ffn_dim=128, num_heads=2, num_layers=2, text_dim=TEXT_DIM, text_len=512, freq_dim=16)
TEXT_ENCODER = UMT5Config(vocab=ByteTokenizer.VOCAB_SIZE, dim=TEXT_DIM, dim_attn=TEXT_DIM, dim_ffn=64,
                          num_heads=2, num_layers=2)
VAE = WanVAEConfig(dim=8)
SETTINGS = CausalSettings(chunk_frames=3)
MODEL_FILE = "tiny_self_forcing.safetensors"
TEXT_ENCODER_FILE = "tiny_umt5.safetensors"
VAE_FILE = "tiny_wan_2.1_vae.safetensors"


def _randomized(module: torch.nn.Module, seed: int, scale: float) -> torch.nn.Module:
    torch.manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn_like(param) * scale)
    return module.eval()


def tiny_vae(seed: int = 2) -> WanVAE:
    """The tiny Wan VAE (default init: random convs, unit norms), the same weights every call."""
    torch.manual_seed(seed)
    return WanVAE(VAE).eval()


def write_tiny_models(models_dir: Path) -> dict[str, str]:
    """Write the tiny transformer, umT5 and Wan VAE into ComfyUI's folders under `models_dir`."""
    model = _randomized(CausalWanModel(TRANSFORMER, attention_backend="math"), seed=0, scale=0.2)
    save_transformer(model, str(models_dir / "self_forcing" / MODEL_FILE), SETTINGS, family="self_forcing")
    encoder = _randomized(UMT5Encoder(TEXT_ENCODER), seed=1, scale=0.2)
    save_file({k: v.contiguous() for k, v in encoder.state_dict().items()},
              str(models_dir / "text_encoders" / TEXT_ENCODER_FILE))
    save_file({k: v.contiguous() for k, v in tiny_vae().state_dict().items()}, str(models_dir / "vae" / VAE_FILE))
    return {"model": MODEL_FILE, "text_encoder": TEXT_ENCODER_FILE, "vae": VAE_FILE}

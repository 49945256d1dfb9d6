"""The pack's own socket types (ComfyUI's native IMAGE, LATENT, CONDITIONING, VAE, CLIP are used as is)."""
from __future__ import annotations

from comfy_api.latest import io

Model = io.Custom("SELFFORCING_MODEL")
TextEncoder = io.Custom("SELFFORCING_TEXT_ENCODER")
Vae = io.Custom("SELFFORCING_VAE")
Keyframes = io.Custom("SELFFORCING_KEYFRAMES")
CATEGORY = "SelfForcing"

"""Training the Wan VAE: forward passes with gradients, the loss, latent statistics and the export.

`WanVAE.encode`/`decode` are inference-only (no grad, chunked); training runs the same modules over
the whole clip in one pass, which their causal design makes identical to the chunked passes.
Videos here are VAE layout [B, 3, T, H, W] in [-1, 1].
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

import torch
from torch import nn

from ..temporal_state import OnePass
from ..wan_vae import WAN21_LATENT_MEAN, WAN21_LATENT_STD, WanVAE
from .evaluator_metrics import psnr

_LOGVAR_RANGE = (-30.0, 20.0)


@dataclass(frozen=True)
class VAELossWeights:
    """Pixel L1 and L2, L1 of the spatial image gradients (sharp edges, faint textures), and a small KL."""

    l1: float = 1.0
    l2: float = 1.0
    gradient: float = 0.5
    kl: float = 1e-5


@torch.no_grad()
def init_posterior(vae: WanVAE, log_variance: float = -8.0) -> None:
    """Start with a narrow posterior (std e^(log_variance/2)): zero the log-variance half of `conv1` and set
    its bias, so the decoder learns from the encoder's means instead of from unit-variance noise."""
    z_dim = vae.config.z_dim
    vae.conv1.weight[z_dim:].zero_()
    vae.conv1.bias[z_dim:].fill_(log_variance)


def vae_moments(vae: WanVAE, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Un-normalised posterior mean and log-variance [B, z_dim, T', h, w] of `video`, with gradients."""
    moments = vae.conv1(vae.encoder(video, OnePass()))
    mu, logvar = moments.chunk(2, dim=1)
    return mu, logvar.clamp(*_LOGVAR_RANGE)


def vae_reconstruct(vae: WanVAE, z: torch.Tensor) -> torch.Tensor:
    """Frames decoded from un-normalised latents z, with gradients."""
    return vae.decoder(vae.conv2(z), OnePass())


class VAEAutoencoder(nn.Module):
    """A WanVAE with a training forward, so that DDP can wrap it: video -> (reconstruction, mu, logvar).

    With `train_encoder` False the encoder and `conv1` are frozen and run without gradients: only the decoder
    learns, and the latents every model trained on this VAE relies on stay exactly what they were."""

    def __init__(self, vae: WanVAE, train_encoder: bool = True):
        super().__init__()
        self.vae = vae
        self.train_encoder = train_encoder
        if not train_encoder:
            vae.encoder.requires_grad_(False)
            vae.conv1.requires_grad_(False)

    def forward(self, video: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            mu, logvar = vae_moments(self.vae, video)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=torch.float32)
        z = mu + eps.to(mu.dtype) * (0.5 * logvar).exp()
        return vae_reconstruct(self.vae, z), mu, logvar


def _gradient_l1(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    loss = recon.new_zeros(())
    for dim in (-1, -2):
        loss = loss + (recon.diff(dim=dim) - target.diff(dim=dim)).abs().mean()
    return loss


def vae_loss(
    autoencoder: nn.Module, video: torch.Tensor, generator: torch.Generator, weights: VAELossWeights = VAELossWeights()
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The training loss of a (possibly DDP-wrapped) `VAEAutoencoder` on a batch, and its parts."""
    recon, mu, logvar = autoencoder(video, generator)
    recon = recon.float()
    target = video.float()
    parts = {
        "l1": (recon - target).abs().mean(),
        "l2": (recon - target).square().mean(),
        "gradient": _gradient_l1(recon, target),
        "kl": 0.5 * (mu.float().square() + logvar.float().exp() - 1.0 - logvar.float()).mean(),
    }
    loss = sum(getattr(weights, name) * value for name, value in parts.items())
    return loss, {name: value.detach() for name, value in parts.items()}


@torch.no_grad()
def latent_statistics(vae: WanVAE, videos: list[torch.Tensor]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of the posterior means of `videos` (batches), for latent normalisation."""
    total = total_sq = None
    count = 0
    for video in videos:
        mu, _ = vae_moments(vae, video.to(vae.device, vae.dtype))
        flat = mu.double().transpose(0, 1).flatten(1)
        total = flat.sum(1) if total is None else total + flat.sum(1)
        total_sq = flat.square().sum(1) if total_sq is None else total_sq + flat.square().sum(1)
        count += flat.shape[1]
    mean = total / count
    std = (total_sq / count - mean.square()).clamp_min(1e-12).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def set_latent_statistics(vae: WanVAE, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
    """Make `vae.encode` return (mu - mean) / std and `decode` undo it."""
    vae.config = replace(vae.config, latent_mean=tuple(mean), latent_std=tuple(std))


@torch.no_grad()
def reconstruction_psnr(vae: WanVAE, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip PSNR (dB, mean over frames) of the inference encode/decode round trip, and the frames."""
    recon = vae.decode(vae.encode(video), chunk_frames=3).float().clamp(-1.0, 1.0)
    frames = recon.transpose(1, 2)
    return psnr(frames, video.float().transpose(1, 2).to(frames.device)).mean(dim=1), recon


def folded_state_dict(vae: WanVAE) -> dict[str, torch.Tensor]:
    """Weights whose Wan2.1 normalisation gives exactly this VAE's normalised latents.

    The per-channel affine change from our statistics to Wan2.1's is folded into the 1x1x1 convs
    `conv1` (posterior; the log-variance shifts by 2 log a) and `conv2`, so any Wan2.1 VAE loader
    (which normalises with the Wan2.1 constants) encodes and decodes this VAE correctly.
    """
    z_dim = vae.config.z_dim
    own_mean = torch.tensor(vae.config.latent_mean, dtype=torch.float64)
    own_std = torch.tensor(vae.config.latent_std, dtype=torch.float64)
    ref_mean = torch.tensor(WAN21_LATENT_MEAN, dtype=torch.float64)
    ref_std = torch.tensor(WAN21_LATENT_STD, dtype=torch.float64)
    state = {key: value.detach().to("cpu", torch.float64).clone() for key, value in vae.state_dict().items()}
    a = ref_std / own_std
    b = ref_mean - a * own_mean
    state["conv1.weight"][:z_dim] *= a.view(-1, 1, 1, 1, 1)
    state["conv1.bias"][:z_dim] = a * state["conv1.bias"][:z_dim] + b
    state["conv1.bias"][z_dim:] += 2.0 * torch.log(a)
    c = own_std / ref_std
    d = own_mean - c * ref_mean
    weight = state["conv2.weight"]
    state["conv2.bias"] = state["conv2.bias"] + weight[:, :, 0, 0, 0] @ d
    state["conv2.weight"] = weight * c.view(1, -1, 1, 1, 1)
    return state


def export_vae(vae: WanVAE, path: str, dtype: torch.dtype = torch.float16, folded_stats: str | None = None) -> None:
    """Save (on CPU) a standard Wan2.1-layout VAE file (statistics folded in) with its config as metadata.

    `folded_stats` is the metadata's record of the statistics folded in, for a VAE loaded from a file that
    already had them folded (its own config then holds Wan2.1's): pass that file's record on."""
    from safetensors.torch import save_file

    config = replace(vae.config, latent_mean=WAN21_LATENT_MEAN, latent_std=WAN21_LATENT_STD)
    own = json.dumps({"mean": vae.config.latent_mean, "std": vae.config.latent_std})
    metadata = {"config": json.dumps(config.to_dict()), "latent_stats_folded": folded_stats or own}
    tensors = {key: value.to(dtype).contiguous() for key, value in folded_state_dict(vae).items()}
    save_file(tensors, path, metadata=metadata)


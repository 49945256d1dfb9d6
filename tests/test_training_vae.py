"""VAE training: the training passes are the inference passes, the loss falls, the export is exact."""
from __future__ import annotations

from dataclasses import replace

import torch

from selfforcing_core.training.data import world_clips
from selfforcing_core.training.vae_training import (
    VAEAutoencoder,
    export_vae,
    folded_state_dict,
    init_posterior,
    latent_statistics,
    set_latent_statistics,
    vae_loss,
    vae_moments,
    vae_reconstruct,
)
from selfforcing_core.vae_loading import load_wan_vae
from selfforcing_core.wan_vae import WAN21_LATENT_MEAN, WAN21_LATENT_STD
from training_helpers import TOY_WORLD, toy_vae

_CONFIG9 = replace(TOY_WORLD, num_frames=9)


def test_whole_clip_training_passes_equal_chunked_inference():
    vae = toy_vae(dtype=torch.float64)
    set_latent_statistics(vae, tuple(0.1 * i for i in range(16)), tuple(1.0 + 0.05 * i for i in range(16)))
    video, _ = world_clips(0, range(2), _CONFIG9)
    video = video.double()
    mu, logvar = vae_moments(vae, video)
    mean = torch.tensor(vae.config.latent_mean, dtype=torch.float64).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latent_std, dtype=torch.float64).view(1, -1, 1, 1, 1)
    latents = vae.encode(video)
    assert latents.shape == (2, 16, 3, 4, 4) and logvar.shape == mu.shape
    torch.testing.assert_close((mu - mean) / std, latents, rtol=0, atol=1e-10)
    torch.testing.assert_close(vae_reconstruct(vae, mu), vae.decode(latents), rtol=0, atol=1e-10)


def test_a_few_vae_steps_lower_the_loss():
    vae = toy_vae()
    init_posterior(vae)
    autoencoder = VAEAutoencoder(vae)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=3e-3)
    video, _ = world_clips(0, range(2), TOY_WORLD)
    losses = []
    for step in range(8):
        loss, parts = vae_loss(autoencoder, video, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
        assert set(parts) == {"l1", "l2", "gradient", "kl"}
    assert losses[-1] < 0.8 * losses[0]
    assert all(p.grad is not None for p in vae.encoder.parameters())


def test_latent_statistics_normalise_to_unit_scale():
    vae = toy_vae(dtype=torch.float64)
    videos = [world_clips(0, range(i, i + 2), TOY_WORLD)[0].double() for i in (0, 2)]
    set_latent_statistics(vae, *latent_statistics(vae, videos))
    latents = torch.cat([vae.encode(video) for video in videos])
    per_channel = latents.transpose(0, 1).flatten(1)
    torch.testing.assert_close(per_channel.mean(1), torch.zeros(16, dtype=torch.float64), rtol=0, atol=1e-9)
    torch.testing.assert_close(per_channel.std(1, correction=0), torch.ones(16, dtype=torch.float64), rtol=0, atol=1e-9)


def test_folded_export_loads_as_a_standard_wan_vae(tmp_path):
    vae = toy_vae(dtype=torch.float64)
    set_latent_statistics(vae, tuple(0.3 - 0.02 * i for i in range(16)), tuple(0.5 + 0.1 * i for i in range(16)))
    path = str(tmp_path / "vae.safetensors")
    export_vae(vae, path, dtype=torch.float64)
    loaded = load_wan_vae(path, dtype=torch.float64)
    assert loaded.config.latent_mean == WAN21_LATENT_MEAN and loaded.config.latent_std == WAN21_LATENT_STD
    video, _ = world_clips(3, range(1), TOY_WORLD)
    latents = vae.encode(video.double())
    torch.testing.assert_close(loaded.encode(video.double()), latents, rtol=0, atol=1e-9)
    torch.testing.assert_close(loaded.decode(latents), vae.decode(latents), rtol=0, atol=1e-9)
    folded = folded_state_dict(vae)
    assert not torch.equal(folded["conv2.weight"], vae.conv2.weight.cpu())

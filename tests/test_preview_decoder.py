"""The TAEHV preview decoder: taew2_1 layout, frame rule, streaming == whole, shape-inferred loading."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from selfforcing_core.preview_decoder import MemBlock, TAEHVConfig, TAEHVDecoder, TGrow
from selfforcing_core.vae_loading import load_preview_decoder, load_video_decoder
from selfforcing_core.vae_stream import StreamingDecoder
from selfforcing_core.wan_vae import WanVAE, WanVAEConfig
from selfforcing_core.weights_io import CheckpointError

SMALL = TAEHVConfig(widths=(24, 16, 8, 8))


def _random_decoder(config: TAEHVConfig, dtype: torch.dtype = torch.float64, seed: int = 0) -> TAEHVDecoder:
    torch.manual_seed(seed)
    decoder = TAEHVDecoder(config).to(dtype)
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.normal_(0, 0.5 / parameter[0].numel() ** 0.5)
    return decoder


def test_taew2_1_decoder_layout():
    """The released taew2_1 decoder: Sequential indices and shapes its files use."""
    shapes = {key: tuple(value.shape) for key, value in TAEHVDecoder().state_dict().items()}
    assert shapes["decoder.1.weight"] == (256, 16, 3, 3)
    assert shapes["decoder.3.conv.0.weight"] == (256, 512, 3, 3)
    assert shapes["decoder.5.conv.4.bias"] == (256,)
    assert shapes["decoder.7.conv.weight"] == (256, 256, 1, 1)
    assert shapes["decoder.8.weight"] == (128, 256, 3, 3)
    assert shapes["decoder.13.conv.weight"] == (256, 128, 1, 1)
    assert shapes["decoder.19.conv.weight"] == (128, 64, 1, 1)
    assert shapes["decoder.22.weight"] == (3, 64, 3, 3)
    assert "decoder.8.bias" not in shapes and "decoder.22.bias" in shapes
    assert len(shapes) == 2 + 9 * 6 + 3 + 3 + 2


def test_frame_rule_matches_the_wan_vae():
    decoder = _random_decoder(SMALL, torch.float32)
    frames = decoder.decode(torch.randn(1, 16, 5, 4, 6))
    assert frames.shape == (1, 3, 17, 32, 48)
    wan = WanVAEConfig()
    assert [decoder.frames_for_latents(n) for n in (1, 2, 5)] == [wan.frames_for_latents(n) for n in (1, 2, 5)]


@pytest.mark.parametrize("split", [[1] * 8, [3, 3, 2], [7, 1]], ids=["1", "3", "7"])
def test_streaming_equals_whole(split):
    decoder = _random_decoder(SMALL)
    latents = torch.randn(2, 16, 8, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    whole = decoder.decode(latents)
    stream = StreamingDecoder(decoder)
    pieces = [stream.decode_chunk(chunk) for chunk in latents.split(split, dim=2)]
    assert [piece.shape[2] for piece in pieces] == [4 * n - (3 if i == 0 else 0) for i, n in enumerate(split)]
    assert (torch.cat(pieces, dim=2) - whole).abs().max().item() < 1e-12


def test_whole_decode_equals_a_time_parallel_taehv_pass():
    """Cross-check against TAEHV's own recipe: memory = the previous frame, zero-padded, and trim 3."""
    decoder = _random_decoder(SMALL)
    latents = torch.randn(1, 16, 3, 2, 2, dtype=torch.float64)
    x = latents.transpose(1, 2).flatten(0, 1)
    for layer in decoder.decoder:
        if isinstance(layer, MemBlock):
            frames = x.unflatten(0, (1, -1))
            past = F.pad(frames, (0, 0, 0, 0, 0, 0, 1, 0))[:, :-1].flatten(0, 1)
            x = torch.relu(layer.conv(torch.cat([x, past], 1)) + x)
        elif isinstance(layer, TGrow):
            x = layer.conv(x).reshape(-1, x.shape[1], *x.shape[2:])
        else:
            x = layer(x)
    expected = x.unflatten(0, (1, -1))[:, 3:].transpose(1, 2) * 2 - 1
    assert (decoder.decode(latents) - expected).abs().max().item() < 1e-12


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_loading_infers_the_config_and_ignores_the_encoder(tmp_path, suffix):
    config = TAEHVConfig(widths=(32, 16, 8, 8), time_upscale=(1, 2, 1))
    source = _random_decoder(config, torch.float16)
    weights = dict(source.state_dict())
    weights["encoder.0.weight"] = torch.zeros(64, 3, 3, 3, dtype=torch.float16)
    path = tmp_path / f"taew2_1{suffix}"
    if suffix == ".pth":
        torch.save(weights, path)
    else:
        save_file(weights, str(path))
    for loaded in (load_preview_decoder(path, dtype=torch.float32), load_video_decoder(path, dtype=torch.float32)):
        assert isinstance(loaded, TAEHVDecoder) and loaded.config == config and loaded.dtype == torch.float32
        latents = torch.randn(1, 16, 3, 2, 2)
        assert loaded.decode(latents).shape == (1, 3, 2 * 3 - 1, 16, 16)
        assert (loaded.decode(latents) - source.float().decode(latents)).abs().max().item() < 1e-5


def test_wrong_files_given_as_preview_decoder(tmp_path):
    with torch.device("meta"):
        vae_keys = WanVAE(WanVAEConfig(dim=4)).state_dict()
    vae_weights = {key: torch.zeros(value.shape) for key, value in vae_keys.items()}
    save_file(vae_weights, str(tmp_path / "wan_2.1_vae.safetensors"))
    with pytest.raises(CheckpointError, match="looks like a Wan2.1 VAE, not a TAEHV decoder"):
        load_preview_decoder(tmp_path / "wan_2.1_vae.safetensors")
    wan22 = TAEHVDecoder(TAEHVConfig(latent_channels=48, widths=(16, 8, 8, 8), patch_size=2))
    torch.save(wan22.state_dict(), tmp_path / "taew2_2.pth")
    with pytest.raises(CheckpointError, match="48-channel latents; Wan2.1 needs 16"):
        load_preview_decoder(tmp_path / "taew2_2.pth")

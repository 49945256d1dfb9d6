"""The Wan VAE: golden replay, streaming == whole decode, bounded streaming memory, loading, bad files."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from replay_vae import replay
from selfforcing_core.vae_loading import (
    diffusers_to_original,
    infer_wan_vae_config,
    load_video_decoder,
    load_wan_vae,
    wan_vae_from_state_dict,
)
from selfforcing_core.vae_stream import StreamingDecoder
from selfforcing_core.wan_vae import CausalConv3d, RMSNorm, WanVAE, WanVAEConfig
from selfforcing_core.weights_io import CheckpointError
from tensor_memory import PeakTensorMemory

GOLDEN = Path(__file__).parent / "golden"
CASE = GOLDEN / "wan_vae_tiny.safetensors"


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_file(str(CASE))


@pytest.fixture(scope="module")
def golden_weights(golden) -> dict[str, torch.Tensor]:
    return {key[len("weight."):]: value for key, value in golden.items() if key.startswith("weight.")}


@pytest.fixture(scope="module")
def vae64(golden_weights) -> WanVAE:
    return wan_vae_from_state_dict(golden_weights, dtype=torch.float64)


def test_golden_replay_matches_reference():
    with safe_open(str(CASE), framework="pt") as handle:
        meta = json.loads(handle.metadata()["meta"])
    assert meta == json.loads((GOLDEN / "wan_vae_tiny.json").read_text())
    assert replay(str(CASE), meta) < 1e-8


def test_config_is_read_off_the_golden_shapes(golden_weights):
    meta = json.loads((GOLDEN / "wan_vae_tiny.json").read_text())["vae"]
    config = infer_wan_vae_config(golden_weights)
    assert config == WanVAEConfig.from_dict(meta)
    assert (config.spatial_factor, config.temporal_factor) == (8, 4)


@pytest.mark.parametrize(
    "config",
    [
        WanVAEConfig(dim=24),
        WanVAEConfig(dim=4, dim_mult=(1, 2, 3), num_res_blocks=3, temperal_downsample=(True, False)),
        WanVAEConfig(dim=4, dim_mult=(1, 2, 2, 2), num_res_blocks=1, attn_scales=(1.0, 0.25)),
    ],
    ids=["lightvae-width", "3-stage", "attention"],
)
def test_config_inference_covers_other_shapes(config):
    """Pruned (LightX2V's lightvaew2_1 is dim 24), shallower and attention-bearing VAEs are read off their shapes."""
    with torch.device("meta"):
        state_dict = WanVAE(config).state_dict()
    assert infer_wan_vae_config(state_dict) == config


@pytest.fixture(scope="module")
def unseen_video(vae64) -> tuple[torch.Tensor, torch.Tensor]:
    """An unseen case on the golden weights: a fresh 8-frame latent video and its one-pass decode."""
    latents = torch.randn(1, 16, 8, 2, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    return latents, vae64.decode(latents, chunk_frames=8)


@pytest.mark.parametrize("split", [[1] * 8, [3, 3, 2], [7, 1]], ids=["1", "3", "7"])
def test_streaming_decode_equals_whole_decode(vae64, unseen_video, split):
    latents, whole = unseen_video
    assert whole.shape == (1, 3, 1 + 4 * 7, 16, 16)
    stream = StreamingDecoder(vae64)
    pieces = [stream.decode_chunk(chunk) for chunk in latents.split(split, dim=2)]
    assert [piece.shape[2] for piece in pieces] == [4 * n - (3 if i == 0 else 0) for i, n in enumerate(split)]
    assert (torch.cat(pieces, dim=2) - whole).abs().max().item() < 1e-12


def test_attention_stages_stream_too():
    """attn_scales (unused by Wan2.1, and beyond the reference code) still give chunked == whole."""
    torch.manual_seed(3)
    vae = WanVAE(WanVAEConfig(dim=4, dim_mult=(1, 2, 2), num_res_blocks=1, attn_scales=(1.0, 0.5),
                              temperal_downsample=(True, True))).double().eval()
    latents = torch.randn(2, 16, 4, 2, 3, dtype=torch.float64)
    stream = StreamingDecoder(vae)
    streamed = torch.cat([stream.decode_chunk(chunk) for chunk in latents.split([1, 3], dim=2)], dim=2)
    assert streamed.shape == (2, 3, 13, 8, 12)
    assert (streamed - vae.decode(latents, chunk_frames=4)).abs().max().item() < 1e-12
    assert vae.encode(streamed.clamp(-1, 1)).shape == latents.shape


def test_stream_reset_starts_a_new_video(vae64, golden):
    stream = StreamingDecoder(vae64)
    stream.decode_chunk(torch.randn(1, 16, 2, 4, 6, dtype=torch.float64))
    stream.reset()
    frames = torch.cat([stream.decode_chunk(chunk) for chunk in golden["latent"].split([2, 3], dim=2)], dim=2)
    assert (frames - golden["decoded"]).abs().max().item() < 1e-8
    assert (stream.latent_frames_seen, stream.frames_emitted) == (5, 17)


def test_streaming_memory_is_bounded_by_the_chunk():
    """Peak tensor memory of a 10x longer streamed video (10 chunks of 3 latent frames) stays within 1.5x of 1 chunk.

    Measured with `PeakTensorMemory` (every storage an aten op allocates, tracked until the storage
    is freed). The frames each chunk returns are dropped, as a consumer that shows or writes them
    does. The 1x video's only chunk is its first, which decodes to 9 frames instead of 12; the rest
    of the gap is the causal state, which must not grow. The same probe sees a one-pass decode of
    the long video grow with its length, which shows the measurement is sensitive to what it checks.
    """
    torch.manual_seed(0)
    vae = WanVAE(WanVAEConfig(dim=4, dim_mult=(1, 1, 2, 2), num_res_blocks=1)).eval()

    def streamed_peak(chunks: int) -> tuple[int, int]:
        latents = [torch.randn(1, 16, 3, 2, 2) for _ in range(chunks)]
        stream = StreamingDecoder(vae)
        with PeakTensorMemory() as probe:
            for chunk in latents:
                stream.decode_chunk(chunk)
        return probe.peak, stream.state_nbytes()

    short_peak, short_state = streamed_peak(1)
    long_peak, long_state = streamed_peak(10)
    assert long_state == short_state > 0
    assert long_peak <= 1.5 * short_peak
    with PeakTensorMemory() as one_pass:
        vae.decode(torch.randn(1, 16, 30, 2, 2), chunk_frames=30)
    assert one_pass.peak > 4 * long_peak


def test_full_size_key_layout_equals_reference():
    reference = json.loads((GOLDEN / "reference_key_layouts.json").read_text())["models"]["wan2.1_vae"]
    with torch.device("meta"):
        vae = WanVAE()
    assert {key: list(value.shape) for key, value in vae.state_dict().items()} == reference["keys"]
    assert sum(p.numel() for p in vae.parameters()) == reference["params"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_loads_original_and_comfyui_files_in_any_precision(tmp_path, golden, golden_weights, dtype):
    """Wan2.1_VAE.pth (pickle) and wan_2.1_vae.safetensors (ComfyUI: same key names) in fp32/fp16/bf16."""
    cast = {key: value.to(dtype) for key, value in golden_weights.items()}
    torch.save(cast, tmp_path / "Wan2.1_VAE.pth")
    save_file(cast, str(tmp_path / "wan_2.1_vae.safetensors"))
    tolerance = {torch.float32: 1e-4, torch.float16: 0.05, torch.bfloat16: 0.3}[dtype]
    for name in ("Wan2.1_VAE.pth", "wan_2.1_vae.safetensors"):
        vae = load_wan_vae(tmp_path / name)
        assert isinstance(load_video_decoder(tmp_path / name), WanVAE)
        assert vae.dtype == dtype and vae.config == infer_wan_vae_config(golden_weights)
        frames = vae.decode(golden["latent"][:, :, :1])
        assert frames.dtype == dtype and torch.isfinite(frames).all()
        assert (frames.double() - golden["decoded"][:, :, :1]).abs().max().item() < tolerance


def test_rms_norm_survives_fp16_activations():
    """Activations whose squares overflow fp16 (sum of 384 x 300^2 > 65504) still normalise correctly."""
    norm = RMSNorm(384, 3)
    x = torch.full((1, 384, 1, 2, 2), 300.0)
    x[:, ::2] = -300.0
    expected = norm.double()(x.double())
    got = norm.half()(x.half())
    assert torch.isfinite(got).all()
    assert (got.double() - expected).abs().max().item() < 1e-2


def test_loads_diffusers_layout(golden_weights, golden):
    diffusers = {_diffusers_name(key): value for key, value in golden_weights.items()}
    assert "decoder.up_blocks.1.resnets.0.conv_shortcut.weight" in diffusers
    vae = wan_vae_from_state_dict(diffusers, dtype=torch.float64)
    frames = vae.decode(golden["latent"][:, :, :2])
    assert (frames - golden["decoded"][:, :, :5]).abs().max().item() < 1e-12


def test_diffusers_names_of_the_full_size_vae_map_back_exactly():
    reference = json.loads((GOLDEN / "reference_key_layouts.json").read_text())["models"]["wan2.1_vae"]["keys"]
    diffusers = {_diffusers_name(key): torch.empty(0) for key in reference}
    assert len(diffusers) == len(reference)
    assert set(diffusers_to_original(diffusers)) == set(reference)


def test_encode_takes_1_plus_4k_frames(vae64):
    with pytest.raises(ValueError, match=r"1 \+ 4k frames"):
        vae64.encode(torch.zeros(1, 3, 4, 16, 16, dtype=torch.float64))
    with pytest.raises(ValueError, match="multiples of 8"):
        vae64.encode(torch.zeros(1, 3, 1, 12, 16, dtype=torch.float64))


def test_frame_major_latents_get_a_hint(vae64):
    with pytest.raises(ValueError, match="frame-major"):
        vae64.decode(torch.zeros(1, 3, 16, 4, 4, dtype=torch.float64))


def _fake_dit() -> dict[str, torch.Tensor]:
    """A tiny tensor set with the key names of a Wan2.1 DiT."""
    return {
        "patch_embedding.weight": torch.zeros(8, 16, 1, 2, 2),
        "blocks.0.self_attn.q.weight": torch.zeros(8, 8),
        "blocks.0.cross_attn.k.weight": torch.zeros(8, 8),
        "head.modulation": torch.zeros(1, 2, 8),
    }


def test_dit_file_given_as_vae_is_refused(tmp_path):
    save_file(_fake_dit(), str(tmp_path / "wan2.1_t2v_1.3B.safetensors"))
    with pytest.raises(CheckpointError,
                       match=r"looks like a Wan text-to-video diffusion transformer \(DiT\), .*expected the Wan2.1 VAE"):
        load_wan_vae(tmp_path / "wan2.1_t2v_1.3B.safetensors")
    comfy = {"model.diffusion_model." + key: value for key, value in _fake_dit().items()}
    save_file(comfy, str(tmp_path / "comfy_dit.safetensors"))
    with pytest.raises(CheckpointError, match="diffusion transformer"):
        load_video_decoder(tmp_path / "comfy_dit.safetensors")


def test_self_forcing_checkpoint_and_text_encoder_given_as_vae_are_refused(tmp_path):
    generator = {"model." + key: value for key, value in _fake_dit().items()}
    torch.save({"generator_ema": generator}, tmp_path / "self_forcing_dmd.pt")
    with pytest.raises(CheckpointError, match="Self-Forcing"):
        load_wan_vae(tmp_path / "self_forcing_dmd.pt")
    umt5 = {"token_embedding.weight": torch.zeros(4, 2), "blocks.0.attn.q.weight": torch.zeros(2, 2)}
    save_file(umt5, str(tmp_path / "umt5.safetensors"))
    with pytest.raises(CheckpointError, match="text encoder"):
        load_wan_vae(tmp_path / "umt5.safetensors")


def _diffusers_name(key: str) -> str:
    """The diffusers AutoencoderKLWan name of an original Wan2.1 VAE key, spelled out independently.

    Four stages, each up block of 3 resnets and an upsampler (indices 0-2 / 3, 4-6 / 7, ...), as
    diffusers' own `convert_wan_vae_to_diffusers` lays them out.
    """
    resnet = {"residual.0.gamma": "norm1.gamma", "residual.2.weight": "conv1.weight", "residual.2.bias": "conv1.bias",
              "residual.3.gamma": "norm2.gamma", "residual.6.weight": "conv2.weight", "residual.6.bias": "conv2.bias",
              "shortcut.weight": "conv_shortcut.weight", "shortcut.bias": "conv_shortcut.bias"}
    fixed = {"encoder.conv1.": "encoder.conv_in.", "decoder.conv1.": "decoder.conv_in.",
             "encoder.head.0.": "encoder.norm_out.", "encoder.head.2.": "encoder.conv_out.",
             "decoder.head.0.": "decoder.norm_out.", "decoder.head.2.": "decoder.conv_out.",
             "conv1.": "quant_conv.", "conv2.": "post_quant_conv."}
    for old, new in fixed.items():
        if key.startswith(old):
            return new + key[len(old):]
    part, group, index, rest = key.split(".", 3)
    index = int(index)
    if group == "middle":
        where = "attentions.0" if index == 1 else f"resnets.{index // 2}"
        return f"{part}.mid_block.{where}.{resnet.get(rest, rest)}"
    if group == "downsamples":
        return f"encoder.down_blocks.{index}.{resnet.get(rest, rest)}"
    block, slot = divmod(index, 4)
    where = "upsamplers.0" if slot == 3 else f"resnets.{slot}"
    return f"decoder.up_blocks.{block}.{where}.{resnet.get(rest, rest)}"


def _conv_and_grads(conv: CausalConv3d, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = x.clone().requires_grad_(True)
    conv.zero_grad()
    out = conv(x)
    out.square().sum().backward()
    return out.detach(), x.grad, conv.weight.grad.clone()


@pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN")  # said by mkldnn.flags() itself
def test_small_float32_convolutions_through_onednn_equal_the_plain_kernel():
    """The CPU fast path (oneDNN for the small 3D convolutions PyTorch would run im2col on) gives the plain
    kernel's outputs and gradients, also under torch.compile, where it stands aside."""
    torch.manual_seed(0)
    conv = CausalConv3d(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 4, 8, 8)
    with torch.backends.mkldnn.flags(enabled=False):
        plain = _conv_and_grads(conv, x)
    fast = _conv_and_grads(conv, x)
    compiled = _conv_and_grads(torch.compile(conv, backend="aot_eager"), x)
    for got in (fast, compiled):
        for a, b in zip(got, plain):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_cpu_channel_norm_equals_the_vector_norm_and_has_finite_gradients_at_zero():
    torch.manual_seed(0)
    norm = RMSNorm(6, 3)
    x = torch.randn(2, 6, 3, 4, 4)
    x[0, :, 1, 2, 2] = 0.0  # one pixel whose channels are all zero
    x.requires_grad_(True)
    out = norm(x)
    expected = x * (6**0.5 / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(1e-12))
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()

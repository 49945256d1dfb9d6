"""Loading transformers from every supported layout, and clear errors for every wrong file."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch
from safetensors.torch import save_file

from selfforcing_core.checkpoint import load_transformer, save_transformer
from selfforcing_core.config import CausalSettings, WanConfig
from selfforcing_core.weights_io import CheckpointError

from tiny_models import TINY, tiny_model

# head_dim 128 like every released Wan size, and text_len 512 as Wan (neither is stored in the weights)
HEADS128 = WanConfig(dim=256, ffn_dim=64, num_heads=2, num_layers=1, text_dim=32, text_len=512, freq_dim=16)


def _inputs(config: WanConfig = TINY):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 3, 4, 4, generator=g)
    t = torch.full((1, 3), 700.0)
    context = torch.randn(1, 4, config.text_dim, generator=g)
    return x, t, context


def _reference_output(model, config: WanConfig = TINY):
    x, t, context = _inputs(config)
    return model.float()(x, t, context)


def _state(model):
    return {k: v.detach().float().clone() for k, v in model.state_dict().items()}


def _config_meta(config: WanConfig = TINY) -> dict:
    return {"config": json.dumps(config.to_dict())}


def test_official_pt_prefers_ema_and_strips_model_prefix(tmp_path):
    ema, raw = tiny_model(seed=1), tiny_model(seed=2)
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator_ema": {f"model.{k}": v for k, v in _state(ema).items()},
                "generator": {f"model.{k}": v for k, v in _state(raw).items()}}, path)
    # a bare .pt carries no config; give the tiny model a shape-inferable size instead
    with pytest.raises(CheckpointError, match="unknown model size"):
        load_transformer(str(path), dtype=torch.float32)
    big_ema, big_raw = tiny_model(HEADS128, seed=1), tiny_model(HEADS128, seed=2)
    torch.save({"generator_ema": {f"model.{k}": v for k, v in _state(big_ema).items()},
                "generator": {f"model.{k}": v for k, v in _state(big_raw).items()}}, path)
    loaded = load_transformer(str(path), dtype=torch.float32)
    assert loaded.config.num_heads == 2 and loaded.family.name == "self_forcing"
    assert loaded.settings.chunk_frames == 3
    x, t, context = _inputs(HEADS128)
    torch.testing.assert_close(loaded.model(x, t, context), _reference_output(big_ema, HEADS128))
    not_ema = load_transformer(str(path), dtype=torch.float32, use_ema=False)
    torch.testing.assert_close(not_ema.model(x, t, context), _reference_output(big_raw, HEADS128))


@pytest.mark.parametrize("prefix", ["", "model.diffusion_model."])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_comfyui_safetensors_in_every_precision(tmp_path, prefix, dtype):
    model = tiny_model()
    path = tmp_path / "causal_forcing_framewise.safetensors"
    save_file({prefix + k: v.to(dtype) for k, v in _state(model).items()}, str(path), metadata=_config_meta())
    loaded = load_transformer(str(path), dtype=torch.float32)
    assert loaded.family.name == "causal_forcing_framewise" and loaded.settings.chunk_frames == 1
    tolerance = {torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    x, t, context = _inputs()
    assert (loaded.model(x, t, context) - _reference_output(model)).abs().max() < tolerance


def test_scaled_fp8_weights_are_dequantised(tmp_path):
    model = tiny_model()
    state = _state(model)
    quantised = {}
    for key, value in state.items():
        if key.endswith(".weight") and value.dim() == 2:
            scale = value.abs().max() / 448.0
            quantised[key] = (value / scale).to(torch.float8_e4m3fn)
            quantised[key[: -len("weight")] + "scale_weight"] = scale.reshape(1)
        else:
            quantised[key] = value
    quantised["scaled_fp8"] = torch.zeros(0, dtype=torch.float8_e4m3fn)
    path = tmp_path / "model_fp8_e4m3fn_scaled.safetensors"
    save_file(quantised, str(path), metadata=_config_meta())
    loaded = load_transformer(str(path), dtype=torch.bfloat16)
    assert loaded.model.dtype == torch.bfloat16
    for key, value in state.items():
        err = (loaded.model.state_dict()[key].float() - value).abs().max()
        assert err <= value.abs().max() * 0.07, key


def test_our_files_round_trip_config_and_settings(tmp_path):
    model = tiny_model()
    path = tmp_path / "ours.safetensors"
    settings = CausalSettings(chunk_frames=2, local_window=8, sink_frames=2, denoising_steps=(1000, 500))
    save_transformer(model, str(path), settings, family="self_forcing")
    loaded = load_transformer(str(path), dtype=torch.float64)
    assert loaded.config == TINY and loaded.settings == settings
    x, t, context = _inputs()
    torch.testing.assert_close(loaded.model(x.double(), t, context.double()),
                               model.double()(x.double(), t, context.double()), rtol=0, atol=1e-12)


def _fake(tmp_path, name, tensors):
    path = tmp_path / name
    save_file(tensors, str(path))
    return str(path)


def test_vae_file_given_as_transformer(tmp_path):
    path = _fake(tmp_path, "wan_2.1_vae.safetensors", {"encoder.conv1.weight": torch.zeros(96, 3, 3, 3, 3),
                                                       "decoder.conv1.weight": torch.zeros(384, 16, 3, 3, 3)})
    with pytest.raises(CheckpointError,
                       match="wan_2.1_vae.safetensors: this looks like a Wan2.1 VAE, .*load it with the VAE loader"):
        load_transformer(path)


def test_text_encoder_file_given_as_transformer(tmp_path):
    path = _fake(tmp_path, "umt5_xxl_fp16.safetensors",
                 {"encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(4, 4), "shared.weight": torch.zeros(8, 4)})
    with pytest.raises(CheckpointError,
                       match="umt5_xxl_fp16.safetensors: this looks like a T5 / umT5 text encoder, .*text encoder loader"):
        load_transformer(path)


def test_image_to_video_model_is_refused(tmp_path):
    state = _state(tiny_model())
    state["patch_embedding.weight"] = torch.zeros(TINY.dim, 36, 1, 2, 2)
    state["img_emb.proj.0.weight"] = torch.zeros(4)
    path = _fake(tmp_path, "wan2.1_i2v_480p.safetensors", state)
    with pytest.raises(CheckpointError, match="image-to-video"):
        load_transformer(path)


def test_truncated_file(tmp_path):
    model = tiny_model()
    path = tmp_path / "self_forcing.safetensors"
    save_file(_state(model), str(path), metadata=_config_meta())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_transformer(str(path))


def test_truncated_pickle(tmp_path):
    path = tmp_path / "self_forcing_dmd.pt"
    torch.save({"generator_ema": _state(tiny_model())}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match="self_forcing_dmd.pt: file is truncated or damaged"):
        load_transformer(str(path))


def test_missing_key_is_named(tmp_path):
    state = _state(tiny_model())
    del state["blocks.1.cross_attn.k.weight"]
    path = _fake(tmp_path, "broken.safetensors", state)
    save_file(state, path, metadata=_config_meta())
    with pytest.raises(CheckpointError, match=r"missing 1 key\(s\): blocks.1.cross_attn.k.weight"):
        load_transformer(path)


def test_unknown_size_without_metadata(tmp_path):
    path = _fake(tmp_path, "custom.safetensors", _state(tiny_model()))
    with pytest.raises(CheckpointError, match=r"unknown model size \(dim 64\)"):
        load_transformer(path)


def test_arbitrary_pickled_objects_are_never_loaded(tmp_path):
    path = tmp_path / "evil.pt"

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(path, "wb") as handle:
        pickle.dump({"generator_ema": Payload()}, handle)
    with pytest.raises(CheckpointError, match="evil.pt: refused|evil.pt: cannot be read"):
        load_transformer(str(path))


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        load_transformer(str(tmp_path / "nope.safetensors"))
    odd = tmp_path / "weights.gguf"
    odd.write_bytes(b"GGUF")
    with pytest.raises(CheckpointError, match="unknown weight format"):
        load_transformer(str(odd))

"""The umT5 encoder: golden replay, full-size key layout, loading every file layout, bad input."""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from replay_umt5 import replay, tolerance
from selfforcing_core.text_encoder import UMT5_XXL, TextEncoder, UMT5Config, UMT5Encoder
from selfforcing_core.text_encoder_loading import load_text_encoder, read_umt5_checkpoint
from selfforcing_core.tokenizers import ByteTokenizer, PromptWarning
from selfforcing_core.weights_io import CheckpointError
from umt5_helpers import TINY, comfy_names, fp8_scaled, random_encoder

GOLDEN = os.path.join(os.path.dirname(__file__), "golden")
PROMPTS = ["A cat walks along the river bank at sunset.", "dog"]
SHORT = 64  # text_len for tests about loading, where 512 would only cost time


def _meta(name: str) -> dict:
    with open(os.path.join(GOLDEN, name + ".json")) as handle:
        return json.load(handle)


def test_golden_umt5_replay_matches_reference():
    error = replay(os.path.join(GOLDEN, "umt5_tiny.safetensors"), _meta("umt5_tiny"))
    assert error < tolerance()


def test_full_size_umt5_xxl_layout_equals_reference():
    with open(os.path.join(GOLDEN, "reference_key_layouts.json")) as handle:
        reference = json.load(handle)["models"]["umt5_xxl_encoder"]
    with torch.device("meta"):
        encoder = UMT5Encoder(UMT5_XXL)
    ours = {name: list(param.shape) for name, param in encoder.state_dict().items()}
    assert ours == reference["keys"]
    assert sum(param.numel() for param in encoder.parameters()) == reference["params"]


def test_shared_position_bias_layout_is_t5():
    shared = UMT5Encoder(UMT5Config(vocab=10, dim=8, dim_attn=8, dim_ffn=8, num_heads=2, num_layers=2, shared_pos=True))
    per_layer = UMT5Encoder(UMT5Config(vocab=10, dim=8, dim_attn=8, dim_ffn=8, num_heads=2, num_layers=2))
    assert [k for k in shared.state_dict() if "pos_embedding" in k] == ["pos_embedding.embedding.weight"]
    assert [k for k in per_layer.state_dict() if "pos_embedding" in k] == [
        "blocks.0.pos_embedding.embedding.weight", "blocks.1.pos_embedding.embedding.weight",
    ]


def test_padding_is_zeroed_and_does_not_change_real_tokens():
    encoder = random_encoder()
    ids = torch.randint(3, TINY.vocab, (1, 7))
    short_mask = torch.ones(1, 7, dtype=torch.long)
    padded_ids = torch.cat([ids, torch.zeros(1, 9, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([short_mask, torch.zeros(1, 9, dtype=torch.long)], dim=1)
    with torch.no_grad():
        short, padded = encoder(ids, short_mask), encoder(padded_ids, padded_mask)
    torch.testing.assert_close(padded[:, :7], short, rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(padded[:, 7:]) == 0
    assert torch.count_nonzero(short) > 0


def test_text_encoder_returns_lengths_mask_and_accepts_ids():
    text_encoder = TextEncoder(random_encoder(), ByteTokenizer())
    out = text_encoder(PROMPTS)
    assert out.embeddings.shape == (2, 512, TINY.dim)
    assert out.lengths.tolist() == [len(PROMPTS[0]) + 1, len(PROMPTS[1]) + 1]
    assert out.mask.sum(dim=1).tolist() == out.lengths.tolist()
    batch = ByteTokenizer()(PROMPTS)
    again = text_encoder.encode_ids(batch.ids, batch.mask)
    assert torch.equal(again.embeddings, out.embeddings)


def test_empty_mask_row_is_refused():
    with pytest.raises(ValueError, match="at least one real token"):
        random_encoder()(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))


def test_the_encoder_compiles_without_a_graph_break():
    """Compiled teacher training traces the encoder whole: the empty-row check, which reads the mask back
    from the device, stays out of the graph."""
    encoder = random_encoder()
    batch = ByteTokenizer()(PROMPTS)
    compiled = torch.compile(encoder, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(batch.ids, batch.mask), encoder(batch.ids, batch.mask), rtol=0, atol=0)


def _write_original(tmp_path, encoder: UMT5Encoder) -> str:
    path = str(tmp_path / "models_t5_umt5-xxl-enc-bf16.pth")
    torch.save(encoder.state_dict(), path)
    return path


def _write_comfy(tmp_path, state_dict: dict[str, torch.Tensor], name: str = "umt5_xxl_fp16.safetensors") -> str:
    path = str(tmp_path / name)
    save_file({key: value.contiguous() for key, value in state_dict.items()}, path)
    return path


def test_original_pth_and_comfy_safetensors_give_identical_outputs(tmp_path):
    encoder = random_encoder()
    original = load_text_encoder(_write_original(tmp_path, encoder), dtype=torch.float32, text_len=SHORT)
    comfy_path = _write_comfy(tmp_path, comfy_names(encoder.state_dict(), TINY.num_layers))
    comfy = load_text_encoder(comfy_path, dtype=torch.float32, text_len=SHORT)
    assert comfy.encoder.config == TINY
    reference = TextEncoder(encoder, ByteTokenizer(SHORT))(PROMPTS).embeddings
    assert torch.equal(original(PROMPTS).embeddings, reference)
    assert torch.equal(comfy(PROMPTS).embeddings, reference)


def test_prefixed_comfy_keys_and_tied_embedding_copy_load(tmp_path):
    encoder = random_encoder()
    named = comfy_names(encoder.state_dict(), TINY.num_layers)
    named["encoder.embed_tokens.weight"] = named["shared.weight"]
    prefixed = {"text_encoders.umt5xxl.transformer." + key: value.clone() for key, value in named.items()}
    loaded = load_text_encoder(_write_comfy(tmp_path, prefixed), dtype=torch.float32, text_len=SHORT)
    assert torch.equal(loaded(PROMPTS).embeddings, TextEncoder(encoder, ByteTokenizer(SHORT))(PROMPTS).embeddings)


def test_t5_with_one_shared_bias_table_loads_as_shared(tmp_path):
    config = UMT5Config(vocab=259, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=3, shared_pos=True)
    encoder = random_encoder(config)
    named = comfy_names(
        {**encoder.state_dict(), **{f"blocks.{i}.pos_embedding.embedding.weight": encoder.pos_embedding.embedding.weight for i in range(3)}},
        3,
    )
    for i in (1, 2):
        del named[f"encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"]
    loaded = load_text_encoder(_write_comfy(tmp_path, named), dtype=torch.float32, text_len=SHORT)
    assert loaded.encoder.config.shared_pos
    assert torch.equal(loaded(PROMPTS).embeddings, TextEncoder(encoder, ByteTokenizer(SHORT))(PROMPTS).embeddings)


def test_fp8_scaled_file_loads_and_is_close(tmp_path):
    encoder = random_encoder()
    path = _write_comfy(tmp_path, fp8_scaled(comfy_names(encoder.state_dict(), TINY.num_layers)), "umt5_xxl_fp8_e4m3fn_scaled.safetensors")
    loaded = load_text_encoder(path, dtype=torch.float32, text_len=SHORT)
    weight = loaded.encoder.blocks[0].ffn.fc1.weight
    exact = encoder.blocks[0].ffn.fc1.weight
    assert not torch.equal(weight, exact)
    assert (weight - exact).abs().max() < 0.07 * exact.abs().max()
    ours, reference = loaded(PROMPTS).embeddings, TextEncoder(encoder, ByteTokenizer(SHORT))(PROMPTS).embeddings
    relative = (ours - reference).norm() / reference.norm()
    assert relative < 0.1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_runs_on_cpu_and_is_close(tmp_path, dtype):
    encoder = random_encoder()
    loaded = load_text_encoder(_write_original(tmp_path, encoder), dtype=dtype, text_len=SHORT)
    assert loaded.encoder.token_embedding.weight.dtype == dtype
    out = loaded(PROMPTS).embeddings
    assert out.dtype == dtype
    reference = TextEncoder(encoder, ByteTokenizer(SHORT))(PROMPTS).embeddings
    assert (out.float() - reference).norm() / reference.norm() < 0.1


def test_float16_survives_activations_beyond_its_range():
    encoder = random_encoder()
    with torch.no_grad():
        encoder.blocks[0].ffn.fc2.weight.mul_(30000.0)
    batch = ByteTokenizer(SHORT)(PROMPTS)
    ids, mask = batch.ids, batch.mask
    with torch.no_grad():
        reference = encoder(ids, mask)
        assert reference.abs().max() < 1e3
        residual_peak = encoder.blocks[0].ffn(encoder.blocks[0].norm2(encoder.token_embedding(ids))).abs().max()
        assert residual_peak > torch.finfo(torch.float16).max
        half = encoder.half()(ids, mask)
    assert torch.isfinite(half).all()
    assert (half.float() - reference).norm() / reference.norm() < 0.05


def test_dit_file_is_rejected_with_what_it_is(tmp_path):
    path = str(tmp_path / "wan2.1_t2v_1.3B_fp16.safetensors")
    save_file({
        "model.diffusion_model.patch_embedding.weight": torch.zeros(8, 16, 1, 2, 2),
        "model.diffusion_model.blocks.0.self_attn.q.weight": torch.zeros(8, 8),
        "model.diffusion_model.blocks.0.cross_attn.k.weight": torch.zeros(8, 8),
    }, path)
    with pytest.raises(CheckpointError, match=r"diffusion transformer \(DiT\).*expected a umT5 text encoder"):
        load_text_encoder(path)


def test_vae_file_is_rejected_with_what_it_is(tmp_path):
    path = str(tmp_path / "wan_2.1_vae.safetensors")
    save_file({
        "encoder.conv1.weight": torch.zeros(4, 3, 3, 3, 3),
        "decoder.conv1.weight": torch.zeros(4, 16, 3, 3, 3),
        "decoder.upsamples.0.residual.0.gamma": torch.zeros(4, 1, 1, 1),
    }, path)
    with pytest.raises(CheckpointError, match=r"Wan2.1 VAE.*expected a umT5 text encoder"):
        load_text_encoder(path)


def test_self_forcing_training_checkpoint_is_rejected(tmp_path):
    path = str(tmp_path / "self_forcing_dmd.pt")
    torch.save({"generator_ema": {"model.patch_embedding.weight": torch.zeros(2)}}, path)
    with pytest.raises(CheckpointError, match=r"training checkpoint with sections \['generator_ema'\]"):
        load_text_encoder(path)


def test_unrelated_file_is_rejected(tmp_path):
    path = str(tmp_path / "other.safetensors")
    save_file({"conv.weight": torch.zeros(2, 2)}, path)
    with pytest.raises(CheckpointError, match=r"unrecognised weights \(first keys: 'conv.weight'\), not a umT5 text encoder"):
        read_umt5_checkpoint(path)
    save_file({"a.shared.weight": torch.zeros(8, 4), "b.encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(4, 4)},
              path)
    with pytest.raises(CheckpointError, match="no text encoder weights found .*'a.shared.weight'"):
        read_umt5_checkpoint(path)


def test_missing_layer_weights_are_reported(tmp_path):
    state = random_encoder().state_dict()
    del state["blocks.1.ffn.fc2.weight"]
    path = str(tmp_path / "broken.pth")
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="blocks.1.ffn.fc2.weight"):
        load_text_encoder(path)


def test_empty_prompt_warns_and_encodes_to_eos_only():
    text_encoder = TextEncoder(random_encoder(), ByteTokenizer())
    with pytest.warns(PromptWarning, match="empty prompt"):
        out = text_encoder(["", "a cat"])
    assert out.lengths.tolist() == [1, 6]
    assert torch.count_nonzero(out.embeddings[0, 1:]) == 0
    assert torch.isfinite(out.embeddings).all() and torch.count_nonzero(out.embeddings[0, 0]) > 0


def test_prompt_over_512_tokens_is_truncated_with_a_warning():
    text_encoder = TextEncoder(random_encoder(), ByteTokenizer())
    prompt = "a cat walks along the river " * 40
    with pytest.warns(PromptWarning, match=r"1120 tokens .* reads 512: the last 608 tokens are dropped"):
        out = text_encoder([prompt])
    assert out.embeddings.shape == (1, 512, TINY.dim)
    assert out.lengths.tolist() == [512]
    assert torch.isfinite(out.embeddings).all()

"""Naming what a weight file holds, from key names and shapes, for the loaders' wrong-file messages."""
import pytest
import torch

from selfforcing_core.file_kinds import FileKind, identify, wrong_file


def _zeros(*shape: int) -> torch.Tensor:
    return torch.zeros(shape)


DIT = {"patch_embedding.weight": _zeros(8, 16, 1, 2, 2), "blocks.0.self_attn.q.weight": _zeros(8, 8),
       "head.modulation": _zeros(1, 2, 8)}
CASES = {
    FileKind.WAN_T2V: DIT,
    FileKind.WAN_I2V: {**DIT, "patch_embedding.weight": _zeros(8, 36, 1, 2, 2)},
    FileKind.WAN_48_CHANNEL: {**DIT, "patch_embedding.weight": _zeros(8, 48, 1, 2, 2)},
    FileKind.DIFFUSERS_WAN: {"patch_embedding.weight": _zeros(8, 16, 1, 2, 2),
                             "condition_embedder.time_embedder.linear_1.weight": _zeros(8, 4)},
    FileKind.LORA: {"diffusion_model.blocks.0.self_attn.q.lora_down.weight": _zeros(4, 8)},
    FileKind.CLIP: {"vision_model.embeddings.patch_embedding.weight": _zeros(8, 3, 14, 14)},
    FileKind.UMT5: {"encoder.block.0.layer.0.SelfAttention.q.weight": _zeros(4, 4), "shared.weight": _zeros(8, 4)},
    FileKind.TAEHV: {"decoder.1.weight": _zeros(8, 16, 3, 3), "decoder.3.conv.0.weight": _zeros(8, 16, 3, 3)},
    FileKind.WAN21_VAE: {"encoder.conv1.weight": _zeros(4, 3, 3, 3, 3), "decoder.conv1.weight": _zeros(4, 16, 3, 3, 3)},
    FileKind.WAN22_VAE: {"encoder.conv1.weight": _zeros(4, 12, 3, 3, 3), "decoder.conv1.weight": _zeros(4, 48, 3, 3, 3)},
    FileKind.OTHER_VAE: {"decoder.conv_in.weight": _zeros(8, 4, 3, 3), "decoder.mid.block_1.conv1.weight": _zeros(8)},
    FileKind.UNKNOWN: {"conv.weight": _zeros(2, 2)},
}


@pytest.mark.parametrize("kind", list(FileKind))
def test_every_kind_is_named_whatever_the_prefix(kind):
    state = CASES[kind]
    assert identify(state) is kind
    assert identify({f"model.diffusion_model.{key}": value for key, value in state.items()}) is kind


def test_sections_of_a_training_checkpoint_are_looked_into_and_named():
    message = wrong_file({"generator_ema": {f"model.{k}": v for k, v in DIT.items()}, "step": 3}, "a Wan2.1 VAE",
                         "expected the Wan2.1 VAE")
    assert message == ("this looks like a Self-Forcing training checkpoint with sections ['generator_ema'] holding "
                       f"{FileKind.WAN_T2V.description}, not a Wan2.1 VAE; {FileKind.WAN_T2V.fix}; "
                       "expected the Wan2.1 VAE")


def test_unknown_files_show_their_first_keys():
    message = wrong_file({"a": _zeros(1), "b": _zeros(1), "c": _zeros(1), "d": _zeros(1)}, "a TAEHV decoder", "")
    assert message == "this looks like unrecognised weights (first keys: 'a', 'b', 'c'), not a TAEHV decoder"

"""Our full-size transformers have exactly the parameter names and shapes of the originals."""
from __future__ import annotations

import json
import os

import pytest
import torch

from selfforcing_core.config import WAN_1_3B, WAN_14B
from selfforcing_core.transformer import CausalWanModel

from tiny_models import GOLDEN_DIR


def reference_layout(name: str) -> dict:
    with open(os.path.join(GOLDEN_DIR, "reference_key_layouts.json")) as handle:
        return json.load(handle)["models"][name]


@pytest.mark.parametrize("name, config", [("wan2.1_t2v_1.3B_dit", WAN_1_3B), ("wan2.1_t2v_14B_dit", WAN_14B)])
def test_dit_layout_matches_reference(name, config):
    with torch.device("meta"):
        model = CausalWanModel(config)
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    reference = reference_layout(name)
    assert ours == reference["keys"]
    assert sum(p.numel() for p in model.parameters()) == reference["params"]

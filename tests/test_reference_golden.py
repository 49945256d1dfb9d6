"""Every golden vector of the official implementation is reproduced to float64 round-off (umT5: to the
float32 round-off of the reference's own float32 steps on CPUs other than the AVX-512 one that made it)."""
from __future__ import annotations

import glob
import json
import os
import subprocess
import sys

import pytest
from safetensors.torch import load_file, save_file

from reference_check import read_meta
from replay_umt5 import tolerance as umt5_tolerance
from tiny_models import GOLDEN_DIR

CASES = sorted(glob.glob(os.path.join(GOLDEN_DIR, "*.safetensors")) +
               glob.glob(os.path.join(GOLDEN_DIR, "extra", "*.safetensors")))
SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference_check.py")


def _run(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, SCRIPT, path], capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("case", CASES, ids=[os.path.basename(c) for c in CASES])
def test_reference_check_reproduces_case(case):
    result = _run(case)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last.startswith("max_abs_err=")
    bar = umt5_tolerance() if "t5" in read_meta(case) else 1e-8  # umT5: float32 steps inside the reference
    assert float(last.split("=", 1)[1]) < bar, last


def test_a_changed_output_is_detected(tmp_path):
    """The check is not vacuous: perturbing the recorded output shows up as the error."""
    case = os.path.join(GOLDEN_DIR, "causal_wan_t2v_chunk3.safetensors")
    tensors = load_file(case)
    with open(case.replace(".safetensors", ".json")) as handle:
        meta = handle.read()
    tensors["output_latents"] = tensors["output_latents"].clone()
    tensors["output_latents"][0, -1, 0, 0, 0] += 1e-6
    changed = tmp_path / "changed.safetensors"
    save_file(tensors, str(changed), metadata={"meta": json.dumps(json.loads(meta))})
    last = _run(str(changed)).stdout.strip().splitlines()[-1]
    assert 9e-7 < float(last.split("=", 1)[1]) < 2e-6


def test_a_different_call_trace_is_refused(tmp_path):
    case = os.path.join(GOLDEN_DIR, "causal_wan_t2v_chunk3.safetensors")
    tensors = load_file(case)
    with open(case.replace(".safetensors", ".json")) as handle:
        meta = json.load(handle)
    meta["model_calls"][-1]["current_start"] += 1
    changed = tmp_path / "trace.safetensors"
    save_file(tensors, str(changed), metadata={"meta": json.dumps(meta)})
    result = _run(str(changed))
    assert result.returncode != 0 and "model call trace differs" in result.stderr

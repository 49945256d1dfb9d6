"""Shared fixtures; test helpers live in importable modules beside this file (tiny_models.py)."""
from __future__ import annotations

import os
import sys
from typing import Iterator

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny_models import tiny_model  # noqa: E402

from selfforcing_core.transformer import CausalWanModel  # noqa: E402


@pytest.fixture
def model() -> CausalWanModel:
    return tiny_model()


@pytest.fixture
def fresh_accelerate_state() -> Iterator[None]:
    """accelerate keeps one process-wide state that fixes the precision of its first Accelerator; the CLI runs
    every training stage in its own process, a test that needs bf16 runs beside float32 ones in one."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)

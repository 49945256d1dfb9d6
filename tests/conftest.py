"""Shared fixtures; test helpers live in importable modules beside this file (tiny_models.py)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from tiny_models import tiny_model  # noqa: E402

from selfforcing_core.transformer import CausalWanModel  # noqa: E402


@pytest.fixture
def model() -> CausalWanModel:
    return tiny_model()

"""Per-layer temporal memory carried between the chunks of one causal video pass.

The Wan VAE and the TAEHV preview decoder only ever look backwards in time, so each of their
stateful layers needs a few trailing frames (or a flag) from the previous chunk. Keeping that
memory here, keyed by layer, lets one model serve any number of independent streams.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TemporalState:
    """What each causal layer remembers of the frames it has already seen; empty = start of video."""

    def __init__(self) -> None:
        self._memory: dict[nn.Module, Any] = {}

    def recall(self, layer: nn.Module) -> Any:
        """The value `layer` kept on its previous call, or None at the start of the video."""
        return self._memory.get(layer)

    def keep(self, layer: nn.Module, value: Any) -> None:
        """Store what `layer` needs on its next call (replacing what it kept before)."""
        self._memory[layer] = value

    def clear(self) -> None:
        """Forget everything: the next call starts a new video."""
        self._memory.clear()

    def nbytes(self) -> int:
        """Bytes held by the remembered tensors (the memory a stream costs between chunks)."""
        return sum(value.numel() * value.element_size() for value in self._memory.values() if torch.is_tensor(value))

    def __len__(self) -> int:
        return len(self._memory)


class OnePass(TemporalState):
    """A state for a single pass over a whole video from its start (training): it keeps nothing.

    Every layer runs once per pass, so nothing it would store is ever read back; skipping the
    copies saves memory and lets torch.compile trace the pass without side effects.
    """

    def keep(self, layer: nn.Module, value: Any) -> None:
        """Drop the value: no later chunk follows a one-pass video."""

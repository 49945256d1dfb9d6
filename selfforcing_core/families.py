"""Checkpoint families that share the causal Wan architecture, and the causal settings each expects.

The weights of these families have identical key layouts, so the family is recognised from the
file's own metadata (our files), then from its name. Defaults follow each project's released
inference configs; anything here can be overridden by the loader's and sampler's options.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

from .config import CausalSettings

# Global attention: the reference's cache holds the 21 latent frames (81 video frames) these models were
# trained on and cannot go past them; here it rolls like a window beyond them instead, so a longer video
# keeps a constant memory and the attention distances the model was trained for.
_CHUNKWISE_21 = CausalSettings(chunk_frames=3, global_cache_frames=21)


@dataclass(frozen=True)
class Family:
    """A named family of causal checkpoints and its default generation settings."""

    name: str
    pattern: str
    settings: CausalSettings
    note: str = ""


FAMILIES: tuple[Family, ...] = (
    Family("causal_forcing_framewise", r"causal[_-]?forcing.*(frame|fw)|(frame|fw).*causal[_-]?forcing",
           _CHUNKWISE_21.with_(chunk_frames=1), "Causal Forcing frame-wise models"),
    Family("causal_forcing", r"causal[_-]?forcing", _CHUNKWISE_21,
           "Causal Forcing chunk-wise: a drop-in replacement for Self Forcing"),
    Family("longlive", r"long[_-]?live", CausalSettings(chunk_frames=3, local_window=12, sink_frames=3),
           "LongLive: local window and a one-chunk attention sink"),
    Family("rolling_forcing", r"rolling[_-]?forcing", CausalSettings(chunk_frames=3, local_window=12, sink_frames=3),
           "Rolling Forcing: attention sink with a rolling window (window size assumed as LongLive's)"),
    Family("causvid", r"causvid", _CHUNKWISE_21, "CausVid"),
    Family("self_forcing", r"self[_-]?forcing", _CHUNKWISE_21, "Self Forcing (DMD, SiD and GAN variants)"),
)
DEFAULT_FAMILY = Family("causal_wan", r"", _CHUNKWISE_21, "an unrecognised causal Wan model")


def detect_family(path: str, declared: str | None = None) -> Family:
    """The family a checkpoint belongs to: its declared name if any, else the first name match."""
    if declared:
        for family in FAMILIES:
            if family.name == declared:
                return family
    name = os.path.basename(path).lower()
    for family in FAMILIES:
        if re.search(family.pattern, name):
            return family
    return DEFAULT_FAMILY

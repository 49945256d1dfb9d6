"""CONDITIONING <-> prompt segments. ComfyUI's conditioning is a list of [embeddings, options];
for Wan2.1's umT5 the embeddings are [B, L, 4096] with zeros past each prompt (what CLIPTextEncode
with a `wan` CLIP gives, and what our text nodes give). A prompt schedule is several entries, each
with the video frame it starts at under START_KEY."""
from __future__ import annotations

from typing import Any

import torch

from ..selfforcing_core.pipeline import PromptSegment

START_KEY = "selfforcing_start_frame"
TEXT_KEY = "selfforcing_text"


def make_conditioning(embeddings: torch.Tensor, start_frame: int = 0, text: str = "") -> list[list[Any]]:
    """One conditioning entry for `embeddings` [B, L, dim] applying from `start_frame`."""
    return [[embeddings, {START_KEY: start_frame, TEXT_KEY: text}]]


def prompt_segments(conditioning: Any, text_dim: int, text_len: int) -> tuple[list[PromptSegment], list[str]]:
    """The sampler's prompt segments (and their texts, for the preview) from a CONDITIONING input."""
    if not isinstance(conditioning, list) or not conditioning:
        raise ValueError("positive is not a CONDITIONING; connect CLIPTextEncode (CLIP type wan) or a "
                         "Self-Forcing text node")
    segments, texts = [], []
    for entry in conditioning:
        embeddings, options = entry[0], entry[1] if len(entry) > 1 else {}
        if not torch.is_tensor(embeddings) or embeddings.dim() != 3:
            raise ValueError("a conditioning entry holds no [batch, tokens, dim] text embeddings")
        if embeddings.shape[-1] != text_dim:
            raise ValueError(
                f"the conditioning has {embeddings.shape[-1]}-dim text embeddings but this model takes {text_dim} "
                "(umT5-XXL for Wan2.1); encode the prompt with CLIPLoader type 'wan' (umt5_xxl) or the "
                "Self-Forcing text encoder")
        segments.append(PromptSegment(embeddings[:, :text_len], int(options.get(START_KEY, 0))))
        texts.append(str(options.get(TEXT_KEY, "")))
    starts = [s.start_frame for s in segments]
    if len(set(starts)) != len(starts):
        raise ValueError("several prompts start at the same frame; to change prompts over time use the "
                         "Self-Forcing Prompt Schedule node instead of combining conditionings")
    return segments, texts

"""An auxiliary loss that makes the teacher's text encoder bind each object's words together.

Trained on the diffusion loss alone, the world text encoder learns per-byte features: at an object's
shape word a probe cannot tell that object's colour (`benchmarks/probe_text_binding.py`), so with
two or three objects the DiT sees which colours, shapes and motions occur but not whose they are,
and trades them between objects. This loss asks small linear heads to read each object's colour,
shape, size and motion from the encoder's output at the last byte of its shape word; the world's
captions are parsed back into those targets, so the loss needs nothing beyond the captions.
"""
from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .world_caption import MOTION_PHRASES, SIZE_WORDS
from .world_scene import MOST_OBJECTS
from .world_vocab import OBJECT_COLOURS, SHAPES

ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "colour": tuple(OBJECT_COLOURS),
    "shape": tuple(SHAPES),
    "size": tuple(SIZE_WORDS),
    "motion": tuple(MOTION_PHRASES),
}


def _alternatives(words: Sequence[str]) -> str:
    return "|".join(re.escape(word) for word in sorted(words, key=len, reverse=True))


_COLOUR = _alternatives(OBJECT_COLOURS)
_MOTION_BY_PHRASE = {phrase: motion for motion, phrase in MOTION_PHRASES.items() if "{" not in phrase}
_SIZE_BY_WORD = {word: size for size, word in SIZE_WORDS.items() if word}
_OBJECT = re.compile(
    rf"\ban? (?:(?P<size>{_alternatives([w for w in SIZE_WORDS.values() if w])}) )?(?P<colour>{_COLOUR}) "
    rf"(?P<shape>{_alternatives(SHAPES)}) (?P<motion>{_alternatives(_MOTION_BY_PHRASE)}|turns (?:{_COLOUR}))"
)


def binding_targets(captions: Sequence[str], text_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For each caption, the token index of the last letter of each object's shape word [N, MOST_OBJECTS] (-1
    where there is no object, or where the token limit cut it) and the object's attributes as indices into
    `ATTRIBUTES` [N, MOST_OBJECTS, len(ATTRIBUTES)]. World captions are ASCII, so with the byte tokenizer a
    character's index is its token's; other captions are refused rather than misread."""
    positions = torch.full((len(captions), MOST_OBJECTS), -1, dtype=torch.long)
    labels = torch.zeros((len(captions), MOST_OBJECTS, len(ATTRIBUTES)), dtype=torch.long)
    for row, caption in enumerate(captions):
        if not caption.isascii():
            raise ValueError(f"not a world caption (non-ASCII): {caption[:60]!r}")
        for column, match in enumerate(_OBJECT.finditer(caption)):
            if column == MOST_OBJECTS or match.end("shape") > text_len - 1:  # the last token is EOS
                break
            motion = match["motion"]
            values = {"colour": match["colour"], "shape": match["shape"],
                      "size": _SIZE_BY_WORD.get(match["size"], "medium"),
                      "motion": "colour_change" if motion.startswith("turns ") else _MOTION_BY_PHRASE[motion]}
            positions[row, column] = match.end("shape") - 1
            labels[row, column] = torch.tensor([ATTRIBUTES[name].index(values[name]) for name in ATTRIBUTES])
    return positions, labels


class BindingHeads(nn.Module):
    """One linear classifier per attribute, reading the text encoder's output at an object's shape word."""

    def __init__(self, dim: int):
        super().__init__()
        self.heads = nn.ModuleDict({name: nn.Linear(dim, len(values)) for name, values in ATTRIBUTES.items()})

    def forward(self, text: torch.Tensor, positions: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits [B, MOST_OBJECTS, classes] per attribute from text features [B, L, dim] (positions -1 read
        index 0; the loss leaves them out)."""
        index = positions.clamp(min=0)[..., None].expand(-1, -1, text.shape[-1])
        at_shapes = torch.gather(text, 1, index)
        return {name: head(at_shapes) for name, head in self.heads.items()}


def binding_loss(logits: dict[str, torch.Tensor], positions: torch.Tensor, labels: torch.Tensor,
                 keep: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over attributes and the objects present in the kept captions [B] (captions dropped
    for guidance carry no words to bind)."""
    valid = (positions >= 0) & keep[:, None]
    weight = valid.float()
    total = weight.sum().clamp(min=1.0)
    losses = [
        (F.cross_entropy(logits[name].flatten(0, 1).float(), labels[..., column].flatten(), reduction="none")
         * weight.flatten()).sum() / total
        for column, name in enumerate(ATTRIBUTES)
    ]
    return torch.stack(losses).mean()


@torch.no_grad()
def binding_accuracy(encode: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], heads: BindingHeads,
                     ids: torch.Tensor, mask: torch.Tensor, captions: Sequence[str]) -> dict[str, float]:
    """How often the heads name each attribute of the objects of these (held-out) captions, as
    `binding_accuracy/<attribute>`: how much of each object the encoder has bound to its shape word."""
    positions, labels = binding_targets(captions, ids.shape[1])
    device = next(heads.parameters()).device
    positions, labels = positions.to(device), labels.to(device)
    logits = heads(encode(ids.to(device), mask.to(device)).float(), positions)
    present = positions >= 0
    return {f"binding_accuracy/{name}": float((logits[name].argmax(-1) == labels[..., column])[present].float().mean())
            for column, name in enumerate(ATTRIBUTES)}

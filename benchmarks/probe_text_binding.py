"""Does the world text encoder bind each object's words together? A linear probe says.

For every object of held-out world captions, the encoder's output at the last byte of the object's
shape word is fed to a linear classifier that must name that object's colour (and, separately, its
motion). With two or three objects in a caption, an encoder that only knows which words occur
cannot tell whose colour is whose; one that binds words to their object can. The same probe on an
untrained encoder of the same shape (the teacher's initialisation) is the reference: the context its random attention
mixes into each byte. Prints accuracies by object count (chance: 10 % for colour, 7 % for motion).

    python benchmarks/probe_text_binding.py --text-encoder benchmarks/checkpoints/run14/world_text_encoder.safetensors
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict
from dataclasses import replace

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from selfforcing_core.text_encoder import UMT5Encoder  # noqa: E402
from selfforcing_core.text_encoder_loading import load_text_encoder  # noqa: E402
from selfforcing_core.training.caption_binding import binding_targets  # noqa: E402
from selfforcing_core.training.data import CaptionTokens  # noqa: E402
from selfforcing_core.training.model_sizes import WORLD, WORLD_TEXT_LEN  # noqa: E402
from selfforcing_core.training.teacher_training import build_teacher  # noqa: E402
from selfforcing_core.training.world import sample_scenes  # noqa: E402
from selfforcing_core.training.world_caption import MOTION_PHRASES  # noqa: E402
from selfforcing_core.training.world_scene import SceneParams, WorldConfig  # noqa: E402
from selfforcing_core.training.world_vocab import OBJECT_COLOURS  # noqa: E402

PROBE_SEED = 77  # a stream of scenes of its own: neither the training nor the evaluation captions


@torch.no_grad()
def features(encoder: UMT5Encoder, scenes: list[SceneParams], batch: int = 256) -> tuple[torch.Tensor, list[tuple]]:
    """Encoder outputs at each object's shape word [N, dim] (where the caption-binding loss reads them), with
    (object count, colour, motion) per row."""
    tokens = CaptionTokens(WORLD_TEXT_LEN)
    rows, labels = [], []
    for first in range(0, len(scenes), batch):
        part = scenes[first:first + batch]
        captions = [scene.caption for scene in part]
        out = encoder(*tokens(captions))
        positions, _ = binding_targets(captions, WORLD_TEXT_LEN)
        for index, scene in enumerate(part):
            ends = positions[index].tolist()
            if sum(end >= 0 for end in ends) != len(scene.objects):
                raise ValueError(f"caption not fully parsed: {scene.caption!r}")
            for obj, end in zip(scene.objects, ends):
                rows.append(out[index, end])
                labels.append((len(scene.objects), obj.colour, obj.motion))
    return torch.stack(rows), labels


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   classes: int, steps: int = 300) -> torch.Tensor:
    """Fit a multinomial logistic regression on standardised features; per-row correctness on the test rows."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=steps, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(train_x @ weight + bias, train_y) + 1e-3 * weight.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (test_x @ weight + bias).argmax(1) == test_y


def report(name: str, encoder: UMT5Encoder, train: list[SceneParams], test: list[SceneParams]) -> None:
    train_x, train_labels = features(encoder, train)
    test_x, test_labels = features(encoder, test)
    for task, column, vocab in (("colour", 1, list(OBJECT_COLOURS)), ("motion", 2, list(MOTION_PHRASES))):
        train_y = torch.tensor([vocab.index(label[column]) for label in train_labels])
        test_y = torch.tensor([vocab.index(label[column]) for label in test_labels])
        right = probe_accuracy(train_x, train_y, test_x, test_y, len(vocab))
        by_count: dict[int, list[bool]] = defaultdict(list)
        for ok, label in zip(right.tolist(), test_labels):
            by_count[label[0]].append(ok)
        figures = "  ".join(f"{count} obj {100 * sum(v) / len(v):5.1f} %" for count, v in sorted(by_count.items()))
        print(f"{name:<28} {task:<7} {figures}  all {100 * right.float().mean():5.1f} %")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--text-encoder", required=True, help="a world_text_encoder.safetensors")
    parser.add_argument("--train-captions", type=int, default=6000)
    parser.add_argument("--test-captions", type=int, default=2000)
    args = parser.parse_args()
    torch.manual_seed(0)
    config = WorldConfig()
    scenes = sample_scenes(PROBE_SEED, range(args.train_captions + args.test_captions), config)
    train, test = scenes[:args.train_captions], scenes[args.train_captions:]
    trained = load_text_encoder(args.text_encoder, dtype=torch.float32, text_len=WORLD_TEXT_LEN).encoder.eval()
    began = time.monotonic()
    report("trained encoder", trained, train, test)
    untrained = build_teacher(replace(WORLD.dit, text_dim=trained.config.dim), trained.config).text.eval()
    report("untrained encoder", untrained, train, test)
    print(f"({args.train_captions} + {args.test_captions} captions, {time.monotonic() - began:.0f} s)")


if __name__ == "__main__":
    main()

"""Resumable training state: model, EMA, optimizer, step and RNG in one safetensors file + a json.

Tensors go to `<path>.safetensors` under prefixes (`model.`, `ema.`, `optim.`, `rng.`); everything
else (step, elapsed time, optimizer hyper-parameters, the run's options) to `<path>.json`. Loading
puts back every bit, so a resumed run continues exactly as an uninterrupted one would.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .ema import EMA


@dataclass
class TrainingState:
    """The counters and free-form information saved beside the tensors."""

    step: int = 0
    elapsed_seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into tensors (by parameter index and name) and the rest."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for name, value in values.items():
            if torch.is_tensor(value):
                tensors[f"optim.{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def save_training_state(
    path: str,
    model: nn.Module,
    ema: EMA,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
    state: TrainingState,
) -> None:
    """Write `<path>.safetensors` and `<path>.json` (json last, so a complete pair means a complete save). Each
    file replaces the last one whole, so `read_ema_weights` may read the tensors while training goes on."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    optim_tensors, optim_rest = _optimizer_tensors(optimizer)
    tensors.update(optim_tensors)
    tensors["rng.generator"] = generator.get_state()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, path + ".safetensors.tmp",
              metadata={"step": str(state.step)})
    os.replace(path + ".safetensors.tmp", path + ".safetensors")
    meta = {"step": state.step, "elapsed_seconds": state.elapsed_seconds, "ema_updates": ema.updates,
            "optimizer": optim_rest, "info": state.info}
    with open(path + ".json.tmp", "w") as handle:
        json.dump(meta, handle, indent=1)
    os.replace(path + ".json.tmp", path + ".json")


def has_training_state(path: str) -> bool:
    return os.path.isfile(path + ".json") and os.path.isfile(path + ".safetensors")


def read_ema_weights(path: str) -> tuple[dict[str, torch.Tensor], int]:
    """The EMA weights of the state saved at `path` and the step they belong to, read without the model's and
    optimizer's tensors: the latest averages of a run that may still be training."""
    from safetensors import safe_open

    if not has_training_state(path):
        raise FileNotFoundError(f"no training state at {path} (.safetensors and .json): has the run saved yet?")
    with safe_open(path + ".safetensors", "pt") as tensors:
        weights = {key[4:]: tensors.get_tensor(key) for key in tensors.keys() if key.startswith("ema.")}
        step = (tensors.metadata() or {}).get("step")
    if step is None:  # saved before the step went into the tensors' file
        with open(path + ".json") as handle:
            step = json.load(handle)["step"]
    return weights, int(step)


def load_training_state(
    path: str,
    model: nn.Module,
    ema: EMA,
    optimizer: torch.optim.Optimizer,
    generator: torch.Generator,
) -> TrainingState:
    """Restore everything `save_training_state` wrote into the given (already built) objects."""
    from safetensors.torch import load_file

    with open(path + ".json") as handle:
        meta = json.load(handle)
    tensors = load_file(path + ".safetensors")
    device = next(model.parameters()).device
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, meta["ema_updates"])
    optim_state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            optim_state.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    for key, value in meta["optimizer"]["scalars"].items():
        index, name = key.split(".", 1)
        optim_state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": optim_state, "param_groups": meta["optimizer"]["param_groups"]})
    generator.set_state(tensors["rng.generator"])
    return TrainingState(meta["step"], meta["elapsed_seconds"], meta["info"])

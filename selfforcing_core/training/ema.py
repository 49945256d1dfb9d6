"""Exponential moving average of a model's parameters, with the usual warm-up of the decay."""
from __future__ import annotations

import torch
from torch import nn


class EMA:
    """float32 shadow copies of `model`'s parameters; decay ramps up as min(decay, (1+n)/(10+n))."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        self.decay = decay
        self.updates = 0
        self.shadow = {name: p.detach().float().clone() for name, p in model.named_parameters()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the shadow towards the model's current parameters."""
        self.updates += 1
        decay = min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))
        params = dict(model.named_parameters())
        # A few multi-tensor launches instead of one per parameter (about 210 for the teacher, every step).
        torch._foreach_lerp_([self.shadow[name] for name in params], [p.detach().float() for p in params.values()],
                             1.0 - decay)

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Overwrite `model`'s parameters with the averaged ones."""
        for name, param in model.named_parameters():
            param.copy_(self.shadow[name].to(param.dtype))

    def state_dict(self) -> dict[str, torch.Tensor]:
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        """Restore the shadow tensors (in place, keeping their device) and the update count."""
        for name, value in state.items():
            self.shadow[name].copy_(value)
        self.updates = updates

"""Low-VRAM mode: transformer blocks live in pinned CPU memory and stream onto the GPU one at a time.

While block i runs, block i + 1 is copied on a side stream, so on a PCIe 4/5 card the copies mostly
hide behind the compute; only about two blocks of weights are ever on the GPU. Written here rather
than taken from accelerate's offload hooks because those copy synchronously, with no prefetch.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn


class BlockStreamer:
    """Streams `model.blocks` to `device` block by block; everything else stays on `device`."""

    def __init__(self, model: nn.Module, device: torch.device | str):
        self.device = torch.device(device)
        self.blocks = list(model.blocks)
        for name, child in model.named_children():
            if name != "blocks":
                child.to(self.device)
        pin = self.device.type == "cuda"
        self.masters: list[dict[nn.Parameter, torch.Tensor]] = []
        for block in self.blocks:
            block.to("cpu")
            masters = {}
            for param in block.parameters():
                master = param.data.pin_memory() if pin else param.data
                param.data = master
                masters[param] = master
            self.masters.append(masters)
        self.copy_stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        self.ready: dict[int, torch.cuda.Event | None] = {}
        self.handles = []
        for index, block in enumerate(self.blocks):
            self.handles.append(block.register_forward_pre_hook(self._before(index)))
            self.handles.append(block.register_forward_hook(self._after(index)))
            block.cross_attn.context_kv = self._streamed_context_kv(index, block.cross_attn.context_kv)

    def _load(self, index: int) -> None:
        """Start copying block `index` to the device (asynchronously on CUDA)."""
        if index in self.ready:
            return
        stream = self.copy_stream
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            for param, master in self.masters[index].items():
                param.data = master.to(self.device, non_blocking=True)
        event = None
        if stream is not None:
            event = torch.cuda.Event()
            event.record(stream)
        self.ready[index] = event

    def _before(self, index: int):
        def hook(_module, _args):
            self._load(index)
            event = self.ready[index]
            if event is not None:
                compute = torch.cuda.current_stream(self.device)
                compute.wait_event(event)
                for param in self.masters[index]:
                    param.data.record_stream(compute)
            self._load((index + 1) % len(self.blocks))
        return hook

    def _after(self, index: int):
        def hook(_module, _args, _output):
            for param, master in self.masters[index].items():
                param.data = master
            self.ready.pop(index, None)
        return hook

    def _streamed_context_kv(self, index: int, context_kv):
        """The prompt's K/V are computed outside the block's forward (once per prompt): load it for that."""
        def streamed(context: torch.Tensor):
            self._before(index)(None, None)
            try:
                return context_kv(context)
            finally:
                self._after(index)(None, None, None)
        return streamed

    def remove(self) -> None:
        """Detach the hooks; the blocks stay in CPU memory."""
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for block in self.blocks:
            del block.cross_attn.context_kv


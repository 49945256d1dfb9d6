"""The few ComfyUI runtime services the nodes use, each guarded for API differences between
ComfyUI versions (0.3.75 through current): devices, memory management, interrupt, progress, events."""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch

import comfy.model_management as mm
import comfy.utils

log = logging.getLogger("SelfForcing")


def torch_device() -> torch.device:
    """The device ComfyUI computes on (the CPU under --cpu)."""
    return mm.get_torch_device()


def offload_device() -> torch.device:
    """Where ComfyUI parks models that are not in use."""
    return mm.unet_offload_device()


def interrupt_check() -> Callable[[], None]:
    """A callable that raises ComfyUI's interrupt exception once the user pressed Cancel."""
    return mm.throw_exception_if_processing_interrupted


class _Holder(torch.nn.Module):
    """Gives ComfyUI's ModelPatcher a module of its own to annotate, around one of ours."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner


def managed(module: torch.nn.Module) -> Any | None:
    """Wrap a loaded module so ComfyUI's memory manager can load and evict it; None if unavailable."""
    try:
        from comfy.model_patcher import ModelPatcher

        return ModelPatcher(_Holder(module), load_device=torch_device(), offload_device=offload_device())
    except (ImportError, TypeError, AttributeError) as exc:
        log.warning("ComfyUI memory management unavailable (%s); the model stays where it is", exc)
        return None


def load_on_device(module: torch.nn.Module, patcher: Any | None) -> None:
    """Bring `module` to the compute device, letting ComfyUI free memory (evict other models) first."""
    if patcher is not None:
        try:
            mm.load_models_gpu([patcher])
            return
        except (AttributeError, TypeError, RuntimeError) as exc:
            log.warning("ComfyUI could not load the model (%s); moving it directly", exc)
    module.to(torch_device())


def progress_bar(total: int, node_id: str | None) -> Any:
    """ComfyUI's progress bar for one node."""
    try:
        return comfy.utils.ProgressBar(total, node_id=node_id)
    except TypeError:
        return comfy.utils.ProgressBar(total)


def current_prompt_id() -> str | None:
    """The id of the prompt being executed."""
    try:
        from comfy_execution.utils import get_executing_context

        context = get_executing_context()
        if context is not None:
            return context.prompt_id
    except ImportError:
        pass
    from server import PromptServer

    return getattr(PromptServer.instance, "last_prompt_id", None)


def send_event(event: str, data: dict[str, Any]) -> None:
    """Send a JSON event over /ws to the client that queued the running prompt."""
    from server import PromptServer

    server = PromptServer.instance
    server.send_sync(event, data, getattr(server, "client_id", None))

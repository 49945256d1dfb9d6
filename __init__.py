"""ComfyUI entry point of the Self-Forcing node pack (nodes in `nodes/`, the preview widget in `web/`)."""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    """Called by ComfyUI to register the pack's nodes (V3 extension API)."""
    from .nodes import SelfForcingExtension

    return SelfForcingExtension()

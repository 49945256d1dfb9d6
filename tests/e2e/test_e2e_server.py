"""ComfyUI starts offline with the pack installed and serves its API and web extension."""
from __future__ import annotations

import os

from comfy_client import ComfyClient
from comfy_server import ComfyServer
from comfyui_setup import COMFYUI_VERSION, PACK_NAME


def test_server_starts_and_loads_pack(comfy_server: ComfyServer, comfy: ComfyClient) -> None:
    stats = comfy.get_json("/system_stats")
    if "COMFYUI_DIR" not in os.environ:
        assert stats["system"]["comfyui_version"] == COMFYUI_VERSION
    assert "Device: cpu" in comfy_server.log()
    assert not comfy_server.pack_import_failed(), comfy_server.log_tail()
    assert f"custom_nodes/{PACK_NAME}" in comfy_server.log()
    assert "KSampler" in comfy.object_info()

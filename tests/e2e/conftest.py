"""Fixtures for the end-to-end tests: one real ComfyUI server per session, and a client for it."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfy_client import ComfyClient
from comfy_server import ComfyServer
from comfyui_setup import comfyui_dir
from tiny_weights import write_tiny_models


@pytest.fixture(scope="session")
def comfy_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComfyServer]:
    """ComfyUI (`COMFYUI_DIR` or the pinned offline copy) with this pack, on CPU, isolated in a tmp dir."""
    server = ComfyServer(comfyui_dir(), tmp_path_factory.mktemp("comfyui")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def comfy(comfy_server: ComfyServer) -> Iterator[ComfyClient]:
    """A client of the session's server, listening on /ws from the start."""
    client = ComfyClient(comfy_server.url).connect()
    yield client
    client.close()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    """Debian's headless Chromium through Playwright (never a downloaded browser)."""
    if not os.access(CHROMIUM, os.X_OK):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing in CI; .ci/run installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--headless", *CHROMIUM_FLAGS])
        yield chromium
        chromium.close()


@pytest.fixture(scope="session")
def tiny_models(comfy_server: ComfyServer) -> dict[str, str]:
    """Tiny random-weight transformer, umT5 and Wan VAE files in the server's model folders."""
    return write_tiny_models(comfy_server.base_dir / "models")


def output_file(server: ComfyServer, entry: dict) -> Path:
    """The file a finished prompt's save node wrote (its first video/image output)."""
    for output in entry["outputs"].values():
        for item in output.get("images", []):
            return server.base_dir / item["type"] / item["subfolder"] / item["filename"]
    raise AssertionError(f"the prompt saved no file: {entry.get('outputs')}")

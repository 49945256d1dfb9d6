"""Start and stop a real ComfyUI process on a free loopback port, isolated in its own base dir."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from comfyui_setup import PACK_NAME, link_pack

MODEL_FOLDERS = ("diffusion_models", "self_forcing", "vae", "text_encoders", "vae_approx")
# glibc maps every allocation of 128 KiB or more (a tensor) on its own and unmaps it when freed, so the
# server's resident memory follows the tensors it holds (by default freed memory is kept for reuse).
RSS_FOLLOWS_TENSORS = {"MALLOC_MMAP_THRESHOLD_": str(128 * 1024)}
# The frontend's settings for a returning user: no first-run template browser over the canvas.
FRONTEND_SETTINGS = {"Comfy.TutorialCompleted": True}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ComfyServer:
    """One ComfyUI server: models, input, output, user and custom_nodes all live under `base_dir`
    (`--base-directory`), so neither the ComfyUI tree nor the user's folders are touched."""

    def __init__(self, comfyui_dir: Path, base_dir: Path):
        self.comfyui_dir = comfyui_dir
        self.base_dir = base_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = base_dir / "comfyui.log"
        self.process: subprocess.Popen | None = None

    def models_dir(self, folder: str) -> Path:
        """Where this server looks for models of one ComfyUI folder type."""
        return self.base_dir / "models" / folder

    def start(self, timeout: float = 180) -> "ComfyServer":
        """Launch `main.py --cpu` and wait until it answers; raises with the log tail if it dies."""
        for folder in MODEL_FOLDERS:
            self.models_dir(folder).mkdir(parents=True, exist_ok=True)
        link_pack(self.base_dir / "custom_nodes")
        settings = self.base_dir / "user" / "default" / "comfy.settings.json"
        settings.parent.mkdir(parents=True, exist_ok=True)
        settings.write_text(json.dumps(FRONTEND_SETTINGS))
        command = [
            sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
            "--base-directory", str(self.base_dir), "--database-url", "sqlite:///:memory:",
            "--disable-auto-launch", "--log-stdout",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **RSS_FOLLOWS_TENSORS}
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(command, cwd=self.comfyui_dir, stdout=log,
                                            stderr=subprocess.STDOUT, env=env)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/system_stats", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"ComfyUI did not answer in {timeout}s:\n{self.log_tail()}")

    def log(self) -> str:
        """Everything the server printed so far."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        """The last lines the server printed (for failure messages)."""
        return "\n".join(self.log().splitlines()[-lines:])

    def pack_import_failed(self) -> bool:
        """Whether ComfyUI reported this pack as an IMPORT FAILED custom node."""
        return any("IMPORT FAILED" in line and PACK_NAME in line for line in self.log().splitlines())

    def rss_bytes(self) -> int:
        """Resident memory of the server process."""
        return psutil.Process(self.process.pid).memory_info().rss

    def reset_peak_rss(self) -> None:
        """Start the server's peak resident memory (VmHWM) afresh from what it holds now (Linux)."""
        Path(f"/proc/{self.process.pid}/clear_refs").write_text("5")

    def peak_rss_bytes(self) -> int:
        """The server's peak resident memory since it started or since `reset_peak_rss` (Linux)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc/<pid>/status")

    def stop(self) -> None:
        """Terminate the server (kill it if it does not exit in 20 s)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=20)

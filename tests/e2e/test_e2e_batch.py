"""examples/queue_batch.py queues prompts through the HTTP API, follows /ws and downloads every video."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from comfy_server import ComfyServer
from selfforcing_core.video_export import read_video
import workflows

SCRIPT = Path(__file__).resolve().parents[2] / "examples" / "queue_batch.py"


def test_queue_batch_script(comfy_server: ComfyServer, tiny_models: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "workflow.json").write_text(json.dumps(workflows.text_to_video(prefix="e2e/batch")))
    (tmp_path / "prompts.txt").write_text("a red fox in snow\n\na blue whale\na green parrot\n")
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "workflow.json"), str(tmp_path / "prompts.txt"),
                             "--server", comfy_server.url, "--out", str(tmp_path / "out"), "--seed", "40"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    videos = sorted((tmp_path / "out").glob("*.mp4"))
    assert len(videos) == 3 and all(read_video(str(v)).frame_count == 25 for v in videos)
    assert result.stdout.count("execution_success") == 3

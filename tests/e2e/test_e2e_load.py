"""Under load: ten prompts queued at once all finish without memory growth, and /interrupt stops a
run within one chunk while the next prompt still completes."""
from __future__ import annotations

from comfy_client import ComfyClient
from comfy_server import ComfyServer
from conftest import output_file
import workflows

MiB = 1024 * 1024


def test_ten_prompts_at_once_none_lost_memory_flat(comfy_server: ComfyServer, comfy: ComfyClient,
                                                   tiny_models: dict[str, str]) -> None:
    ids = [comfy.queue(workflows.text_to_video(width=64, height=48, length=25, seed=100 + n, prefix=f"e2e/load{n}"))
           for n in range(10)]
    rss = {}
    entries = []
    for number, prompt_id in enumerate(ids, start=1):
        entries.append(comfy.wait(prompt_id, timeout=300))
        rss[number] = comfy_server.rss_bytes()
    assert [e["finished"]["type"] for e in entries] == ["execution_success"] * 10
    files = {output_file(comfy_server, e) for e in entries}
    assert len(files) == 10 and all(f.stat().st_size > 0 for f in files)
    assert rss[10] - rss[3] < 48 * MiB, {n: round(v / MiB) for n, v in rss.items()}


def test_interrupt_stops_within_one_chunk_and_server_goes_on(comfy: ComfyClient, tiny_models: dict[str, str]) -> None:
    prompt_id = comfy.queue(workflows.text_to_video(width=64, height=64, length=321, seed=7, prefix="e2e/long"))
    comfy.wait_for_event(lambda e: e["type"] == "selfforcing.frames" and e["data"]["prompt_id"] == prompt_id, 120)
    seen = max(c["data"]["chunk"] for c in comfy.events_for(prompt_id, "selfforcing.frames"))
    comfy.interrupt()
    entry = comfy.wait(prompt_id, timeout=120)
    assert entry["finished"]["type"] == "execution_interrupted"
    chunks = comfy.events_for(prompt_id, "selfforcing.frames")
    assert chunks[-1]["data"]["chunk"] <= seen + 1 and chunks[-1]["data"]["chunk"] + 1 < chunks[-1]["data"]["chunks"]
    assert comfy.run(workflows.text_to_video(seed=8, prefix="e2e/after"))["finished"]["type"] == "execution_success"

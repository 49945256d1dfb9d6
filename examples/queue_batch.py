"""Queue many prompts through ComfyUI's HTTP API, follow their progress over /ws, and download the
videos they save.

    python examples/queue_batch.py workflow_api.json prompts.txt --out videos/

`workflow_api.json` is a workflow exported with "Export (API)"; `prompts.txt` holds one prompt per
line. Each prompt goes into the workflow's text node (the first SelfForcingTextEncode or
CLIPTextEncode, or the node given with --text-node), with seeds counting up from --seed. Needs only
Python and aiohttp (which every ComfyUI install has).
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import uuid
from pathlib import Path
from typing import Any

import aiohttp

TEXT_NODES = ("SelfForcingTextEncode", "CLIPTextEncode")
FINISHED = ("execution_success", "execution_error", "execution_interrupted")


def text_node(workflow: dict[str, Any], node_id: str | None) -> str:
    """The id of the node whose `text` input receives each prompt."""
    if node_id is not None:
        if node_id not in workflow or "text" not in workflow[node_id]["inputs"]:
            raise SystemExit(f"node {node_id} is not in the workflow or has no 'text' input")
        return node_id
    for key, node in workflow.items():
        if node.get("class_type") in TEXT_NODES:
            return key
    raise SystemExit(f"no {' or '.join(TEXT_NODES)} node in the workflow; name one with --text-node")


def prompts_for(workflow: dict[str, Any], texts: list[str], node_id: str, seed: int) -> list[dict[str, Any]]:
    """One API prompt per text: the text set, and every `seed` input set to seed + index."""
    prompts = []
    for index, text in enumerate(texts):
        prompt = copy.deepcopy(workflow)
        prompt[node_id]["inputs"]["text"] = text
        for node in prompt.values():
            if "seed" in node.get("inputs", {}):
                node["inputs"]["seed"] = seed + index
        prompts.append(prompt)
    return prompts


async def run_batch(server: str, prompts: list[dict[str, Any]], out: Path, timeout: float) -> dict[str, str]:
    """Queue every prompt, wait for all of them over /ws, download their files; returns id -> outcome."""
    client_id = uuid.uuid4().hex
    outcomes: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(f"{server.replace('http', 'ws', 1)}/ws?clientId={client_id}",
                                      max_msg_size=0) as ws:
            ids = []
            for prompt in prompts:
                async with session.post(f"{server}/prompt", json={"prompt": prompt, "client_id": client_id}) as resp:
                    body = await resp.json()
                    if resp.status != 200:
                        raise SystemExit(f"ComfyUI refused a prompt: {json.dumps(body)[:1000]}")
                    ids.append(body["prompt_id"])
            print(f"queued {len(ids)} prompts")
            pending = set(ids)
            async with asyncio.timeout(timeout):
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        continue
                    event = json.loads(msg.data)
                    data = event.get("data") or {}
                    if event["type"] == "progress" and data.get("prompt_id") in pending:
                        print(f"  {data['prompt_id'][:8]} node {data.get('node')}: {data['value']}/{data['max']}")
                    if event["type"] in FINISHED and data.get("prompt_id") in pending:
                        outcomes[data["prompt_id"]] = event["type"]
                        pending.discard(data["prompt_id"])
                        print(f"{data['prompt_id'][:8]} {event['type']} ({len(ids) - len(pending)}/{len(ids)})")
                        if not pending:
                            break
        out.mkdir(parents=True, exist_ok=True)
        for prompt_id in ids:
            async with session.get(f"{server}/history/{prompt_id}") as resp:
                entry = (await resp.json()).get(prompt_id, {})
            for output in entry.get("outputs", {}).values():
                for item in output.get("images", []):
                    async with session.get(f"{server}/view", params=item) as resp:
                        (out / item["filename"]).write_bytes(await resp.read())
                    print(f"saved {out / item['filename']}")
    return outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", type=Path, help="workflow in API format (Export (API))")
    parser.add_argument("prompts", type=Path, help="text file, one prompt per line")
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--out", type=Path, default=Path("batch_out"))
    parser.add_argument("--text-node", help="id of the node whose 'text' input takes the prompt")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first prompt (then +1 each)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds to wait for the whole batch")
    args = parser.parse_args()
    workflow = json.loads(args.workflow.read_text())
    texts = [line.strip() for line in args.prompts.read_text().splitlines() if line.strip()]
    prompts = prompts_for(workflow, texts, text_node(workflow, args.text_node), args.seed)
    outcomes = asyncio.run(run_batch(args.server.rstrip("/"), prompts, args.out, args.timeout))
    failed = [pid for pid, outcome in outcomes.items() if outcome != "execution_success"]
    raise SystemExit(f"{len(failed)} prompt(s) failed: {failed}" if failed else 0)


if __name__ == "__main__":
    main()

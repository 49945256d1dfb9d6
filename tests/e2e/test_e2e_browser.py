"""The real ComfyUI page in headless Chromium: the pack's extension loads, every example workflow
loads with no missing nodes, the long-video one queues the very prompt that the API tests build from
it, and the t2v one streams frames into the sampler's widget before the prompt finishes, showing the
prompt text as text (never as HTML)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfy_client import ComfyClient
from comfy_server import ComfyServer
from ui_workflow import api_prompt

EXTENSION = "SelfForcing.StreamingPreview"
EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "example_workflows").glob("*.json"))
HOSTILE_TEXT = '<img src=x onerror="window.__xss = 1">a fox'
READY = ("name => window.comfyAPI?.app?.app?.vueAppReady === true && window.comfyAPI.app.app.graph?._nodes?.length > 0"
         " && window.comfyAPI.app.app.extensions.some(e => e.name === name)")


@pytest.fixture
def page(comfy_server: ComfyServer, browser):
    """The ComfyUI page, loaded and ready; fails the test on any uncaught page error."""
    page = browser.new_page(viewport={"width": 1600, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(comfy_server.url)
    page.wait_for_function(READY, arg=EXTENSION, timeout=60_000)
    yield page
    page.close()
    assert errors == []


def test_page_loads_preview_extension(page, tmp_path) -> None:
    assert page.evaluate("() => window.comfyAPI.app.app.extensions.some(e => e.name === 'SelfForcing.StreamingPreview')")
    page.screenshot(path=str(tmp_path / "comfyui.png"))


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.stem for e in EXAMPLES])
def test_example_workflow_loads_with_no_missing_nodes(page, example: Path) -> None:
    workflow = json.loads(example.read_text())
    result = page.evaluate("""async (workflow) => {
        const app = window.comfyAPI.app.app;
        await app.loadGraphData(workflow);
        const registered = window.LiteGraph.registered_node_types;
        await new Promise((resolve) => setTimeout(resolve, 300));
        return {missing: workflow.nodes.map(n => n.type).filter(t => !(t in registered)),
                invalid: document.body.innerText.includes("Invalid workflow"),
                loaded: app.graph._nodes.length,
                previews: app.graph._nodes.filter(n => n.selfforcingPreview).length};
    }""", workflow)
    assert result == {"missing": [], "invalid": False, "loaded": len(workflow["nodes"]), "previews": 1}


def test_long_video_example_queues_what_the_api_tests_send(page, comfy: ComfyClient) -> None:
    workflow = json.loads((EXAMPLES[0].parent / "selfforcing_long_video_prompt_schedule.json").read_text())
    output = page.evaluate("""async (workflow) => {
        await window.comfyAPI.app.app.loadGraphData(workflow);
        return (await window.comfyAPI.app.app.graphToPrompt()).output;
    }""", workflow)
    queued = {node_id: {"class_type": node["class_type"], "inputs": node["inputs"]} for node_id, node in output.items()}
    assert queued == api_prompt(workflow, comfy.object_info())
    assert queued["5"]["inputs"]["keep_frames"] is False and queued["5"]["inputs"]["filename_prefix"]


def test_widget_draws_frames_before_the_prompt_finishes(page, tiny_models: dict[str, str], tmp_path) -> None:
    workflow = json.loads((EXAMPLES[0].parent / "selfforcing_text_to_video.json").read_text())
    settings = {"model_name": tiny_models["model"], "text_encoder_name": tiny_models["text_encoder"],
                "vae_name": tiny_models["vae"], "text": HOSTILE_TEXT, "width": 64, "height": 64, "length": 161}
    result = page.evaluate("""async ([workflow, settings]) => {
        const app = window.comfyAPI.app.app, api = window.comfyAPI.api.api;
        await app.loadGraphData(workflow);
        for (const node of app.graph._nodes)
            for (const widget of node.widgets ?? []) if (widget.name in settings) widget.value = settings[widget.name];
        const sampler = app.graph._nodes.find(n => n.comfyClass === "SelfForcingSampler");
        const root = sampler.selfforcingPreview.root;
        const times = {firstDraw: null, done: null};
        new MutationObserver(() => { if (root.dataset.framesDrawn) times.firstDraw ??= performance.now(); })
            .observe(root, {attributes: true});
        const finished = new Promise((resolve) => {
            for (const type of ["execution_success", "execution_error", "execution_interrupted"])
                api.addEventListener(type, () => { times.done ??= performance.now(); resolve(type); });
            setTimeout(() => resolve("no outcome within 240 s"), 240000);
        });
        await app.queuePrompt(0, 1);
        const outcome = await finished;
        await new Promise((resolve) => setTimeout(resolve, 500));
        return {outcome, ...times, state: root.dataset.state, received: root.dataset.framesReceived,
                caption: sampler.selfforcingPreview.caption.textContent,
                images: root.querySelectorAll("img").length, xss: window.__xss ?? null};
    }""", [workflow, settings])
    page.screenshot(path=str(tmp_path / "streaming_widget.png"))
    assert result["outcome"] == "execution_success"
    assert result["firstDraw"] is not None and result["firstDraw"] < result["done"]
    assert result["received"] == "161" and result["state"] == "looping"
    assert result["caption"] == HOSTILE_TEXT and result["images"] == 0 and result["xss"] is None

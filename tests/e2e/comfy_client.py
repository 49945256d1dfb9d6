"""A small client for a running ComfyUI: queue API-format prompts, follow /ws, read results."""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from typing import Any

import aiohttp

FINISHED_EVENTS = ("execution_success", "execution_error", "execution_interrupted")


class PromptRejected(Exception):
    """POST /prompt answered 400: the prompt failed validation (`body` has ComfyUI's error JSON)."""

    def __init__(self, body: dict[str, Any]):
        super().__init__(json.dumps(body)[:2000])
        self.body = body


class ComfyClient:
    """HTTP calls to one ComfyUI server plus a /ws listener that records every JSON event."""

    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.client_id = uuid.uuid4().hex
        self.events: list[dict[str, Any]] = []
        self._condition = threading.Condition()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._listen_forever, daemon=True)
        self._connected = threading.Event()

    # -- HTTP ---------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: Any = None, timeout: float = 60) -> tuple[int, bytes]:
        """One HTTP request; returns (status, raw body) for 2xx and 4xx/5xx alike."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def get_json(self, path: str) -> Any:
        """GET `path` and decode its JSON; raises on a non-200 answer."""
        status, raw = self.request("GET", path)
        if status != 200:
            raise RuntimeError(f"GET {path} -> {status}: {raw[:500]!r}")
        return json.loads(raw)

    def object_info(self, node_id: str | None = None) -> dict[str, Any]:
        """/object_info, or /object_info/<node_id> for one node."""
        return self.get_json("/object_info" + (f"/{urllib.parse.quote(node_id)}" if node_id else ""))

    def post_prompt(self, prompt: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """POST an API-format prompt under this client's id; returns (status, JSON answer)."""
        status, raw = self.request("POST", "/prompt", {"prompt": prompt, "client_id": self.client_id})
        return status, json.loads(raw)

    def queue(self, prompt: dict[str, Any]) -> str:
        """Queue a prompt and return its prompt_id; raises PromptRejected if validation fails."""
        status, body = self.post_prompt(prompt)
        if status != 200:
            raise PromptRejected(body)
        return body["prompt_id"]

    def history(self, prompt_id: str) -> dict[str, Any] | None:
        """The /history entry of one prompt (outputs and status), or None while it has none."""
        return self.get_json(f"/history/{prompt_id}").get(prompt_id)

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt (only that prompt when `prompt_id` is given)."""
        status, raw = self.request("POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {})
        if status != 200:
            raise RuntimeError(f"/interrupt -> {status}: {raw[:500]!r}")

    def view(self, filename: str, subfolder: str = "", folder_type: str = "output") -> bytes:
        """The bytes of an output/input/temp file through /view."""
        query = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": folder_type})
        status, raw = self.request("GET", f"/view?{query}")
        if status != 200:
            raise FileNotFoundError(f"/view {filename} -> {status}")
        return raw

    def queue_remaining(self) -> int:
        """How many prompts are running or pending."""
        return self.get_json("/prompt")["exec_info"]["queue_remaining"]

    # -- /ws ----------------------------------------------------------------------------------
    def connect(self, timeout: float = 30) -> "ComfyClient":
        """Start the /ws listener and wait for the server's first `status` message."""
        self._thread.start()
        if not self._connected.wait(timeout):
            raise TimeoutError(f"no /ws status from {self.base_url} in {timeout}s")
        return self

    def close(self) -> None:
        """Stop the /ws listener."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=10)

    def events_for(self, prompt_id: str, event_type: str | None = None) -> list[dict[str, Any]]:
        """Recorded events of one prompt, optionally of one type, in arrival order."""
        with self._condition:
            return [e for e in self.events
                    if e["data"].get("prompt_id") == prompt_id and event_type in (None, e["type"])]

    def wait_for_event(self, predicate, timeout: float) -> dict[str, Any]:
        """Block until a recorded event satisfies `predicate`; returns it."""
        deadline = time.monotonic() + timeout
        seen = 0
        with self._condition:
            while True:
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                seen = len(self.events)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no matching /ws event in {timeout}s")
                self._condition.wait(remaining)

    def wait(self, prompt_id: str, timeout: float = 300) -> dict[str, Any]:
        """Wait until the prompt succeeds, fails or is interrupted; returns its /history entry
        with the finishing event under the key `finished`."""
        finished = self.wait_for_event(
            lambda e: e["type"] in FINISHED_EVENTS and e["data"].get("prompt_id") == prompt_id, timeout)
        deadline = time.monotonic() + 30
        while (entry := self.history(prompt_id)) is None:  # /history is written just after the event
            if time.monotonic() > deadline:
                raise TimeoutError(f"prompt {prompt_id} finished but has no /history entry")
            time.sleep(0.05)
        return {**entry, "finished": finished}

    def run(self, prompt: dict[str, Any], timeout: float = 300) -> dict[str, Any]:
        """Queue a prompt and wait for it (see `wait`)."""
        return self.wait(self.queue(prompt), timeout)

    def _record(self, event: dict[str, Any]) -> None:
        with self._condition:
            self.events.append(event)
            self._condition.notify_all()

    def _listen_forever(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._loop.run_until_complete(self._listen())

    async def _listen(self) -> None:
        self._stop = asyncio.Event()
        ws_url = self.base_url.replace("http", "ws", 1) + f"/ws?clientId={self.client_id}"
        async with aiohttp.ClientSession() as session, session.ws_connect(ws_url, max_msg_size=0) as ws:
            reader = asyncio.ensure_future(self._read(ws))
            await self._stop.wait()
            reader.cancel()

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                event = json.loads(msg.data)
                event["data"] = event.get("data") or {}
                self._record(event)
                if event["type"] == "status":
                    self._connected.set()

// Streaming preview widget of the SelfForcingSampler node: draws each decoded chunk as soon as the
// server pushes it (event "selfforcing.frames"), paced at the video's fps, shows a frame counter,
// the measured generation fps and chunk progress, then loops the finished clip. After a page
// reload it replays the node's last clip (its "selfforcing_clip" output) from /view.
// Text from the server is only ever set through textContent, never parsed as HTML.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_CLASS = "SelfForcingSampler";
const FRAMES_EVENT = "selfforcing.frames";
const CLIP_KEY = "selfforcing_clip";
const WIDGET_NAME = "selfforcing_preview";
const MAX_FRAMES = 4096; // oldest frames are dropped past this (about 4 min at 16 fps)
const HISTORY_ITEMS = 64;

function styled(tag, style) {
  const element = document.createElement(tag);
  Object.assign(element.style, style);
  return element;
}

function base64ToBlob(data, mime) {
  const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
  return new Blob([bytes], { type: mime });
}

class StreamingPreview {
  constructor(node) {
    this.node = node;
    this.root = styled("div", {
      display: "flex", flexDirection: "column", gap: "4px", width: "100%", height: "100%",
      boxSizing: "border-box", padding: "4px", overflow: "hidden",
    });
    this.root.className = "selfforcing-preview";
    this.canvas = styled("canvas", {
      flex: "1 1 auto", minHeight: "0", width: "100%", objectFit: "contain", background: "#111",
      borderRadius: "4px",
    });
    this.status = styled("div", { font: "12px monospace", color: "#ccc", whiteSpace: "nowrap" });
    this.caption = styled("div", {
      font: "12px sans-serif", color: "#999", overflow: "hidden", textOverflow: "ellipsis",
      whiteSpace: "nowrap",
    });
    this.root.append(this.canvas, this.status, this.caption);
    this.context = this.canvas.getContext("2d");
    this.reset(null);
    this.clip = null;
    this.video = null;
    this.frameRequest = requestAnimationFrame((now) => this.tick(now));
  }

  reset(promptId) {
    this.promptId = promptId;
    this.frames = [];
    this.dropped = 0;
    this.fps = 16;
    this.chunk = 0;
    this.chunks = 0;
    this.totalFrames = 0;
    this.startedAt = null;
    this.lastArrival = null;
    this.shown = -1;
    this.nextDue = 0;
    this.drawing = false;
    this.framesDrawn = 0;
    this.finished = false;
    this.setState(promptId ? "streaming" : "idle");
    this.render();
  }

  setState(state) {
    this.state = state;
    this.root.dataset.state = state;
  }

  markStart(promptId) {
    if (promptId !== this.promptId) this.reset(promptId);
    this.startedAt ??= performance.now();
    this.stopClip();
  }

  addChunk(data) {
    if (data.prompt_id !== this.promptId) this.reset(data.prompt_id);
    this.stopClip();
    const now = performance.now();
    this.startedAt ??= now;
    this.lastArrival = now;
    this.fps = Number(data.fps) || this.fps;
    this.chunk = Number(data.chunk) + 1;
    this.chunks = Number(data.chunks) || this.chunks;
    this.totalFrames = Number(data.total_frames) || this.totalFrames;
    if (data.width && data.height && (this.canvas.width !== data.width || this.canvas.height !== data.height)) {
      this.canvas.width = data.width;
      this.canvas.height = data.height;
    }
    const mime = typeof data.mime === "string" ? data.mime : "image/jpeg";
    for (const frame of data.frames ?? []) this.frames.push(base64ToBlob(frame, mime));
    if (this.frames.length > MAX_FRAMES) {
      const excess = this.frames.length - MAX_FRAMES;
      this.frames.splice(0, excess);
      this.shown = Math.max(-1, this.shown - excess);
      this.dropped += excess;
    }
    if (typeof data.text === "string") this.caption.textContent = data.text;
    if (this.chunks && this.chunk >= this.chunks) this.finish(this.promptId);
    this.render();
  }

  finish(promptId) {
    if (promptId !== this.promptId || this.finished) return;
    this.finished = true;
    if (this.frames.length) this.setState("looping");
    this.render();
  }

  setClip(clip) {
    this.clip = clip;
    if (this.state === "idle") this.playClip();
  }

  playClip() {
    if (!this.clip || this.video) return;
    const params = new URLSearchParams({
      filename: this.clip.filename, subfolder: this.clip.subfolder ?? "", type: this.clip.type ?? "temp",
    });
    const video = document.createElement("video");
    Object.assign(video, { muted: true, loop: true, playsInline: true, autoplay: true });
    video.src = api.apiURL(`/view?${params}`);
    video.addEventListener("loadeddata", () => {
      this.canvas.width = video.videoWidth;
      this.canvas.height = video.videoHeight;
      video.play().catch(() => {});
    });
    this.video = video;
    this.setState("clip");
    this.render();
  }

  stopClip() {
    if (!this.video) return;
    this.video.pause();
    this.video.removeAttribute("src");
    this.video.load();
    this.video = null;
  }

  tick(now) {
    if (this.video) {
      if (this.video.readyState >= 2) this.context.drawImage(this.video, 0, 0, this.canvas.width, this.canvas.height);
    } else if (this.frames.length && !this.drawing && now >= this.nextDue) {
      const next = this.shown + 1;
      if (next < this.frames.length) this.draw(next, now);
      else if (this.finished && this.frames.length > 1) this.draw(0, now);
    }
    this.frameRequest = requestAnimationFrame((t) => this.tick(t));
  }

  async draw(index, now) {
    this.drawing = true;
    this.nextDue = now + 1000 / this.fps;
    const promptId = this.promptId;
    try {
      const bitmap = await createImageBitmap(this.frames[index]);
      if (promptId === this.promptId) {
        this.context.drawImage(bitmap, 0, 0, this.canvas.width, this.canvas.height);
        this.shown = index;
        this.framesDrawn += 1;
        this.root.dataset.framesDrawn = String(this.framesDrawn);
        this.render();
      }
      bitmap.close();
    } finally {
      this.drawing = false;
    }
  }

  render() {
    const received = this.frames.length + this.dropped;
    const seconds = this.startedAt != null && this.lastArrival != null ? (this.lastArrival - this.startedAt) / 1000 : 0;
    const measured = seconds > 0 ? (received / seconds).toFixed(1) : "-";
    const total = this.totalFrames ? `/${this.totalFrames}` : "";
    const shown = this.shown >= 0 ? this.shown + 1 + this.dropped : 0;
    const parts = {
      idle: "waiting for the sampler",
      clip: "last clip (looping)",
      streaming: `frame ${shown}${total} · ${measured} fps · chunk ${this.chunk}/${this.chunks || "?"}`,
      looping: `${received} frames · ${measured} fps · looping`,
    };
    this.status.textContent = parts[this.state];
    Object.assign(this.root.dataset, {
      promptId: this.promptId ?? "", framesReceived: String(received), chunk: String(this.chunk),
    });
  }

  dispose() {
    cancelAnimationFrame(this.frameRequest);
    this.stopClip();
    this.frames = [];
  }
}

function attachPreview(node) {
  if (node.selfforcingPreview) return node.selfforcingPreview;
  const preview = new StreamingPreview(node);
  const widget = node.addDOMWidget(WIDGET_NAME, "selfforcing_preview", preview.root, {
    serialize: false, hideOnZoom: false, getMinHeight: () => 200,
  });
  widget.serialize = false;
  node.selfforcingPreview = preview;
  const onRemoved = node.onRemoved;
  node.onRemoved = function () {
    preview.dispose();
    delete node.selfforcingPreview;
    return onRemoved?.apply(this, arguments);
  };
  const [width, height] = node.size;
  node.setSize([Math.max(width, 320), Math.max(height, 420)]);
  return preview;
}

function previewOf(nodeId) {
  if (nodeId == null || !app.graph) return null;
  return app.graph.getNodeById(nodeId)?.selfforcingPreview ?? null;
}

function allPreviews() {
  return (app.graph?._nodes ?? []).map((node) => node.selfforcingPreview).filter(Boolean);
}

// The last clip each sampler node produced, from /history (node outputs do not survive a reload).
const lastClips = new Map();

async function loadLastClips() {
  const response = await api.fetchApi(`/history?max_items=${HISTORY_ITEMS}`);
  if (!response.ok) return;
  const history = await response.json();
  for (const entry of Object.values(history)) {
    const graph = entry.prompt?.[2] ?? {};
    for (const [nodeId, output] of Object.entries(entry.outputs ?? {})) {
      const clip = output?.[CLIP_KEY]?.[0];
      if (clip && graph[nodeId]?.class_type === NODE_CLASS) lastClips.set(String(nodeId), clip);
    }
  }
  for (const preview of allPreviews()) restoreClip(preview);
}

function restoreClip(preview) {
  const clip = lastClips.get(String(preview.node.id));
  if (clip) preview.setClip(clip);
}

app.registerExtension({
  name: "SelfForcing.StreamingPreview",

  async setup() {
    api.addEventListener(FRAMES_EVENT, ({ detail }) => previewOf(detail?.node)?.addChunk(detail));
    // "executing" carries only the node id; the prompt id comes from "execution_start".
    let runningPrompt = null;
    api.addEventListener("execution_start", ({ detail }) => { runningPrompt = detail?.prompt_id ?? null; });
    api.addEventListener("executing", ({ detail }) => {
      if (runningPrompt) previewOf(detail)?.markStart(runningPrompt);
    });
    api.addEventListener("executed", ({ detail }) => {
      const clip = detail?.output?.[CLIP_KEY]?.[0];
      if (!clip) return;
      lastClips.set(String(detail.node), clip);
      previewOf(detail.node)?.setClip(clip);
    });
    for (const type of ["execution_success", "execution_error", "execution_interrupted"]) {
      api.addEventListener(type, ({ detail }) => {
        for (const preview of allPreviews()) preview.finish(detail?.prompt_id);
      });
    }
    loadLastClips().catch((error) => console.warn("SelfForcing: could not read /history", error));
  },

  async nodeCreated(node) {
    if (node.comfyClass === NODE_CLASS) attachPreview(node);
  },

  async loadedGraphNode(node) {
    if (node.comfyClass === NODE_CLASS) restoreClip(attachPreview(node));
  },
});

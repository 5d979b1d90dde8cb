// The example page: one native-messaging port to tabagent-host; every request
// carries an id, and every message back names the id it belongs to.
const HOST = "com.tabagent.host";
const $ = (id) => document.getElementById(id);
let port = null;
let nextId = 1;
const pending = new Map(); // id -> {onMessage(msg), resolve, reject}
const chunks = new Map();  // id -> [data...] of a message split in chunks

function status(text) { $("status").textContent = text; }

function connect() {
  port = chrome.runtime.connectNative(HOST);
  port.onMessage.addListener(onMessage);
  port.onDisconnect.addListener(() => {
    status("Disconnected from the host: " + (chrome.runtime.lastError?.message || "it exited"));
    port = null;
  });
}

function onMessage(msg) {
  if (msg.type === "chunk") {
    const parts = chunks.get(msg.id) || [];
    parts[msg.index] = msg.data;
    chunks.set(msg.id, parts);
    if (parts.filter((p) => p !== undefined).length === msg.count) {
      chunks.delete(msg.id);
      onMessage(JSON.parse(parts.join("")));
    }
    return;
  }
  const p = pending.get(msg.id);
  if (!p) return;
  if (msg.type === "result") { pending.delete(msg.id); p.resolve(msg.result); }
  else if (msg.type === "error") { pending.delete(msg.id); p.reject(new Error(`${msg.code}: ${msg.message}`)); }
  else p.onMessage?.(msg);
}

function request(action, fields = {}, onMessage = null) {
  if (!port) connect();
  const id = String(nextId++);
  const done = new Promise((resolve, reject) => pending.set(id, { resolve, reject, onMessage }));
  port.postMessage({ id, action, ...fields });
  return { id, done };
}

async function refreshModels() {
  const r = await request("LIST_MODELS").done;
  const sel = $("models");
  sel.innerHTML = "";
  for (const m of r.loaded) sel.add(new Option(`${m.model} (${m.quantization})`, m.model));
  return r;
}

// Progress messages of a download or a load ("stage"), in bytes.
function showProgress(m) {
  if (m.type === "progress" && m.total > 0) {
    $("progress").value = m.done / m.total;
    const verb = m.stage === "load" ? "loaded" : "downloaded";
    $("progress-text").textContent = `${(m.done / 1e6).toFixed(1)} / ${(m.total / 1e6).toFixed(1)} MB ${verb}`;
  }
}

$("pull").onclick = async () => {
  status("Pulling…");
  $("progress").value = 0;
  try {
    const { done } = request("PULL_MODEL", { repo: $("repo").value, variant: $("variant").value }, showProgress);
    await done;
    $("progress").value = 1;
    status("Pulled.");
  } catch (e) { status("Pull failed: " + e.message); }
};

$("load").onclick = async () => {
  status("Loading…");
  $("progress").value = 0;
  try {
    const r = await request("LOAD_MODEL", { repo: $("repo").value, variant: $("variant").value }, showProgress).done;
    await refreshModels();
    $("models").value = r.model;
    status(`Loaded ${r.model}.`);
  } catch (e) { status("Load failed: " + e.message); }
};

let running = null;
$("ask").onclick = async () => {
  const model = $("models").value;
  if (!model) { status("Load a model first."); return; }
  $("answer").textContent = "";
  $("ask").disabled = true;
  $("stop").disabled = false;
  status("Answering…");
  const req = request("GENERATE", {
    model,
    messages: [{ role: "user", content: $("question").value }],
    params: { temperature: 0, max_tokens: Number($("max-tokens").value) || 256 },
  }, (m) => { if (m.type === "token") $("answer").textContent += m.text; });
  running = req.id;
  try {
    const r = await req.done;
    status(r.stop_reason === "cancelled" ? "Stopped." :
      `Done: ${r.n_generated_tokens} tokens (${r.stop_reason}).`);
  } catch (e) { status("Failed: " + e.message); }
  running = null;
  $("ask").disabled = false;
  $("stop").disabled = true;
};

$("stop").onclick = () => { if (running) request("CANCEL", { target: running }); };

(async () => {
  try {
    const r = await request("PING").done;
    status(`Connected to tabagent ${r.version}.`);
    await refreshModels();
  } catch (e) { status("No host: " + e.message); }
})();

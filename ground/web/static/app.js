// The ground console: each edge's link, the queue (live), a recording
// dropped on the page queued for an edge, cancel and bump.
"use strict";

const $ = (id) => document.getElementById(id);
const token = document.querySelector('meta[name="relay-token"]').content;
const ACTIVE = new Set(["queued", "encoding", "ready", "sending"]);

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
}

function span(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 90) return `${s} s`;
  if (s < 5400) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${Math.round(s / 86400)} days`;
}

const ago = (t) => (t ? `${span(Date.now() / 1000 - t)} ago` : "never");

function bytes(n) {
  if (n === null || n === undefined) return "";
  return n < 10000 ? `${n} B` : n < 1e7 ? `${(n / 1024).toFixed(1)} KB` : `${(n / 1048576).toFixed(1)} MB`;
}

async function call(url, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (options.method && options.method !== "GET") headers["X-Relay-Token"] = token;
  const r = await fetch(url, { ...options, headers });
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (r.status === 401) location.href = "/login";
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

function daemonLine(d) {
  if (!d) return ["no ground daemon has run on this queue", "bad"];
  if (!d.alive) return [`ground daemon not running (last seen ${ago(d.beat)})`, "bad"];
  return d.connected ? [`link up since ${new Date(d.since * 1000).toLocaleTimeString()}`, "good"]
    : [`link down for ${span(Date.now() / 1000 - d.since)}: reconnecting`, "bad"];
}

function edgeCard(e) {
  const budget = e.budget_bytes_per_s;
  const share = budget ? Math.min(1, e.rate_bytes_per_s / budget) : 0;
  const meter = el("div", { className: "meter" }, el("span", { style: `width: ${(share * 100).toFixed(0)}%` }));
  const heard = e.connected === null ? "unknown (no daemon)" : e.last_ack ? `last ack ${ago(e.last_ack)}` : "no ack yet";
  const rows = [
    ["link", heard],
    ["rate", budget ? `${e.rate_bytes_per_s.toFixed(1)} of ${budget} B/s` : `${e.rate_bytes_per_s.toFixed(1)} B/s (no budget)`],
    ["window", e.window_opens_in_s > 0 ? `closed: opens in ${span(e.window_opens_in_s)}` : "open"],
    ["backlog", `${e.backlog_entries} entr${e.backlog_entries === 1 ? "y" : "ies"}, ${bytes(e.backlog_bytes)}` +
      (e.backlog_entries ? `, ETA ${span(e.eta_s)}` : "")],
    ["delivered", `${e.delivered} (played ${e.played}` + (e.quarantined ? `, quarantined ${e.quarantined}` : "") + ")" +
      (e.failed ? `, failed ${e.failed}` : "")],
  ];
  const dl = el("dl");
  for (const [k, v] of rows) dl.append(el("dt", { textContent: k }), el("dd", { textContent: v }));
  if (budget) dl.children[3].append(meter);
  const card = el("div", { className: "edge" }, el("span", { className: "name", textContent: e.edge }), dl);
  card.dataset.edge = e.edge;
  return card;
}

async function loadStatus() {
  const s = await call("/api/status");
  const [line, cls] = daemonLine(s.daemon);
  Object.assign($("daemon"), { textContent: line, className: `state ${cls}` });
  $("edges").replaceChildren(...s.edges.map(edgeCard));
  const to = $("to");
  if (!to.options.length) {
    for (const e of s.edges) to.append(el("option", { value: e.edge, textContent: e.edge }));
    if (s.default_edge) to.value = s.default_edge;
  }
}

function progress(i) {
  if (i.state === "sending" && i.fragments) {
    return `${i.fragments - i.pending_fragments}/${i.fragments} fragments` + (i.polls ? `, ${i.polls} poll(s)` : "");
  }
  if (i.state === "delivered") return `delivered ${ago(i.delivered)}`;
  return i.reason || "";
}

function played(i) {
  if (i.play_state) return `${i.play_state} ${ago(i.played)}` + (i.play_reason ? `: ${i.play_reason}` : "");
  return i.state === "delivered" ? "not yet" : "";
}

function act(label, url, title) {
  const b = el("button", { type: "button", textContent: label, title });
  b.onclick = async () => {
    b.disabled = true;
    try {
      await call(url, { method: "POST" });
      await loadQueue();
    } catch (err) {
      $("sent").textContent = err.message;
      b.disabled = false;
    }
  };
  return b;
}

async function loadQueue() {
  const rows = await call("/api/queue");
  $("queue").tBodies[0].replaceChildren(...rows.map((i) => {
    const actions = el("span", { className: "actions" });
    if (ACTIVE.has(i.state)) {
      actions.append(act("Bump", `/api/queue/${i.id}/bump`, "first among its priority"),
        act("Cancel", `/api/queue/${i.id}/cancel`, "stop sending it"));
    }
    const tr = el("tr", { className: i.state },
      el("td", { textContent: i.id }), el("td", { className: "title", textContent: i.title }),
      el("td", { textContent: i.edge }), el("td", { textContent: i.priority }),
      el("td", { className: "st", textContent: i.state }), el("td", { textContent: bytes(i.bundle_bytes) }),
      el("td", { className: i.reason ? "reason" : "", textContent: progress(i) }),
      el("td", { textContent: ACTIVE.has(i.state) ? span(i.eta_s) : "" }),
      el("td", { textContent: played(i) }), el("td", {}, actions));
    tr.dataset.id = i.id;
    return tr;
  }));
  $("empty").hidden = rows.length > 0;
}

function send(file) {
  const q = new URLSearchParams({ name: file.name, to: $("to").value, priority: $("priority").value,
    title: $("title").value.trim() });
  const bar = $("progress");
  Object.assign(bar, { hidden: false, value: 0 });
  $("sent").textContent = `Sending ${file.name}…`;
  const xhr = new XMLHttpRequest(); // fetch cannot report an upload's progress
  xhr.open("POST", `/api/queue?${q}`);
  xhr.setRequestHeader("X-Relay-Token", token);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
  xhr.onload = () => {
    bar.hidden = true;
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch { body = { error: xhr.statusText }; }
    $("sent").textContent = xhr.status === 201 ? `Queued entry ${body.id}: ${body.title} → ${body.edge} (${body.priority})`
      : `Not queued: ${body.error || xhr.statusText}`;
    $("sent").className = xhr.status === 201 ? "good" : "bad";
    $("title").value = "";
    refresh();
  };
  xhr.onerror = () => { bar.hidden = true; $("sent").textContent = "Not queued: the ground did not answer"; };
  xhr.send(file);
}

const drop = $("drop");
for (const kind of ["dragenter", "dragover"]) {
  drop.addEventListener(kind, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const kind of ["dragleave", "drop"]) drop.addEventListener(kind, () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer.files.length) send(e.dataTransfer.files[0]);
});
$("file").addEventListener("change", (e) => {
  if (e.target.files.length) send(e.target.files[0]);
  e.target.value = "";
});

let pending = null;
function refresh() { // at most one reload at a time, however fast the events come
  if (pending) return;
  pending = Promise.all([loadQueue(), loadStatus()]).catch((err) => { $("sent").textContent = err.message; })
    .finally(() => { pending = null; });
}

new EventSource("/api/events").addEventListener("queue", refresh);
setInterval(refresh, 15000); // ages, windows and rates move even when nothing happens
refresh();

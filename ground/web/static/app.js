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
  return [d.line, d.alive && d.connected ? "good" : "bad"];
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
      (e.to_encode ? ` (${e.to_encode} to encode)` : "") +
      (!e.backlog_entries ? "" : e.eta_s !== null ? `, ETA ${span(e.eta_s)}`
        : e.to_encode === e.backlog_entries ? ", ETA after encoding" : "")],
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

let groups = {};

function fillTo(s) { // edges, groups and all, once: the operator's choice must not jump under them
  const to = $("to");
  if (to.options.length) return;
  const names = s.edges.map((e) => e.edge);
  const edges = el("optgroup", { label: "Edges" });
  for (const n of names) edges.append(el("option", { value: n, textContent: n }));
  to.append(edges);
  const sets = el("optgroup", { label: "Groups" });
  for (const [g, members] of Object.entries(s.groups)) {
    sets.append(el("option", { value: `@${g}`, textContent: `@${g} (${members.length} edges)`,
      disabled: members.length === 0 }));
  }
  if (names.length > 1) sets.append(el("option", { value: "all", textContent: `all (${names.length} edges)` }));
  if (sets.children.length) to.append(sets);
  if (s.default_edge) to.value = s.default_edge;
}

function fleetView(f) {
  const line = el("div", { className: "heard" },
    el("strong", { textContent: `#${f.id} ${f.title}` }),
    el("span", { textContent: ` played on ${f.played} of ${f.edges} edges` }));
  if (f.not_yet.length) {
    line.append(el("br"), el("span", { className: "not", textContent: `not yet: ${f.not_yet.join(", ")}` }));
  }
  return line;
}

async function loadStatus() {
  const s = await call("/api/status");
  groups = s.groups;
  const [line, cls] = daemonLine(s.daemon);
  Object.assign($("daemon"), { textContent: line, className: `state ${cls}` });
  $("edges").replaceChildren(...s.edges.map(edgeCard));
  fillTo(s);
  $("fleet").replaceChildren(...s.fleet.map(fleetView));
  $("fleet-title").hidden = s.fleet.length === 0;
}

function progress(i) {
  if ((i.state === "failed" || i.state === "cancelled") && i.reason) return i.reason;
  if (i.state === "sending" && i.fragments) {
    return `${i.fragments - i.pending_fragments}/${i.fragments} fragments` + (i.polls ? `, ${i.polls} poll(s)` : "");
  }
  if (i.state === "delivered") return `delivered ${ago(i.delivered)}`;
  if (i.state === "queued" || i.state === "encoding") return "waiting to be encoded";
  return i.reason || "";
}

function played(i) {
  if (i.play_state) return `${i.play_state} ${ago(i.played)}` + (i.play_reason ? `: ${i.play_reason}` : "");
  return i.state === "delivered" ? "not yet" : "";
}

function eta(i, seconds) {
  if (!ACTIVE.has(i.state)) return "";
  if (seconds === null || seconds === undefined) return i.bundle_bytes ? "–" : "after encoding";
  return span(seconds);
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

function actions(id, active, edge) {
  const box = el("span", { className: "actions" });
  if (!active) return box;
  const q = edge ? `?edge=${encodeURIComponent(edge)}` : "";
  const who = edge ? ` for ${edge}` : "";
  box.append(act("Bump", `/api/queue/${id}/bump${q}`, `first among its priority${who}`),
    act("Cancel", `/api/queue/${id}/cancel${q}`, `stop sending it${who}`));
  return box;
}

function cell(label, props) { // labelled, for the phone's cards
  const td = el("td", props);
  td.dataset.label = label;
  return td;
}

const open = new Set(); // entries whose edges are shown

function entryRows(e) {
  const one = e.rows.length === 1 ? e.rows[0] : null;
  const title = cell("Title", { className: "title" });
  title.append(el("span", { className: "name", textContent: e.title }),
    el("span", { className: "meta", textContent: bytes(e.bundle_bytes) }));
  const to = cell("To");
  if (one) {
    to.textContent = one.edge;
  } else {
    const toggle = el("button", { type: "button", className: "link",
      textContent: `${open.has(e.id) ? "▾" : "▸"} ${e.edges} edges` });
    toggle.setAttribute("aria-expanded", open.has(e.id));
    toggle.onclick = () => { open.has(e.id) ? open.delete(e.id) : open.add(e.id); render(); };
    to.append(toggle);
  }
  const i = one || { ...e, state: e.state, reason: null };
  const stateText = one ? one.state : e.state;
  const progressText = one ? progress(one) : `${e.delivered}/${e.edges} delivered` +
    (e.failed ? `, ${e.failed} failed` : "") + (e.cancelled ? `, ${e.cancelled} cancelled` : "");
  const playedText = one ? played(one) : `${e.played}/${e.edges} played`;
  const tr = el("tr", { className: stateText },
    cell("#", { textContent: e.id }), title, to,
    cell("Priority", { className: `pri-${e.priority}`, textContent: e.priority }),
    cell("State", { className: "st", textContent: stateText }),
    cell("Progress", { className: (one && one.reason) ? "reason" : "", textContent: progressText }),
    cell("ETA", { textContent: eta(i, e.eta_s) }),
    cell("Played", { textContent: playedText }),
    el("td", {}, actions(e.id, ACTIVE.has(e.state), null)));
  tr.dataset.id = e.id;
  const rows = [tr];
  if (!one && open.has(e.id)) {
    for (const r of e.rows) {
      const part = el("tr", { className: `part ${r.state}` },
        el("td"), el("td"), cell("Edge", { textContent: r.edge }),
        cell("Priority", { className: `pri-${r.priority}`, textContent: r.priority }),
        cell("State", { className: "st", textContent: r.state }),
        cell("Progress", { className: r.reason ? "reason" : "", textContent: progress(r) }),
        cell("ETA", { textContent: eta(r, r.eta_s) }),
        cell("Played", { textContent: played(r) }),
        el("td", {}, actions(e.id, ACTIVE.has(r.state), r.edge)));
      part.dataset.id = e.id;
      part.dataset.edge = r.edge;
      rows.push(part);
    }
  }
  return el("tbody", { className: "entry" }, ...rows);
}

let last = { active: [], finished: [] };

function render() {
  const q = $("queue"), done = $("done");
  for (const t of [q, done]) for (const b of [...t.tBodies]) b.remove();
  q.append(...last.active.map(entryRows));
  done.append(...last.finished.map(entryRows));
  $("empty").hidden = last.active.length > 0;
  q.hidden = last.active.length === 0;
  $("done-count").textContent = `(${last.finished.length})`;
  $("done-box").hidden = last.finished.length === 0;
}

async function loadQueue() {
  last = await call("/api/queue");
  render();
}

function send(file) {
  const q = new URLSearchParams({ name: file.name, to: $("to").value, priority: $("priority").value,
    title: $("title").value.trim() });
  const bar = $("progress");
  Object.assign(bar, { hidden: false, value: 0 });
  $("sent").textContent = `Sending ${file.name}…`;
  $("sent").className = "";
  const xhr = new XMLHttpRequest(); // fetch cannot report an upload's progress
  xhr.open("POST", `/api/queue?${q}`);
  xhr.setRequestHeader("X-Relay-Token", token);
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) bar.value = e.loaded / e.total; };
  xhr.onload = () => {
    bar.hidden = true;
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch { body = { error: xhr.statusText }; }
    const ok = xhr.status === 201;
    const where = ok && body.edges > 1 ? `${body.edges} edges` : ok ? body.rows[0].edge : "";
    $("sent").textContent = ok ? `Queued entry ${body.id}: ${body.title} → ${where} (${body.priority})`
      : `Not queued: ${body.error || xhr.statusText}`;
    $("sent").className = ok ? "good" : "bad";
    if (ok) $("title").value = ""; // a refused upload keeps what was typed, to try again
    refresh();
  };
  xhr.onerror = () => {
    bar.hidden = true;
    $("sent").textContent = "Not queued: the ground did not answer";
    $("sent").className = "bad";
  };
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

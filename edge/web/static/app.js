// The station console: the list of bundles (live), a player with the
// transcript beside it (the word being spoken highlighted, a click seeks),
// speed with pitch kept, shorter pauses, per-speaker volume, search.
"use strict";

const $ = (id) => document.getElementById(id);
const token = document.querySelector('meta[name="relay-token"]').content;
const audio = $("audio");
const PAUSE = 0.6; // seconds of silence "shorten pauses" cuts down to ~0.3 s

let current = null; // {id, words: [{start, end, speaker, el}], volumes: {speaker: 0..1}}
let lastWord = -1;

function clock(seconds) {
  const s = Math.max(0, Math.floor(seconds || 0));
  const m = Math.floor(s / 60);
  return m >= 60 ? `${Math.floor(m / 60)}:${String(m % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`
    : `${m}:${String(s % 60).padStart(2, "0")}`;
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  for (const c of children) node.append(c);
  return node;
}

async function getJSON(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || r.statusText);
  return body;
}

let relist = null;

// play() is refused when a pause (or another bundle) comes first, or before the page has had a gesture:
// neither is an error, and the player's own controls show what happened
function playing() { audio.play().catch(() => {}); }

async function loadList() {
  const items = await getJSON("/api/bundles");
  // speakers not read yet (a console started over a store of old bundles reads them in the background)
  clearTimeout(relist);
  if (items.some((b) => b.speakers === null)) relist = setTimeout(() => loadList().catch(() => {}), 3000);
  const list = $("bundles");
  list.replaceChildren(...items.map((b) => {
    const when = new Date(b.received * 1000).toLocaleString();
    const li = el("li", { className: `bundle ${b.state}`, tabIndex: 0 },
      el("span", { className: "title", textContent: b.title }),
      el("span", { className: "meta" },
        `${when} · ${clock(b.duration)} · ${b.parts ? `${b.parts} part${b.parts === 1 ? "" : "s"} · ` : ""}`,
        el("span", { className: `pri pri-${b.priority ?? "unknown"}`, textContent: b.priority ?? "?" }),
        b.speakers === null ? " · reading…" : ` · ${b.speakers.join(", ")}`),
      el("span", { className: "state", textContent: b.reason ? `${b.state}: ${b.reason}` : b.state }));
    li.dataset.id = b.id;
    if (current && current.id === b.id) li.classList.add("open");
    li.onclick = () => open(b.id);
    li.onkeydown = (e) => { if (e.key === "Enter") open(b.id); };
    return li;
  }));
  $("empty").hidden = items.length > 0;
}

async function open(id, at, resume) {
  const b = await getJSON(`/api/bundles/${id}`);
  current = { id, words: [], volumes: {}, live: b.state === "live", parts: b.parts };
  lastWord = -1;
  $("player").hidden = false;
  $("title").textContent = b.title;
  $("meta").textContent = `${clock(b.duration)} · ${b.priority ?? "?"} · ${b.state}`;
  const box = $("player").getBoundingClientRect();
  if (box.top < 0 || box.top > window.innerHeight - 80) $("player").scrollIntoView({ block: "start" }); // in view
  for (const fmt of ["txt", "vtt", "srt"]) $(`get-${fmt}`).href = `/api/bundles/${id}/text.${fmt}`;
  $("get-wav").href = `/api/bundles/${id}/audio.wav`;
  const transcript = $("transcript");
  transcript.replaceChildren();
  b.segments.forEach((seg) => {
    const who = b.speakers[seg.speaker] || { name: `S${seg.speaker + 1}`, colour: "#333" };
    const p = el("p", { className: "seg" }, el("b", { className: "who", textContent: who.name }));
    p.style.borderColor = who.colour;
    p.querySelector(".who").style.color = who.colour;
    for (const [text, start, end] of seg.words) {
      const w = el("span", { className: "w", textContent: text });
      w.dataset.start = start;
      w.onclick = () => { audio.currentTime = start; playing(); };
      current.words.push({ start, end, speaker: seg.speaker, el: w });
      p.append(" ", w);
    }
    transcript.append(p);
  });
  $("volumes").replaceChildren(...b.speakers.map((s, i) => {
    current.volumes[i] = 1;
    const range = el("input", { type: "range", min: 0, max: 1, step: 0.05, value: 1 });
    range.setAttribute("aria-label", `Volume of ${s.name}`);
    range.dataset.speaker = i;
    range.oninput = () => { current.volumes[i] = Number(range.value); };
    const label = el("label", { className: "vol" }, el("span", { textContent: s.name }), range);
    label.style.color = s.colour;
    return label;
  }));
  for (const li of document.querySelectorAll("#bundles li")) li.classList.toggle("open", li.dataset.id === id);
  $("loading").hidden = false;
  audio.src = `/api/bundles/${id}/audio.wav`;
  audio.playbackRate = Number($("speed").value);
  audio.preservesPitch = true;
  audio.addEventListener("canplay", () => { $("loading").hidden = true; }, { once: true });
  if (at !== undefined) {
    audio.addEventListener("loadedmetadata", () => {
      audio.currentTime = at;
      if (resume) playing();
    }, { once: true });
  }
  audio.load();
}

// a live stream: when the audio runs out, carry on with the parts that came meanwhile
audio.addEventListener("ended", async () => {
  if (!current || !current.live) return;
  const here = audio.currentTime;
  const b = await getJSON(`/api/bundles/${current.id}`);
  if (b.parts > current.parts) open(current.id, here, true);
});

function wordAt(t) { // the last word that started by t (binary search)
  const ws = current.words;
  let lo = 0, hi = ws.length - 1, found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (ws[mid].start <= t) { found = mid; lo = mid + 1; } else hi = mid - 1;
  }
  return found;
}

function tick() {
  if (current && current.words.length) {
    const t = audio.currentTime;
    const i = wordAt(t);
    if (i !== lastWord) {
      if (lastWord >= 0) current.words[lastWord].el.classList.remove("now");
      if (i >= 0) {
        const w = current.words[i].el;
        w.classList.add("now");
        if (!audio.paused) w.scrollIntoView({ block: "nearest" });
      }
      lastWord = i;
    }
    if (i >= 0) {
      const w = current.words[i];
      audio.volume = current.volumes[w.speaker] ?? 1;
      const next = current.words[i + 1];
      if ($("shorten").checked && !audio.paused && next && next.start - w.end > PAUSE
          && t > w.end + 0.15 && t < next.start - 0.2) {
        audio.currentTime = next.start - 0.15;
      }
    }
  }
  requestAnimationFrame(tick);
}

$("speed").onchange = () => {
  audio.preservesPitch = true;
  audio.playbackRate = Number($("speed").value);
};

$("station").onclick = async () => {
  if (!current) return;
  $("status").textContent = "Playing on the station speakers…";
  try {
    await getJSON(`/api/bundles/${current.id}/play`, { method: "POST", headers: { "X-Relay-Token": token } });
    $("status").textContent = "Played on the station speakers.";
  } catch (e) {
    $("status").textContent = e.message;
  }
};

let searchTimer = null;
$("q").oninput = () => {
  clearTimeout(searchTimer);
  searchTimer = setTimeout(search, 250);
};
$("search").onsubmit = (e) => { e.preventDefault(); search(); };

async function search() {
  const q = $("q").value.trim();
  const hits = $("hits");
  if (!q) { hits.hidden = true; return; }
  let found;
  try {
    found = await getJSON(`/api/search?q=${encodeURIComponent(q)}`);
  } catch (e) {
    hits.replaceChildren(el("li", { className: "none", textContent: e.message }));
    hits.hidden = false;
    return;
  }
  hits.replaceChildren(...(found.length ? found.map((h) => {
    const li = el("li", { className: "hit", tabIndex: 0 },
      el("span", { className: "meta", textContent: `${h.title} · ${clock(h.start)} · ${h.speaker}` }),
      el("span", { className: "snippet", textContent: h.snippet }));
    li.onclick = () => open(h.bundle_id, h.start);
    return li;
  }) : [el("li", { className: "none", textContent: `Nothing says “${q}”.` })]));
  hits.hidden = false;
}

const events = new EventSource("/api/events");
events.addEventListener("bundles", () => loadList().catch(() => {}));
loadList();
requestAnimationFrame(tick);

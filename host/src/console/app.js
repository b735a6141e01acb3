// The agent-inbox console. Everything a peer or an agent wrote is shown with textContent, never
// parsed as HTML, so a payload cannot run script here. Reads go to the inbox's own JSON API with the
// session cookie; the one write (retrying a dead letter) also sends the page's CSRF token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const view = document.getElementById("view");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin" }, options || {}));
  if (r.status === 401) { location.href = "/console"; throw new Error("signed out"); }
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error((body.error && body.error.message) || r.status);
  return body;
}

const when = (ms) => ms ? new Date(ms).toLocaleString() : "";
const pretty = (v) => JSON.stringify(v, null, 2);
const stateTag = (s) => el("span", { class: "state " + s, "data-state": s }, s);

function elapsed(turn) {
  if (!turn || !turn.started_at) return "";
  const end = turn.ended_at || Date.now();
  return Math.round((end - turn.started_at) / 1000) + " s";
}

async function threads() {
  const { messages } = await api("/messages?limit=500");
  const byThread = new Map();
  for (const m of messages) {
    const t = byThread.get(m.thread_id) || { id: m.thread_id, count: 0, last: m };
    t.count += 1;
    if (m.received_at > t.last.received_at) t.last = m;
    byThread.set(m.thread_id, t);
  }
  const rows = [...byThread.values()].sort((a, b) => b.last.received_at - a.last.received_at);
  view.replaceChildren(
    el("h2", {}, "Conversations"),
    el("table", { id: "threads" },
      el("tr", {}, el("th", {}, "Last message"), el("th", {}, "From"), el("th", {}, "Route"),
        el("th", {}, "Type"), el("th", {}, "Messages"), el("th", {}, "Turn")),
      ...rows.map((t) => el("tr", { class: "thread", "data-thread": t.id,
          onclick: () => { location.hash = "thread/" + encodeURIComponent(t.id); } },
        el("td", {}, when(t.last.received_at)), el("td", {}, t.last.sender),
        el("td", {}, t.last.route), el("td", {}, t.last.type), el("td", {}, t.count),
        el("td", {}, t.last.turn_state ? stateTag(t.last.turn_state) : "")))));
}

async function retry(id, button) {
  button.disabled = true;
  try {
    await api("/admin/outbox/" + encodeURIComponent(id) + "/retry",
      { method: "POST", headers: { "X-CSRF-Token": csrf } });
    button.replaceWith(el("span", { class: "state" }, "requeued"));
  } catch (e) {
    button.disabled = false;
    button.after(el("span", { class: "error" }, " " + e.message));
  }
}

function deliveries(reply) {
  return el("table", { class: "deliveries" },
    el("tr", {}, el("th", {}, "To"), el("th", {}, "State"), el("th", {}, "Attempts"),
      el("th", {}, "Next try"), el("th", {}, "Last error"), el("th", {}, "")),
    ...(reply.deliveries || []).map((d) => el("tr", {},
      el("td", {}, d.peer), el("td", {}, stateTag(d.state)), el("td", {}, d.attempts),
      el("td", {}, when(d.next_attempt_at)), el("td", {}, d.last_error || ""),
      el("td", {}, d.state === "dead"
        ? el("button", { class: "retry", "data-reply": reply.id,
            onclick: (ev) => retry(reply.id, ev.target) }, "Retry")
        : ""))));
}

async function thread(id) {
  const { messages } = await api("/messages?limit=500&thread=" + encodeURIComponent(id));
  messages.sort((a, b) => a.received_at - b.received_at);
  const details = await Promise.all(messages.map((m) => api("/messages/" + encodeURIComponent(m.id))));
  const items = [];
  for (const d of details) {
    const m = d.message, t = d.turn;
    items.push(el("div", { class: "msg", "data-message": m.id },
      el("div", {}, el("span", { class: "who" }, m.sender), " → ", m.route, " · ",
        el("b", {}, m.type), " ", el("span", { class: "meta" }, when(m.received_at))),
      el("pre", { class: "payload" }, pretty(m.payload)),
      t ? el("div", { class: "turn" }, "turn ", stateTag(t.state), " ",
            el("span", { class: "meta elapsed" }, elapsed(t)),
            t.exit_code !== null && t.exit_code !== undefined ? " exit " + t.exit_code : "",
            t.error ? el("span", { class: "error" }, " " + t.error) : "",
            t.stdout_tail ? el("details", {}, el("summary", {}, "stdout"), el("pre", {}, t.stdout_tail)) : "",
            t.stderr_tail ? el("details", {}, el("summary", {}, "stderr"), el("pre", {}, t.stderr_tail)) : "")
        : null));
    for (const r of d.replies) {
      items.push(el("div", { class: "msg reply", "data-reply": r.id },
        el("div", {}, el("span", { class: "who" }, r.route ? "agent of " + r.route : "operator"),
          " · ", el("b", {}, r.type), " ", el("span", { class: "meta" }, when(r.created_at))),
        el("pre", { class: "payload" }, pretty(r.payload)),
        deliveries(r)));
    }
  }
  view.replaceChildren(el("h2", {}, "Conversation ", el("code", {}, id)), ...items);
}

async function dead() {
  const { outbox } = await api("/admin/outbox?dead=1&limit=200");
  view.replaceChildren(el("h2", {}, "Dead letters"),
    outbox.length === 0 ? el("p", {}, "None.") : el("div", {},
      ...outbox.map((i) => el("div", { class: "msg" },
        el("div", {}, el("b", {}, i.reply.type), " to ", i.delivery.peer, " ",
          el("span", { class: "meta" }, when(i.reply.created_at))),
        el("pre", { class: "payload" }, pretty(i.reply.payload)),
        deliveries(Object.assign({}, i.reply, { deliveries: [i.delivery] }))))));
}

async function config() {
  const s = await api("/status");
  view.replaceChildren(el("h2", {}, "Config in force"),
    el("table", {},
      el("tr", {}, el("th", {}, "Hash"), el("td", {}, s.config_hash)),
      el("tr", {}, el("th", {}, "Loaded"), el("td", {}, when(s.loaded_at))),
      el("tr", {}, el("th", {}, "Last reload error"), el("td", { class: "error" }, s.last_reload_error || "none")),
      el("tr", {}, el("th", {}, "Reloads"), el("td", {}, (s.reloads_ok || 0) + " applied, " + (s.reloads_failed || 0) + " failed")),
      el("tr", {}, el("th", {}, "Turns"), el("td", {}, s.turns_running + " running, " + s.turns_queued + " queued"))),
    el("h3", {}, "Routes"),
    el("table", { id: "routes" },
      el("tr", {}, el("th", {}, "Route"), el("th", {}, "From"), el("th", {}, "Types"),
        el("th", {}, "Kind"), el("th", {}, "Plugin"), el("th", {}, "Limits"), el("th", {}, "Queued")),
      ...(s.routes || []).map((r) => el("tr", {},
        el("td", {}, r.name), el("td", {}, r.from.join(", ")), el("td", {}, r.types.join(", ")),
        el("td", {}, r.kind), el("td", {}, r.plugin || ""),
        el("td", {}, r.max_concurrent ? r.max_concurrent + " at once, " + r.max_queued + " queued max" : ""),
        el("td", {}, r.queued)))));
}

let rendering = false, again = false;
async function render() {
  if (rendering) { again = true; return; }
  rendering = true;
  try {
    const h = decodeURIComponent(location.hash.slice(1));
    if (h.startsWith("thread/")) await thread(h.slice(7));
    else if (h === "dead") await dead();
    else if (h === "config") await config();
    else await threads();
  } catch (e) {
    view.replaceChildren(el("p", { class: "error" }, String(e.message || e)));
  } finally {
    rendering = false;
    if (again) { again = false; render(); }
  }
}

// Live: any event re-renders the view (at most every half second); running turns tick their time.
let pending = null;
const live = document.getElementById("live");
const events = new EventSource("/events");
events.onopen = () => live.classList.add("on");
events.onerror = () => live.classList.remove("on");
events.onmessage = () => { if (!pending) pending = setTimeout(() => { pending = null; render(); }, 500); };
setInterval(() => { if (document.querySelector('[data-state="running"]')) render(); }, 2000);
window.addEventListener("hashchange", render);
render();

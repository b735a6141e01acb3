// The agent-inbox console. Everything a peer or an agent wrote is shown with textContent, never
// parsed as HTML, so a payload cannot run script here. Reads go to the inbox's own JSON API with the
// session cookie; the writes (retrying a dead letter, approving or rejecting a held item) also send
// the page's CSRF token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const view = document.getElementById("view");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
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
  if (!r.ok) {
    const e = new Error((body.error && body.error.message) || String(r.status));
    e.status = r.status;
    throw e;
  }
  return body;
}

// A write: JSON in, the page's CSRF token with it.
const post = (path, body) => api(path, {
  method: "POST",
  headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json" },
  body: JSON.stringify(body),
});

const when = (ms) => ms ? new Date(ms).toLocaleString() : "";
const pretty = (v) => JSON.stringify(v, null, 2);
const stateTag = (s) => el("span", { class: "state " + s, "data-state": s }, s);
const given = (v) => v !== null && v !== undefined;

// How long until `ms`, roughly.
function until(ms) {
  const s = Math.round((ms - Date.now()) / 1000);
  if (s <= 0) return "overdue";
  if (s < 120) return "in " + s + " s";
  if (s < 7200) return "in " + Math.round(s / 60) + " min";
  return "in " + Math.round(s / 3600) + " h";
}

function elapsed(turn) {
  if (!turn || !turn.started_at) return "";
  const end = turn.ended_at || Date.now();
  return Math.round((end - turn.started_at) / 1000) + " s";
}

// The conversations view's filters, kept in the URL (`#threads?peer=tony&state=failed`), so a
// link to a filtered list can be shared.
const FILTERS = ["peer", "route", "type", "state", "q"];
const STATES = ["queued", "running", "awaiting_approval", "done", "failed", "timed_out",
  "interrupted", "canceled", "rejected", "mailbox", "dead"];
// The badges a conversation's row shows, from its messages' states.
const BADGES = { running: "running", queued: "running", awaiting_approval: "awaiting_approval",
  failed: "failed", timed_out: "failed", interrupted: "failed" };

function hashParams() {
  const h = location.hash.slice(1);
  const q = h.indexOf("?");
  return new URLSearchParams(q < 0 ? "" : h.slice(q + 1));
}

function threadsLink(params) {
  const q = params.toString();
  return "#threads" + (q ? "?" + q : "");
}

function filterBar(params, status) {
  const select = (name, label, values) => el("select", { name, "data-filter": name },
    el("option", { value: "" }, label),
    ...values.map((v) => {
      const o = el("option", { value: v }, v);
      if (params.get(name) === v) o.selected = true;
      return o;
    }));
  const routes = (status.routes || []).map((r) => r.name);
  const types = [...new Set((status.routes || []).flatMap((r) => r.types))].filter((t) => t !== "*").sort();
  const peers = (status.peers || []).map((p) => p.name);
  const text = el("input", { type: "search", name: "q", "data-filter": "q", placeholder: "type or title",
    value: params.get("q") || "" });
  const form = el("form", { id: "filters", class: "filters",
    onsubmit: (ev) => {
      ev.preventDefault();
      const next = new URLSearchParams();
      for (const f of form.querySelectorAll("[data-filter]")) if (f.value) next.set(f.name, f.value);
      location.hash = threadsLink(next);
    } },
    select("peer", "any peer", peers), select("route", "any route", routes),
    select("type", "any type", types), select("state", "any state", STATES), text,
    el("button", { type: "submit" }, "Filter"),
    [...params.keys()].some((k) => FILTERS.includes(k))
      ? el("a", { href: "#threads", class: "clear" }, "clear") : null);
  return form;
}

// A thread id, short, with the whole id on hover and a button that copies it.
function threadId(id) {
  const copy = el("button", { type: "button", class: "copy", title: "copy the thread id",
    onclick: (ev) => {
      ev.stopPropagation();
      navigator.clipboard && navigator.clipboard.writeText(id);
      copy.textContent = "copied";
    } }, "copy");
  return el("span", { class: "thread-id" }, el("code", { title: id }, id.slice(0, 8) + "…"), " ", copy);
}

async function threads() {
  const params = hashParams();
  const query = new URLSearchParams({ limit: "50" });
  for (const k of [...FILTERS, "before"]) if (params.get(k)) query.set(k, params.get(k));
  const [list, status, deadOnes] = await Promise.all([
    api("/messages?" + query), api("/status"), api("/admin/outbox?dead=1&limit=200"),
  ]);
  const dead = new Set(deadOnes.outbox.map((i) => i.reply.thread_id));
  // The page's messages by thread, newest first; what the operator or a local agent sent into
  // a thread (`replies`, on an unfiltered first page) joins it.
  const byThread = new Map();
  const add = (thread, item) => {
    const t = byThread.get(thread) || { id: thread, items: [] };
    t.items.push(item);
    byThread.set(thread, t);
  };
  for (const m of list.messages) {
    add(m.thread_id, { at: m.received_at, peer: m.sender, type: m.type, title: m.title,
      state: m.mailbox ? "mailbox" : m.turn_state });
  }
  for (const r of list.replies || []) {
    add(r.thread_id, { at: r.created_at, peer: r.agent ? "agent " + r.agent : "operator",
      type: r.type, title: null, state: null });
  }
  const rows = [...byThread.values()].map((t) => {
    t.items.sort((a, b) => a.at - b.at);
    t.last = t.items[t.items.length - 1];
    t.title = (t.items.find((i) => i.title) || {}).title || t.items[0].type;
    t.peers = [...new Set(t.items.map((i) => i.peer))];
    t.badges = [...new Set(t.items.map((i) => BADGES[i.state]).filter(Boolean))];
    if (dead.has(t.id)) t.badges.push("dead");
    return t;
  }).sort((a, b) => b.last.at - a.last.at);
  const older = new URLSearchParams(params);
  if (list.next_cursor) older.set("before", list.next_cursor);
  const newest = new URLSearchParams(params);
  newest.delete("before");
  view.replaceChildren(
    el("h2", {}, "Conversations"),
    filterBar(params, status),
    el("p", { class: "empty", hidden: rows.length === 0 ? null : "" }, "No conversation matches."),
    el("table", { id: "threads" },
      el("tr", {}, el("th", {}, "Conversation"), el("th", {}, "Peers"), el("th", {}, "Last"),
        el("th", {}, "State"), el("th", {}, "Thread")),
      ...rows.map((t) => el("tr", { class: "thread", "data-thread": t.id,
          onclick: () => { location.hash = "thread/" + encodeURIComponent(t.id); } },
        el("td", { class: "title" }, el("b", {}, t.title),
          el("span", { class: "meta" }, " · " + t.items.length + (t.items.length === 1 ? " message" : " messages"))),
        el("td", {}, t.peers.join(", ")),
        el("td", {}, t.last.type, " ", el("span", { class: "meta" }, when(t.last.at))),
        el("td", { class: "badges" }, ...t.badges.map(stateTag),
          t.badges.length === 0 && t.last.state ? stateTag(t.last.state) : ""),
        el("td", {}, threadId(t.id))))),
    el("p", { class: "pager" },
      params.get("before") ? el("a", { href: threadsLink(newest), id: "newest" }, "← newest") : null,
      " ",
      list.next_cursor ? el("a", { href: threadsLink(older), id: "older" }, "older →") : null));
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

// The tasks at remote A2A agents that a turn or an outbound message became: the agent or peer,
// the remote's task id, its state as the remote last said, and the artifacts taken from it (each
// now a reply, or a message from the peer, in this thread).
function remoteTasks(tasks) {
  if (!tasks || tasks.length === 0) return null;
  return el("table", { class: "remote-tasks" },
    el("tr", {}, el("th", {}, "Remote task"), el("th", {}, "At"), el("th", {}, "State"),
      el("th", {}, "Artifacts"), el("th", {}, "")),
    ...tasks.map((t) => el("tr", { "data-remote-task": t.remote_task_id || "", "data-origin": t.origin },
      el("td", {}, el("code", { class: "remote-id" }, t.remote_task_id || "(not sent yet)")),
      el("td", {}, (t.kind === "turn" ? "agent of " : "peer ") + t.target),
      el("td", {}, el("span", { class: "state remote", "data-state": t.state },
        t.state.replace(/^TASK_STATE_/, "").toLowerCase())),
      el("td", { class: "artifacts" }, ...t.artifacts.map((a) => el("code", { class: "artifact" }, a))),
      el("td", { class: "meta" }, t.done ? "" : "followed"))));
}

// What a person decided on a held message or reply (or that it still waits).
function approvalNote(a, inQueue) {
  if (!a) return null;
  const note = el("div", { class: "approval-note " + a.state, "data-approval-state": a.state });
  if (a.state === "waiting") {
    note.append(stateTag("waiting"), " for a person: ", a.reason, " · decide by ", when(a.expires_at));
    if (!inQueue) note.append(" ", el("a", { href: "#approvals" }, "open the queue"));
    return note;
  }
  note.append(stateTag(a.state), " by ", el("b", { class: "by" }, a.decided_by || "?"),
    " (", a.via || "?", ") at ", when(a.decided_at));
  if (a.decision_reason) note.append(": ", el("span", { class: "why" }, a.decision_reason));
  if (given(a.original_payload)) {
    note.append(" · sent edited",
      el("details", { class: "original" }, el("summary", {}, "the agent's original payload"),
        el("pre", { class: "payload" }, pretty(a.original_payload))));
  }
  return note;
}

// A thread in time order: each message followed by its replies, and what the operator or a local
// agent sent into it (which answers no message) where it was sent; the message or reply whose id
// is `held` is marked.
async function threadItems(id, held) {
  const list = await api("/messages?limit=500&thread=" + encodeURIComponent(id));
  const get = (x) => api("/messages/" + encodeURIComponent(x.id));
  const [details, sent] = await Promise.all([
    Promise.all(list.messages.map(get)),
    Promise.all((list.replies || []).map(get)),
  ]);
  const inQueue = held !== undefined;
  const groups = [
    ...details.map((d) => ({ at: d.message.received_at,
      els: [messageItem(d, held, inQueue),
        ...d.replies.map((r) => replyItem(r, held, inQueue, tasksOf(d, r.id)))] })),
    ...sent.map((d) => ({ at: d.reply.created_at,
      els: [replyItem(d.reply, held, inQueue, d.remote_tasks)] })),
  ];
  groups.sort((a, b) => a.at - b.at);
  return groups.flatMap((g) => g.els);
}

const tasksOf = (d, origin) => (d.remote_tasks || []).filter((t) => t.origin === origin);

function messageItem(d, held, inQueue) {
  const m = d.message, t = d.turn;
  return el("div", { class: "msg" + (m.id === held ? " held" : ""), "data-message": m.id },
    el("div", {}, el("span", { class: "who" }, m.sender), " → ", m.route, " · ",
      el("b", {}, m.type), " ", el("span", { class: "meta" }, when(m.received_at))),
    el("pre", { class: "payload" }, pretty(m.payload)),
    approvalNote(d.approval, inQueue),
    t ? el("div", { class: "turn", "data-turn": m.id }, "turn ", stateTag(t.state), " ",
          el("span", { class: "meta elapsed" }, elapsed(t)),
          given(t.exit_code) ? " exit " + t.exit_code : "",
          t.canceled ? el("span", { class: "canceled-by" }, " by ", el("b", {}, t.canceled.by),
            " (" + t.canceled.via + ") at " + when(t.canceled.at)) : "",
          t.error && !t.canceled ? el("span", { class: "error" }, " " + t.error) : "",
          CANCELABLE.includes(t.state) ? cancelForm(m.id) : null,
          t.state === "running" ? liveBox(m.id) : null,
          t.stdout_tail ? el("details", {}, el("summary", {}, "stdout"), el("pre", {}, t.stdout_tail)) : "",
          t.stderr_tail ? el("details", {}, el("summary", {}, "stderr"), el("pre", {}, t.stderr_tail)) : "",
          remoteTasks(tasksOf(d, m.id)))
      : null);
}

const CANCELABLE = ["queued", "running", "awaiting_approval"];

// A running turn's output as it comes (`turn_output` events, the admin's only): kept here per
// message, so a re-render shows what came before it; the newest 8 KiB of each stream.
const liveOut = new Map();
const LIVE_KEEP = 8192;

function liveBox(messageId) {
  const out = liveOut.get(messageId) || { stdout: "", stderr: "" };
  return el("div", { class: "live-output", "data-live": messageId },
    el("div", { class: "meta" }, "live output"),
    el("pre", { class: "live-stdout" }, out.stdout),
    el("pre", { class: "live-stderr" + (out.stderr ? "" : " empty") }, out.stderr));
}

function onOutput(e) {
  const out = liveOut.get(e.message_id) || { stdout: "", stderr: "" };
  const gap = e.skipped ? "\n[… " + e.skipped + " bytes not shown]\n" : "";
  out[e.stream] = (out[e.stream] + gap + e.text).slice(-LIVE_KEEP);
  liveOut.set(e.message_id, out);
  const box = document.querySelector('[data-live="' + CSS.escape(e.message_id) + '"]');
  if (box) {
    const pre = box.querySelector(e.stream === "stderr" ? ".live-stderr" : ".live-stdout");
    pre.textContent = out[e.stream];
    pre.classList.remove("empty");
    pre.scrollTop = pre.scrollHeight;
  }
}

// Cancel a turn: who cancels (remembered, as for approvals), then the button.
function cancelForm(messageId) {
  const who = el("input", { type: "text", class: "cancel-by", placeholder: "your name", maxlength: "200",
    value: stored(APPROVER), onclick: (ev) => ev.stopPropagation(),
    // Kept as typed: a live re-render builds this field again from what is stored.
    oninput: () => store(APPROVER, who.value.trim()) });
  const error = el("span", { class: "error cancel-error" });
  const button = el("button", { type: "button", class: "cancel", "data-message": messageId,
    onclick: async () => {
      const by = who.value.trim();
      if (!by) { error.textContent = " Who cancels? Type your name."; who.focus(); return; }
      store(APPROVER, by);
      button.disabled = true;
      try {
        await post("/admin/messages/" + encodeURIComponent(messageId) + "/cancel", { by });
        render();
      } catch (e) {
        button.disabled = false;
        error.textContent = " Not cancelled: " + e.message;
      }
    } }, "Cancel turn");
  return el("span", { class: "cancel-form" }, " ", who, " ", button, error);
}

function replyItem(r, held, inQueue, tasks) {
  const who = r.route ? "agent of " + r.route : r.agent ? "agent " + r.agent : "operator";
  return el("div", { class: "msg reply" + (r.id === held ? " held" : ""), "data-reply": r.id },
    el("div", {}, el("span", { class: "who" }, who),
      " · ", el("b", {}, r.type), " ", el("span", { class: "meta" }, when(r.created_at))),
    el("pre", { class: "payload" }, pretty(r.payload)),
    approvalNote(r.approval, inQueue),
    deliveries(r),
    remoteTasks(tasks));
}

async function thread(id) {
  const items = await threadItems(id);
  view.replaceChildren(el("h2", {}, "Conversation ", el("code", {}, id)),
    ...(items.length > 0 ? items
      : [el("p", { class: "error", id: "no-thread" }, "No conversation has this id here: it may be " +
          "mistyped, or pruned after retention_days."), el("a", { href: "#threads" }, "All conversations")]));
}

// ---- Approvals ----
//
// The queue is built once and kept: live updates refresh what each item shows (its payload, its
// thread) but never the name, reason or edited payload a person is typing.

const APPROVER = "agent-inbox.approver";
let queue = null;

function stored(key) {
  try { return localStorage.getItem(key) || ""; } catch (e) { return ""; }
}

function store(key, value) {
  try { localStorage.setItem(key, value); } catch (e) { /* private mode: not remembered */ }
}

function approvalsUI() {
  if (queue) return queue;
  const approverError = el("span", { class: "error", id: "approver-error" });
  const approver = el("input", { id: "approver", type: "text", autocomplete: "name",
    placeholder: "your name", maxlength: "200",
    oninput: () => {
      store(APPROVER, approver.value.trim());
      approverError.textContent = "";
      for (const entry of queue.items.values()) entry.error.textContent = "";
    } });
  approver.value = stored(APPROVER);
  const notice = el("p", { id: "approval-notice", class: "notice", hidden: "" });
  const list = el("div", { id: "approval-queue" });
  const empty = el("p", { class: "empty", hidden: "" }, "Nothing waits for a decision.");
  const decided = el("div", { id: "approvals-decided" });
  const root = el("div", { id: "approvals" },
    el("h2", {}, "Approvals"),
    el("p", { class: "approver-bar" },
      el("label", { for: "approver" }, "Who decides: "), approver, " ", approverError),
    notice,
    el("h3", {}, "Waiting"), empty, list,
    el("h3", {}, "Recently decided"), decided);
  queue = { root, approver, approverError, notice, list, empty, decided, items: new Map() };
  return queue;
}

function tell(text, isError) {
  const ui = approvalsUI();
  ui.notice.textContent = text;
  ui.notice.className = isError ? "notice error" : "notice";
  ui.notice.hidden = false;
}

// One waiting item: what refreshes (`live`, `threadBody`) and what a person types into (kept).
function approvalEntry(item) {
  const a = item.approval;
  const entry = { id: a.id, kind: a.kind, payload: null };
  entry.live = el("div", { class: "approval-live" });
  entry.error = el("div", { class: "error decide-error" });
  const clear = () => { entry.error.textContent = ""; };
  entry.reason = el("textarea", { class: "reason", rows: "2", oninput: clear,
    placeholder: "Reason (required to reject; kept with the decision)" });
  entry.approve = el("button", { class: "approve", type: "button",
    onclick: () => decide(entry, "approve") }, "Approve");
  entry.rejectButton = el("button", { class: "reject", type: "button",
    onclick: () => decide(entry, "reject") }, "Reject");
  const buttons = [entry.approve];
  entry.editBox = null;
  if (a.kind === "outbound") {
    entry.editor = el("textarea", { class: "edit-payload", rows: "10", spellcheck: "false",
      oninput: clear });
    entry.editBox = el("div", { class: "editor", hidden: "" },
      el("label", {}, "The payload to send instead of the agent's (JSON):"), entry.editor);
    entry.edit = el("button", { class: "edit", type: "button", onclick: () => toggleEditor(entry) },
      "Edit payload");
    buttons.push(entry.edit);
  }
  buttons.push(entry.rejectButton);
  entry.threadSummary = el("summary", {}, "The thread");
  entry.threadBody = el("div", { class: "thread-body" });
  entry.node = el("div", { class: "approval", "data-approval": a.id, "data-kind": a.kind },
    entry.live,
    entry.editBox,
    el("div", { class: "decide" }, entry.reason, el("div", { class: "buttons" }, ...buttons), entry.error),
    el("details", { class: "thread-of", open: "" }, entry.threadSummary, entry.threadBody));
  return entry;
}

function toggleEditor(entry) {
  entry.error.textContent = "";
  if (entry.editBox.hidden) {
    entry.editor.value = pretty(entry.payload);
    entry.editBox.hidden = false;
    entry.edit.textContent = "Cancel edit";
    entry.approve.textContent = "Approve edited";
    entry.editor.focus();
  } else {
    entry.editBox.hidden = true;
    entry.edit.textContent = "Edit payload";
    entry.approve.textContent = "Approve";
  }
}

function fillEntry(entry, item, threadEls) {
  const a = item.approval;
  const held = a.kind === "outbound" ? item.reply : item.message;
  entry.payload = held ? held.payload : null;
  let what;
  if (!held) what = el("p", { class: "error" }, "The held item is no longer stored.");
  else if (a.kind === "inbound") {
    what = el("div", { class: "held-what" }, "Held message from ", el("b", {}, held.sender), " · ",
      el("b", {}, held.type), " ", el("span", { class: "meta" }, when(held.received_at)),
      " · its agent runs once approved");
  } else {
    const to = (held.deliveries || []).map((d) => d.peer).join(", ");
    what = el("div", { class: "held-what" }, held.route ? "Held reply " : "Held message ",
      el("b", {}, held.type), " to ",
      el("b", {}, to || "nobody"), " ", el("span", { class: "meta" }, when(held.created_at)),
      " · sent once approved");
  }
  // A message a local agent started has no route: it is the agent's own.
  const started = a.kind === "outbound" && !a.route;
  entry.live.replaceChildren(
    el("div", { class: "approval-head" },
      el("span", { class: "kind " + a.kind },
        a.kind === "inbound" ? "inbound message" : started ? "outbound message" : "outbound reply"),
      started ? " started by agent " : " on route ",
      el("b", { class: started ? "agent" : "route" }, started ? (held && held.agent) || "?" : a.route),
      " · ", el("span", { class: "why" }, a.reason)),
    el("div", { class: "deadline meta" }, "Decide by ", when(a.expires_at), " (", until(a.expires_at),
      "), or it is rejected on its own · waiting since ", when(a.created_at)),
    what,
    held ? el("pre", { class: "payload held-payload" }, pretty(held.payload)) : null);
  const count = (reply) => threadEls.filter((n) => n.classList && n.classList.contains("msg") &&
    n.classList.contains("reply") === reply).length;
  const [messages, replies] = [count(false), count(true)];
  entry.threadSummary.replaceChildren("The whole thread ",
    el("a", { href: "#thread/" + encodeURIComponent(a.thread_id) }, a.thread_id),
    " (" + messages + (messages === 1 ? " message, " : " messages, ") +
      replies + " sent)");
  entry.threadBody.replaceChildren(...threadEls);
}

async function decide(entry, verdict) {
  const ui = approvalsUI();
  entry.error.textContent = "";
  const by = ui.approver.value.trim();
  if (!by) {
    ui.approverError.textContent = "Type your name first: it is recorded with the decision.";
    entry.error.textContent = "Who decides? Type your name at the top.";
    ui.approver.focus();
    return;
  }
  const body = { by };
  const why = entry.reason.value.trim();
  if (verdict === "reject" && !why) {
    entry.error.textContent = "A rejection needs a reason.";
    entry.reason.focus();
    return;
  }
  if (why) body.reason = why;
  if (verdict === "approve" && entry.editBox && !entry.editBox.hidden) {
    try {
      body.payload = JSON.parse(entry.editor.value);
    } catch (e) {
      entry.error.textContent = "The edited payload is not JSON: " + e.message;
      entry.editor.focus();
      return;
    }
  }
  const controls = entry.node.querySelectorAll("button, textarea");
  controls.forEach((c) => { c.disabled = true; });
  try {
    const done = await post("/admin/approvals/" + encodeURIComponent(entry.id) + "/" + verdict, body);
    tell((done.state === "approved" ? "Approved" : "Rejected") + " the " + done.kind + " " +
      done.id + " as " + (done.decided_by || by) + ".", false);
    entry.node.remove();
    ui.items.delete(entry.id);
  } catch (e) {
    controls.forEach((c) => { c.disabled = false; });
    if (e.status === 409) tell("Someone decided first: " + e.message, true);
    else entry.error.textContent = "Not " + (verdict === "approve" ? "approved" : "rejected") + ": " + e.message;
  }
  render();
}

function decidedTable(items) {
  if (items.length === 0) return el("p", { class: "meta" }, "None yet.");
  return el("table", { id: "decided", class: "decided" },
    el("tr", {}, el("th", {}, "Decided"), el("th", {}, "Verdict"), el("th", {}, "By"),
      el("th", {}, "Via"), el("th", {}, "Kind"), el("th", {}, "Route"), el("th", {}, "Reason"),
      el("th", {}, "Thread")),
    ...items.map(({ approval: a }) => el("tr", { class: "decided-item", "data-approval": a.id },
      el("td", {}, when(a.decided_at)), el("td", {}, stateTag(a.state)),
      el("td", {}, a.decided_by || ""), el("td", {}, a.via || ""),
      el("td", {}, a.kind + (given(a.original_payload) ? " (edited)" : "")), el("td", {}, a.route || "—"),
      el("td", {}, a.decision_reason || ""),
      el("td", {}, el("a", { href: "#thread/" + encodeURIComponent(a.thread_id) }, a.thread_id)))));
}

async function approvals() {
  const ui = approvalsUI();
  const [waiting, all] = await Promise.all([
    api("/admin/approvals?limit=100"),
    api("/admin/approvals?all=true&limit=50"),
  ]);
  const items = waiting.approvals;
  const threadsOf = await Promise.all(items.map((i) => threadItems(i.approval.thread_id, i.approval.id)
    .catch((e) => [el("p", { class: "error" }, "The thread: " + (e.message || e))])));
  if (!view.contains(ui.root)) view.replaceChildren(ui.root);
  const keep = new Set(items.map((i) => i.approval.id));
  for (const [id, entry] of ui.items) {
    if (!keep.has(id)) { entry.node.remove(); ui.items.delete(id); }
  }
  items.forEach((item, i) => {
    let entry = ui.items.get(item.approval.id);
    if (!entry) { entry = approvalEntry(item); ui.items.set(item.approval.id, entry); }
    fillEntry(entry, item, threadsOf[i]);
    // Moved only when the order changed (a move loses the focus of what is typed in it).
    const at = ui.list.children[i];
    if (at !== entry.node) ui.list.insertBefore(entry.node, at || null);
  });
  ui.empty.hidden = items.length > 0;
  ui.decided.replaceChildren(decidedTable(all.approvals.filter((i) => i.approval.state !== "waiting")));
  showCount(items.length);
}

// The nav link's count of what waits.
function showCount(n) {
  const count = document.getElementById("approvals-count");
  if (!count) return;
  count.textContent = n >= 100 ? "99+" : n > 0 ? String(n) : "";
  count.hidden = n === 0;
}

async function countWaiting() {
  try {
    const { approvals } = await api("/admin/approvals?limit=100");
    showCount(approvals.length);
  } catch (e) { /* the count is a hint; the view says what failed */ }
}

// Dead letters as a table: when, to whom, what, the thread, who sent it from which route, how
// many attempts, and the peer's last answer (in full on expand). Retry one, or the selected.
async function dead() {
  const { outbox } = await api("/admin/outbox?dead=1&limit=200");
  showDeadCount(outbox.length);
  const checks = [];
  const selected = () => checks.filter((c) => c.checked).map((c) => c.value);
  const retrySelected = el("button", { type: "button", id: "retry-selected", disabled: "",
    onclick: async () => {
      retrySelected.disabled = true;
      const ids = [...new Set(selected())];
      const failed = [];
      for (const id of ids) {
        try {
          await api("/admin/outbox/" + encodeURIComponent(id) + "/retry",
            { method: "POST", headers: { "X-CSRF-Token": csrf } });
        } catch (e) { failed.push(id + ": " + e.message); }
      }
      result.textContent = (ids.length - failed.length) + " of " + ids.length + " queued again" +
        (failed.length ? "; " + failed.join("; ") : "");
      render();
    } }, "Retry selected");
  const result = el("span", { class: "meta", id: "retry-result" });
  const onCheck = () => {
    retrySelected.disabled = selected().length === 0;
    all.checked = checks.length > 0 && checks.every((c) => c.checked);
  };
  const all = el("input", { type: "checkbox", id: "select-all", title: "select all",
    onchange: () => { checks.forEach((c) => { c.checked = all.checked; }); onCheck(); } });
  const from = (r) => r.route ? "agent of " + r.route : r.agent ? "agent " + r.agent : "operator";
  view.replaceChildren(el("h2", {}, "Dead letters"),
    outbox.length === 0 ? el("p", { class: "empty" }, "None: every delivery went through or is still being tried.")
      : el("div", {},
        el("p", { class: "bar" }, retrySelected, " ", result),
        el("table", { id: "dead-letters" },
          el("tr", {}, el("th", {}, all), el("th", {}, "When"), el("th", {}, "To"), el("th", {}, "Type"),
            el("th", {}, "Thread"), el("th", {}, "From"), el("th", {}, "Route"), el("th", {}, "Attempts"),
            el("th", {}, "Last answer"), el("th", {}, "")),
          ...outbox.map((i) => {
            const r = i.reply, d = i.delivery;
            const check = el("input", { type: "checkbox", class: "pick", value: r.id, onchange: onCheck });
            checks.push(check);
            const answer = d.last_error || "";
            return el("tr", { class: "dead-letter", "data-reply": r.id, "data-peer": d.peer },
              el("td", {}, check),
              el("td", {}, when(r.created_at)),
              el("td", {}, d.peer),
              el("td", {}, el("b", {}, r.type)),
              el("td", {}, el("a", { href: "#thread/" + encodeURIComponent(r.thread_id) }, r.thread_id.slice(0, 8) + "…")),
              el("td", {}, from(r)),
              el("td", {}, r.route || "—"),
              el("td", {}, d.attempts + (given(d.last_status) ? " (last " + d.last_status + ")" : "")),
              el("td", { class: "answer" }, answer.length > 60
                ? el("details", {}, el("summary", {}, answer.slice(0, 60) + "…"), el("pre", {}, answer))
                : answer),
              el("td", {}, el("button", { class: "retry", "data-reply": r.id,
                onclick: (ev) => retry(r.id, ev.target) }, "Retry")));
          }))));
}

// The nav link's count of dead letters.
function showDeadCount(n) {
  const count = document.getElementById("dead-count");
  if (!count) return;
  count.textContent = n >= 200 ? "200+" : n > 0 ? String(n) : "";
  count.hidden = n === 0;
}

async function countDead() {
  try {
    const { outbox } = await api("/admin/outbox?dead=1&limit=200");
    showDeadCount(outbox.length);
  } catch (e) { /* the count is a hint; the view says what failed */ }
}

async function config() {
  const s = await api("/status");
  const list = (v) => (v && v.length ? v.join(", ") : "—");
  const lastDelivery = (d) => !d ? "—"
    : el("span", {}, stateTag(d.outcome === "delivered" ? "delivered" : "failed"), " ",
        el("span", { class: "meta" }, when(d.at)), given(d.status) ? " " + d.status : "",
        d.error ? el("span", { class: "error" }, " " + d.error) : "");
  const reload = s.last_reload_error
    ? el("td", { class: "error", id: "reload-state" }, "the last reload failed, the config below stays in force: " + s.last_reload_error)
    : el("td", { id: "reload-state" }, "ok");
  view.replaceChildren(el("h2", {}, "Config in force"),
    el("table", { id: "config-summary" },
      el("tr", {}, el("th", {}, "Hash"), el("td", {}, el("code", {}, s.config_hash))),
      el("tr", {}, el("th", {}, "Loaded"), el("td", {}, when(s.loaded_at))),
      el("tr", {}, el("th", {}, "Reload"), reload),
      el("tr", {}, el("th", {}, "Reloads"), el("td", {}, (s.reloads_ok || 0) + " applied, " + (s.reloads_failed || 0) + " failed")),
      el("tr", {}, el("th", {}, "Turns"), el("td", {}, s.turns_running + " running, " + s.turns_queued + " queued"))),
    el("h3", {}, "Peers"),
    el("table", { id: "peers" },
      el("tr", {}, el("th", {}, "Peer"), el("th", {}, "URL"), el("th", {}, "Auth"),
        el("th", {}, "A2A client"), el("th", {}, "Last delivery")),
      ...(s.peers || []).map((p) => el("tr", { "data-peer": p.name },
        el("td", {}, el("b", {}, p.name)), el("td", {}, el("code", {}, p.url || p.a2a_url || "—")),
        el("td", {}, p.auth), el("td", {}, p.a2a_client ? "yes" : "no"),
        el("td", {}, lastDelivery(p.last_delivery))))),
    el("h3", {}, "Local agents"),
    (s.agents || []).length === 0 ? el("p", { class: "meta" }, "None.") :
    el("table", { id: "agents" },
      el("tr", {}, el("th", {}, "Agent"), el("th", {}, "May send"), el("th", {}, "Rate"), el("th", {}, "Approve")),
      ...s.agents.map((a) => el("tr", { "data-agent": a.name },
        el("td", {}, el("b", {}, a.name)),
        el("td", {}, a.may_send.length ? a.may_send.map((m) => list(m.types) + " to " + list(m.to)).join("; ") : "nothing"),
        el("td", {}, a.max_per_minute + " a minute"), el("td", {}, a.approve ? "yes" : "no")))),
    el("h3", {}, "Routes"),
    el("table", { id: "routes" },
      el("tr", {}, el("th", {}, "Route"), el("th", {}, "From"), el("th", {}, "Types"),
        el("th", {}, "Kind"), el("th", {}, "Replies to"), el("th", {}, "Approve"), el("th", {}, "Plugin"),
        el("th", {}, "Limits"), el("th", {}, "Queued")),
      ...(s.routes || []).map((r) => el("tr", { "data-route": r.name },
        el("td", {}, el("b", {}, r.name)), el("td", {}, list(r.from)), el("td", {}, list(r.types)),
        el("td", {}, r.kind), el("td", {}, list(r.reply_to) + (r.reply_types && r.reply_types.length ? " (" + list(r.reply_types) + ")" : "")),
        el("td", {}, r.approve || "—"), el("td", {}, r.plugin || "—"),
        el("td", {}, r.max_concurrent ? r.max_concurrent + " at once, " + r.max_queued + " queued max" : "—"),
        el("td", {}, r.queued)))));
}

let rendering = false, again = false;
async function render() {
  if (rendering) { again = true; return; }
  rendering = true;
  try {
    const h = decodeURIComponent(location.hash.slice(1));
    countDead();
    if (h === "approvals") await approvals();
    else {
      countWaiting();
      if (h.startsWith("thread/")) await thread(h.slice(7));
      else if (h === "dead") await dead();
      else if (h === "config") await config();
      else await threads();
    }
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
events.onmessage = (m) => {
  let e = null;
  try { e = JSON.parse(m.data); } catch (err) { /* not JSON: re-render as for any event */ }
  // Output goes into its box as it comes; it changes nothing else on the page.
  if (e && e.event === "turn_output") { onOutput(e); return; }
  if (!pending) pending = setTimeout(() => { pending = null; render(); }, 500);
};
setInterval(() => { if (document.querySelector('[data-state="running"]')) render(); }, 2000);
// The approval queue's deadlines tick too.
setInterval(() => { if (location.hash === "#approvals") render(); }, 30000);
window.addEventListener("hashchange", render);
render();

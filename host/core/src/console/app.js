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

async function threads() {
  // A thread's items: the messages that came in, and what the operator or a local agent sent
  // into it (`replies`: what answers no message; replies to messages are in their details).
  const { messages, replies } = await api("/messages?limit=500");
  const byThread = new Map();
  const add = (thread, item) => {
    const t = byThread.get(thread) || { id: thread, count: 0, last: item };
    t.count += 1;
    if (item.at > t.last.at) t.last = item;
    byThread.set(thread, t);
  };
  for (const m of messages) {
    add(m.thread_id, { at: m.received_at, from: m.sender, route: m.route, type: m.type, state: m.turn_state });
  }
  for (const r of replies || []) {
    add(r.thread_id, { at: r.created_at, from: r.agent ? "agent " + r.agent : "operator", route: "—",
      type: r.type, state: null });
  }
  const rows = [...byThread.values()].sort((a, b) => b.last.at - a.last.at);
  view.replaceChildren(
    el("h2", {}, "Conversations"),
    el("table", { id: "threads" },
      el("tr", {}, el("th", {}, "Last message"), el("th", {}, "From"), el("th", {}, "Route"),
        el("th", {}, "Type"), el("th", {}, "Messages"), el("th", {}, "Turn")),
      ...rows.map((t) => el("tr", { class: "thread", "data-thread": t.id,
          onclick: () => { location.hash = "thread/" + encodeURIComponent(t.id); } },
        el("td", {}, when(t.last.at)), el("td", {}, t.last.from),
        el("td", {}, t.last.route), el("td", {}, t.last.type), el("td", {}, t.count),
        el("td", {}, t.last.state ? stateTag(t.last.state) : "")))));
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
    t ? el("div", { class: "turn" }, "turn ", stateTag(t.state), " ",
          el("span", { class: "meta elapsed" }, elapsed(t)),
          given(t.exit_code) ? " exit " + t.exit_code : "",
          t.error ? el("span", { class: "error" }, " " + t.error) : "",
          t.stdout_tail ? el("details", {}, el("summary", {}, "stdout"), el("pre", {}, t.stdout_tail)) : "",
          t.stderr_tail ? el("details", {}, el("summary", {}, "stderr"), el("pre", {}, t.stderr_tail)) : "",
          remoteTasks(tasksOf(d, m.id)))
      : null);
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
  view.replaceChildren(el("h2", {}, "Conversation ", el("code", {}, id)), ...items);
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
        el("td", {}, r.kind + (r.approve ? " · approve " + r.approve : "")), el("td", {}, r.plugin || ""),
        el("td", {}, r.max_concurrent ? r.max_concurrent + " at once, " + r.max_queued + " queued max" : ""),
        el("td", {}, r.queued)))));
}

let rendering = false, again = false;
async function render() {
  if (rendering) { again = true; return; }
  rendering = true;
  try {
    const h = decodeURIComponent(location.hash.slice(1));
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
events.onmessage = () => { if (!pending) pending = setTimeout(() => { pending = null; render(); }, 500); };
setInterval(() => { if (document.querySelector('[data-state="running"]')) render(); }, 2000);
// The approval queue's deadlines tick too.
setInterval(() => { if (location.hash === "#approvals") render(); }, 30000);
window.addEventListener("hashchange", render);
render();

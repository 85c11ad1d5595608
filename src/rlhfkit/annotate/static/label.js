// The labeling page. It talks to the same JSON API as any client (cookie plus CSRF header),
// and it puts model output into the page with textContent only: a response that contains
// HTML or <script> shows as the literal text it is.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const $ = (id) => document.getElementById(id);
let task = null;
let choice = null;
let clientId = null;
let busy = false;

function newClientId() {
  // crypto.randomUUID needs a secure context; getRandomValues works on plain http too.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function render(el, value) {
  el.replaceChildren();
  if (Array.isArray(value)) { // chat messages
    for (const message of value) {
      const box = document.createElement("div");
      box.className = "message-turn";
      const role = document.createElement("span");
      role.className = "label";
      role.textContent = String(message.role);
      const content = document.createElement("div");
      content.textContent = String(message.content);
      box.append(role, content);
      el.append(box);
    }
  } else {
    el.textContent = String(value);
  }
}

async function api(method, path, body) {
  const headers = { "X-CSRF-Token": csrf };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (res.status === 401) { window.location.assign("/login"); throw new Error("logged out"); }
  return res;
}

function say(text) { $("message").textContent = text; }

async function loadProgress() {
  // The server words the line: it counts tasks alike, so nothing here tells an anchor apart.
  const me = await (await api("GET", "/api/me")).json();
  $("progress-text").textContent = me.progress.text;
}

const REASONS = {
  calibration_gate: "The calibration round is done. The main queue opens when the team's "
    + "agreement reaches the threshold (or an admin overrides it). Check again later.",
  done: "No more pairs for you right now. Thank you!",
  removed: "An admin has taken you off this labeling round; there are no more pairs for you. "
    + "Your labels so far are kept. Ask your team lead if this is unexpected.",
};

async function loadTask() {
  const res = await api("GET", "/api/tasks/next");
  if (res.status === 204) {
    task = null;
    $("task").hidden = true;
    $("banner").hidden = true;
    $("empty").hidden = false;
    const reason = res.headers.get("X-Rlhfkit-Reason") || "done";
    $("empty-text").textContent = REASONS[reason] || REASONS.done;
    return;
  }
  task = await res.json();
  choice = null;
  clientId = newClientId();
  render($("prompt"), task.prompt);
  render($("first"), task.first);
  render($("second"), task.second);
  $("banner").hidden = task.phase !== "calibration";
  $("rationale").value = "";
  for (const sel of document.querySelectorAll("select[data-criterion]")) sel.value = "";
  select(null);
  $("empty").hidden = true;
  $("task").hidden = false;
}

function select(value) {
  choice = value;
  for (const button of document.querySelectorAll("#choices button")) {
    button.classList.toggle("selected", button.dataset.choice === value);
    button.setAttribute("aria-pressed", String(button.dataset.choice === value));
  }
  $("submit").disabled = value === null;
}

async function submit() {
  if (!task || !choice || busy) return;
  busy = true;
  $("submit").disabled = true;
  const criteria = {};
  for (const sel of document.querySelectorAll("select[data-criterion]")) {
    if (sel.value) criteria[sel.dataset.criterion] = sel.value;
  }
  const body = { task_id: task.task_id, choice, client_id: clientId };
  if (Object.keys(criteria).length) body.criteria = criteria;
  const rationale = $("rationale").value.trim();
  if (rationale) body.rationale = rationale;
  try {
    // A network failure is retried with the same client_id: the server stores it once.
    for (let attempt = 0; ; attempt++) {
      let res;
      try {
        res = await api("POST", "/api/labels", body);
      } catch (err) {
        if (attempt >= 4) throw err;
        say("Connection problem, retrying…");
        await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
        continue;
      }
      if (res.status === 201 || res.status === 200) { say(""); break; }
      const detail = (await res.json().catch(() => ({}))).detail;
      say(`Not saved: ${typeof detail === "string" ? detail : res.status}`);
      if (res.status !== 409 && res.status !== 404) return;
      break; // the task is gone (timed out and reassigned): move on
    }
    await loadTask();
    await loadProgress();
  } catch (err) {
    say(`Not saved: ${err.message}. Press Enter to try again.`);
  } finally {
    busy = false;
    $("submit").disabled = choice === null;
  }
}

document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("textarea, input, select");
  if (typing) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      submit();
    }
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey) return;
  const button = document.querySelector(`#choices button[data-key="${event.key}"]`);
  if (button && task) {
    event.preventDefault();
    select(button.dataset.choice);
  } else if (event.key === "Enter" && task) {
    event.preventDefault();
    submit();
  }
});

for (const button of document.querySelectorAll("#choices button")) {
  button.addEventListener("click", () => select(button.dataset.choice));
}
$("submit").addEventListener("click", submit);
$("retry").addEventListener("click", () => { loadTask(); loadProgress(); });

loadTask().then(loadProgress).catch((err) => say(`Could not load a task: ${err.message}`));

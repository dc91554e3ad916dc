// The kanban page. One long-poll on /api/changes keeps it live; every action is a request of
// the documented API, signed by the page session (an HttpOnly cookie the script cannot read).
"use strict";

const COLUMN_TITLES = {
  backlog: "Backlog", todo: "To do", in_progress: "In progress", review: "Review",
  done: "Done", blocked: "Blocked",
};
// A person moving a task to one of these means "nobody works on it": it is also unassigned
// so a worker can claim it again (the same rule as `taskinfa-worker board move`).
const FREE_STATUSES = new Set(["backlog", "todo"]);
const PAUSE_AFTER_CHANGE_MS = 1000; // at most one redraw a second, however busy the pool
const RETRY_MS = 2000;
// Each pause is longer by up to this much, at random: pages opened together (or all back
// after a restart of the board) would otherwise keep asking in the same instant, and twenty
// answers at once hold the board's loop while the pool's requests wait behind them.
const SPREAD_MS = 500;

const state = { version: -1, cards: new Map(), view: null, clockSkewMs: 0, openTask: null, openStamp: null };
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

// Board timestamps are UTC "YYYY-MM-DD HH:MM:SS" (or ISO 8601).
function parseTime(text) {
  if (!text) return null;
  const iso = text.includes("T") ? text : text.replace(" ", "T") + "Z";
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

function duration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
}

function elapsed(task) {
  const start = parseTime(task.started_at);
  if (start === null) return null;
  const end = parseTime(task.completed_at) ?? (Date.now() + state.clockSkewMs);
  return duration(end - start);
}

async function api(method, path, body) {
  const init = { method, headers: {} };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(`/api${path}`, init);
  if (response.status === 401) {
    showSignIn("The board asks for its key.");
    throw new Error("not signed in");
  }
  const data = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error((data && (data.error || data.message)) || `HTTP ${response.status}`);
  return data;
}

// --- live updates -------------------------------------------------------------------------
let polling = false;

// The board's order: "order", then oldest first (seq: created in the same second).
function byBoardOrder(a, b) {
  return a.order - b.order || (a.created_at < b.created_at ? -1 : a.created_at > b.created_at ? 1 : 0)
    || a.seq - b.seq;
}

// An answer holds the cards changed since the version the page had (or every card, whole)
// and the tasks deleted meanwhile; the page keeps the rest.
function takeChanges(answer) {
  if (answer.whole) state.cards = new Map();
  for (const id of answer.removed) state.cards.delete(id);
  for (const card of answer.tasks) state.cards.set(card.id, card);
  state.version = answer.version;
  return { ...answer, tasks: [...state.cards.values()].sort(byBoardOrder) };
}

async function poll() {
  if (polling) return;
  polling = true;
  while (polling) {
    let pause = 0;
    try {
      const response = await fetch(`/api/changes?since=${state.version}&wait=25`);
      if (response.status === 401) {
        showSignIn(new URLSearchParams(location.search).get("login") === "spent"
          ? "That sign-in link was used already. Enter the board's key." : null);
        break;
      }
      if (response.status === 200) {
        render(takeChanges(await response.json()));
        pause = PAUSE_AFTER_CHANGE_MS;
      } else if (response.status !== 204) {
        throw new Error(`HTTP ${response.status}`);
      }
      $("live").textContent = "live";
      $("live").classList.add("on");
    } catch (error) {
      $("live").textContent = "reconnecting…";
      $("live").classList.remove("on");
      // The board may come back as another (restarted on a new file): start again whole.
      state.version = -1;
      pause = RETRY_MS;
    }
    if (pause) await new Promise((resolve) => setTimeout(resolve, pause + Math.random() * SPREAD_MS));
  }
  polling = false;
}

// --- drawing ------------------------------------------------------------------------------
function render(view) {
  state.view = view;
  state.clockSkewMs = (parseTime(view.now) ?? Date.now()) - Date.now();
  $("sign-in").hidden = true;
  $("board").hidden = false;
  $("sign-out").hidden = false;
  $("add-open").hidden = false;
  const byStatus = new Map(view.statuses.map((status) => [status, []]));
  for (const task of view.tasks) {
    if (!byStatus.has(task.status)) byStatus.set(task.status, []);
    byStatus.get(task.status).push(task);
  }
  const columns = [];
  for (const [status, tasks] of byStatus) {
    const column = el("section", { class: "column", id: `column-${status}`, "data-status": status },
      el("h2", { text: `${COLUMN_TITLES[status] || status} (${tasks.length})` }));
    for (const task of tasks) column.append(card(task));
    columns.push(column);
  }
  $("columns").replaceChildren(...columns);
  renderWorkers(view.workers);
  fillSelect($("add-project"), view.projects.map((p) => [p.id, p.name || p.id]));
  // To do first: a task added here is meant for the pool unless a person parks it.
  fillSelect($("add-status"), [["todo", COLUMN_TITLES.todo], ["backlog", COLUMN_TITLES.backlog]]);
  fillSelect($("move-status"), view.statuses.map((s) => [s, COLUMN_TITLES[s] || s]));
  if (state.openTask) {
    const task = view.tasks.find((t) => t.id === state.openTask);
    if (task) showTask(task, false);
  }
}

function card(task) {
  const meta = el("div", { class: "meta" },
    el("span", { class: "priority", text: task.priority }),
    task.assigned_to ? el("span", { class: "assignee", text: `@${task.assigned_to}` }) : null,
    task.error_count ? el("span", { class: "attempt", text: `attempt ${task.error_count + 1}` }) : null,
    task.started_at ? el("span", { class: "elapsed", "data-elapsed": task.id, text: elapsed(task) }) : null,
    task.branch_name ? (task.branch_url
      ? el("a", { class: "branch", href: task.branch_url, target: "_blank", rel: "noopener", text: task.branch_name })
      : el("span", { class: "branch", text: task.branch_name })) : null,
    task.pr_url ? el("a", { class: "pr", href: task.pr_url, target: "_blank", rel: "noopener", text: "pull request" }) : null);
  const node = el("article", { class: `card ${task.priority}`, "data-task-id": task.id, tabindex: "0" },
    el("div", { class: "title", text: task.title }), meta);
  node.addEventListener("click", (event) => {
    if (event.target.closest("a")) return;
    showTask(task, true);
  });
  return node;
}

function renderWorkers(workers) {
  if (workers === null) {
    $("workers").replaceChildren(el("li", { text: "This board has no /workers route." }));
    return;
  }
  const titles = new Map((state.view?.tasks || []).map((t) => [t.id, t.title]));
  const items = workers.map((w) => el("li", { "data-worker": w.name },
    el("span", { class: w.status, text: `${w.name}: ${w.status}` }),
    w.current_task_id ? el("div", { text: `↳ ${titles.get(w.current_task_id) || w.current_task_id}` }) : null));
  $("workers").replaceChildren(...(items.length ? items : [el("li", { text: "No worker has reported yet." })]));
}

function fillSelect(select, options) {
  const chosen = select.value;
  select.replaceChildren(...options.map(([value, label]) => el("option", { value, text: label })));
  if (options.some(([value]) => value === chosen)) select.value = chosen;
}

setInterval(() => {
  if (!state.view) return;
  for (const node of document.querySelectorAll("[data-elapsed]")) {
    const task = state.view.tasks.find((t) => t.id === node.dataset.elapsed);
    if (task) node.textContent = elapsed(task);
  }
}, 1000);

// --- a task's detail ----------------------------------------------------------------------
// A card carries what the board view has; opening it reads the whole task (description,
// files, notes) and its comments, again only when the card changed (its updated_at, or its
// number of comments: a progress comment does not touch the task).
async function showTask(card, opening) {
  state.openTask = card.id;
  $("task-title").textContent = card.title;
  const facts = [card.status, card.priority, card.assigned_to && `@${card.assigned_to}`,
    card.error_count ? `attempt ${card.error_count + 1}` : null, elapsed(card)];
  $("task-facts").textContent = facts.filter(Boolean).join(" · ");
  const links = [];
  if (card.branch_name) links.push(card.branch_url
    ? el("a", { href: card.branch_url, target: "_blank", rel: "noopener", text: `branch ${card.branch_name}` })
    : el("span", { text: `branch ${card.branch_name}` }));
  if (card.pr_url) links.push(el("a", { href: card.pr_url, target: "_blank", rel: "noopener", text: " pull request" }));
  $("task-links").replaceChildren(...links);
  $("task-git").textContent = card.show_work || "No branch yet.";
  if (opening) {
    $("move-status").value = card.status;
    $("task-error").textContent = "";
    $("task-dialog").showModal();
  } else if (state.openStamp === `${card.updated_at}/${card.comment_count}`) {
    return;
  }
  state.openStamp = `${card.updated_at}/${card.comment_count}`;
  try {
    const { task } = await api("GET", `/tasks/${encodeURIComponent(card.id)}`);
    if (state.openTask !== card.id) return;
    $("task-description").textContent = task.description || "(no description)";
    const files = task.files_changed || [];
    $("task-files").replaceChildren(...(files.length ? files.map((f) => el("li", { text: f })) : [el("li", { text: "none known" })]));
    await loadComments(task);
  } catch (error) {
    $("task-error").textContent = error.message;
  }
}

async function loadComments(task) {
  const list = $("task-comments");
  if (!state.view.comments) {
    list.replaceChildren(el("li", { text: task.completion_notes || "This board has no comments; notes: none." }));
    return;
  }
  try {
    const page = await api("GET", `/tasks/${encodeURIComponent(task.id)}/comments?limit=200`);
    if (state.openTask !== task.id) return;
    const oldestFirst = page.comments.slice().reverse();
    list.replaceChildren(...oldestFirst.map((c) => el("li", { class: c.author_type, "data-type": c.comment_type },
      el("div", { class: "who", text: `${c.comment_type} · ${c.author} · ${c.created_at}` }),
      el("pre", { text: c.content }))));
  } catch (error) {
    $("task-error").textContent = error.message;
  }
}

// --- people's actions ---------------------------------------------------------------------
function wire() {
  for (const button of document.querySelectorAll("[data-close]")) {
    button.addEventListener("click", () => button.closest("dialog").close());
  }
  $("task-dialog").addEventListener("close", () => { state.openTask = null; state.openStamp = null; });
  $("add-open").addEventListener("click", () => {
    $("add-error").textContent = "";
    $("add-dialog").showModal();
  });
  $("add-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const body = { title: form.get("title"), task_list_id: form.get("task_list_id"),
      priority: form.get("priority"), status: form.get("status") };
    if (form.get("description")) body.description = form.get("description");
    try {
      await api("POST", "/tasks", body);
      event.target.reset();
      $("add-dialog").close();
    } catch (error) {
      $("add-error").textContent = error.message;
    }
  });
  $("move-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const status = $("move-status").value;
    const body = FREE_STATUSES.has(status) ? { status, assigned_to: null } : { status };
    try {
      await api("PATCH", `/tasks/${encodeURIComponent(state.openTask)}`, body);
      $("task-error").textContent = "";
    } catch (error) {
      $("task-error").textContent = error.message;
    }
  });
  $("comment-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = { author: "board page", author_type: "user", content: $("comment-text").value,
      comment_type: $("comment-type").value };
    try {
      await api("POST", `/tasks/${encodeURIComponent(state.openTask)}/comments`, body);
      $("comment-text").value = "";
      const { task } = await api("GET", `/tasks/${encodeURIComponent(state.openTask)}`);
      await loadComments(task);
    } catch (error) {
      $("task-error").textContent = error.message;
    }
  });
  $("sign-in-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const response = await fetch("/api/session", {
      method: "POST", headers: { Authorization: `Bearer ${$("key").value.trim()}` },
    });
    $("key").value = "";
    if (!response.ok) {
      $("sign-in-error").textContent = "The board refused that key.";
      return;
    }
    history.replaceState(null, "", "/");
    $("sign-in-error").textContent = "";
    state.version = -1;
    poll();
  });
  $("sign-out").addEventListener("click", async () => {
    await fetch("/api/session", { method: "DELETE" });
    location.reload();
  });
}

function showSignIn(note) {
  polling = false;
  $("board").hidden = true;
  $("sign-out").hidden = true;
  $("add-open").hidden = true; // nothing to add to without a key
  $("sign-in").hidden = false;
  if (note) $("sign-in-error").textContent = note;
  $("live").textContent = "signed out";
  $("live").classList.remove("on");
}

wire();
poll();

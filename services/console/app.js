// nekton web console: plain JavaScript, no framework, no build step, nothing from elsewhere.
//
// Every API call sends `Authorization: Bearer <token>`; the token lives in this tab's
// sessionStorage. The live log uses EventSource, which cannot send headers: for it the console
// also sets the cookie `nekton_token` (Path=/v1, SameSite=Strict), which the server accepts on
// GET/HEAD only (docs/console.md). Everything shown is inserted as text, never as HTML.
"use strict";

const TOKEN_KEY = "nekton_token";
const STATES = ["queued", "scheduled", "running", "succeeded", "failed", "cancelled", "error"];
const TERMINAL = new Set(["succeeded", "failed", "cancelled", "error"]);
const POLL_MS = 1000;

const main = document.getElementById("main");
let cleanups = []; // run when the page changes: timers, event sources
let renderSeq = 0; // a page renders only while it is the current one

// ---- small DOM helpers -------------------------------------------------------------------

/** Creates an element; `attrs` values go to properties (on*, className, ...) or attributes. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "className") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "style") Object.assign(el.style, v); // CSSOM: allowed by the page's CSP, unlike style=""
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** Replaces `el`'s children (nested arrays flattened; null, undefined and false left out). */
function put(el, ...nodes) {
  el.replaceChildren(...nodes.flat(Infinity).filter((n) => n !== null && n !== undefined && n !== false));
}

function show(...nodes) {
  put(main, ...nodes);
}

/** A program name for a table: a module digest shortened (the full one in the tooltip). */
function programCell(program) {
  const short = /^sha256:[0-9a-f]{64}$/.test(program) ? program.slice(0, 19) + "…" : program;
  return h("td", { className: "mono", title: program }, short);
}

function alertBox(message) {
  return h("div", { className: "alert", role: "alert" }, message);
}

function badge(state) {
  return h("span", { className: "badge " + state, dataset: { state } }, state);
}

function labelChips(labels) {
  return Object.entries(labels || {}).map(([k, v]) => h("span", { className: "label" }, `${k}=${v}`));
}

function shortId(id) {
  return id ? id.slice(0, 8) + "…" + id.slice(-4) : "";
}

function when(ts) {
  return ts ? new Date(ts).toLocaleString() : "—";
}

function duration(job) {
  if (!job.started_at) return "—";
  const end = job.finished_at ? new Date(job.finished_at) : new Date();
  const ms = end - new Date(job.started_at);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function randomKey() {
  const b = new Uint8Array(16);
  crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

/** `key=value` lines (or comma-separated) into an object; throws on a line without `=`. */
function pairs(text, what) {
  const out = {};
  for (const raw of text.split(/[\n,]/)) {
    const line = raw.trim();
    if (!line) continue;
    const i = line.indexOf("=");
    if (i <= 0) throw new Error(`${what}: "${line}" is not KEY=VALUE`);
    out[line.slice(0, i).trim()] = line.slice(i + 1);
  }
  return out;
}

// ---- the token and the API ---------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** The cookie EventSource needs (the server accepts it on GET/HEAD of /v1 only). */
function setCookie(t) {
  document.cookie = t
    ? `${TOKEN_KEY}=${t}; Path=/v1; SameSite=Strict`
    : `${TOKEN_KEY}=; Path=/v1; SameSite=Strict; Max-Age=0`;
}

function signOut(message) {
  for (const c of cleanups.splice(0)) c();
  renderSeq++;
  sessionStorage.removeItem(TOKEN_KEY);
  setCookie(null);
  document.getElementById("whoami").textContent = "";
  document.getElementById("signout").hidden = true;
  document.getElementById("nav").hidden = true;
  loginPage(message);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Calls the API with the token; JSON in and out. A 401 signs out. */
async function api(path, { method = "GET", body, headers = {}, raw = false } = {}) {
  const init = { method, headers: { Authorization: `Bearer ${token()}`, ...headers } };
  if (body !== undefined) {
    if (raw) init.body = body;
    else {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `the server did not answer (${e.message}); is nekton still running?`);
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { /* not JSON */ }
  if (!res.ok) {
    const msg = data && data.error ? data.error.message : `${res.status} ${res.statusText}`;
    if (res.status === 401) {
      signOut(`Signed out: ${msg}`);
      throw new ApiError(401, msg);
    }
    throw new ApiError(res.status, msg);
  }
  return data;
}

/** Calls `fn` now and then every POLL_MS after each call ends, until the page changes or `fn` returns false. */
function poll(fn) {
  let timer = null;
  let stopped = false;
  const tick = async () => {
    let again = true;
    try { again = (await fn()) !== false; } catch (e) { if (e.status === 401) return; }
    if (!stopped && again) timer = setTimeout(tick, POLL_MS);
  };
  cleanups.push(() => { stopped = true; clearTimeout(timer); });
  tick();
}

// ---- pages ---------------------------------------------------------------------------------

function loginPage(message) {
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", placeholder: "nk_…", required: true });
  const err = h("div");
  const form = h("form", {
    className: "card login",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const t = input.value.trim();
      sessionStorage.setItem(TOKEN_KEY, t);
      setCookie(t);
      try {
        await whoami();
        if (!location.hash || location.hash === "#/login") location.hash = "#/jobs";
        else route();
      } catch (e) {
        sessionStorage.removeItem(TOKEN_KEY);
        setCookie(null);
        put(err, alertBox(e.message));
      }
    },
  },
    h("h1", {}, "Sign in"),
    message ? h("div", { className: "note" }, message) : null,
    err,
    h("div", { className: "form-row" }, h("label", { for: "token" }, "API token"), input),
    h("p", { className: "muted" }, "The server's first start wrote an admin token to <state-dir>/admin.token; `nekton token create` makes more. The token stays in this tab (sessionStorage) and is sent only to this server."),
    h("button", { type: "submit" }, "Sign in"));
  show(form);
  input.focus();
}

async function whoami() {
  const me = await api("/v1/me");
  const scopes = (me.scopes || []).join(", ");
  document.getElementById("whoami").textContent = `tenant ${me.tenant}${me.token_id ? " · token " + shortId(me.token_id) : ""} · ${scopes}`;
  document.getElementById("whoami").title = `scopes: ${scopes}`;
  document.getElementById("signout").hidden = false;
  document.getElementById("nav").hidden = false;
  return me;
}

function jobsTable(jobs, empty) {
  if (!jobs.length) return h("p", { className: "muted", id: "no-jobs" }, empty);
  return h("table", { id: "jobs" },
    h("thead", {}, h("tr", {}, ["job", "state", "program", "labels", "created", "duration", "exit"].map((t) => h("th", {}, t)))),
    h("tbody", {}, jobs.map((j) => h("tr", { dataset: { jobId: j.id, state: j.state } },
      h("td", { className: "mono" }, h("a", { href: `#/jobs/${j.id}` }, shortId(j.id))),
      h("td", {}, badge(j.state)),
      programCell(j.program),
      h("td", {}, labelChips(j.labels), j.batch_id ? h("a", { href: `#/batches/${j.batch_id}`, className: "label" }, "batch") : null),
      h("td", {}, when(j.created_at)),
      h("td", {}, duration(j)),
      h("td", {}, j.outcome ? (j.outcome.exit_code ?? j.outcome.reason) : "")))));
}

function jobsPage(query) {
  const state = query.get("state") || "";
  const labels = query.getAll("label");
  const stateSel = h("select", { id: "state-filter", name: "state" },
    h("option", { value: "" }, "any state"),
    STATES.map((s) => h("option", { value: s, selected: s === state }, s)));
  const labelIn = h("input", { type: "text", id: "label-filter", name: "label", value: labels.join(", "), placeholder: "key=value, key2=value2" });
  const apply = () => {
    const q = new URLSearchParams();
    if (stateSel.value) q.set("state", stateSel.value);
    for (const l of labelIn.value.split(",").map((s) => s.trim()).filter(Boolean)) q.append("label", l);
    const s = q.toString();
    location.hash = "#/jobs" + (s ? "?" + s : "");
  };
  stateSel.addEventListener("change", apply);
  const list = h("div", { id: "jobs-list" }, h("p", { className: "muted" }, "Loading…"));
  const status = h("span", { className: "muted", id: "jobs-updated" });
  show(
    h("h1", {}, "Jobs"),
    h("form", { className: "filters", onsubmit: (ev) => { ev.preventDefault(); apply(); } },
      h("div", {}, h("label", { for: "state-filter" }, "State"), stateSel),
      h("div", {}, h("label", { for: "label-filter" }, "Labels (all must match)"), labelIn),
      h("button", { type: "submit", className: "secondary" }, "Filter"),
      h("a", { href: "#/run" }, h("button", { type: "button" }, "Run a job")),
      status),
    list);
  const q = new URLSearchParams({ limit: "100" });
  if (state) q.set("state", state);
  for (const l of labels) q.append("label", l);
  poll(async () => {
    try {
      const page = await api(`/v1/jobs?${q}`);
      put(list, jobsTable(page.jobs, "No jobs match."),
        page.next_cursor ? h("p", { className: "muted" }, "Showing the newest 100; narrow the filter to see others.") : null);
      status.textContent = `updated ${new Date().toLocaleTimeString()} (every second)`;
    } catch (e) {
      put(list, alertBox(e.message));
      throw e;
    }
  });
}

function outcomeView(job) {
  const o = job.outcome;
  if (!o) return h("p", { className: "muted", id: "outcome" }, TERMINAL.has(job.state) ? "No outcome recorded." : "The job has not finished.");
  return h("dl", { className: "kv", id: "outcome" },
    h("dt", {}, "state"), h("dd", {}, badge(job.state)),
    h("dt", {}, "reason"), h("dd", { id: "outcome-reason" }, o.reason),
    h("dt", {}, "exit code"), h("dd", { id: "outcome-exit-code" }, o.exit_code ?? "—"),
    o.signal !== null && o.signal !== undefined ? [h("dt", {}, "signal"), h("dd", {}, o.signal)] : null,
    o.detail ? [h("dt", {}, "detail"), h("dd", {}, o.detail)] : null);
}

function billView(usage) {
  if (!usage) return h("p", { className: "muted", id: "bill" }, "No bill yet (it is written when the job ends).");
  const ms = (v) => (v === null || v === undefined ? "—" : `${v} ms`);
  const rows = [
    ["queue wait", ms(usage.queue_wait_ms)], ["setup", ms(usage.setup_ms)], ["wall time", ms(usage.wall_ms)],
    ["CPU user", ms(usage.cpu_user_ms)], ["CPU system", ms(usage.cpu_system_ms)],
    ["memory peak", bytes(usage.memory_peak_bytes)], ["Wasm memory peak", bytes(usage.wasm_memory_peak_bytes)],
    ["fuel", usage.fuel_consumed ?? "—"], ["processes peak", usage.pids_peak ?? "—"],
    ["stdout", bytes(usage.stdout_bytes) + (usage.stdout_truncated ? " (truncated)" : "")],
    ["stderr", bytes(usage.stderr_bytes) + (usage.stderr_truncated ? " (truncated)" : "")],
    ["network in / out", usage.net_rx_bytes === null || usage.net_rx_bytes === undefined ? "—" : `${bytes(usage.net_rx_bytes)} / ${bytes(usage.net_tx_bytes)}`],
  ];
  return h("dl", { className: "kv", id: "bill" }, rows.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

/** A test-suite job's cases (GET /v1/jobs/{id}/cases), kept current by the stream's case events. */
function casesView(list) {
  const ms = (u) => (u && u.wall_ms !== null && u.wall_ms !== undefined ? `${u.wall_ms} ms` : "");
  const mem = (u) => (u ? bytes(u.memory_peak_bytes ?? u.wasm_memory_peak_bytes) : "");
  const detail = (r) => {
    if (!r) return "";
    const d = r.difference;
    if (d) return `line ${d.line}: expected "${d.expected}", got "${d.actual}"`;
    return [r.detail, r.checker_message].filter(Boolean).join(": ");
  };
  const b = list.build;
  const passed = list.cases.filter((c) => c.result && c.result.verdict === "accepted").length;
  const done = list.cases.filter((c) => c.state === "finished").length;
  return [
    h("p", { id: "cases-summary" }, `${passed} accepted, ${done} of ${list.cases.length} finished`,
      b ? h("span", { id: "build-result", className: b.succeeded ? "" : "stderr" }, b.succeeded ? " — build ok" : ` — build failed: ${b.detail || b.reason}`) : null),
    h("table", { id: "cases" },
      h("thead", {}, h("tr", {}, ["#", "case", "verdict", "time", "memory", "detail"].map((t) => h("th", {}, t)))),
      h("tbody", {}, list.cases.map((c) => h("tr", { dataset: { case: c.name, state: c.state, verdict: c.result ? c.result.verdict : "" } },
        h("td", {}, c.index + 1),
        h("td", { className: "mono" }, c.name),
        h("td", {}, h("span", { className: `badge ${c.result ? (c.result.verdict === "accepted" ? "succeeded" : c.result.verdict === "skipped" ? "cancelled" : "failed") : c.state === "running" ? "running" : ""}` },
          c.result ? c.result.verdict : c.state)),
        h("td", {}, c.result ? ms(c.result.usage) : ""),
        h("td", {}, c.result && c.result.usage ? mem(c.result.usage) : ""),
        h("td", {}, detail(c.result)))))),
  ];
}

function decodeChunk(ev) {
  if (typeof ev.text === "string") return ev.text;
  const bin = atob(ev.base64 || "");
  const b = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return new TextDecoder("utf-8", { fatal: false }).decode(b);
}

async function jobPage(id, seq) {
  let job;
  try {
    job = await api(`/v1/jobs/${encodeURIComponent(id)}`);
  } catch (e) {
    if (seq === renderSeq) show(h("h1", {}, "Job"), alertBox(e.message));
    return;
  }
  if (seq !== renderSeq) return;
  // A test suite's cases.
  let cases = null;
  if (job.suite) {
    try { cases = await api(`/v1/jobs/${encodeURIComponent(id)}/cases`); } catch { cases = null; }
  }
  if (seq !== renderSeq) return;
  const casesBox = h("div", {}, cases ? casesView(cases) : null);
  const renderCases = () => { if (cases) put(casesBox, casesView(cases)); };
  const stateEl = h("span", { id: "job-state" }, badge(job.state));
  const outcomeBox = h("div", {}, outcomeView(job));
  const billBox = h("div", {}, billView(job.usage));
  const info = h("dl", { className: "kv" });
  const log = h("pre", { className: "log", id: "log", dataset: { stream: "connecting" } });
  const streamState = h("span", { className: "streamstate", id: "log-stream-state" }, "connecting…");
  const cancel = h("button", {
    type: "button", className: "danger", id: "cancel", hidden: TERMINAL.has(job.state),
    onclick: async () => {
      cancel.disabled = true;
      try { await api(`/v1/jobs/${id}/cancel`, { method: "POST" }); } catch (e) { outcomeBox.prepend(alertBox(e.message)); }
    },
  }, "Cancel");
  const renderInfo = () => {
    put(info,
      h("dt", {}, "id"), h("dd", {}, job.id),
      h("dt", {}, "program"), h("dd", {}, job.program),
      h("dt", {}, "queue"), h("dd", {}, `${job.queue} (priority ${job.priority})`),
      h("dt", {}, "attempt"), h("dd", {}, `${job.attempt} of ${job.max_attempts}`),
      h("dt", {}, "labels"), h("dd", {}, labelChips(job.labels).length ? labelChips(job.labels) : "—"),
      job.batch_id ? [h("dt", {}, "batch"), h("dd", {}, h("a", { href: `#/batches/${job.batch_id}` }, job.batch_id))] : null,
      h("dt", {}, "created"), h("dd", {}, when(job.created_at)),
      h("dt", {}, "started"), h("dd", {}, when(job.started_at)),
      h("dt", {}, "finished"), h("dd", {}, when(job.finished_at)));
    put(stateEl, badge(job.state));
    put(outcomeBox, outcomeView(job));
    put(billBox, billView(job.usage));
    cancel.hidden = TERMINAL.has(job.state);
  };
  renderInfo();
  show(
    h("h1", {}, "Job ", h("span", { className: "mono" }, shortId(job.id)), " ", stateEl, " ", cancel),
    h("div", { className: "grid2" },
      h("div", { className: "card" }, h("h2", {}, "Job"), info),
      h("div", {},
        h("div", { className: "card" }, h("h2", {}, "Outcome"), outcomeBox),
        h("div", { className: "card" }, h("h2", {}, "Bill"), billBox))),
    cases ? h("div", { className: "card" }, h("h2", {}, "Cases"), casesBox) : null,
    h("div", { className: "card" }, h("h2", {}, "Log", streamState), log));

  // The live log. The server sends `retry:`, then `state`/`log` events and a final `exit`, then
  // ends the response; the EventSource reconnects with Last-Event-ID = "<attempt>.end", gets 204
  // and stops for good. A connection dropped midway resumes after the last event it got.
  setCookie(token());
  const es = new EventSource(`/v1/jobs/${encodeURIComponent(id)}/logs`);
  cleanups.push(() => es.close());
  let attempt = null;
  const atBottom = () => log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const append = (text, cls) => {
    const stick = atBottom();
    log.append(cls ? h("span", { className: cls }, text) : document.createTextNode(text));
    if (stick) log.scrollTop = log.scrollHeight;
  };
  const setStream = (s, text) => { log.dataset.stream = s; streamState.textContent = text; };
  es.addEventListener("open", () => setStream("open", "live"));
  es.addEventListener("state", (m) => {
    const ev = JSON.parse(m.data);
    if (attempt !== null && ev.attempt !== attempt) append(`— attempt ${ev.attempt} —\n`, "meta");
    attempt = ev.attempt;
    job.state = ev.state;
    job.attempt = ev.attempt;
    put(stateEl, badge(ev.state));
    if (ev.state === "running" && !job.started_at) {
      api(`/v1/jobs/${id}`).then((j) => { if (!TERMINAL.has(job.state)) { job = j; renderInfo(); } }).catch(() => {});
    }
  });
  es.addEventListener("log", (m) => {
    const ev = JSON.parse(m.data);
    append(decodeChunk(ev), ev.stream === "stderr" ? "stderr" : null);
  });
  es.addEventListener("build_finished", (m) => { if (cases) { cases.build = JSON.parse(m.data); renderCases(); } });
  es.addEventListener("case_started", (m) => {
    const ev = JSON.parse(m.data);
    const c = cases && cases.cases[ev.index];
    if (c && c.state === "pending") { c.state = "running"; renderCases(); }
  });
  es.addEventListener("case_finished", (m) => {
    const r = JSON.parse(m.data);
    const c = cases && cases.cases[r.index];
    if (c) { c.state = "finished"; c.result = r; renderCases(); }
  });
  es.addEventListener("exit", async (m) => {
    const ev = JSON.parse(m.data);
    Object.assign(job, { state: ev.state, attempt: ev.attempt, outcome: ev.outcome, usage: ev.usage });
    renderInfo();
    setStream("ended", "finished");
    try { job = await api(`/v1/jobs/${id}`); renderInfo(); } catch { /* shown already */ }
  });
  es.addEventListener("error", () => {
    if (es.readyState === EventSource.CLOSED) {
      setStream("closed", TERMINAL.has(job.state) ? "finished" : "closed (reload to retry)");
    } else if (log.dataset.stream !== "ended") {
      setStream("reconnecting", "reconnecting…");
    }
  });
}

async function batchPage(id, seq) {
  const bar = h("div", { className: "progress", id: "batch-progress" });
  const legend = h("div", { className: "legend" });
  const head = h("div");
  const failed = h("div", { id: "batch-failed" }, h("p", { className: "muted" }, "Loading…"));
  show(h("h1", {}, "Batch ", h("span", { className: "mono" }, shortId(id))),
    h("div", { className: "card" }, head, bar, legend),
    h("h2", {}, "Failed jobs"), failed);
  const order = ["succeeded", "failed", "error", "cancelled", "running", "scheduled", "queued"];
  poll(async () => {
    let b;
    try {
      b = await api(`/v1/batches/${encodeURIComponent(id)}`);
    } catch (e) {
      put(head, alertBox(e.message));
      return false;
    }
    if (seq !== renderSeq) return false;
    const done = ["succeeded", "failed", "error", "cancelled"].reduce((n, s) => n + (b.counts[s] || 0), 0);
    put(head, h("dl", { className: "kv" },
      h("dt", {}, "id"), h("dd", {}, b.id),
      h("dt", {}, "created"), h("dd", {}, when(b.created_at)),
      h("dt", {}, "labels"), h("dd", {}, labelChips(b.labels).length ? labelChips(b.labels) : "—"),
      h("dt", {}, "progress"), h("dd", { id: "batch-done" }, `${done} of ${b.total} finished${b.finished ? " — complete" : ""}`)));
    put(bar, ...order.filter((s) => b.counts[s]).map((s) =>
      h("div", { className: s, style: { width: `${(100 * b.counts[s]) / Math.max(b.total, 1)}%` }, title: `${s}: ${b.counts[s]}` })));
    put(legend, ...order.filter((s) => b.counts[s]).map((s) => h("span", {}, badge(s), ` ${b.counts[s]}`)));
    const [f, e] = await Promise.all(["failed", "error"].map((s) => api(`/v1/jobs?batch=${encodeURIComponent(id)}&state=${s}&limit=100`)));
    put(failed, jobsTable([...f.jobs, ...e.jobs], "None so far."));
    return !b.finished;
  });
}

const DONE_STATES = ["succeeded", "failed", "error", "cancelled"];

async function batchesPage(params, seq) {
  const input = h("input", { type: "text", id: "batch-id", placeholder: "batch id (UUID)" });
  const filter = h("select", { id: "batch-filter", onchange: () => { location.hash = filter.value ? `#/batches?done=${filter.value}` : "#/batches"; } },
    h("option", { value: "" }, "all"), h("option", { value: "false" }, "unfinished"), h("option", { value: "true" }, "complete"));
  filter.value = params.get("done") || "";
  const list = h("div", {}, h("p", { className: "muted" }, "Loading…"));
  show(h("h1", {}, "Batches"),
    h("form", { className: "filters", onsubmit: (ev) => { ev.preventDefault(); if (input.value.trim()) location.hash = `#/batches/${input.value.trim()}`; } },
      h("div", {}, h("label", { for: "batch-id" }, "Open a batch"), input), h("button", { type: "submit" }, "Open"),
      h("div", {}, h("label", { for: "batch-filter" }, "Show"), filter)),
    list);
  // The newest 50 (GET /v1/batches, newest first), refreshed while any of them is unfinished.
  poll(async () => {
    let page;
    try {
      page = await api(`/v1/batches?limit=50${filter.value ? `&done=${filter.value}` : ""}`);
    } catch (e) {
      put(list, alertBox(e.message));
      return false;
    }
    if (seq !== renderSeq) return false;
    if (!page.batches.length) {
      put(list, h("p", { className: "muted", id: "no-batches" }, `No ${{ true: "complete ", false: "unfinished " }[filter.value] || ""}batches. Submit one with \`nekton batch submit\`.`));
      return true;
    }
    put(list, h("table", { id: "batches" },
      h("thead", {}, h("tr", {}, ...["batch", "created", "progress", "finished", "labels"].map((c) => h("th", {}, c)))),
      h("tbody", {}, page.batches.map((b) => {
        const done = DONE_STATES.reduce((n, s) => n + (b.counts[s] || 0), 0);
        const failed = (b.counts.failed || 0) + (b.counts.error || 0);
        return h("tr", { dataset: { batchId: b.id } },
          h("td", {}, h("a", { className: "mono", href: `#/batches/${b.id}` }, shortId(b.id))),
          h("td", {}, when(b.created_at)),
          h("td", { className: "batch-count" }, `${done} of ${b.total}${failed ? ` (${failed} failed)` : ""}`),
          h("td", {}, b.finished ? h("span", { className: "badge complete" }, "complete") : h("span", { className: "badge running" }, "running")),
          h("td", {}, labelChips(b.labels)));
      })),
      page.next_cursor ? h("tfoot", {}, h("tr", {}, h("td", { colSpan: 5, className: "muted" }, "Showing the newest 50; `nekton batch ls --all` lists every batch."))) : null));
    return page.batches.some((b) => !b.finished);
  });
}

async function imagesPage(seq) {
  show(h("h1", {}, "Images"), h("p", { className: "muted" }, "Loading…"));
  let list;
  try {
    list = await api("/v1/images");
  } catch (e) {
    if (seq === renderSeq) show(h("h1", {}, "Images"), alertBox(e.message));
    return;
  }
  if (seq !== renderSeq) return;
  show(h("h1", {}, "Images"),
    h("p", { className: "muted" }, "The images stored on this server's worker host (pull with `nekton image pull`; jobs that name an image pull it themselves)."),
    list.images.length
      ? h("table", { id: "images" },
        h("thead", {}, h("tr", {}, ["reference", "kind", "platform", "size", "unpacked", "stored"].map((t) => h("th", {}, t)))),
        h("tbody", {}, list.images.map((i) => h("tr", {},
          h("td", { className: "mono" }, i.reference, h("br"), h("span", { className: "muted" }, i.manifest_digest)),
          h("td", {}, i.kind), h("td", {}, i.platform || "—"), h("td", {}, bytes(i.size_bytes)),
          h("td", {}, bytes(i.unpacked_size_bytes)), h("td", {}, when(i.stored_at))))))
      : h("p", { className: "muted", id: "no-images" }, "No images stored."));
}

function runPage() {
  const err = h("div");
  const kindModule = h("input", { type: "radio", name: "kind", value: "module", id: "kind-module", checked: true });
  const kindImage = h("input", { type: "radio", name: "kind", value: "image", id: "kind-image" });
  const file = h("input", { type: "file", id: "module-file", accept: ".wasm,application/wasm" });
  const digest = h("input", { type: "text", id: "module-digest", placeholder: "sha256:… (or choose a .wasm file)", className: "mono" });
  const image = h("input", { type: "text", id: "image-ref", placeholder: "busybox:1.36" });
  const args = h("textarea", { id: "args", placeholder: "one argument per line" });
  const env = h("textarea", { id: "env", placeholder: "KEY=VALUE, one per line" });
  const labels = h("textarea", { id: "labels", placeholder: "key=value, one per line" });
  const stdin = h("textarea", { id: "stdin", placeholder: "bytes fed to stdin (UTF-8)" });
  const wall = h("input", { type: "number", id: "wall-ms", min: "1", placeholder: "server default" });
  const submit = h("button", { type: "submit", id: "run-submit" }, "Run");
  const moduleBox = h("div", {}, h("div", { className: "form-row" }, h("label", { for: "module-file" }, "Upload a module (.wasm)"), file),
    h("div", { className: "form-row" }, h("label", { for: "module-digest" }, "or an uploaded module's digest"), digest));
  const imageBox = h("div", { hidden: true }, h("div", { className: "form-row" }, h("label", { for: "image-ref" }, "Image reference"), image));
  const toggle = () => { moduleBox.hidden = !kindModule.checked; imageBox.hidden = kindModule.checked; };
  kindModule.addEventListener("change", toggle);
  kindImage.addEventListener("change", toggle);
  show(h("h1", {}, "Run a job"), err,
    h("form", {
      className: "card", id: "run-form",
      onsubmit: async (ev) => {
        ev.preventDefault();
        put(err);
        submit.disabled = true;
        try {
          const spec = {};
          if (kindModule.checked) {
            if (file.files.length) {
              const m = await api("/v1/modules", { method: "POST", body: file.files[0], raw: true, headers: { "Content-Type": "application/wasm" } });
              digest.value = m.digest;
            }
            if (!digest.value.trim()) throw new Error("choose a .wasm file or give a module digest");
            spec.module = digest.value.trim();
          } else {
            if (!image.value.trim()) throw new Error("give an image reference");
            spec.image = image.value.trim();
          }
          const a = args.value.split("\n").filter((l) => l.length);
          if (a.length) spec.args = a;
          const e = pairs(env.value, "environment");
          if (Object.keys(e).length) spec.env = e;
          const l = pairs(labels.value, "labels");
          if (Object.keys(l).length) spec.labels = l;
          if (stdin.value) spec.stdin = stdin.value;
          if (wall.value) spec.limits = { wall_time_ms: Number(wall.value) };
          const job = await api("/v1/jobs", { method: "POST", body: spec, headers: { "Idempotency-Key": randomKey() } });
          location.hash = `#/jobs/${job.id}`;
        } catch (e) {
          if (e.status !== 401) put(err, alertBox(e.message));
        } finally {
          submit.disabled = false;
        }
      },
    },
      h("div", { className: "form-row" },
        h("label", {}, "Program"),
        h("span", {}, kindModule, " ", h("label", { for: "kind-module", className: "inline" }, "Wasm module"), "  ",
          kindImage, " ", h("label", { for: "kind-image", className: "inline" }, "OCI image"))),
      moduleBox, imageBox,
      h("div", { className: "grid2" },
        h("div", { className: "form-row" }, h("label", { for: "args" }, "Arguments"), args),
        h("div", { className: "form-row" }, h("label", { for: "env" }, "Environment"), env),
        h("div", { className: "form-row" }, h("label", { for: "labels" }, "Labels"), labels),
        h("div", { className: "form-row" }, h("label", { for: "stdin" }, "Standard input"), stdin)),
      h("div", { className: "form-row" }, h("label", { for: "wall-ms" }, "Wall-time limit (ms)"), wall),
      submit));
}

// ---- routing ---------------------------------------------------------------------------------

function route() {
  for (const c of cleanups.splice(0)) c();
  const seq = ++renderSeq;
  if (!token()) return loginPage();
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  const [path, qs] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === parts[0]);
  const query = new URLSearchParams(qs || "");
  switch (parts[0]) {
    case "jobs": return parts[1] ? jobPage(decodeURIComponent(parts[1]), seq) : jobsPage(query);
    case "batches": return parts[1] ? batchPage(decodeURIComponent(parts[1]), seq) : batchesPage(query, seq);
    case "images": return imagesPage(seq);
    case "run": return runPage();
    case "login": return loginPage();
    default: show(h("h1", {}, "Not found"), h("p", {}, "No such page. ", h("a", { href: "#/jobs" }, "Jobs")));
  }
}

document.getElementById("signout").addEventListener("click", () => { signOut("Signed out."); location.hash = "#/login"; });
window.addEventListener("hashchange", route);
if (token()) {
  setCookie(token());
  whoami().then(route, () => { /* a 401 already shows the sign-in page */ if (token()) route(); });
} else {
  route();
}

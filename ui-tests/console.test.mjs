// The web console (/ui) in a real headless Chromium, driven by playwright-core.
// Run by scripts/check-ui.sh, which starts `nekton serve` on 127.0.0.1 and passes:
//   NEKTON_URL, NEKTON_TOKEN, NEKTON_TICKER_DIGEST (ui-tests/fixtures/ticker.wat pushed by the
//   CLI), NEKTON_FAILS_DIGEST (fixtures/fails.wat), NEKTON_UI_ARTIFACTS (screenshots go there),
//   CHROMIUM (the browser binary).
// Network rule: the browser reaches only the server on 127.0.0.1 (every request is checked), and
// any host name it might try to resolve fails.
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`console.test.mjs: ${name} is not set (run scripts/check-ui.sh)`);
  return v;
};
const BASE = env("NEKTON_URL");
const TOKEN = env("NEKTON_TOKEN");
const TICKER = env("NEKTON_TICKER_DIGEST");
const FAILS = env("NEKTON_FAILS_DIGEST");
const ARTIFACTS = env("NEKTON_UI_ARTIFACTS");
const here = path.dirname(fileURLToPath(import.meta.url));
const RUN = `r${Date.now().toString(36)}`; // labels this run's jobs

mkdirSync(ARTIFACTS, { recursive: true });
const started = Date.now();
let shots = 0;
const step = (what) => console.log(`check-ui: [${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);

async function apiGet(p) {
  const r = await fetch(BASE + p, { headers: { Authorization: `Bearer ${TOKEN}` } });
  assert.equal(r.status, 200, `GET ${p}: ${r.status}`);
  return r.json();
}

async function shot(page, name) {
  const file = path.join(ARTIFACTS, `${String(++shots).padStart(2, "0")}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

const browser = await chromium.launch({
  executablePath: env("CHROMIUM"),
  headless: true,
  args: [
    ...(process.getuid && process.getuid() === 0 ? ["--no-sandbox"] : []),
    "--disable-dev-shm-usage",
    // Nothing but the server: no name resolves, and anything not on loopback goes to a dead proxy.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
  ],
});
const origin = new URL(BASE).origin;
const foreign = [];
const pageErrors = [];
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
context.on("request", (req) => {
  const u = req.url();
  if (!u.startsWith(origin + "/") && !u.startsWith("data:")) foreign.push(u);
});
context.on("page", (p) => {
  p.on("pageerror", (e) => pageErrors.push(`${e.message}`));
  p.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(`console: ${m.text()}`);
  });
});

/** A missing value must never be shown as the word "null" or "undefined". */
async function noStrayNull(page) {
  const text = await page.locator("main").innerText();
  assert.ok(!/\b(null|undefined|NaN)\b|\[object /.test(text), `a raw JS value on the page:\n${text}`);
}

async function signIn(page, hash) {
  await page.goto(`${BASE}/ui/${hash || ""}`);
  await page.locator("#token").waitFor();
  await page.fill("#token", TOKEN);
  await page.click("form.login button[type=submit]");
  await page.locator("#whoami", { hasText: "tenant default" }).waitFor();
}

let failure = null;
try {
  // --- sign in -------------------------------------------------------------------------
  const list = await context.newPage();
  await list.goto(`${BASE}/ui`);
  await list.locator("#token").waitFor();
  await shot(list, "sign-in");
  await list.fill("#token", TOKEN);
  await list.click("form.login button[type=submit]");
  await list.locator("#whoami", { hasText: "tenant default" }).waitFor();
  assert.match(await list.locator("#whoami").textContent(), /admin/, "the caller's scopes are shown");
  step("signed in; /v1/me shown in the header");
  // The list of running jobs of this run, polled by the page every second.
  await list.evaluate((run) => { location.hash = `#/jobs?state=running&label=run%3D${run}`; }, RUN);
  await list.locator("#no-jobs").waitFor();

  // --- run the ticker through the form: upload ticker.wasm, submit ----------------------
  const job = await context.newPage();
  await signIn(job, "#/run");
  await job.locator("#run-form").waitFor();
  await job.setInputFiles("#module-file", path.join(here, "fixtures/ticker.wasm"));
  await job.fill("#labels", `suite=ui\nrun=${RUN}\nkind=ticker`);
  await shot(job, "run-form");
  // Record when each log line shows up in the page (not asserted on: reported below).
  await job.click("#run-submit");
  await job.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);
  const tickerId = job.url().split("/").pop();
  await job.locator("#log").waitFor();
  await job.evaluate(() => {
    window.__seen = {};
    const log = document.getElementById("log");
    const check = () => {
      for (const l of ["first line", "second line"]) {
        if (!window.__seen[l] && log.textContent.includes(l)) window.__seen[l] = Date.now();
      }
    };
    new MutationObserver(check).observe(log, { childList: true, subtree: true, characterData: true });
    check();
  });
  step(`submitted ticker job ${tickerId} through the form`);

  // While it runs: the list shows it running; its page shows the first line before the
  // second is written (2 s later), and the second before the job ends (1.5 s after it).
  const listed = list.locator(`tr[data-job-id="${tickerId}"][data-state="running"]`).waitFor();
  await job.locator("#log", { hasText: "first line" }).waitFor();
  let rec = await apiGet(`/v1/jobs/${tickerId}`);
  let logText = await job.locator("#log").textContent();
  assert.equal(rec.state, "running", "the first line is shown while the job still runs");
  assert.ok(!logText.includes("second line"), "the first line is shown before the second is written");
  assert.equal(await job.locator("#job-state [data-state]").getAttribute("data-state"), "running");
  await shot(job, "job-running-first-line");
  step("the job page shows the first line while the job runs");
  await listed;
  assert.equal(await list.locator("#jobs tbody tr").count(), 1, "exactly this run's one running job");
  await shot(list, "jobs-running");
  step("the jobs list (state=running) lists it");
  await job.locator("#log", { hasText: "second line" }).waitFor();
  rec = await apiGet(`/v1/jobs/${tickerId}`);
  assert.equal(rec.state, "running", "the second line is shown before the job ends");
  step("the second line is shown while the job runs");
  await job.locator("#outcome-exit-code", { hasText: "0" }).waitFor();
  await job.locator("#log[data-stream=closed]").waitFor();
  assert.equal(await job.locator("#job-state [data-state]").getAttribute("data-state"), "succeeded");
  assert.equal(await job.locator("#outcome-reason").textContent(), "exited");
  assert.match(await job.locator("#bill").textContent(), /wall time\s*\d+ ms/);
  rec = await apiGet(`/v1/jobs/${tickerId}`);
  assert.equal(rec.program, TICKER, "the uploaded ticker.wasm is ticker.wat assembled");
  const seen = await job.evaluate(() => window.__seen);
  const t0 = Date.parse(rec.started_at);
  const lat1 = seen["first line"] - t0;
  const lat2 = seen["second line"] - t0 - 2000;
  await noStrayNull(job);
  await shot(job, "job-finished");
  step(`exit status shown; upper bounds of write→screen: first line ${lat1} ms after the job started, ` +
    `second line ${lat2} ms after its write (started + 2000 ms; includes setup ${rec.usage.setup_ms ?? "?"} ms)`);

  // --- a finished job's log stream: one request, one 204 reconnect, then silence ---------
  const logUrl = `/v1/jobs/${tickerId}/logs`;
  const hits = [];
  job.on("response", (r) => {
    if (new URL(r.url()).pathname === logUrl) hits.push(r.status());
  });
  await job.evaluate(() => { location.hash = "#/images"; });
  await job.locator("h1", { hasText: "Images" }).waitFor();
  await job.evaluate((id) => { location.hash = `#/jobs/${id}`; }, tickerId);
  await job.locator("#log[data-stream=closed]").waitFor();
  await job.waitForTimeout(4000); // an observation window: a looping EventSource (retry: 1 s) would reconnect ~4 times
  assert.deepEqual(hits, [200, 204], `log-stream requests of a finished job: ${JSON.stringify(hits)}`);
  const replay = await job.locator("#log").textContent();
  assert.ok(replay.includes("first line") && replay.includes("second line"), replay);
  step("a finished job's EventSource: one stream (200) and one reconnect (204), then it stops");

  // --- a failing job, submitted by digest ----------------------------------------------
  await job.evaluate(() => { location.hash = "#/run"; });
  await job.locator("#run-form").waitFor();
  await job.fill("#module-digest", FAILS);
  await job.fill("#labels", `suite=ui\nrun=${RUN}\nkind=fails`);
  await job.click("#run-submit");
  await job.waitForURL(/#\/jobs\/[0-9a-f-]{36}$/);
  const failsId = job.url().split("/").pop();
  await job.locator("#outcome-exit-code", { hasText: "3" }).waitFor();
  assert.equal(await job.locator("#job-state [data-state]").getAttribute("data-state"), "failed");
  await job.locator("#log .stderr", { hasText: "oops" }).waitFor();
  await shot(job, "job-failed");
  step(`failing job ${failsId}: state failed, exit code 3, stderr shown`);

  // --- the state and label filters -------------------------------------------------------
  const ids = async () => list.locator("#jobs tbody tr").evaluateAll((rows) => rows.map((r) => [r.dataset.jobId, r.dataset.state]));
  await list.evaluate((run) => { location.hash = `#/jobs?label=run%3D${run}`; }, RUN);
  await list.locator(`tr[data-job-id="${failsId}"]`).waitFor();
  assert.deepEqual((await ids()).map(([i]) => i).sort(), [tickerId, failsId].sort(), "the label filter shows this run's jobs");
  await list.selectOption("#state-filter", "failed");
  await list.waitForURL(/state=failed/);
  await list.locator(`tr[data-job-id="${failsId}"]`).waitFor();
  let rows = await ids();
  assert.deepEqual(rows, [[failsId, "failed"]], `state=failed: ${JSON.stringify(rows)}`);
  await noStrayNull(list);
  await shot(list, "jobs-filter-failed");
  await list.selectOption("#state-filter", "succeeded");
  await list.waitForURL(/state=succeeded/);
  await list.locator(`tr[data-job-id="${tickerId}"]`).waitFor();
  rows = await ids();
  assert.deepEqual(rows, [[tickerId, "succeeded"]], `state=succeeded: ${JSON.stringify(rows)}`);
  await list.selectOption("#state-filter", "");
  await list.waitForURL((u) => !u.hash.includes("state="));
  await list.locator("#jobs tbody tr").nth(1).waitFor();
  step("the jobs list filters by state (select) and label");

  // --- a batch: progress and its failed jobs ---------------------------------------------
  const r = await fetch(`${BASE}/v1/batches`, {
    method: "POST",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({ defaults: { module: FAILS }, jobs: [{}, {}, { module: TICKER }], labels: { run: RUN } }),
  });
  assert.equal(r.status, 201, `batch: ${r.status} ${await r.clone().text()}`);
  const batch = await r.json();
  await job.evaluate((id) => { location.hash = `#/batches/${id}`; }, batch.id);
  await job.locator("#batch-done", { hasText: "3 of 3 finished — complete" }).waitFor();
  await job.locator("#batch-failed tbody tr").nth(1).waitFor();
  assert.equal(await job.locator("#batch-failed tbody tr").count(), 2, "the two failed jobs are listed");
  assert.equal(await job.locator("#batch-progress > div").count(), 2, "two segments: succeeded and failed");
  await noStrayNull(job);
  await shot(job, "batch");
  step(`batch ${batch.id}: progress complete, its 2 failed jobs listed`);

  // The batches page lists it (GET /v1/batches), with its count and the complete filter.
  await job.evaluate(() => { location.hash = "#/batches?done=true"; });
  const row = job.locator(`#batches tr[data-batch-id="${batch.id}"]`);
  await row.waitFor();
  assert.equal(await row.locator(".batch-count").textContent(), "3 of 3 (2 failed)");
  await shot(job, "batches");
  await job.selectOption("#batch-filter", "false");
  await job.waitForURL(/done=false/);
  await job.locator(`#batches tr[data-batch-id="${batch.id}"]`).waitFor({ state: "detached" });
  await job.locator("#batches, #no-batches").first().waitFor();
  assert.equal(await job.locator(`#batches tr[data-batch-id="${batch.id}"]`).count(), 0, "a complete batch is not unfinished");
  await noStrayNull(job);
  step("the batches page lists the batch (3 of 3, 2 failed) and filters by done");

  // --- a test suite: its cases table fills from the event stream -------------------------
  const sr = await fetch(`${BASE}/v1/jobs`, {
    method: "POST",
    headers: { Authorization: `Bearer ${TOKEN}`, "Content-Type": "application/json" },
    body: JSON.stringify({
      module: FAILS, labels: { run: RUN },
      tests: { cases: [
        { name: "exits-3", expect: { exit_code: 3 } },
        { name: "expects-0" },
        { name: "says-oops", expect: { exit_code: 3, stdout: "oops" } },
      ] },
    }),
  });
  assert.equal(sr.status, 201, `suite: ${sr.status} ${await sr.clone().text()}`);
  const suite = await sr.json();
  await job.evaluate((id) => { location.hash = `#/jobs/${id}`; }, suite.id);
  await job.locator("#cases-summary", { hasText: "1 accepted, 3 of 3 finished" }).waitFor();
  const verdicts = await job.locator("#cases tbody tr").evaluateAll((rows) => rows.map((r) => [r.dataset.case, r.dataset.verdict]));
  assert.deepEqual(verdicts, [["exits-3", "accepted"], ["expects-0", "runtime_error"], ["says-oops", "wrong_answer"]]);
  assert.match(await job.locator('#cases tr[data-case="says-oops"]').innerText(), /line 1: expected "oops", got ""/);
  await job.locator("#outcome-reason", { hasText: "tests_failed" }).waitFor();
  await noStrayNull(job);
  await shot(job, "suite");
  step(`suite ${suite.id}: the cases table shows each verdict and the first difference`);

  // --- images ----------------------------------------------------------------------------
  await job.evaluate(() => { location.hash = "#/images"; });
  await job.locator("#no-images, #images").first().waitFor();
  await shot(job, "images");
  step("the image list renders");

  assert.deepEqual(foreign, [], "the browser requested nothing but the server");
  assert.deepEqual(pageErrors, [], "no script errors, CSP violations or failed loads in the pages");
} catch (e) {
  failure = e;
  for (const p of context.pages()) {
    try { await shot(p, "failure"); } catch { /* closed */ }
  }
} finally {
  await browser.close();
}
console.log(`check-ui: screenshots in ${ARTIFACTS}`);
if (failure) {
  console.error(`check-ui: FAILED: ${failure.stack || failure}`);
  if (pageErrors.length) console.error(`check-ui: page errors: ${pageErrors.join(" | ")}`);
  process.exit(1);
}
console.log(`check-ui: passed in ${((Date.now() - started) / 1000).toFixed(1)} s`);

// graphile-worker 0.17.3's own perf test (perfTest/run.js, init.js, latencyTest.js and
// graphile.config.js of github.com/graphile/worker at v0.17.3), adapted to be driven by
// `load-tests versus`: one JSON object per stdout line, and the measured phase starts only when
// the driver writes "go" on stdin (so it can read the CPU counters around exactly that phase).
//
//   node bench.mjs throughput --mode batched|unbatched --jobs N [--processes 4] [--concurrency 24]
//   node bench.mjs latency [--samples 1000] [--warmup 100] [--mode batched|unbatched]
//
// PostgreSQL: --host SOCKET_DIR_OR_127.0.0.1 --port 5432 --user postgres --database NAME
// (loopback or a Unix socket only; anything else is refused).
//
// Protocol: {"phase":"ready",...} → driver writes "go\n" → {"phase":"done",...} → driver closes
// stdin → exit 0. Errors: {"phase":"error","error":"..."} and exit 1.
//
// throughput: like run.js, N jobs of the no-op task `log_if_999` are queued in bulk with
// graphile_worker.add_jobs (init.js's statement), then 4 worker processes (run.js's PARALLELISM),
// each `runOnce` with 24 concurrent jobs (graphile.config.js), drain the queue. Unlike run.js,
// the worker processes are started (node up, graphile-worker loaded, pool connected) before "go",
// instead of subtracting the time of an empty `--once` run. Mode "batched" is graphile.config.js
// as shipped (localQueue size 500, refetchDelay 10 ms, completeJobBatchDelay 0,
// failJobBatchDelay 0); "unbatched" is the commented-out alternative there (localQueue size -1,
// both batch delays -1: graphile-worker's defaults).
//
// latency: latencyTest.js: one worker pool (24 concurrent jobs, the same preset), 100 warm-up
// jobs, 1 s to settle, then 1000 jobs one at a time: `select graphile_worker.add_job(...)` sent →
// the task function called, in this process's monotonic clock.

import { fork } from "node:child_process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { Logger, runMigrations, runOnce, runTaskList } from "graphile-worker";

const TASK = "log_if_999";

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a.startsWith("--")) {
      const [k, v] = a.includes("=") ? a.slice(2).split(/=(.*)/s) : [a.slice(2), argv[++i]];
      if (v === undefined) throw new Error(`${a} needs a value`);
      out[k] = v;
    } else {
      out._.push(a);
    }
  }
  return out;
}

function intArg(args, name, dflt) {
  if (args[name] === undefined) return dflt;
  const n = Number(args[name]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, not ${args[name]}`);
  return n;
}

function pgConfig(args) {
  const host = args.host;
  if (!host) throw new Error("--host is required (a Unix socket directory or 127.0.0.1)");
  if (!(host.startsWith("/") || host === "127.0.0.1")) {
    throw new Error(`--host must be a Unix socket directory or 127.0.0.1, not ${host}`);
  }
  return {
    host,
    port: Number(args.port ?? 5432),
    user: args.user ?? "postgres",
    database: args.database ?? "graphile",
  };
}

function preset(mode, concurrency) {
  const batched = {
    localQueue: { size: 500, refetchDelay: { durationMs: 10 } },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  };
  const unbatched = { localQueue: { size: -1 }, completeJobBatchDelay: -1, failJobBatchDelay: -1 };
  if (mode !== "batched" && mode !== "unbatched") {
    throw new Error(`--mode must be batched or unbatched, not ${mode}`);
  }
  return {
    worker: {
      fileExtensions: [".js", ".cjs", ".mjs"],
      gracefulShutdownAbortTimeout: 2500,
      concurrentJobs: concurrency,
      maxPoolSize: concurrency + 1,
      ...(mode === "batched" ? batched : unbatched),
    },
  };
}

// Warnings and errors only, to stderr (the driver keeps stdout for JSON).
const logger = new Logger(() => (level, message) => {
  if (level === "error" || level === "warning") console.error(`graphile-worker ${level}: ${message}`);
});

function newPool(cfg) {
  const pool = new pg.Pool(cfg);
  pool.on("error", (e) => console.error(`idle PostgreSQL client error: ${e}`));
  pool.on("connect", (c) => c.on("error", (e) => console.error(`PostgreSQL client error: ${e}`)));
  return pool;
}

const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

function lines(stream) {
  const rl = createInterface({ input: stream });
  const queue = [];
  const waiters = [];
  let closed = false;
  rl.on("line", (l) => (waiters.length ? waiters.shift()(l) : queue.push(l)));
  rl.on("close", () => {
    closed = true;
    while (waiters.length) waiters.shift()(null);
  });
  return () =>
    new Promise((resolve) => {
      if (queue.length) resolve(queue.shift());
      else if (closed) resolve(null);
      else waiters.push(resolve);
    });
}

async function waitFor(next, word) {
  for (;;) {
    const l = await next();
    if (l === null) throw new Error(`stdin closed before "${word}"`);
    if (l.trim() === word) return;
  }
}

const msSince = (t) => Number(process.hrtime.bigint() - t) / 1e6;

// ---- worker child process (throughput) -------------------------------------------------------

async function child(args) {
  const conc = intArg(args, "concurrency", 24);
  const pool = newPool({ ...pgConfig(args), max: conc + 1 });
  // Connect the pool's first client before "go", as a running worker would have.
  (await pool.connect()).release();
  let ran = 0;
  const taskList = {
    [TASK]: async ({ id }) => {
      ran++;
      if (id === 999 && process.env.PERF_LOG_999) console.error("Found 999!");
    },
  };
  process.send({ ready: true });
  await new Promise((resolve) => process.once("message", resolve));
  const t = process.hrtime.bigint();
  await runOnce({ preset: preset(args.mode, conc), pgPool: pool, logger, noHandleSignals: true, taskList });
  const ms = msSince(t);
  await pool.end();
  process.send({ ran, ms });
  // Stay alive until the driver has read the CPU counters (this process's time is then still
  // its own, not folded into the parent's), then leave.
  await new Promise((resolve) => process.once("message", resolve));
  process.disconnect();
}

// ---- throughput ---------------------------------------------------------------------------------

async function throughput(args, next) {
  const jobs = intArg(args, "jobs", 200000);
  const processes = intArg(args, "processes", 4);
  const conc = intArg(args, "concurrency", 24);
  preset(args.mode, conc); // validates --mode
  const cfg = pgConfig(args);
  const pool = newPool({ ...cfg, max: 2 });
  await runMigrations({ pgPool: pool, logger });
  const before = await pool.query("select count(*)::int as n from graphile_worker._private_jobs");
  if (before.rows[0].n !== 0) throw new Error(`the queue is not empty: ${before.rows[0].n} jobs left from before`);
  // The earlier rounds' jobs are gone but their dead rows and index entries are not until a vacuum:
  // run.js measures a fresh database each time, so every round starts from one as clean (without
  // this, a second round of 50,000 batched jobs ran at 1,397 jobs/s instead of 27,440). No ANALYZE
  // here: statistics of the empty tables made the planner pick plans that suit an empty queue, and a
  // round then drained 50,000 jobs at 710 jobs/s with PostgreSQL at 2.7 ms of CPU per job. The
  // tables are analyzed once the jobs are queued, below, as autovacuum would see a backlog.
  await pool.query("vacuum graphile_worker._private_jobs, graphile_worker._private_job_queues");

  // init.js: one add_jobs call per (up to) 1,000,000 jobs.
  const tq = process.hrtime.bigint();
  for (let done = 0; done < jobs; ) {
    const n = Math.min(1000000, jobs - done);
    const slice = Array.from({ length: n }, (_, i) => ({ identifier: TASK, payload: { id: done + i } }));
    await pool.query(
      "select 1 from graphile_worker.add_jobs(array(select json_populate_recordset(null::graphile_worker.job_spec, $1::json)))",
      [JSON.stringify(slice)],
    );
    done += n;
  }
  const queueMs = msSince(tq);
  await pool.query("analyze graphile_worker._private_jobs, graphile_worker._private_job_queues");

  const script = fileURLToPath(import.meta.url);
  const kids = [];
  for (let i = 0; i < processes; i++) {
    const argv = ["child", "--mode", args.mode, "--concurrency", String(conc)];
    for (const k of ["host", "port", "user", "database"]) argv.push(`--${k}`, String(cfg[k]));
    const c = fork(script, argv, { stdio: ["ignore", "ignore", "inherit", "ipc"] });
    const msgs = [];
    const waiters = [];
    c.on("message", (m) => (waiters.length ? waiters.shift()(m) : msgs.push(m)));
    const exited = new Promise((resolve) => c.on("exit", (code, sig) => resolve({ code, sig })));
    const recv = () =>
      Promise.race([
        new Promise((resolve) => (msgs.length ? resolve(msgs.shift()) : waiters.push(resolve))),
        exited.then(({ code, sig }) => {
          throw new Error(`worker process ${i} exited early (code ${code}, signal ${sig})`);
        }),
      ]);
    kids.push({ c, recv, exited });
  }
  for (const k of kids) await k.recv();
  emit({ phase: "ready", mode: args.mode, jobs, processes, concurrency: conc, queue_ms: queueMs, pids: kids.map((k) => k.c.pid) });
  await waitFor(next, "go");
  const t = process.hrtime.bigint();
  for (const k of kids) k.c.send("go");
  const results = await Promise.all(kids.map((k) => k.recv()));
  const ms = msSince(t);
  const left = await pool.query("select count(*)::int as n from graphile_worker._private_jobs");
  await pool.end();
  const ran = results.reduce((s, r) => s + r.ran, 0);
  emit({
    phase: "done",
    mode: args.mode,
    jobs,
    processes,
    concurrency: conc,
    ran,
    left: left.rows[0].n,
    wall_ms: ms,
    jobs_per_s: (1000 * jobs) / ms,
    process_ms: results.map((r) => r.ms),
    queue_ms: queueMs,
  });
  return async () => {
    for (const k of kids) k.c.send("exit");
    await Promise.all(kids.map((k) => k.exited));
  };
}

// ---- latency -------------------------------------------------------------------------------------

function dist(v) {
  const s = [...v].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))];
  return {
    n: s.length,
    min: s[0],
    p50: q(0.5),
    p90: q(0.9),
    p99: q(0.99),
    max: s[s.length - 1],
    mean: s.reduce((a, b) => a + b, 0) / s.length,
  };
}

async function latency(args, next) {
  const samples = intArg(args, "samples", 1000);
  const warmup = intArg(args, "warmup", 100);
  const conc = intArg(args, "concurrency", 24);
  const mode = args.mode ?? "batched";
  const pool = newPool({ ...pgConfig(args), max: conc + 2 });
  await runMigrations({ pgPool: pool, logger });
  const startTimes = new Map();
  const waiting = new Map();
  let latencies = [];
  const tasks = {
    latency: ({ id }) => {
      const t0 = startTimes.get(id);
      if (t0 !== undefined) latencies.push(msSince(t0));
      const w = waiting.get(id);
      if (w) w();
    },
  };
  const workerPool = runTaskList({ preset: preset(mode, conc), logger, noHandleSignals: true }, tasks, pool);
  const forEmptyQueue = async () => {
    for (;;) {
      const { rows } = await pool.query(
        "select exists(select 1 from graphile_worker._private_jobs j where task_id = (select id from graphile_worker._private_tasks where identifier = 'latency')) as e",
      );
      if (!rows[0].e) return;
      await new Promise((r) => setTimeout(r, 200));
    }
  };
  await pool.query(
    "select graphile_worker.add_job('latency', json_build_object('id', -i)) from generate_series(1, $1::int) i",
    [warmup],
  );
  await forEmptyQueue();
  latencies = [];
  await new Promise((r) => setTimeout(r, 1000));
  emit({ phase: "ready", mode, samples, warmup, concurrency: conc });
  await waitFor(next, "go");
  const client = await pool.connect();
  const t = process.hrtime.bigint();
  try {
    for (let id = 0; id < samples; id++) {
      const done = new Promise((resolve) => waiting.set(id, resolve));
      startTimes.set(id, process.hrtime.bigint());
      await client.query("select graphile_worker.add_job('latency', json_build_object('id', $1::int))", [id]);
      await done;
    }
  } finally {
    client.release();
  }
  const ms = msSince(t);
  await forEmptyQueue();
  await workerPool.gracefulShutdown();
  await pool.end();
  if (latencies.length !== samples) throw new Error(`${latencies.length} latencies measured, ${samples} expected`);
  emit({ phase: "done", mode, samples, wall_ms: ms, add_job_to_task_start_ms: dist(latencies) });
}

// ---- main ------------------------------------------------------------------------------------------

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const cmd = args._[0];
  if (cmd === "child") return child(args);
  const next = lines(process.stdin);
  let after = null;
  if (cmd === "throughput") after = await throughput(args, next);
  else if (cmd === "latency") await latency(args, next);
  else throw new Error(`usage: node bench.mjs throughput|latency [options] (got ${cmd})`);
  // Stay alive until the driver has read the CPU counters and closes stdin.
  while ((await next()) !== null);
  if (after) await after();
}

main().catch((e) => {
  emit({ phase: "error", error: String(e?.stack ?? e) });
  process.exit(1);
});

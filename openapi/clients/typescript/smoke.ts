// Smoke test of the generated TypeScript types (schema.d.ts, openapi-typescript) with openapi-fetch
// against a live `nekton serve`: upload a module, submit with labels and an Idempotency-Key, follow
// the SSE log to `exit`, read the record, list with a label filter and a cursor, cancel a running
// job, submit a batch and read its status. Every call goes through the typed client. Run by
// scripts/check-clients.sh:
//
//   NEKTON_URL=http://127.0.0.1:PORT NEKTON_TOKEN=nk_... FIXTURES=DIR npm run smoke
import { readFileSync } from "node:fs";
import { join } from "node:path";
import createClient from "openapi-fetch";
import type { components, paths } from "./schema.js";

type Job = components["schemas"]["Job"];
type JobState = components["schemas"]["JobState"];

function check(cond: unknown, what: string): asserts cond {
  if (!cond) {
    console.error(`typescript client smoke: FAILED: ${what}`);
    process.exit(1);
  }
}

function env(name: string): string {
  const v = process.env[name];
  check(v, `${name} is set`);
  return v;
}

const client = createClient<paths>({
  baseUrl: env("NEKTON_URL"),
  headers: { Authorization: `Bearer ${env("NEKTON_TOKEN")}` },
});
const fixtures = env("FIXTURES");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function upload(file: string): Promise<string> {
  const bytes = readFileSync(join(fixtures, file));
  const { data, error } = await client.POST("/v1/modules", {
    // The body is the module's bytes, sent as they are.
    body: bytes as unknown as string,
    bodySerializer: (b) => b as unknown as BodyInit,
    headers: { "Content-Type": "application/wasm" },
  });
  check(data, `uploading ${file}: ${JSON.stringify(error)}`);
  check(data.size_bytes === bytes.length, "the module's size is its byte count");
  return data.digest;
}

async function waitState(id: string, states: JobState[]): Promise<Job> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const { data, error } = await client.GET("/v1/jobs/{id}", { params: { path: { id } } });
    check(data, `reading job ${id}: ${JSON.stringify(error)}`);
    if (states.includes(data.state)) return data;
    check(Date.now() < deadline, `job ${id} still ${data.state} after 30 s`);
    await sleep(50);
  }
}

async function main(): Promise<void> {
  const run = Math.random().toString(36).slice(2, 14);
  const hello = await upload("hello.wasm");
  const spin = await upload("spin.wasm");

  // Submit with labels and an Idempotency-Key; the same key gives the same job back.
  const spec: components["schemas"]["JobSpec"] = { module: hello, labels: { suite: "ts", run } };
  const key = `ts-smoke-${run}`;
  const first = await client.POST("/v1/jobs", { body: spec, params: { header: { "Idempotency-Key": key } } });
  check(first.data, `submitting: ${JSON.stringify(first.error)}`);
  const again = await client.POST("/v1/jobs", { body: spec, params: { header: { "Idempotency-Key": key } } });
  check(again.data?.id === first.data.id, "the Idempotency-Key replays the job");
  const id = first.data.id;

  // Follow the SSE log until the exit event (the stream ends after it).
  const stream = await client.GET("/v1/jobs/{id}/logs", {
    params: { path: { id } },
    headers: { Accept: "text/event-stream" },
    parseAs: "text",
  });
  check(stream.response.status === 200, `the log stream answered ${stream.response.status}`);
  const text = stream.data ?? "";
  check(text.includes("event: log"), `the stream has a log event: ${JSON.stringify(text)}`);
  check(text.includes("hello from a generated client"), "the log event carries the output");
  check(text.includes("event: exit"), "the stream ends with an exit event");
  const exitData = text.split("\n\n").find((e) => e.includes("event: exit"))?.split("\n").find((l) => l.startsWith("data:"));
  check(exitData, "the exit event has data");
  const exit = JSON.parse(exitData.slice(5)) as components["schemas"]["ExitEvent"];
  check(exit.state === "succeeded", `the exit event says succeeded: ${exitData}`);

  // The record.
  const job = await waitState(id, ["succeeded", "failed", "error"]);
  check(job.state === "succeeded", `the job succeeded (it is ${job.state})`);
  check(job.labels["run"] === run, "the record has its labels");

  // List with a label filter, one job per page, following the cursor.
  const second = await client.POST("/v1/jobs", { body: spec });
  check(second.data, "a second job");
  await waitState(second.data.id, ["succeeded"]);
  const seen: string[] = [];
  let cursor: string | undefined;
  for (let i = 0; i < 10; i++) {
    const page = await client.GET("/v1/jobs", {
      params: { query: { label: [`run=${run}`, "suite=ts"], limit: 1, cursor } },
      querySerializer: { array: { style: "form", explode: true } },
    });
    check(page.data, `listing: ${JSON.stringify(page.error)}`);
    seen.push(...page.data.jobs.map((j) => j.id));
    cursor = page.data.next_cursor ?? undefined;
    if (!cursor) break;
  }
  check(
    JSON.stringify([...seen].sort()) === JSON.stringify([id, second.data.id].sort()),
    `the label filter and cursor list both jobs: ${seen}`,
  );

  // Cancel a running job.
  const spinning = await client.POST("/v1/jobs", { body: { module: spin, limits: { wall_time_ms: 60_000 } } });
  check(spinning.data, "the spinning job");
  await waitState(spinning.data.id, ["running"]);
  const cancelled = await client.POST("/v1/jobs/{id}/cancel", { params: { path: { id: spinning.data.id } } });
  check(cancelled.data, `cancelling: ${JSON.stringify(cancelled.error)}`);
  const ended = await waitState(spinning.data.id, ["cancelled", "succeeded", "failed", "error"]);
  check(ended.state === "cancelled", `the running job was cancelled (it is ${ended.state})`);

  // A batch and its status.
  const batch = await client.POST("/v1/batches", { body: { jobs: [{ module: hello }, { module: hello }, { module: hello }] } });
  check(batch.data, `submitting a batch: ${JSON.stringify(batch.error)}`);
  check(batch.data.job_ids.length === 3, "the batch has 3 jobs");
  const deadline = Date.now() + 30_000;
  let status: components["schemas"]["Batch"] | undefined;
  for (;;) {
    const got = await client.GET("/v1/batches/{id}", { params: { path: { id: batch.data.id } } });
    check(got.data, `reading the batch: ${JSON.stringify(got.error)}`);
    status = got.data;
    if (status.finished) break;
    check(Date.now() < deadline, "the batch finished within 30 s");
    await sleep(50);
  }
  check(status.total === 3, "the batch's total is 3");
  check(status.counts["succeeded"] === 3, `all 3 succeeded: ${JSON.stringify(status.counts)}`);
  console.log("typescript client smoke: ok (upload, submit + Idempotency-Key, SSE log, record, label filter + cursor, cancel, batch)");
}

main().catch((e: unknown) => {
  console.error("typescript client smoke: FAILED:", e);
  process.exit(1);
});

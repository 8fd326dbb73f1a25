"""Smoke test of the generated Python client against a live `nekton serve`.

Uses only the generated package `nekton_client` (plus the standard library) for every API call:
upload a module, submit with labels and an Idempotency-Key, follow the SSE log to `exit`, read the
record, list with a label filter and a cursor, cancel a running job, submit a batch and read its
status. Run by scripts/check-clients.sh:

    NEKTON_URL=http://127.0.0.1:PORT NEKTON_TOKEN=nk_... FIXTURES=DIR python3 smoke.py
"""

import os
import pathlib
import sys
import time
import uuid

from nekton_client import AuthenticatedClient
from nekton_client.api.batches import get_batch, submit_batch
from nekton_client.api.jobs import cancel_job, get_job, list_jobs, submit_job
from nekton_client.api.logs import get_job_logs
from nekton_client.api.modules import upload_module
from nekton_client.models import (
    Batch,
    BatchCreated,
    BatchSpec,
    Job,
    JobPage,
    JobSpec,
    JobSpecLabels,
    JobState,
    LimitsSpec,
    Module,
)
from nekton_client.types import File


def check(cond: bool, what: str) -> None:
    if not cond:
        print(f"python client smoke: FAILED: {what}", file=sys.stderr)
        sys.exit(1)


def upload(client: AuthenticatedClient, path: pathlib.Path) -> str:
    data = path.read_bytes()
    module = upload_module.sync(
        client=client, body=File(payload=data, file_name=path.name, mime_type="application/wasm")
    )
    check(isinstance(module, Module), f"uploading {path.name} answered {module!r}")
    assert isinstance(module, Module)
    check(module.size_bytes == len(data), "the module's size is its byte count")
    return module.digest


def wait_state(client: AuthenticatedClient, job_id: uuid.UUID, states: set[JobState]) -> Job:
    deadline = time.monotonic() + 30
    while True:
        job = get_job.sync(job_id, client=client)
        check(isinstance(job, Job), f"reading job {job_id} answered {job!r}")
        assert isinstance(job, Job)
        if job.state in states:
            return job
        check(time.monotonic() < deadline, f"job {job_id} still {job.state} after 30 s")
        time.sleep(0.05)


def main() -> None:
    url = os.environ["NEKTON_URL"]
    token = os.environ["NEKTON_TOKEN"]
    fixtures = pathlib.Path(os.environ["FIXTURES"])
    client = AuthenticatedClient(base_url=url, token=token, timeout=60.0)
    run_label = uuid.uuid4().hex[:12]

    hello = upload(client, fixtures / "hello.wasm")
    spin = upload(client, fixtures / "spin.wasm")

    # Submit with labels and an Idempotency-Key; the same key gives the same job back.
    spec = JobSpec(module=hello, labels=JobSpecLabels.from_dict({"suite": "py", "run": run_label}))
    key = f"py-smoke-{run_label}"
    first = submit_job.sync(client=client, body=spec, idempotency_key=key)
    check(isinstance(first, Job), f"submitting answered {first!r}")
    assert isinstance(first, Job)
    again = submit_job.sync(client=client, body=spec, idempotency_key=key)
    check(isinstance(again, Job) and again.id == first.id, "the Idempotency-Key replays the job")

    # Follow the SSE log until the exit event.
    sse = client.with_headers({"Accept": "text/event-stream"})
    stream = get_job_logs.sync_detailed(first.id, client=sse)
    check(stream.status_code == 200, f"the log stream answered {stream.status_code}")
    text = stream.content.decode()
    check("event: log" in text, f"the stream has a log event: {text!r}")
    check("hello from a generated client" in text, "the log event carries the output")
    check("event: exit" in text, "the stream ends with an exit event")

    # The record.
    job = wait_state(client, first.id, {JobState.SUCCEEDED, JobState.FAILED, JobState.ERROR})
    check(job.state == JobState.SUCCEEDED, f"the job succeeded (it is {job.state})")
    check(job.labels.additional_properties.get("run") == run_label, "the record has its labels")

    # List with a label filter, one job per page, following the cursor.
    second = submit_job.sync(client=client, body=spec)
    assert isinstance(second, Job)
    wait_state(client, second.id, {JobState.SUCCEEDED})
    seen: list[uuid.UUID] = []
    cursor = None
    for _ in range(10):
        kwargs = {"label": [f"run={run_label}", "suite=py"], "limit": 1}
        if cursor:
            kwargs["cursor"] = cursor
        page = list_jobs.sync(client=client, **kwargs)
        check(isinstance(page, JobPage), f"listing answered {page!r}")
        assert isinstance(page, JobPage)
        seen.extend(j.id for j in page.jobs)
        cursor = page.next_cursor if isinstance(page.next_cursor, str) else None
        if not cursor:
            break
    check(sorted(seen) == sorted([first.id, second.id]), f"the label filter and cursor list both jobs: {seen}")

    # Cancel a running job.
    spinning = submit_job.sync(
        client=client, body=JobSpec(module=spin, limits=LimitsSpec(wall_time_ms=60_000))
    )
    assert isinstance(spinning, Job)
    wait_state(client, spinning.id, {JobState.RUNNING})
    cancelled = cancel_job.sync(spinning.id, client=client)
    check(isinstance(cancelled, Job), f"cancelling answered {cancelled!r}")
    ended = wait_state(
        client, spinning.id, {JobState.CANCELLED, JobState.SUCCEEDED, JobState.FAILED, JobState.ERROR}
    )
    check(ended.state == JobState.CANCELLED, f"the running job was cancelled (it is {ended.state})")

    # A batch and its status.
    batch = submit_batch.sync(
        client=client,
        body=BatchSpec(jobs=[JobSpec(module=hello) for _ in range(3)]),
    )
    check(isinstance(batch, BatchCreated), f"submitting a batch answered {batch!r}")
    assert isinstance(batch, BatchCreated)
    check(len(batch.job_ids) == 3, "the batch has 3 jobs")
    deadline = time.monotonic() + 30
    while True:
        status = get_batch.sync(batch.id, client=client)
        check(isinstance(status, Batch), f"reading the batch answered {status!r}")
        assert isinstance(status, Batch)
        if status.finished:
            break
        check(time.monotonic() < deadline, "the batch finished within 30 s")
        time.sleep(0.05)
    check(status.total == 3, "the batch's total is 3")
    check(status.counts.additional_properties.get("succeeded") == 3, f"all 3 succeeded: {status.counts}")
    print("python client smoke: ok (upload, submit + Idempotency-Key, SSE log, record, label filter + cursor, cancel, batch)")


if __name__ == "__main__":
    main()

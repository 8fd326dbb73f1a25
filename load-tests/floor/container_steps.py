#!/usr/bin/env python3
"""A container job's time inside `nekton serve`, from the server's log with the job timeline on
(NEKTON_LOG=warn,nekton::timeline=trace), e.g. of `load-tests --keep-state containers --skip-bridge`:
the sandbox's own run (`sandbox.started` → `sandbox.ended`: the container's setup, the job and its
teardown, in the worker's process) and `api.received` → `writer.stored`.
Usage: container_steps.py server.log [SKIP] (default: skip the first 10 jobs, the warm-up)."""
import sys

from timeline_log import read

jobs, order = read(sys.argv[1])
skip = int(sys.argv[2]) if len(sys.argv) > 2 else 10
want = ("api.received", "sandbox.started", "sandbox.ended", "writer.stored")
done = [jobs[j] for j in order[skip:] if all(s in jobs[j] for s in want)]
if not done:
    sys.exit("no job passed every step: was the log written with NEKTON_LOG=...,nekton::timeline=trace?")

def q(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * p))]

sandbox = [d["sandbox.ended"] - d["sandbox.started"] for d in done]
stored = [d["writer.stored"] - d["api.received"] for d in done]
print(f"{len(done)} jobs: sandbox p50 {q(sandbox, .5):.2f} ms, p90 {q(sandbox, .9):.2f}; "
      f"received → stored p50 {q(stored, .5):.2f} ms")

#!/usr/bin/env python3
"""Where a lone job's time goes inside `nekton serve`, step by step, from the server's log with the
job timeline on (NEKTON_LOG=warn,nekton::timeline=trace; load-tests/README.md, "Where a lone job's
time goes, step by step").
Usage: steps.py server.log [SKIP] — per step, the median (and p90) time since the previous step and
since `api.received`, over the jobs that passed every step (jobs submitted with `?wait=`), after
skipping the first SKIP jobs (default 100: `latency`'s two warm-ups of 50)."""
import statistics as st, sys

from timeline_log import read

ORDER = ["api.received", "api.stored", "worker.handed", "worker.started", "sandbox.started",
         "sandbox.ended", "worker.ran", "writer.flushing", "writer.stored", "api.woken",
         "api.answered"]

jobs, first_seen = read(sys.argv[1])

skip = int(sys.argv[2]) if len(sys.argv) > 2 else 100
whole = [jobs[j] for j in first_seen[skip:] if all(s in jobs[j] for s in ORDER)]
if not whole:
    sys.exit("no job passed every step: was the log written with NEKTON_LOG=...,nekton::timeline=trace, "
             "and were jobs submitted with ?wait= to `nekton serve`?")

def p(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))]

print(f"{len(whole)} jobs (of {len(first_seen)}; {skip} skipped)")
print(f"{'step':18} {'since previous p50':>18} {'p90':>8} {'since received p50':>19}")
for prev, step in zip([None] + ORDER, ORDER):
    since = [j[step] - j["api.received"] for j in whole]
    gap = [j[step] - j[prev] for j in whole] if prev else [0.0]
    print(f"{step:18} {st.median(gap):18.3f} {p(gap, 0.9):8.3f} {st.median(since):19.3f}")

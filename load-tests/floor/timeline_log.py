"""Reads the job timeline from a `nekton serve` log written with NEKTON_LOG=...,nekton::timeline=trace:
for each job, the time (ms) each step was first logged. Shared by steps.py and container_steps.py."""
import re
from datetime import datetime

LINE = re.compile(r'^(\S+Z)\s+TRACE\s+nekton::timeline:.*?job=([0-9a-f-]{36}).*?step="([a-z.]+)"')
ANSI = re.compile(r'\x1b\[[0-9;]*m')


def read(path):
    """Returns (jobs, order): jobs maps a job id to {step: ms}; order lists the job ids as first seen."""
    jobs, order = {}, []
    for line in open(path, errors="replace"):
        m = LINE.match(ANSI.sub("", line))
        if not m:
            continue
        t = datetime.fromisoformat(m.group(1).replace("Z", "+00:00")).timestamp() * 1000
        steps = jobs.setdefault(m.group(2), {})
        if not steps:
            order.append(m.group(2))
        steps.setdefault(m.group(3), t)
    return jobs, order

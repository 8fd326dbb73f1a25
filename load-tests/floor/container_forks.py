#!/usr/bin/env python3
"""Where a container job's time goes, process by process, from kernel tracepoints (no nekton change).

Record `load-tests containers` (or any process that runs the container backend) with perf, then read
its script output:

    perf record -q -o /tmp/c.data -e 'sched:sched_process_fork,sched:sched_process_exec,\
sched:sched_process_exit,syscalls:sys_enter_unshare,syscalls:sys_enter_clone,\
syscalls:sys_enter_execveat,syscalls:sys_enter_openat2,syscalls:sys_enter_pivot_root,\
syscalls:sys_enter_setsid' -- $T/load-tests --nekton $T/nekton --settle-secs 0 \
        containers --skip-bridge --container-jobs 100
    perf script -i /tmp/c.data -F comm,pid,tid,time,event,trace > /tmp/c.txt
    load-tests/floor/container_forks.py /tmp/c.txt

Each job's processes are found by their forks (see container-backend/src/spawn.rs). Since a container
job has no P1, P2 (the init) is started by a `nekton-spawner` thread into a new pid namespace (forked
up to 838f92f; since a8ff0f6 a vfork-style clone on the worker's memory) and starts P3; before that, the spawner thread forked P1, which forked P2. The tool reads both (a recording of an
older build gives the older steps); the steps are in the order of the code since P3 became a vfork-style
child of P2. The report gives the median time between the
steps below, over every job that passed all of them, and the time each kind of process spends in
`fork` itself (the parent's `clone` entry → the child's birth), next to the forks of other programs
in the same recording (`unshare`, crun, runc): what a fork of a small process costs on this machine.
Tracing every event costs time: compare steps with each other, not with the benchmark's figures."""
import collections
import re
import statistics
import sys

LINE = re.compile(r'^\s*(.+?)\s+(\d+)/(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$')
# glibc's fork(): SIGCHLD | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID; P2's start of P3: SIGCHLD |
# CLONE_VM | CLONE_VFORK (counted as "<program> (vfork)"); the spawner's start of P2 since it runs
# on the worker's memory: the same and CLONE_PARENT_SETTID.
FORK_FLAGS = {
    "clone_flags: 0x01200011": "",
    "clone_flags: 0x00004111": " (vfork)",
    "clone_flags: 0x00104111": " (vfork)",
}

# From the root filesystem to the job's exit, both trees take the same steps.
COMMON = [
    ("P2 pivot_root", "P2: scratch, overlay, files, /proc, /sys, /dev, masks"),
    ("P2 clone → P3", "P2: old root detached, hostname, the cgroup's go, cgroup namespace"),
    ("P3 born", "P2 starts P3 (a vfork-style clone sharing P2's memory)"),
    ("P3 setsid", "P3 starts its setup"),
    ("P3 exec → helper", "P3: rlimits, user namespace, capabilities, seccomp"),
    ("P3 exec'd helper", "exec of the helper (nekton-exec); P2 resumes"),
    ("P2 exec'd", "P2: exec of the helper as init (a forked P2's copy of the worker torn down)"),
    ("P3 exec'd job", "the init's ready byte; nekton-exec execs the job's program"),
    ("P3 exit", "the job runs (`/bin/true`)"),
]

# Without P1: the spawner thread forks P2 into a new pid namespace and moves it into the job's cgroup.
STEPS_P2 = [
    ("P2 born", "the spawner's fork of the worker (since a8ff0f6: a vfork-style clone, no copy)"),
    ("P2 unshare", "P2: signals, prctls, the prepared network namespace joined, descriptors"),
    ("P2 rootfs", "P2: loopback/sysctl if needed, mount propagation, name, umask; first path opened"),
] + COMMON + [
    ("P2 exit", "the init reaps the job and exits; namespaces torn down"),
]

# Up to aed4444: P1, forked by the spawner thread, made the pid namespace and forked P2.
STEPS = [
    ("P1 born", "the spawner's fork of the worker"),
    ("P1 unshare", "P1: signals, descriptors, the prepared network namespace joined"),
    ("P1 clone → P2", "P1: mount propagation, lifeline pipe, cgroup.procs opened"),
    ("P2 born", "fork of P1"),
    ("P2 rootfs", "P2: prctls, umask; first path opened"),
] + COMMON + [
    ("P2 exit", "the init reaps the job and exits"),
    ("P1 exit", "namespaces torn down; P1 sees P2 end and exits"),
]

def main(path):
    events = []
    for line in open(path, errors="replace"):
        m = LINE.match(line)
        if m:
            comm, pid, tid, t, event, args = m.groups()
            events.append((float(t) * 1000, comm, int(pid), int(tid), event, args))

    children = collections.defaultdict(list)
    born, forked_by = {}, {}
    by_pid = collections.defaultdict(list)
    clone_at = {}
    fork_ms = collections.defaultdict(list)
    program = {}  # a process's name as its main thread last showed it
    for e in events:
        t, comm, pid, tid, event, args = e
        by_pid[pid].append(e)
        if pid == tid:
            program[pid] = comm
        kind = next((k for f, k in FORK_FLAGS.items() if f in args), None)
        if event == "syscalls:sys_enter_clone" and kind is not None:
            # The spawner thread's forks, by the process it belongs to (the benchmark's own
            # backend or `nekton serve`'s).
            owner = program.get(pid, str(pid))
            if pid == tid:
                name = "P1 (a fork of the worker)" if comm == "nekton-spawner" else comm
            else:
                name = comm if comm == owner else f"{comm} thread of {owner}"
            clone_at[tid] = (t, name + kind)
        elif event == "sched:sched_process_fork":
            child = int(re.search(r"child_pid=(\d+)", args).group(1))
            parent_tid = int(re.search(r" pid=(\d+)", args).group(1))
            children[pid].append(child)
            born[child] = t
            forked_by[child] = (comm, pid, tid)
            if parent_tid in clone_at:
                t0, c = clone_at.pop(parent_tid)
                fork_ms[c].append(t - t0)

    def first(pid, event, after=0.0):
        return next((e[0] for e in by_pid[pid] if e[4] == event and e[0] >= after), None)

    def nth(pid, event, n):
        hits = [e[0] for e in by_pid[pid] if e[4] == event]
        return hits[n] if len(hits) > n else None

    gaps = collections.defaultdict(list)
    totals = []
    steps = STEPS
    for p1, (comm, pid, tid) in forked_by.items():
        if comm != "nekton-spawner" or pid == tid:
            continue  # the spawner thread of the worker's process forks each job's first process
        spawner_clone = [e[0] for e in by_pid[pid] if e[3] == tid and e[4] == "syscalls:sys_enter_clone"
                         and e[0] <= born[p1]]
        p2 = next(iter(children.get(p1, [])), None)
        p3 = next(iter(children.get(p2, [])), None) if p2 else None
        if p3 is None and p2 is not None:
            # No P1: the spawner's child is the init, its child the job.
            steps, p1, p2, p3 = STEPS_P2, None, p1, p2
            head = [born[p2], first(p2, "syscalls:sys_enter_unshare")]
        elif p3 is None:
            continue
        else:
            steps = STEPS
            head = [born[p1], first(p1, "syscalls:sys_enter_unshare"),
                    first(p1, "syscalls:sys_enter_clone"), born[p2]]
        marks = [spawner_clone[-1] if spawner_clone else None] + head + [
            first(p2, "syscalls:sys_enter_openat2"),
            first(p2, "syscalls:sys_enter_pivot_root"),
            first(p2, "syscalls:sys_enter_clone"),
            born[p3],
            first(p3, "syscalls:sys_enter_setsid"),
            first(p3, "syscalls:sys_enter_execveat"),
            nth(p3, "sched:sched_process_exec", 0),
            first(p2, "sched:sched_process_exec"),
            nth(p3, "sched:sched_process_exec", 1),
            first(p3, "sched:sched_process_exit"),
            first(p2, "sched:sched_process_exit"),
        ] + ([first(p1, "sched:sched_process_exit")] if p1 else [])
        if None in marks:
            continue
        for (name, _), a, b in zip(steps, marks, marks[1:]):
            gaps[name].append(b - a)
        totals.append(marks[-1] - marks[0])
    if not totals:
        sys.exit("no container job passed every step: was the recording made with the events above?")
    print(f"{len(totals)} container jobs; median ms since the step before")
    for name, what in steps:
        print(f"  {name:18s} {statistics.median(gaps[name]):7.3f}   {what}")
    last = "P1" if steps is STEPS else "P2"
    print(f"  {'in all':18s} {statistics.median(totals):7.3f}   the spawner's fork → {last}'s exit")
    print("fork (clone entry → child born), by the forking program")
    for comm, values in sorted(fork_ms.items(), key=lambda kv: -len(kv[1])):
        if len(values) >= 5:
            print(f"  {comm:42s} {statistics.median(values):7.3f}   ({len(values)} forks)")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])

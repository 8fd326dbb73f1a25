"""Checks that deploy/kubernetes/ hangs together beyond what the Kubernetes schemas can say.

Run by scripts/check-deploy.sh after the schema validation. Each check prints what is wrong and
how to fix it; the exit status is the number of problems (0 = all good).
"""
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent / "kubernetes"
problems = []


def problem(msg):
    problems.append(msg)
    print(f"deploy/check.py: {msg}", file=sys.stderr)


def load():
    kust = yaml.safe_load((ROOT / "kustomization.yaml").read_text())
    listed = set(kust.get("resources", []))
    on_disk = {p.name for p in ROOT.glob("*.yaml")} - {"kustomization.yaml"}
    for missing in sorted(on_disk - listed):
        problem(f"{missing} is not listed in kustomization.yaml resources")
    for extra in sorted(listed - on_disk):
        problem(f"kustomization.yaml lists {extra}, which does not exist")
    objs = []
    for name in sorted(listed & on_disk):
        for doc in yaml.safe_load_all((ROOT / name).read_text()):
            if doc:
                objs.append((name, doc))
    return objs


def by_kind(objs, kind):
    return [(f, o) for f, o in objs if o.get("kind") == kind]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def grace_flag(args):
    for i, a in enumerate(args):
        m = re.fullmatch(r"--shutdown-grace-secs(?:=(\d+))?", a)
        if m:
            return int(m.group(1) or args[i + 1])
    return 30  # the binary's default


def check_dashboard():
    """Every metric a Grafana panel queries is one docs/metrics.md catalogues (and the server
    exposes: services/tests/metrics.rs checks that side)."""
    import json
    dash_path = ROOT.parent / "grafana" / "nekton-dashboard.json"
    catalogue = (ROOT.parent.parent / "docs" / "metrics.md").read_text()
    known = set(re.findall(r"^\| `(nekton_[a-z_]+)`", catalogue, re.M))
    dash = json.loads(dash_path.read_text())
    for panel in dash.get("panels", []):
        for target in panel.get("targets", []):
            for name in re.findall(r"nekton_[a-z_]+", target.get("expr", "")):
                base = re.sub(r"_(bucket|sum|count)$", "", name)
                if name not in known and base not in known:
                    problem(f"grafana/nekton-dashboard.json: panel {panel.get('title')!r} queries "
                            f"{name}, which docs/metrics.md does not list")


def main():
    objs = load()
    workloads = by_kind(objs, "Deployment") + by_kind(objs, "DaemonSet") + by_kind(objs, "Job")
    for f, w in workloads:
        name = w["metadata"]["name"]
        tmpl = w["spec"]["template"]
        labels = tmpl["metadata"].get("labels", {})
        sel = w["spec"].get("selector", {}).get("matchLabels")
        if sel is not None and not matches(sel, labels):
            problem(f"{f}: {name}'s selector {sel} does not match its pod labels {labels}")
        for c in tmpl["spec"]["containers"]:
            args = c.get("args", [])
            if not args:
                problem(f"{f}: {name}/{c['name']} has no args: the nekton image needs a subcommand")
                continue
            if args[0] == "worker":
                grace = grace_flag(args)
                tgps = tmpl["spec"].get("terminationGracePeriodSeconds", 30)
                if tgps <= grace:
                    problem(
                        f"{f}: {name}: terminationGracePeriodSeconds ({tgps}) must exceed "
                        f"--shutdown-grace-secs ({grace}), or the kubelet kills running jobs "
                        f"before the worker requeues them"
                    )
                if not c.get("securityContext", {}).get("privileged"):
                    problem(f"{f}: {name}: the worker must be privileged (see worker.yaml)")
            env = {e["name"] for e in c.get("env", [])}
            if "NEKTON_DATABASE_URL" not in env:
                problem(f"{f}: {name}/{c['name']} has no NEKTON_DATABASE_URL")
    pods = [(w["metadata"]["name"], w["spec"]["template"]["metadata"].get("labels", {}),
             w["spec"]["template"]["spec"]["containers"]) for _, w in workloads]
    services = by_kind(objs, "Service")
    for f, s in services:
        targets = [p for p in pods if matches(s["spec"]["selector"], p[1])]
        if not targets:
            problem(f"{f}: Service {s['metadata']['name']} selects no pod")
        for port in s["spec"]["ports"]:
            tp = port.get("targetPort")
            for pname, _, containers in targets:
                names = {p.get("name") for c in containers for p in c.get("ports", [])}
                nums = {p.get("containerPort") for c in containers for p in c.get("ports", [])}
                if tp not in names and tp not in nums:
                    problem(f"{f}: Service port targetPort {tp!r} is not a port of {pname}")
    for f, h in by_kind(objs, "HorizontalPodAutoscaler"):
        ref = h["spec"]["scaleTargetRef"]
        if not any(o.get("kind") == ref["kind"] and o["metadata"]["name"] == ref["name"]
                   for _, o in objs):
            problem(f"{f}: HPA {h['metadata']['name']} targets a missing {ref['kind']} {ref['name']}")
    for f, p in by_kind(objs, "PodDisruptionBudget") + by_kind(objs, "NetworkPolicy"):
        sel = (p["spec"].get("selector") or p["spec"].get("podSelector") or {}).get("matchLabels", {})
        if not any(matches(sel, labels) for _, labels, _ in pods):
            problem(f"{f}: {p['kind']} {p['metadata']['name']} selects no pod")
    for f, m in by_kind(objs, "ServiceMonitor"):
        spec = m["spec"]
        sel = spec["selector"]["matchLabels"]
        svc = [s for _, s in services if matches(sel, s["metadata"].get("labels", {}))]
        if not svc:
            problem(f"{f}: ServiceMonitor {m['metadata']['name']} selects no Service")
        ports = {p.get("name") for s in svc for p in s["spec"]["ports"]}
        for ep in spec.get("endpoints", []):
            if ep.get("port") not in ports:
                problem(f"{f}: ServiceMonitor endpoint port {ep.get('port')!r} is not one of {sorted(ports)}")
            if ep.get("path", "/metrics") != "/metrics":
                problem(f"{f}: nekton serves metrics at /metrics, not {ep.get('path')}")
    check_dashboard()
    print(f"deploy/check.py: {len(objs)} objects, {len(problems)} problems")
    return len(problems)


if __name__ == "__main__":
    sys.exit(min(main(), 100))

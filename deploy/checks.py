#!/usr/bin/env python3
"""Consistency checks for deploy/ that no schema can express (run by deploy/check.sh).

  checks.py manifests OVERLAY RENDERED.yaml   rules for a rendered kustomize overlay
  checks.py dashboard DASHBOARD.json OUT.yml  dashboard structure; writes its queries
                                              as recording rules for `promtool check rules`
  checks.py metrics                           dashboard and alerts use PRODUCT.md's names
  checks.py systemd                           the unit agrees with systemd/config.toml and env.example

Each prints what it checked and exits 1 on the first file with problems (all
problems of that file listed). Needs PyYAML (installed with kubernetes-validate).
"""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent

# PRODUCT.md section 8: the metric names (prefix media_archiver_) and kinds.
METRICS = {
    "webhooks_total": "counter",
    "jobs": "gauge",
    "jobs_at_risk": "gauge",
    "archived_total": "counter",
    "archived_bytes_total": "counter",
    "failures_total": "counter",
    "dead_total": "counter",
    "job_latency_seconds": "histogram",
    "download_seconds": "histogram",
    "upload_seconds": "histogram",
    # Beyond section 8, documented in docs/operations.md.
    "redownloads_total": "counter",
    "streamed_total": "counter",
    # PRODUCT.md section 11.
    "notifications_total": "counter",
    "notifications_pending": "gauge",
}
PREFIX = "media_archiver_"
CONFIG_DIR = "/etc/media-archiver"
CONFIG_PATH = f"{CONFIG_DIR}/config.toml"
SECRET_NAME = "media-archiver-secrets"


def parse_duration(text: str) -> float:
    """Seconds in a duration such as "25s", "200ms", "5m" (config syntax)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", text.strip())
    if not match:
        raise ValueError(f"not a duration: {text!r}")
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * factor


def env_secrets(node) -> set[str]:
    """Every NAME of { env = "NAME" } anywhere in a parsed config."""
    found: set[str] = set()
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            found.add(node["env"])
        for value in node.values():
            found |= env_secrets(value)
    elif isinstance(node, list):
        for value in node:
            found |= env_secrets(value)
    return found


def dockerfile_facts() -> dict[str, str]:
    """USER, WORKDIR and EXPOSE of the runtime stage of deploy/docker/Dockerfile."""
    facts: dict[str, str] = {}
    for line in (DEPLOY / "docker" / "Dockerfile").read_text().splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and parts[0] in ("USER", "WORKDIR", "EXPOSE"):
            facts[parts[0]] = parts[1].strip()
    return facts


class Problems:
    def __init__(self, what: str):
        self.what = what
        self.items: list[str] = []
        self.checked = 0

    def check(self, ok: bool, message: str) -> bool:
        self.checked += 1
        if not ok:
            self.items.append(message)
        return ok

    def finish(self) -> None:
        if self.items:
            print(f"FAIL {self.what}: {len(self.items)} problem(s)")
            for item in self.items:
                print(f"  - {item}")
            sys.exit(1)
        print(f"ok   {self.what}: {self.checked} checks")


def check_manifests(overlay: str, rendered: Path) -> None:
    p = Problems(f"policy {overlay} ({rendered.name})")
    docs = [d for d in yaml.safe_load_all(rendered.read_text()) if d]
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    expected_kind = {"sqlite": "StatefulSet", "postgres": "Deployment"}[overlay]
    workloads = by_kind.get(expected_kind, [])
    other = "Deployment" if expected_kind == "StatefulSet" else "StatefulSet"
    p.check(len(workloads) == 1, f"expected one {expected_kind}, found {len(workloads)}")
    p.check(not by_kind.get(other), f"unexpected {other} in the {overlay} overlay")
    p.check(not by_kind.get("Secret"), "a Secret is rendered: secrets must not ship in the kustomization")
    if not workloads:
        p.finish()
        return
    wl = workloads[0]
    spec = wl["spec"]
    tmpl = spec["template"]
    pod = tmpl["spec"]
    pod_labels = tmpl["metadata"].get("labels", {})
    containers = pod["containers"]
    p.check(len(containers) == 1, "one container expected")
    c = containers[0]

    # The config the pod actually mounts.
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    cfg_mount = mounts.get(CONFIG_DIR)
    cfg = None
    if p.check(cfg_mount is not None, f"nothing mounted at {CONFIG_DIR}"):
        p.check(cfg_mount.get("readOnly") is True, "config volume must be read-only")
        vol = volumes.get(cfg_mount["name"], {})
        cm_name = vol.get("configMap", {}).get("name")
        cms = {d["metadata"]["name"]: d for d in by_kind.get("ConfigMap", [])}
        if p.check(cm_name in cms, f"config volume names ConfigMap {cm_name!r}, not rendered"):
            text = cms[cm_name].get("data", {}).get("config.toml")
            if p.check(text is not None, "ConfigMap has no config.toml key"):
                cfg = tomllib.loads(text)
    args = c.get("args", []) + c.get("command", [])
    p.check("--config" in args and args[args.index("--config") + 1] == CONFIG_PATH,
            f"container must run serve --config {CONFIG_PATH}")
    p.check("serve" in args, "container must run `serve`")

    # Ports, probes, scraping.
    ports = {pt.get("name"): pt["containerPort"] for pt in c.get("ports", [])}
    port = ports.get("http")
    p.check(port is not None, "no container port named http")
    if cfg is not None:
        listen = cfg.get("server", {}).get("listen", "127.0.0.1:8080")
        host, _, lport = listen.rpartition(":")
        p.check(host in ("0.0.0.0", "[::]"), f"server.listen {listen!r} is not reachable from outside the pod")
        p.check(port is not None and int(lport) == port, f"server.listen port {lport} != containerPort {port}")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        got = c.get(probe, {}).get("httpGet", {})
        p.check(got.get("path") == path, f"{probe} must GET {path}, has {got.get('path')!r}")
        p.check(got.get("port") in ("http", port), f"{probe} must use the http port")
    ann = tmpl["metadata"].get("annotations", {})
    p.check(ann.get("prometheus.io/scrape") == "true", "pod lacks prometheus.io/scrape: \"true\"")
    p.check(ann.get("prometheus.io/path") == "/metrics", "prometheus.io/path must be /metrics")
    p.check(str(ann.get("prometheus.io/port")) == str(port), "prometheus.io/port must be the http port")

    # Shutdown: the kubelet must not SIGKILL a drain that fits in shutdown_grace.
    grace = pod.get("terminationGracePeriodSeconds", 30)
    if cfg is not None:
        drain = parse_duration(cfg.get("workers", {}).get("shutdown_grace", "25s"))
        pre = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        p.check(grace > drain + pre + 5,
                f"terminationGracePeriodSeconds {grace} must exceed preStop {pre}s + shutdown_grace {drain:g}s + 5s")

    # Security: non-root, read-only root, nothing extra.
    psc = pod.get("securityContext", {})
    csc = c.get("securityContext", {})
    p.check(psc.get("runAsNonRoot") is True or csc.get("runAsNonRoot") is True, "runAsNonRoot must be true")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    p.check(isinstance(uid, int) and uid > 0, "runAsUser must be a non-zero UID")
    p.check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem must be true")
    p.check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation must be false")
    p.check(csc.get("privileged") in (None, False), "privileged must not be set")
    p.check(csc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities must drop ALL")
    p.check(not csc.get("capabilities", {}).get("add"), "no capabilities may be added")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
    p.check(seccomp == "RuntimeDefault", f"seccompProfile must be RuntimeDefault, is {seccomp!r}")
    p.check(pod.get("automountServiceAccountToken") is False, "automountServiceAccountToken must be false")
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        p.check(not pod.get(key), f"{key} must not be set")
    res = c.get("resources", {})
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            p.check(r in res.get(kind, {}), f"resources.{kind}.{r} missing")
    p.check("/tmp" in mounts, "/tmp must be a volume (read-only root filesystem)")

    # Writable state: every relative path of the config under a mounted volume.
    workdir = c.get("workingDir")
    facts = dockerfile_facts()
    p.check(workdir == facts.get("WORKDIR"), f"workingDir {workdir!r} != Dockerfile WORKDIR {facts.get('WORKDIR')!r}")
    p.check(str(uid) == facts.get("USER", "").split(":")[0], f"runAsUser {uid} != Dockerfile USER {facts.get('USER')!r}")
    p.check(str(port) == facts.get("EXPOSE"), f"container port {port} != Dockerfile EXPOSE {facts.get('EXPOSE')!r}")
    if cfg is not None and workdir:
        rel = [("fetch.spool_dir", cfg.get("fetch", {}).get("spool_dir", "data/spool"))]
        if cfg.get("queue", {}).get("backend", "sqlite") == "sqlite":
            rel.append(("queue.path", cfg.get("queue", {}).get("path", "data/queue.db")))
        if cfg.get("storage", {}).get("backend", "fs") == "fs":
            rel.append(("storage.path", cfg.get("storage", {}).get("path", "data/archive")))
        for key, path in rel:
            full = path if path.startswith("/") else f"{workdir.rstrip('/')}/{path}"
            under = [m for m in mounts if full == m or full.startswith(m.rstrip("/") + "/")]
            ok = p.check(bool(under), f"{key} {full} is on the read-only root filesystem")
            if ok:
                p.check(not mounts[max(under, key=len)].get("readOnly"), f"{key} {full} is on a read-only volume")

    # Secrets: every { env = "NAME" } comes from the Secret, and the example has it.
    env_from = [e.get("secretRef", {}).get("name") for e in c.get("envFrom", [])]
    p.check(SECRET_NAME in env_from, f"envFrom must include secretRef {SECRET_NAME}")
    example = yaml.safe_load((DEPLOY / "kubernetes" / "secret.example.yaml").read_text())
    example_keys = set(example.get("stringData", {})) | set(example.get("data", {}))
    p.check(example["metadata"]["name"] == SECRET_NAME, f"secret.example.yaml must be named {SECRET_NAME}")
    if cfg is not None:
        for name in sorted(env_secrets(cfg)):
            p.check(name in example_keys, f"config needs env {name}, absent from secret.example.yaml")

    # Mode-specific.
    backend = (cfg or {}).get("queue", {}).get("backend", "sqlite")
    pdbs = by_kind.get("PodDisruptionBudget", [])
    hpas = by_kind.get("HorizontalPodAutoscaler", [])
    if overlay == "sqlite":
        p.check(backend == "sqlite", f"sqlite overlay config has queue.backend {backend!r}")
        p.check(spec.get("replicas") == 1, "the sqlite StatefulSet must have exactly 1 replica")
        vcts = [v["metadata"]["name"] for v in spec.get("volumeClaimTemplates", [])]
        data_mount = mounts.get(f"{workdir}/data", {})
        p.check(data_mount.get("name") in vcts, "data/ must be a volumeClaimTemplate (PersistentVolume)")
        p.check(not hpas and not pdbs, "no HorizontalPodAutoscaler or PodDisruptionBudget on a single SQLite writer")
        services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
        gov = services.get(spec.get("serviceName"), {})
        p.check(gov.get("spec", {}).get("clusterIP") == "None", "serviceName must be a rendered headless Service")
    else:
        p.check(backend == "postgres", f"postgres overlay config has queue.backend {backend!r}")
        if cfg is not None:
            p.check(cfg["queue"].get("url") == {"env": "DATABASE_URL"}, "queue.url must be { env = \"DATABASE_URL\" }")
        p.check(len(hpas) == 1, "one HorizontalPodAutoscaler expected")
        for hpa in hpas:
            ref = hpa["spec"]["scaleTargetRef"]
            p.check((ref["kind"], ref["name"]) == ("Deployment", wl["metadata"]["name"]), "HPA must target the Deployment")
            p.check(hpa["spec"].get("minReplicas", 1) >= 2, "HPA minReplicas must be at least 2")
            p.check("replicas" not in spec, "Deployment must leave replicas to the HPA")
        p.check(len(pdbs) == 1, "one PodDisruptionBudget expected")
        for pdb in pdbs:
            sel = pdb["spec"]["selector"]["matchLabels"]
            p.check(all(pod_labels.get(k) == v for k, v in sel.items()), "PDB selector must match the pods")
        p.check(spec.get("strategy", {}).get("rollingUpdate", {}).get("maxUnavailable") == 0,
                "rolling updates must keep every replica until its successor is ready")

    # Services select these pods and target the http port.
    for svc in by_kind.get("Service", []):
        sel = svc["spec"].get("selector", {})
        name = svc["metadata"]["name"]
        p.check(bool(sel) and all(pod_labels.get(k) == v for k, v in sel.items()), f"Service {name} selects no pod")
        for sp in svc["spec"]["ports"]:
            p.check(sp.get("targetPort") in ("http", port), f"Service {name} targets port {sp.get('targetPort')}")
    p.check(wl["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(), "workload selector must match its pods")
    p.finish()


def dashboard_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []
    for panel in dash.get("panels", []):
        for sub in [panel] + panel.get("panels", []):
            for t in sub.get("targets", []):
                if "expr" in t:
                    out.append((sub.get("title", "?"), t["expr"]))
    return out


def check_dashboard(path: Path, out: Path) -> None:
    p = Problems(f"dashboard {path.name}")
    dash = json.loads(path.read_text())
    p.check(dash.get("uid") == "media-archiver", "uid must be media-archiver")
    p.check(bool(dash.get("title")), "title missing")
    ids = [pl["id"] for pl in dash["panels"]]
    p.check(len(ids) == len(set(ids)), "panel ids must be unique")
    for pl in dash["panels"]:
        g = pl.get("gridPos", {})
        p.check(all(k in g for k in "hwxy") and g["x"] + g["w"] <= 24, f"panel {pl.get('title')!r}: bad gridPos {g}")
        if pl["type"] != "row":
            p.check(pl.get("datasource", {}).get("uid") == "${datasource}", f"panel {pl.get('title')!r}: datasource must be ${{datasource}}")
            p.check(bool(pl.get("targets")), f"panel {pl.get('title')!r} has no query")
    names = [v["name"] for v in dash.get("templating", {}).get("list", [])]
    p.check(names[:1] == ["datasource"], "first template variable must be the datasource")
    exprs = dashboard_exprs(dash)
    # Grafana's variables, made concrete so promtool can parse the PromQL.
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
    rules = []
    for i, (title, expr) in enumerate(exprs):
        e = expr
        for k, v in subst.items():
            e = e.replace(k, v)
        for var in names:
            e = e.replace("${" + var + "}", ".*").replace("$" + var, ".*")
        p.check("$" not in e, f"panel {title!r}: unknown variable in {expr!r}")
        rules.append({"record": f"dashboard:panel_{i}", "expr": e})
    out.write_text(yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]}, sort_keys=False))
    p.finish()
    print(f"     {len(exprs)} queries written to {out} for promtool")


def metric_names(text: str) -> set[str]:
    return set(re.findall(r"\b(" + PREFIX + r"[a-z0-9_]+)", text))


def check_metrics() -> None:
    p = Problems("metric names (PRODUCT.md section 8)")
    known = set()
    for name, kind in METRICS.items():
        if kind == "histogram":
            known |= {f"{PREFIX}{name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            known.add(PREFIX + name)
    dash = json.loads((DEPLOY / "grafana" / "media-archiver.json").read_text())
    dash_text = "\n".join(e for _, e in dashboard_exprs(dash))
    alerts_text = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    for where, text in (("dashboard", dash_text), ("alerts.yml", alerts_text)):
        for used in sorted(metric_names(text) - known):
            p.check(False, f"{where} uses {used}, not a metric of PRODUCT.md section 8")
    for name, kind in METRICS.items():
        full = PREFIX + name + ("_bucket" if kind == "histogram" else "")
        p.check(full in dash_text, f"dashboard shows nothing of {PREFIX}{name}")
    for name in ("jobs_at_risk", "dead_total", "archived_total", "jobs", "webhooks_total"):
        p.check(re.search(r"\b" + PREFIX + name + r"\b", alerts_text) is not None, f"alerts.yml has no rule on {PREFIX}{name}")
    # The daemon's own source: once it registers metrics, it must register these names.
    sources = "\n".join(f.read_text(errors="replace") for f in ROOT.glob("crates/*/src/**/*.rs"))
    registered = metric_names(sources)
    if registered:
        for name in METRICS:
            p.check(PREFIX + name in registered, f"{PREFIX}{name} is not registered anywhere in crates/*/src")
    else:
        print("     note: crates/*/src registers no media_archiver_* metric yet; source cross-check skipped")
    p.finish()


def check_systemd() -> None:
    p = Problems("systemd unit, config.toml, env.example")
    unit: dict[str, list[str]] = {}
    for line in (DEPLOY / "systemd" / "media-archiver.service").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, value = line.split("=", 1)
            unit.setdefault(key.strip(), []).append(value.strip())
    one = lambda key: (unit.get(key) or [""])[-1]  # noqa: E731
    p.check(one("Type") == "notify", "Type must be notify (READY=1/STOPPING=1 from sd-notify)")
    p.check(one("NotifyAccess") == "main", "NotifyAccess must be main")
    p.check(bool(one("WatchdogSec")), "WatchdogSec must be set (the daemon feeds the watchdog)")
    p.check(one("DynamicUser") == "yes" or bool(one("User")), "DynamicUser=yes or a dedicated User= is required")
    state = one("StateDirectory")
    p.check(bool(state), "StateDirectory missing")
    p.check(one("WorkingDirectory") == f"/var/lib/{state}", "WorkingDirectory must be the StateDirectory")
    p.check(one("ProtectSystem") == "strict", "ProtectSystem must be strict")
    p.check(unit.get("CapabilityBoundingSet") == [""], "CapabilityBoundingSet must be empty")
    exec_start = one("ExecStart").split()
    p.check("serve" in exec_start and "--config" in exec_start, "ExecStart must run serve --config PATH")
    if "--config" in exec_start:
        p.check(exec_start[exec_start.index("--config") + 1] == CONFIG_PATH, f"ExecStart --config must be {CONFIG_PATH}")
    env_file = one("EnvironmentFile").lstrip("-")
    p.check(env_file == f"{CONFIG_DIR}/env", f"EnvironmentFile must be -{CONFIG_DIR}/env")
    cfg = tomllib.loads((DEPLOY / "systemd" / "config.toml").read_text())
    drain = parse_duration(cfg.get("workers", {}).get("shutdown_grace", "25s"))
    stop = parse_duration(one("TimeoutStopSec") + ("" if one("TimeoutStopSec")[-1:].isalpha() else "s"))
    p.check(stop > drain + 5, f"TimeoutStopSec {stop:g}s must exceed shutdown_grace {drain:g}s + 5s")
    for key, default in (("queue", "data/queue.db"), ("storage", "data/archive")):
        path = cfg.get(key, {}).get("path", default)
        p.check(not str(path).startswith("/"), f"{key}.path {path} must be relative (under the StateDirectory)")
    env_keys = set()
    for line in (DEPLOY / "systemd" / "env.example").read_text().splitlines():
        line = line.lstrip("# ").strip()
        if re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", line):
            env_keys.add(line.split("=", 1)[0])
    for name in sorted(env_secrets(cfg)):
        p.check(name in env_keys, f"config.toml needs env {name}, absent from env.example")
    p.finish()


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[0] == "manifests":
        check_manifests(argv[1], Path(argv[2]))
    elif len(argv) == 3 and argv[0] == "dashboard":
        check_dashboard(Path(argv[1]), Path(argv[2]))
    elif argv == ["metrics"]:
        check_metrics()
    elif argv == ["systemd"]:
        check_systemd()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])

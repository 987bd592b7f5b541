"""The rules of sessiongate's deploy artifacts that span files.

Each file on its own is checked by its standard tool (scripts/check_deploy.py
runs them: hadolint, docker compose config, kustomize + kubernetes-validate,
checkov, promtool, nginx -t, yamllint). What no single tool can see is kept
here: that the files agree with each other and with the binary. Every rule
is a function `rule(b: Bundle) -> list[str]` returning its problems (empty
when it holds), and scripts/tests/test_deploy_rules.py shows each one
catching a broken input.

The inputs are what the tools resolved, not the raw files: compose as
`docker compose config --format json` prints it (variables interpolated,
anchors merged, paths absolute), Kubernetes as `kustomize build deploy/k8s`
renders it (the generated ConfigMap with its hashed name), the Dockerfile
through moby's own parser (PyPI `dockerfile`), nginx.conf through
`crossplane` (NGINX's parser).
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import subprocess
import tempfile
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import crossplane
import dockerfile
import yaml

# Test values for the pod's secrets in check-config runs (never used elsewhere).
TEST_SECRETS = {
    "SESSIONGATE__AUTH__HS256_SECRET": "deploy-rules-test-secret-0123456789abcdef",
    "SESSIONGATE__STORE__REDIS_URL": "redis://redis.deploy-rules.invalid:6379",
}
# What a glibc runtime image (distroless cc, Debian) provides.
GLIBC_LIBS = {"libc", "libm", "libgcc_s", "ld-linux", "ld-linux-x86-64", "ld-linux-aarch64",
              "linux-vdso", "linux-gate", "libpthread", "libdl", "librt"}
DEBIAN_RELEASES = {"buster": 10, "bullseye": 11, "bookworm": 12, "trixie": 13}
# The oldest Rust that builds each edition.
EDITION_RUST = {"2015": (1, 0), "2018": (1, 31), "2021": (1, 56), "2024": (1, 85)}


@dataclass
class Bundle:
    """Everything the rules read, as the tools resolved it."""
    root: Path
    compose: dict                      # docker compose config --format json
    k8s: list[dict]                    # kustomize build deploy/k8s
    dockerfile: list                   # dockerfile.parse_file(deploy/Dockerfile)
    dockerignore: list[str]
    cargo: dict                        # Cargo.toml
    nginx: list[dict]                  # crossplane: the parsed directives of nginx.conf
    prometheus: dict
    rule_groups: list[dict]            # deploy/prometheus/rules.yml + alerts.yml groups
    otel: dict
    tempo: dict
    datasources: list[dict]
    dashboard_providers: list[dict]
    toml_text: str                     # deploy/k8s/sessiongate.toml
    binary: Path
    ldd: Callable[[Path], str] = field(default=lambda p: _run(["ldd", str(p)]))

    def copy(self) -> "Bundle":
        """A deep copy, for tests that break one input."""
        return copy.deepcopy(self)


# --------------------------------------------------------------------------- loading

def load(root: Path, binary: Path, kustomize: str = "kustomize",
         compose_cmd: str = "docker-compose") -> Bundle:
    deploy = root / "deploy"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SESSIONGATE")}
    compose = json.loads(_run([compose_cmd, "-f", str(deploy / "compose.yaml"), "config",
                               "--format", "json"], env=env))
    k8s = [d for d in yaml.safe_load_all(_run([kustomize, "build", str(deploy / "k8s")])) if d]
    parsed = crossplane.parse(str(deploy / "nginx" / "nginx.conf"), comments=False, single=True)
    if parsed["errors"]:
        raise ValueError(f"nginx.conf: {parsed['errors']}")
    ds_dir = deploy / "grafana" / "provisioning" / "datasources"
    return Bundle(
        root=root,
        compose=compose,
        k8s=k8s,
        dockerfile=list(dockerfile.parse_file(str(deploy / "Dockerfile"))),
        dockerignore=_lines(root / ".dockerignore"),
        cargo=tomllib.loads((root / "Cargo.toml").read_text(encoding="utf-8")),
        nginx=parsed["config"][0]["parsed"],
        prometheus=_yaml(deploy / "prometheus" / "prometheus.yml"),
        rule_groups=(_yaml(deploy / "prometheus" / "rules.yml").get("groups") or [])
        + (_yaml(deploy / "prometheus" / "alerts.yml").get("groups") or []),
        otel=_yaml(deploy / "otel-collector" / "config.yaml"),
        tempo=_yaml(deploy / "tempo" / "tempo.yaml"),
        datasources=[d for p in sorted(ds_dir.glob("*.y*ml")) for d in _yaml(p).get("datasources") or []],
        dashboard_providers=_yaml(deploy / "grafana" / "provisioning" / "dashboards" / "sessiongate.yml")
        .get("providers") or [],
        toml_text=(deploy / "k8s" / "sessiongate.toml").read_text(encoding="utf-8"),
        binary=binary,
    )


def _run(cmd: list[str], env: dict | None = None) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def _yaml(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


def _lines(path: Path) -> list[str]:
    if not path.is_file():
        return []
    return [l.strip() for l in path.read_text(encoding="utf-8").splitlines()
            if l.strip() and not l.strip().startswith("#")]


# --------------------------------------------------------------------------- helpers

def host_port(url: str) -> tuple[str, int | None]:
    u = urlsplit(url if "://" in url else "tcp://" + url)
    return u.hostname or "", u.port or {"http": 80, "https": 443, "redis": 6379}.get(u.scheme)


def duration(text: str) -> float:
    """'5s', '250ms', '1m30s' -> seconds (Go/humantime style, as the configs write them)."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    if not parts or "".join(n + u for n, u in parts) != str(text).strip():
        raise ValueError(f"cannot read duration {text!r}")
    return sum(float(n) * units[u] for n, u in parts)


def kind(b: Bundle, k: str) -> dict:
    found = [d for d in b.k8s if d.get("kind") == k]
    if len(found) != 1:
        raise ValueError(f"expected one {k} in the rendered manifests, found {len(found)}")
    return found[0]


def container(b: Bundle) -> dict:
    pod = kind(b, "Deployment")["spec"]["template"]["spec"]
    named = [c for c in pod.get("containers") or [] if c.get("name") == "sessiongate"]
    if not named:
        raise ValueError("the Deployment has no container named sessiongate")
    return named[0]


def stages(b: Bundle) -> list[dict]:
    """The Dockerfile's stages: image, name and instructions."""
    out: list[dict] = []
    for c in b.dockerfile:
        if c.cmd == "FROM":
            v = c.value
            out.append({"image": v[0], "name": v[2] if len(v) >= 3 and v[1].upper() == "AS" else None,
                        "ins": []})
        elif out:
            out[-1]["ins"].append(c)
    return out


def image_env(b: Bundle) -> dict[str, str]:
    """ENV of the final stage (`ENV K V` and `ENV K=V ...` as the parser gives them)."""
    env: dict[str, str] = {}
    for c in stages(b)[-1]["ins"]:
        if c.cmd == "ENV":
            v = list(c.value)
            env.update({v[i]: v[i + 1] for i in range(0, len(v) - 1, 2)})
    return env


def sessiongate_services(b: Bundle) -> dict[str, dict]:
    """Compose services built from deploy/Dockerfile."""
    out = {}
    for name, s in b.compose["services"].items():
        build = s.get("build") or {}
        if build and (Path(build.get("context", ".")) / build.get("dockerfile", "Dockerfile")).resolve() \
                == (b.root / "deploy" / "Dockerfile").resolve():
            out[name] = s
    return out


def compose_env(b: Bundle, service: dict) -> dict[str, str]:
    env = {k: v for k, v in image_env(b).items() if k.startswith("SESSIONGATE")}
    env.update({k: "" if v is None else str(v) for k, v in (service.get("environment") or {}).items()})
    return env


def k8s_env(b: Bundle) -> dict[str, str]:
    """The pod's SESSIONGATE_* environment: the image's ENV, literal env, and
    test values for what comes from the Secret."""
    env = {k: v for k, v in image_env(b).items() if k.startswith("SESSIONGATE")}
    for e in container(b).get("env") or []:
        name = e.get("name", "")
        if not name.startswith("SESSIONGATE"):
            continue
        if "value" in e:
            env[name] = str(e["value"])
        elif (e.get("valueFrom") or {}).get("secretKeyRef") and name in TEST_SECRETS:
            env[name] = TEST_SECRETS[name]
        else:
            raise ValueError(f"env {name} comes from {list(e.get('valueFrom') or {})}, which has no test value")
    return env


def config_arg(args: list[str]) -> str | None:
    if "--config" in args and args.index("--config") + 1 < len(args):
        return args[args.index("--config") + 1]
    return None


def check_config(b: Bundle, env: dict[str, str], toml_text: str | None = None) -> dict:
    """`sessiongate check-config` with exactly this SESSIONGATE_*/OTEL_*
    environment; the effective configuration it prints (TOML)."""
    if not (b.binary.is_file() and os.access(b.binary, os.X_OK)):
        raise ValueError(f"{b.binary} is not an executable (build it, or set SESSIONGATE_BIN)")
    run_env = {k: v for k, v in os.environ.items()
               if not k.startswith(("SESSIONGATE", "OTEL_")) and k != "RUST_LOG"}
    run_env.update(env)
    cmd = [str(b.binary), "check-config"]
    with tempfile.TemporaryDirectory() as tmp:
        if toml_text is not None:
            path = Path(tmp) / "sessiongate.toml"
            path.write_text(toml_text, encoding="utf-8")
            cmd += ["--config", str(path)]
        p = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=60)
    if p.returncode != 0:
        said = " | ".join(l.strip() for l in (p.stderr or p.stdout).strip().splitlines())
        raise ValueError(f"check-config refused it: {said}")
    return tomllib.loads(p.stdout)


def _selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


# --------------------------------------------------------------------------- rules

def rule_k8s_config(b: Bundle) -> list[str]:
    """The Deployment runs --production with --config on the generated
    ConfigMap's sessiongate.toml as mounted; the ConfigMap carries
    deploy/k8s/sessiongate.toml; that file with the pod's environment (image
    ENV, literal env, the Secret's keys) passes the real `check-config`, and
    the Secret's values reach auth.hs256_secret and store.redis_url; more than
    one replica means a shared (redis) store."""
    problems = []
    dep, c = kind(b, "Deployment"), container(b)
    cm = kind(b, "ConfigMap")
    if (cm.get("data") or {}).get("sessiongate.toml") != b.toml_text:
        problems.append("the ConfigMap's sessiongate.toml is not deploy/k8s/sessiongate.toml "
                        "(kustomization.yaml's configMapGenerator)")
    args = (c.get("command") or []) + (c.get("args") or [])
    if "--production" not in args:
        problems.append("the container's args lack --production")
    path = config_arg(args)
    if not path:
        problems.append("the container's args lack --config FILE")
    else:
        volumes = {v.get("name"): v for v in dep["spec"]["template"]["spec"].get("volumes") or []}
        mounted = False
        for m in c.get("volumeMounts") or []:
            cmv = (volumes.get(m.get("name")) or {}).get("configMap")
            base = m.get("mountPath", "").rstrip("/") + "/"
            if not cmv or not path.startswith(base):
                continue
            keys = {i["path"]: i["key"] for i in cmv.get("items") or []} or {k: k for k in cm.get("data") or {}}
            mounted |= cmv.get("name") == cm["metadata"]["name"] and keys.get(path[len(base):]) == "sessiongate.toml"
        if not mounted:
            problems.append(f"--config {path} is not the ConfigMap {cm['metadata']['name']}'s sessiongate.toml as mounted")
    try:
        cfg = check_config(b, k8s_env(b), b.toml_text)
    except ValueError as e:
        return problems + [f"Kubernetes: {e}"]
    if cfg.get("auth", {}).get("hs256_secret") != "[redacted]":
        problems.append("the Secret's hs256-secret does not reach auth.hs256_secret")
    if cfg.get("store", {}).get("redis_url") != TEST_SECRETS["SESSIONGATE__STORE__REDIS_URL"]:
        problems.append("the Secret's redis-url does not reach store.redis_url")
    hpa = [d for d in b.k8s if d.get("kind") == "HorizontalPodAutoscaler"]
    replicas = max([dep["spec"].get("replicas", 1)] + [h["spec"].get("minReplicas", 1) for h in hpa])
    if replicas > 1 and cfg.get("store", {}).get("backend") != "redis":
        problems.append(f"{replicas} replicas on store.backend {cfg.get('store', {}).get('backend')!r}: "
                        "replicas share sessions only through redis")
    return problems


def rule_k8s_references(b: Bundle) -> list[str]:
    """Selectors and references between the rendered manifests: Service and
    PodDisruptionBudget select the pods, the HPA scales the Deployment, the
    Service's targetPort and the probes name a container port, env refers to
    keys the Secret has, volumes to a ConfigMap that is rendered, and the
    ServiceMonitor selects the Service on one of its ports with the job label
    the recording rules and alerts select."""
    problems = []
    dep, c = kind(b, "Deployment"), container(b)
    pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    if not _selects((dep["spec"].get("selector") or {}).get("matchLabels") or {}, pod_labels):
        problems.append("the Deployment's selector does not match its pod labels")
    svc = kind(b, "Service")
    for k in ("Service", "PodDisruptionBudget"):
        for d in (d for d in b.k8s if d.get("kind") == k):
            sel = d["spec"].get("selector") or {}
            sel = sel.get("matchLabels", sel) if k != "Service" else sel
            if not _selects(sel, pod_labels):
                problems.append(f"{k} {d['metadata']['name']}: selector {sel} does not select the pods")
    for h in (d for d in b.k8s if d.get("kind") == "HorizontalPodAutoscaler"):
        ref = h["spec"].get("scaleTargetRef") or {}
        if (ref.get("kind"), ref.get("name")) != ("Deployment", dep["metadata"]["name"]):
            problems.append(f"HPA {h['metadata']['name']} does not scale the Deployment")
    cports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    for p in svc["spec"].get("ports") or []:
        t = p.get("targetPort", p.get("port"))
        if t not in cports and t not in cports.values():
            problems.append(f"Service port {p.get('name')}: targetPort {t!r} is no container port")
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
        if port is not None and port not in cports and port not in cports.values():
            problems.append(f"{probe} port {port!r} is no container port")
    secrets = {d["metadata"]["name"]: set(d.get("stringData") or {}) | set(d.get("data") or {})
               for d in b.k8s if d.get("kind") == "Secret"}
    for e in c.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("secretKeyRef")
        if ref and ref.get("key") not in secrets.get(ref.get("name"), set()):
            problems.append(f"env {e['name']}: secret {ref.get('name')} has no key {ref.get('key')!r}")
    configmaps = {d["metadata"]["name"] for d in b.k8s if d.get("kind") == "ConfigMap"}
    for v in dep["spec"]["template"]["spec"].get("volumes") or []:
        if "configMap" in v and v["configMap"].get("name") not in configmaps:
            problems.append(f"volume {v.get('name')}: ConfigMap {v['configMap'].get('name')} is not rendered")
    for sm in (d for d in b.k8s if d.get("kind") == "ServiceMonitor"):
        spec = sm.get("spec") or {}
        svc_labels = svc["metadata"].get("labels") or {}
        if not _selects((spec.get("selector") or {}).get("matchLabels") or {}, svc_labels):
            problems.append(f"ServiceMonitor {sm['metadata']['name']} does not select Service {svc['metadata']['name']}")
        names = {p.get("name") for p in svc["spec"].get("ports") or []}
        for ep in spec.get("endpoints") or []:
            if ep.get("port") not in names:
                problems.append(f"ServiceMonitor endpoint port {ep.get('port')!r} is no Service port")
        # The operator's job label: the Service label jobLabel names, else the Service's name.
        job = svc_labels.get(spec["jobLabel"]) if spec.get("jobLabel") else svc["metadata"]["name"]
        exprs = [str(r.get("expr", "")) for g in b.rule_groups for r in g.get("rules") or []]
        if not any(f'job="{job}"' in e for e in exprs):
            problems.append(f"the ServiceMonitor's job label would be {job!r}, which no rule or alert selects")
    return problems


def rule_graceful_shutdown(b: Bundle) -> list[str]:
    """Shutdown timings agree across files: the readiness probe (on /readyz,
    which fails at SIGTERM) takes the pod out within server.shutdown_delay;
    terminationGracePeriodSeconds (k8s) and stop_grace_period (compose) exceed
    shutdown_delay + shutdown_grace of the configuration each one runs."""
    problems = []
    server = tomllib.loads(b.toml_text).get("server", {})
    delay, grace = duration(server.get("shutdown_delay", "0s")), duration(server.get("shutdown_grace", "30s"))
    pod = kind(b, "Deployment")["spec"]["template"]["spec"]
    c = container(b)
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > delay + grace:
        problems.append(f"terminationGracePeriodSeconds {tgps} is not > shutdown_delay {delay:g}s + "
                        f"shutdown_grace {grace:g}s (deploy/k8s/sessiongate.toml)")
    rp = c.get("readinessProbe") or {}
    if (rp.get("httpGet") or {}).get("path") != "/readyz":
        problems.append("the readiness probe does not GET /readyz (the endpoint that fails on SIGTERM)")
    if ((c.get("livenessProbe") or {}).get("httpGet") or {}).get("path") == "/readyz":
        problems.append("the liveness probe GETs /readyz: a Redis outage would restart every pod")
    if rp:
        detect = rp.get("periodSeconds", 10) * rp.get("failureThreshold", 3)
        if not detect < delay:
            problems.append(f"readiness needs up to {detect}s to fail, not less than shutdown_delay {delay:g}s")
    for name, s in sorted(sessiongate_services(b).items()):
        env = compose_env(b, s)
        d = duration(env.get("SESSIONGATE__SERVER__SHUTDOWN_DELAY", "0s"))
        g = duration(env.get("SESSIONGATE__SERVER__SHUTDOWN_GRACE", "30s"))
        sgp = duration(s.get("stop_grace_period", "10s"))
        if not sgp > d + g:
            problems.append(f"{name}: stop_grace_period {sgp:g}s is not > shutdown_delay + shutdown_grace ({d + g:g}s)")
    return problems


def rule_compose_config(b: Bundle) -> list[str]:
    """Each sessiongate replica in compose: its environment (over the image's
    ENV) passes the real `check-config`; it keeps --production with >= 32
    bytes of key material; store.redis_url names a compose service and the
    store is redis (two replicas share sessions); the OTLP endpoint is the
    collector service on the receiver port for its protocol."""
    problems = []
    services = b.compose["services"]
    sg = sessiongate_services(b)
    if len(sg) < 1:
        return ["no compose service is built from deploy/Dockerfile"]
    collectors = {n for n, s in services.items() if "opentelemetry-collector" in str(s.get("image", ""))}
    for name, s in sorted(sg.items()):
        env = compose_env(b, s)
        cmd = s.get("command") or []
        if cmd and "--production" not in cmd:
            problems.append(f"{name}: command {cmd} drops --production")
        if config_arg(cmd):
            problems.append(f"{name}: command passes --config, which this rule does not model")
        if len(env.get("SESSIONGATE__AUTH__HS256_SECRET", "").encode()) < 32:
            problems.append(f"{name}: the HS256 secret is shorter than 32 bytes (--production refuses it)")
        try:
            cfg = check_config(b, env)
        except ValueError as e:
            problems.append(f"{name}: {e}")
            continue
        store = cfg.get("store", {})
        if len(sg) > 1 and store.get("backend") != "redis":
            problems.append(f"{name}: {len(sg)} replicas on store.backend {store.get('backend')!r}")
        host, _ = host_port(store.get("redis_url", ""))
        if store.get("backend") == "redis" and host not in services:
            problems.append(f"{name}: store.redis_url host {host!r} is not a compose service")
        ep = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        proto = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "grpc"
        if ep:
            h, p = host_port(ep)
            want = otel_receiver_port(b, "grpc" if proto == "grpc" else "http")
            if h not in collectors:
                problems.append(f"{name}: OTLP endpoint host {h!r} is not the collector service {sorted(collectors)}")
            elif p != want:
                problems.append(f"{name}: OTLP endpoint port {p} is not the collector's {proto} receiver port {want}")
    return problems


def rule_trusted_proxies(b: Bundle) -> list[str]:
    """The balancer's fixed address (compose network) is inside every
    replica's server.trusted_proxies and inside its network's subnet but
    outside the dynamic ip_range; the network's gateway (where published
    ports come from) is not trusted."""
    problems = []
    services, nets = b.compose["services"], b.compose.get("networks") or {}
    lbs = [n for n, s in services.items() if "nginx" in str(s.get("image", ""))]
    if len(lbs) != 1:
        return [f"expected one nginx service, found {lbs}"]
    addresses, subnets, ranges = [], [], []
    for net, cfg in (services[lbs[0]].get("networks") or {}).items():
        for key in ("ipv4_address", "ipv6_address"):
            if (cfg or {}).get(key):
                addresses.append(ipaddress.ip_address(cfg[key]))
        for ipam in ((nets.get(net) or {}).get("ipam") or {}).get("config") or []:
            if ipam.get("subnet"):
                subnets.append(ipaddress.ip_network(ipam["subnet"]))
            if ipam.get("ip_range"):
                ranges.append(ipaddress.ip_network(ipam["ip_range"]))
    if not addresses:
        problems.append(f"{lbs[0]}: no fixed address for trusted_proxies to name")
    for name, s in sorted(sessiongate_services(b).items()):
        raw = compose_env(b, s).get("SESSIONGATE__SERVER__TRUSTED_PROXIES", "[]")
        trusted = [ipaddress.ip_network(t, strict=False) for t in tomllib.loads(f"v = {raw}")["v"]]
        for a in addresses:
            if not any(a in t for t in trusted):
                problems.append(f"{name}: the balancer's address {a} is not in trusted_proxies {[str(t) for t in trusted]}")
        for sub in subnets:
            gateway = next(sub.hosts())
            if any(gateway in t for t in trusted):
                problems.append(f"{name}: trusted_proxies include {gateway}, the gateway of {sub}")
    for a in addresses:
        if not any(a in sub for sub in subnets):
            problems.append(f"the balancer's address {a} is not in its network's subnet {[str(s) for s in subnets]}")
        if not ranges or any(a in r for r in ranges):
            problems.append(f"the balancer's address {a} is not kept out of the dynamic ip_range "
                            f"{[str(r) for r in ranges] or '(none: the whole subnet)'}")
    return problems


def listen_port(b: Bundle, env: dict[str, str] | None = None) -> int | None:
    """The port sessiongate listens on in the image (its ENV; compose may override)."""
    env = env if env is not None else image_env(b)
    return host_port(env.get("SESSIONGATE__SERVER__LISTEN", "127.0.0.1:8080"))[1]


def rule_ports(b: Bundle) -> list[str]:
    """One listen port everywhere: the image's ENV and EXPOSE, the k8s
    container port and the effective server.listen of the ConfigMap (the env
    wins over the file), each compose replica's expose, the nginx upstream
    servers (which are exactly the replicas), the lb's published port on an
    nginx `listen`, and Prometheus's sessiongate targets (exactly the
    replicas)."""
    problems = []
    port = listen_port(b)
    exposed = {int(p.split("/")[0]) for c in stages(b)[-1]["ins"] if c.cmd == "EXPOSE" for p in c.value}
    if port not in exposed:
        problems.append(f"the image listens on {port} (ENV) but EXPOSEs {sorted(exposed)}")
    k8s_listen = tomllib.loads(b.toml_text).get("server", {}).get("listen", "127.0.0.1:8080")
    k8s_port = listen_port(b, {"SESSIONGATE__SERVER__LISTEN": k8s_listen, **k8s_env(b)})
    cports = {p.get("containerPort") for p in container(b).get("ports") or []}
    if k8s_port not in cports:
        problems.append(f"the pod listens on {k8s_port} but its container ports are {sorted(cports)}")
    if host_port(k8s_listen)[1] != k8s_port:
        problems.append(f"sessiongate.toml listens on {k8s_listen}, but the pod's environment moves it to {k8s_port}")
    sg = sessiongate_services(b)
    replica_ports = {}
    for name, s in sorted(sg.items()):
        replica_ports[name] = listen_port(b, compose_env(b, s))
        if str(replica_ports[name]) not in [str(e).split("/")[0] for e in s.get("expose") or []]:
            problems.append(f"{name}: listens on {replica_ports[name]} but exposes {s.get('expose')}")
    upstream = {}
    listens = set()
    for d in _walk(b.nginx):
        if d["directive"] == "upstream":
            for srv in (x for x in d.get("block", []) if x["directive"] == "server"):
                h, p = host_port(srv["args"][0])
                upstream[h] = p or 80
        if d["directive"] == "listen":
            listens.add(int(d["args"][0].rsplit(":", 1)[-1]))
    if upstream != replica_ports:
        problems.append(f"nginx upstream servers {upstream} are not the replicas on their ports {replica_ports}")
    lbs = [s for s in b.compose["services"].values() if "nginx" in str(s.get("image", ""))]
    for s in lbs:
        targets = {int(p["target"]) for p in s.get("ports") or []}
        if not targets or not targets <= listens:
            problems.append(f"the balancer publishes {sorted(targets)}, not all of them an nginx listen {sorted(listens)}")
    jobs = {j.get("job_name"): j for j in b.prometheus.get("scrape_configs") or []}
    targets = [host_port(t) for sc in (jobs.get("sessiongate") or {}).get("static_configs") or []
               for t in sc.get("targets") or []]
    if dict(targets) != replica_ports:
        problems.append(f"prometheus job sessiongate scrapes {dict(targets)}, not the replicas {replica_ports}")
    return problems


def _walk(directives: list[dict]):
    for d in directives:
        yield d
        yield from _walk(d.get("block") or [])


CONFIG_FLAGS = re.compile(r"^--?config(?:\.file)?=(.+)$")


def rule_compose_mounts(b: Bundle) -> list[str]:
    """Compose's bind mounts and the files the services read: every bind
    source exists; the file each service is told to read (--config=,
    -config.file=, --config.file=) lies in one of its mounts; every shipped
    config under deploy/ (nginx, prometheus, collector, tempo, grafana
    provisioning) is mounted by some service; the dashboards are mounted
    where the Grafana provider reads them; tempo's wal and blocks live on a
    mounted volume."""
    problems = []
    services = b.compose["services"]
    mounted_sources = set()
    for name, s in sorted(services.items()):
        vols = s.get("volumes") or []
        for v in vols:
            if v.get("type") == "bind":
                mounted_sources.add(Path(v["source"]).resolve())
                if not Path(v["source"]).exists():
                    problems.append(f"{name}: bind source {v['source']} does not exist")
        targets = [v["target"].rstrip("/") for v in vols]
        for arg in s.get("command") or []:
            m = CONFIG_FLAGS.match(str(arg))
            if m and not any(m.group(1) == t or m.group(1).startswith(t + "/") for t in targets):
                problems.append(f"{name}: reads {m.group(1)}, which is in none of its mounts {targets}")
        if "nginx" in str(s.get("image", "")) and "/etc/nginx/nginx.conf" not in targets:
            problems.append(f"{name}: nginx.conf is not mounted at /etc/nginx/nginx.conf")
    deploy = b.root / "deploy"
    for shipped in ("nginx/nginx.conf", "prometheus/prometheus.yml", "otel-collector/config.yaml",
                    "tempo/tempo.yaml", "grafana/provisioning"):
        p = (deploy / shipped).resolve()
        if not any(p == m or m in p.parents for m in mounted_sources):
            problems.append(f"deploy/{shipped} is mounted by no compose service")
    paths = [(p.get("options") or {}).get("path") for p in b.dashboard_providers]
    dash = (b.root / "dashboards").resolve()
    dash_targets = [v["target"] for s in services.values() for v in s.get("volumes") or []
                    if v.get("type") == "bind" and Path(v["source"]).resolve() == dash]
    if not dash_targets or not any(t in paths for t in dash_targets):
        problems.append(f"dashboards/ is not mounted at the Grafana provider's path {paths}")
    trace = (b.tempo.get("storage") or {}).get("trace") or {}
    tempo = [s for s in services.values() if "grafana/tempo" in str(s.get("image", "")) and s.get("command")]
    volume_targets = [v["target"].rstrip("/") for s in tempo for v in s.get("volumes") or [] if v.get("type") == "volume"]
    for key in ("wal", "local"):
        path = (trace.get(key) or {}).get("path")
        if path and not any(path.startswith(t + "/") for t in volume_targets):
            problems.append(f"tempo's {key} path {path} is on no named volume of the tempo service")
    return problems


def rule_compose_health(b: Bundle) -> list[str]:
    """A service that waits for another to be healthy waits on a health
    check: the service's own, or for the sessiongate replicas the image's
    HEALTHCHECK."""
    problems = []
    services = b.compose["services"]
    image_hc = any(c.cmd == "HEALTHCHECK" and c.value and c.value[0] == "CMD" for c in stages(b)[-1]["ins"])
    built = set(sessiongate_services(b))
    for name, s in sorted(services.items()):
        for dep, spec in (s.get("depends_on") or {}).items():
            if (spec or {}).get("condition") != "service_healthy":
                continue
            hc = (services.get(dep) or {}).get("healthcheck")
            if not ((hc and not hc.get("disable")) or (dep in built and image_hc)):
                problems.append(f"{name} waits for {dep} to be healthy, but {dep} has no health check")
    return problems


def otel_receiver_port(b: Bundle, proto: str) -> int | None:
    ep = ((((b.otel.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}).get(proto) or {})
    return host_port(ep.get("endpoint", f"0.0.0.0:{4317 if proto == 'grpc' else 4318}"))[1]


def rule_telemetry_wiring(b: Bundle) -> list[str]:
    """Traces and metrics reach their stores: the collector's OTLP exporter
    points at the tempo service on tempo's OTLP gRPC port; Grafana's
    datasources point at compose services on the ports they serve (tempo's
    http_listen_port, Prometheus's 9090)."""
    problems = []
    services = b.compose["services"]
    tempo_names = {n for n, s in services.items() if "grafana/tempo" in str(s.get("image", "")) and s.get("command")}
    grpc = (((((b.tempo.get("distributor") or {}).get("receivers") or {}).get("otlp") or {})
             .get("protocols") or {}).get("grpc"))
    tempo_grpc = host_port((grpc or {}).get("endpoint", "0.0.0.0:4317"))[1] if grpc is not None else None
    used = {e for p in ((b.otel.get("service") or {}).get("pipelines") or {}).values() for e in p.get("exporters") or []}
    to_tempo = False
    for name in sorted(used):
        if name.split("/")[0] != "otlp":
            continue
        h, p = host_port(((b.otel.get("exporters") or {}).get(name) or {}).get("endpoint", ""))
        if h not in services:
            problems.append(f"collector exporter {name}: {h!r} is not a compose service")
        elif h in tempo_names:
            to_tempo = True
            if p != tempo_grpc:
                problems.append(f"collector exporter {name}: port {p} is not tempo's OTLP gRPC port {tempo_grpc}")
    if not to_tempo:
        problems.append("no collector pipeline exports to the tempo service")
    want = {"tempo": (b.tempo.get("server") or {}).get("http_listen_port", 3200), "prometheus": 9090}
    for ds in b.datasources:
        h, p = host_port(ds.get("url", ""))
        if h not in services:
            problems.append(f"datasource {ds.get('name')}: {h!r} is not a compose service")
        elif ds.get("type") in want and p != want[ds["type"]]:
            problems.append(f"datasource {ds.get('name')}: port {p} is not {ds['type']}'s {want[ds['type']]}")
    return problems


def _ignored(patterns: list[str], rel: str) -> bool:
    """Docker's .dockerignore semantics, enough for the paths the Dockerfile copies."""
    import fnmatch
    out = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = (pat[1:] if neg else pat).strip("/")
        cands = [p, p[3:]] if p.startswith("**/") else [p]
        if any(fnmatch.fnmatch(rel, c) or fnmatch.fnmatch(rel, c + "/*") for c in cands):
            out = not neg
    return out


def declared_targets(root: Path, manifest: dict) -> list[str]:
    """The files of the targets Cargo.toml declares (Cargo reads them all,
    whichever it builds), and the build script."""
    out = []
    for table, folder in (("bin", "src/bin"), ("bench", "benches"), ("test", "tests"), ("example", "examples")):
        for t in manifest.get(table, []):
            if "path" in t:
                out.append(t["path"])
            elif (root / folder / t["name"]).is_dir() and not (root / folder / f"{t['name']}.rs").exists():
                out.append(f"{folder}/{t['name']}/main.rs")
            else:
                out.append(f"{folder}/{t['name']}.rs")
    if "path" in manifest.get("lib", {}):
        out.append(manifest["lib"]["path"])
    build = manifest.get("package", {}).get("build")
    if isinstance(build, str):
        out.append(build)
    elif build is None and (root / "build.rs").exists():
        out.append("build.rs")
    return out


def rule_dockerfile_context(b: Bundle) -> list[str]:
    """The Dockerfile and the repository agree: every COPY source exists and
    is not excluded by .dockerignore; the builder stage copies the file of
    every target Cargo.toml declares (Cargo reads them all: a missing bench
    stops the build); the builder's Rust is new enough for Cargo.toml's
    edition and rust-version."""
    problems = []
    copied = []
    for st in stages(b):
        for c in st["ins"]:
            if c.cmd in ("COPY", "ADD") and not any(f.startswith("--from") for f in c.flags):
                for src in c.value[:-1]:
                    s = src.rstrip("/").removeprefix("./")
                    copied.append(s)
                    if not (b.root / s).exists():
                        problems.append(f"COPY {s}: not in the build context")
                    elif _ignored(b.dockerignore, s):
                        problems.append(f"COPY {s}: excluded by .dockerignore")
                    elif (b.root / s).is_dir():
                        for f in sorted((b.root / s).rglob("*")):
                            rel = str(f.relative_to(b.root))
                            if f.is_file() and _ignored(b.dockerignore, rel):
                                problems.append(f"{rel} (under COPY {s}) is excluded by .dockerignore")
                                break
    for path in declared_targets(b.root, b.cargo):
        if not any(path == c or path.startswith(c + "/") for c in copied):
            problems.append(f"Cargo.toml declares {path}, which the Dockerfile does not COPY")
    builders = [st for st in stages(b) if any(c.cmd == "RUN" and "cargo build" in " ".join(c.value) for c in st["ins"])]
    pkg = b.cargo.get("package", {})
    need = max(EDITION_RUST.get(str(pkg.get("edition", "2015")), (1, 0)),
               tuple(int(x) for x in str(pkg.get("rust-version", "1.0")).split(".")[:2]))
    for st in builders:
        m = re.match(r"(?:docker\.io/)?(?:library/)?rust:(\d+)\.(\d+)", st["image"])
        if not m:
            problems.append(f"builder {st['image']} is not rust:<version>")
        elif (int(m.group(1)), int(m.group(2))) < need:
            problems.append(f"builder {st['image']} is older than Rust {need[0]}.{need[1]}, which Cargo.toml needs")
    if not builders:
        problems.append("no stage runs cargo build")
    return problems


def rule_runtime_runs_binary(b: Bundle) -> list[str]:
    """The runtime image can run what the builder links: the binary's
    dynamic libraries (ldd) are only what a glibc runtime provides, and the
    builder's Debian release is not newer than the runtime's (glibc)."""
    problems = []
    sts = stages(b)
    builder = next((st for st in sts if any(c.cmd == "RUN" and "cargo build" in " ".join(c.value) for c in st["ins"])), None)
    runtime = sts[-1]["image"]
    m = re.search(r"distroless/(cc|base|static)(?:-debian(\d+))?|debian:(\w+)", runtime)
    if not m:
        problems.append(f"runtime {runtime} is not distroless or debian (glibc)")
        rt_release = None
    elif m.group(1) and m.group(1) != "cc":
        problems.append(f"runtime {runtime}: distroless {m.group(1)} lacks libgcc_s")
        rt_release = int(m.group(2)) if m.group(2) else None
    else:
        tag = m.group(2) or m.group(3)
        rt_release = int(tag) if tag and tag.isdigit() else DEBIAN_RELEASES.get(tag or "")
    bm = re.search(r"-(\w+)$", builder["image"]) if builder else None
    b_release = DEBIAN_RELEASES.get(bm.group(1)) if bm else None
    if b_release is None:
        problems.append("the builder image names no Debian release (e.g. -bookworm) to pin its glibc")
    elif rt_release is not None and b_release > rt_release:
        problems.append(f"builder Debian {b_release} is newer than runtime Debian {rt_release}: glibc too new")
    libs = []
    for line in b.ldd(b.binary).splitlines():
        tok = line.split()
        if not tok:
            continue
        if "not found" in line:
            problems.append(f"ldd: {line.strip()}")
        libs.append(re.sub(r"\.so(\.\d+)*$", "", os.path.basename(tok[0])))
    extra = sorted(set(libs) - GLIBC_LIBS)
    if extra:
        problems.append(f"the binary needs {extra}, which the runtime image does not provide")
    return problems


def rule_identity(b: Bundle) -> list[str]:
    """The same image identity everywhere: the Kubernetes pod runs as the
    Dockerfile's USER uid:gid, and the sessiongate image tags in compose and
    k8s carry Cargo.toml's version."""
    problems = []
    users = [c.value[0] for c in stages(b)[-1]["ins"] if c.cmd == "USER"]
    uid, _, gid = (users[-1] if users else "").partition(":")
    pod = kind(b, "Deployment")["spec"]["template"]["spec"]
    eff = {**(pod.get("securityContext") or {}), **(container(b).get("securityContext") or {})}
    if str(eff.get("runAsUser")) != uid:
        problems.append(f"the pod runs as uid {eff.get('runAsUser')}, the image's USER is {uid or '(none)'}")
    if gid and str(eff.get("runAsGroup")) != gid:
        problems.append(f"the pod runs as gid {eff.get('runAsGroup')}, the image's USER group is {gid}")
    version = b.cargo.get("package", {}).get("version", "")
    images = [("k8s", container(b).get("image", ""))] + [
        (n, s.get("image", "")) for n, s in sorted(sessiongate_services(b).items())]
    for where, image in images:
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if not (tag == version or tag.startswith(version + "-")):
            problems.append(f"{where}: image {image} does not carry Cargo.toml's version {version}")
    return problems


def rule_prometheusrule(b: Bundle) -> list[str]:
    """The PrometheusRule's groups are deploy/prometheus/rules.yml's then
    alerts.yml's (generated: `python3 scripts/check_deploy.py --generate`)."""
    prs = [d for d in b.k8s if d.get("kind") == "PrometheusRule"]
    if len(prs) != 1:
        return [f"expected one PrometheusRule, found {len(prs)}"]
    groups = (prs[0].get("spec") or {}).get("groups")
    if groups != b.rule_groups:
        return ["the PrometheusRule differs from rules.yml + alerts.yml; "
                "run `python3 scripts/check_deploy.py --generate`"]
    return []


def rule_kustomization_complete(b: Bundle) -> list[str]:
    """Every manifest in deploy/k8s is a resource of kustomization.yaml (a
    file left out would never be applied)."""
    k8s = b.root / "deploy" / "k8s"
    listed = set(_yaml(k8s / "kustomization.yaml").get("resources") or [])
    return [f"deploy/k8s/{p.name} is not in kustomization.yaml's resources"
            for p in sorted(k8s.glob("*.y*ml"))
            if p.name != "kustomization.yaml" and not p.name.startswith(".") and p.name not in listed]


RULES: list[Callable[[Bundle], list[str]]] = [
    rule_k8s_config, rule_k8s_references, rule_graceful_shutdown, rule_compose_config,
    rule_trusted_proxies, rule_ports, rule_compose_mounts, rule_compose_health,
    rule_telemetry_wiring, rule_dockerfile_context, rule_runtime_runs_binary, rule_identity,
    rule_prometheusrule, rule_kustomization_complete,
]


def run(rule: Callable[[Bundle], list[str]], b: Bundle) -> list[str]:
    """A rule's problems; an input shaped unlike anything it expects is one too."""
    try:
        return rule(b)
    except (ValueError, RuntimeError, KeyError, TypeError, IndexError, AttributeError) as e:
        return [f"{type(e).__name__}: {e}"]

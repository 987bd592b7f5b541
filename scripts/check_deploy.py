#!/usr/bin/env python3
"""Static checks of sessiongate's deployment artifacts (deploy/, .dockerignore).

Checks what can be checked without Docker or a cluster: YAML syntax, the
Kubernetes manifests against the API schemas (kubernetes-validate, strict),
the references between manifests, compose services, nginx, Prometheus,
Grafana, the collector and Tempo, the Dockerfile's shape, and every
sessiongate configuration shipped (ConfigMap, example TOML, compose
environment) through the real `sessiongate check-config`.

    python3 scripts/check_deploy.py              # check; exit 1 on any failure
    python3 scripts/check_deploy.py --generate   # rewrite the generated files:
        deploy/k8s/configmap.yaml       from deploy/sessiongate.toml
        deploy/k8s/prometheusrule.yaml  from deploy/prometheus/{rules,alerts}.yml

Needs Python >= 3.11, pyyaml and kubernetes-validate
(`pip install pyyaml kubernetes-validate`). The binary is $SESSIONGATE_BIN,
by default target/debug/sessiongate.
"""

from __future__ import annotations

import argparse
import fnmatch
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

try:
    import yaml
except ImportError:  # pragma: no cover
    sys.exit("check_deploy: needs pyyaml (pip install pyyaml kubernetes-validate)")
try:
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils
except ImportError:  # pragma: no cover
    sys.exit("check_deploy: needs kubernetes-validate (pip install pyyaml kubernetes-validate)")

REPO = Path(__file__).resolve().parent.parent

# Kubernetes versions the manifests are validated against: a floor (override
# with K8S_VERSION) and the newest schema kubernetes-validate ships.
K8S_FLOOR = os.environ.get("K8S_VERSION", "1.31")

# Test key material for check-config runs (never used anywhere else).
TEST_ENV = {
    "SESSIONGATE__AUTH__HS256_SECRET": "check-deploy-test-secret-0123456789abcdef",
    "SESSIONGATE__STORE__REDIS_URL": "redis://redis.check-deploy.invalid:6379",
}

# Libraries a glibc runtime image provides (distroless cc, Debian).
GLIBC_LIBS = {"libc", "libm", "libgcc_s", "ld-linux", "ld-linux-x86-64", "ld-linux-aarch64",
              "linux-vdso", "linux-gate", "libpthread", "libdl", "librt"}
DEBIAN_RELEASES = {"buster": 10, "bullseye": 11, "bookworm": 12, "trixie": 13}

COMMON_LABEL = ("app.kubernetes.io/name", "sessiongate")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


class Fail(Exception):
    """A check failed; the message says why."""


def need(cond: object, msg: str) -> None:
    if not cond:
        raise Fail(msg)


def need_all(problems: list[str]) -> None:
    if problems:
        raise Fail("; ".join(problems))


# --------------------------------------------------------------------------- helpers

class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys (compose and kubectl do too);
    `<<` merge keys are allowed and may be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    dup = key in seen
                    seen.add(key)
                except TypeError:
                    continue
                if dup:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {key!r}", key_node.start_mark)
        return super().construct_mapping(node, deep)


class Ctx:
    def __init__(self, root: Path, binary: Path):
        self.root = root
        self.deploy = root / "deploy"
        self.k8s = root / "deploy" / "k8s"
        self.binary = binary
        self._yaml: dict[Path, list] = {}

    def rel(self, p: Path) -> str:
        try:
            return str(p.relative_to(self.root))
        except ValueError:
            return str(p)

    def docs(self, path: Path) -> list:
        path = path.resolve()
        if path not in self._yaml:
            with open(path, encoding="utf-8") as f:
                self._yaml[path] = [d for d in yaml.load_all(f, Loader=UniqueKeyLoader) if d is not None]
        return self._yaml[path]

    def doc(self, path: Path) -> dict:
        docs = self.docs(path)
        need(len(docs) == 1 and isinstance(docs[0], dict), f"{self.rel(path)}: expected one YAML mapping")
        return docs[0]

    # Kubernetes objects by kind (a kind may appear once here).
    def k8s_objects(self) -> list[tuple[Path, dict]]:
        out = []
        for p in sorted(self.k8s.glob("*.y*ml")):
            if p.name.startswith("kustomization."):
                continue
            for d in self.docs(p):
                out.append((p, d))
        return out

    def k8s_kind(self, kind: str) -> dict:
        found = [d for _, d in self.k8s_objects() if isinstance(d, dict) and d.get("kind") == kind]
        need(len(found) == 1, f"expected exactly one {kind} in deploy/k8s, found {len(found)}")
        return found[0]

    def compose(self) -> dict:
        return self.doc(self.deploy / "compose.yaml")

    def compose_services(self) -> dict:
        services = self.compose().get("services")
        need(isinstance(services, dict) and services, "compose.yaml: no services")
        return services


def parse_duration(text: str) -> float:
    """'5s', '250ms', '1m', '1h30m', '1day' -> seconds."""
    units = {"ms": 0.001, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hour": 3600,
             "d": 86400, "day": 86400, "days": 86400}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]+)", str(text).strip())
    need(parts and "".join(n + u for n, u in parts) == re.sub(r"\s", "", str(text)),
         f"cannot parse duration {text!r}")
    total = 0.0
    for n, u in parts:
        need(u in units, f"unknown duration unit in {text!r}")
        total += float(n) * units[u]
    return total


_VAR = re.compile(r"\$(?:\$|\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}"
                  r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: str, problems: list[str], where: str) -> str:
    """Compose variable substitution with every variable unset: defaults win."""
    def sub(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        if op in (":-", "-"):
            return arg
        if op in (":+", "+"):
            return ""
        problems.append(f"{where}: ${{{name}}} has no default (would be empty or an error when unset)")
        return ""
    return _VAR.sub(sub, value)


def interpolate_tree(node, problems: list[str], where: str = "compose"):
    if isinstance(node, str):
        return interpolate(node, problems, where)
    if isinstance(node, list):
        return [interpolate_tree(v, problems, f"{where}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, problems, f"{where}.{k}") for k, v in node.items()}
    return node


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        out = {}
        for item in env:
            k, _, v = str(item).partition("=")
            out[k] = v
        return out
    def s(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        return "" if v is None else str(v)
    return {str(k): s(v) for k, v in env.items()}


def image_pinned(image: str) -> str | None:
    """None if pinned; otherwise why not."""
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image}: no tag (means :latest)"
    tag = last.rsplit(":", 1)[1]
    if tag == "latest" or not tag:
        return f"{image}: tag is latest"
    return None


def host_port(url_or_addr: str, default_port: int | None = None) -> tuple[str, int | None]:
    if "://" not in url_or_addr:
        url_or_addr = "tcp://" + url_or_addr
    u = urlsplit(url_or_addr)
    port = u.port
    if port is None:
        port = default_port or {"http": 80, "https": 443, "redis": 6379}.get(u.scheme)
    return u.hostname or "", port


# --------------------------------------------------------------------------- Dockerfile

class Dockerfile:
    def __init__(self, path: Path):
        self.path = path
        lines, buf = [], ""
        for raw in path.read_text(encoding="utf-8").splitlines():
            stripped = raw.strip()
            if not buf and (not stripped or stripped.startswith("#")):
                continue
            if buf and stripped.startswith("#"):
                continue  # comment lines inside a continued instruction
            if stripped.endswith("\\"):
                buf += stripped[:-1] + " "
                continue
            buf += stripped
            lines.append(buf)
            buf = ""
        if buf:
            lines.append(buf)
        self.instructions = []
        for line in lines:
            instr, _, args = line.partition(" ")
            self.instructions.append((instr.upper(), args.strip()))
        # Global ARG defaults (before the first FROM) for FROM substitution.
        self.global_args: dict[str, str] = {}
        for instr, args in self.instructions:
            if instr == "FROM":
                break
            if instr == "ARG" and "=" in args:
                k, _, v = args.partition("=")
                self.global_args[k.strip()] = v.strip().strip('"')
        self.stages: list[dict] = []
        for instr, args in self.instructions:
            if instr == "FROM":
                words = [w for w in args.split() if not w.startswith("--")]
                image = re.sub(r"\$\{?(\w+)\}?", lambda m: self.global_args.get(m.group(1), m.group(0)), words[0])
                name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
                self.stages.append({"image": image, "name": name, "instructions": []})
            elif self.stages:
                self.stages[-1]["instructions"].append((instr, args))

    @staticmethod
    def exec_form(args: str) -> list[str] | None:
        try:
            v = json.loads(args)
        except json.JSONDecodeError:
            return None
        return v if isinstance(v, list) and all(isinstance(x, str) for x in v) else None

    def env(self, stage: dict) -> dict[str, str]:
        out = {}
        for instr, args in stage["instructions"]:
            if instr != "ENV":
                continue
            words = shlex.split(args)
            if words and "=" not in words[0]:  # legacy `ENV KEY value`
                out[words[0]] = " ".join(words[1:])
            else:
                for w in words:
                    k, _, v = w.partition("=")
                    out[k] = v
        return out


def dockerfile_runtime_env(ctx: Ctx) -> dict[str, str]:
    df = Dockerfile(ctx.deploy / "Dockerfile")
    return df.env(df.stages[-1]) if df.stages else {}


# --------------------------------------------------------------------------- sessiongate check-config

def run_check_config(ctx: Ctx, env_extra: dict[str, str], config_text: str | None = None) -> dict:
    """Run `sessiongate check-config` with exactly these SESSIONGATE_*/OTEL_* vars;
    return the effective configuration (parsed TOML)."""
    need(ctx.binary.is_file() and os.access(ctx.binary, os.X_OK),
         f"{ctx.binary} is not an executable (build it, or set SESSIONGATE_BIN)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SESSIONGATE", "OTEL_")) and k != "RUST_LOG"}
    env.update(env_extra)
    cmd = [str(ctx.binary), "check-config"]
    tmp = None
    try:
        if config_text is not None:
            tmp = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False, encoding="utf-8")
            tmp.write(config_text)
            tmp.close()
            cmd += ["--config", tmp.name]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=60)
    finally:
        if tmp is not None:
            os.unlink(tmp.name)
    said = " | ".join(l.strip() for l in (p.stderr or p.stdout).strip().splitlines())
    need(p.returncode == 0, f"check-config exited {p.returncode}: {said}")
    try:
        return tomllib.loads(p.stdout)
    except tomllib.TOMLDecodeError as e:
        raise Fail(f"check-config printed something that is not TOML: {e}")


def require_production_key(env: dict[str, str], where: str) -> None:
    secret = env.get("SESSIONGATE__AUTH__HS256_SECRET", "")
    other = [k for k in env if k.startswith(("SESSIONGATE__AUTH__JWKS_URL", "SESSIONGATE__AUTH__PUBLIC_KEY_FILES",
                                              "SESSIONGATE__AUTH__HS256_SECRET_FILE"))]
    need(len(secret.encode()) >= 32 or other,
         f"{where}: --production needs key material; the HS256 secret is {len(secret.encode())} bytes (< 32)")


# --------------------------------------------------------------------------- generated files

class _LiteralDumper(yaml.SafeDumper):
    pass


def _str_rep(dumper, data):
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_LiteralDumper.add_representer(str, _str_rep)


def expected_rule_groups(ctx: Ctx) -> list:
    rules = ctx.doc(ctx.deploy / "prometheus" / "rules.yml").get("groups") or []
    alerts = ctx.doc(ctx.deploy / "prometheus" / "alerts.yml").get("groups") or []
    return rules + alerts


def render_prometheusrule(ctx: Ctx) -> str:
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "sessiongate",
            "labels": {"app.kubernetes.io/name": "sessiongate", "app.kubernetes.io/component": "api"},
        },
        "spec": {"groups": expected_rule_groups(ctx)},
    }
    header = (
        "# GENERATED by `python3 scripts/check_deploy.py --generate`: the groups of\n"
        "# deploy/prometheus/rules.yml followed by those of deploy/prometheus/alerts.yml\n"
        "# (the checker fails if they drift). Edit those files, not this one.\n"
        "# Add the label your Prometheus's ruleSelector expects (often `release: ...`).\n"
    )
    return header + yaml.dump(obj, Dumper=_LiteralDumper, sort_keys=False, width=4096,
                              default_flow_style=False, allow_unicode=True)


def render_configmap(ctx: Ctx) -> str:
    text = (ctx.deploy / "sessiongate.toml").read_text(encoding="utf-8")
    need(text.endswith("\n") and "\t" not in text and not any(l != l.rstrip() for l in text.splitlines()),
         "deploy/sessiongate.toml: needs a final newline, no tabs, no trailing spaces")
    body = "".join(("    " + line if line else "") + "\n" for line in text.splitlines())
    out = (
        "# GENERATED by `python3 scripts/check_deploy.py --generate` from\n"
        "# deploy/sessiongate.toml (the checker fails if they differ): edit that file.\n"
        "# Secrets are not here: SESSIONGATE__AUTH__HS256_SECRET and\n"
        "# SESSIONGATE__STORE__REDIS_URL come from the Secret (see deployment.yaml).\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: sessiongate-config\n"
        "  labels:\n"
        "    app.kubernetes.io/name: sessiongate\n"
        "    app.kubernetes.io/component: api\n"
        "data:\n"
        "  sessiongate.toml: |\n" + body
    )
    need(yaml.safe_load(out)["data"]["sessiongate.toml"] == text, "configmap rendering does not round-trip")
    return out


def generate(ctx: Ctx) -> None:
    for name, text in (("configmap.yaml", render_configmap(ctx)),
                       ("prometheusrule.yaml", render_prometheusrule(ctx))):
        (ctx.k8s / name).write_text(text, encoding="utf-8")
        print(f"wrote {ctx.rel(ctx.k8s / name)}")


# --------------------------------------------------------------------------- checks: YAML

def yaml_checks(ctx: Ctx) -> list:
    checks = []
    files = sorted(p for p in ctx.deploy.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    for p in files:
        def c(p=p):
            try:
                n = len(ctx.docs(p))
            except yaml.YAMLError as e:
                raise Fail(str(e).replace("\n", " "))
            need(n >= 1, "no YAML document")
            return f"{n} document(s)"
        checks.append((f"yaml parses: {ctx.rel(p)}", c))
    return checks


# --------------------------------------------------------------------------- checks: Kubernetes

def k8s_checks(ctx: Ctx) -> list:
    checks = []

    def kustomization():
        k = ctx.doc(ctx.k8s / "kustomization.yaml")
        need(k.get("kind") == "Kustomization", "kustomization.yaml: kind is not Kustomization")
        listed = k.get("resources") or []
        present = sorted(p.name for p in ctx.k8s.glob("*.y*ml") if not p.name.startswith("kustomization."))
        problems = [f"lists {r}, which does not exist" for r in listed if not (ctx.k8s / r).is_file()]
        problems += [f"does not list {p}" for p in present if p not in listed]
        need_all(problems)
        return f"{len(listed)} resources"
    checks.append(("k8s kustomization.yaml lists every manifest", kustomization))

    def metadata():
        problems = []
        for p, d in ctx.k8s_objects():
            where = f"{p.name}"
            if not isinstance(d, dict):
                problems.append(f"{where}: not a mapping")
                continue
            for key in ("apiVersion", "kind", "metadata"):
                if key not in d:
                    problems.append(f"{where}: no {key}")
            md = d.get("metadata") or {}
            if not md.get("name"):
                problems.append(f"{where}: no metadata.name")
            if (md.get("labels") or {}).get(COMMON_LABEL[0]) != COMMON_LABEL[1]:
                problems.append(f"{where} {d.get('kind')}: label {COMMON_LABEL[0]}={COMMON_LABEL[1]} missing")
        need_all(problems)
    checks.append(("k8s objects have apiVersion, kind, name and app.kubernetes.io/name=sessiongate", metadata))

    versions = [K8S_FLOOR]
    latest = kv_utils.latest_version()
    if latest != K8S_FLOOR:
        versions.append(latest)
    for p in sorted(ctx.k8s.glob("*.y*ml")):
        if p.name.startswith("kustomization."):
            continue

        def validate(p=p):
            kinds = []
            for d in ctx.docs(p):
                if d.get("kind") in CRD_KINDS:
                    continue
                for v in versions:
                    try:
                        kubernetes_validate.validate(d, v, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        path = "/".join(str(x) for x in e.path) or "(top)"
                        raise Fail(f"{d.get('kind')} at {path}: {e.message} (Kubernetes {v}, strict)")
                    except kubernetes_validate.SchemaNotFoundError:
                        raise Fail(f"no schema for {d.get('apiVersion')} {d.get('kind')} in Kubernetes {v}")
                kinds.append(d.get("kind"))
            if not kinds:
                return "custom resources only (structural checks below)"
            return f"{', '.join(kinds)} valid for Kubernetes {' and '.join(versions)} (strict)"
        checks.append((f"k8s schema: {p.name}", validate))

    checks.append(("k8s ServiceMonitor: structure, selector, port http, /metrics every 15s, job=sessiongate",
                   lambda: check_servicemonitor(ctx)))
    checks.append(("k8s PrometheusRule: spec.groups == rules.yml groups + alerts.yml groups",
                   lambda: check_prometheusrule(ctx)))
    checks.append(("k8s ConfigMap sessiongate.toml is deploy/sessiongate.toml verbatim",
                   lambda: check_configmap_matches(ctx)))
    checks.append(("k8s Deployment: probes, grace period, security, resources, image, config mount",
                   lambda: check_deployment(ctx)))
    checks.append(("k8s references: Service/PDB/HPA/Secret/ConfigMap point at what exists",
                   lambda: check_k8s_refs(ctx)))
    checks.append(("check-config: ConfigMap's sessiongate.toml + Deployment env (test secrets)",
                   lambda: check_configmap_config(ctx)))
    checks.append(("check-config: deploy/sessiongate.toml (test secrets)",
                   lambda: check_example_toml(ctx)))
    return checks


def crd_structure(d: dict, api_version: str) -> list[str]:
    problems = []
    if d.get("apiVersion") != api_version:
        problems.append(f"apiVersion is {d.get('apiVersion')!r}, not {api_version}")
    extra = set(d) - {"apiVersion", "kind", "metadata", "spec"}
    if extra:
        problems.append(f"unknown top-level keys {sorted(extra)}")
    if not isinstance(d.get("spec"), dict):
        problems.append("no spec")
    if not isinstance(d.get("metadata"), dict) or not d["metadata"].get("name"):
        problems.append("no metadata.name")
    return problems


def check_servicemonitor(ctx: Ctx):
    sm = ctx.k8s_kind("ServiceMonitor")
    svc = ctx.k8s_kind("Service")
    problems = crd_structure(sm, "monitoring.coreos.com/v1")
    need_all(problems)
    spec = sm["spec"]
    allowed = {"jobLabel", "targetLabels", "podTargetLabels", "endpoints", "selector", "namespaceSelector",
               "sampleLimit", "targetLimit", "scrapeProtocols", "labelLimit", "labelNameLengthLimit",
               "labelValueLengthLimit", "attachMetadata", "scrapeClass", "bodySizeLimit",
               "fallbackScrapeProtocol", "keepDroppedTargets", "nativeHistogramBucketLimit",
               "nativeHistogramMinBucketFactor", "scrapeClassicHistograms", "selectorMechanism",
               "convertClassicHistogramsToNHCB", "serviceDiscoveryRole"}
    extra = set(spec) - allowed
    if extra:
        problems.append(f"unknown spec keys {sorted(extra)}")
    sel = (spec.get("selector") or {}).get("matchLabels") or {}
    svc_labels = (svc.get("metadata") or {}).get("labels") or {}
    if not sel or any(svc_labels.get(k) != v for k, v in sel.items()):
        problems.append(f"selector {sel} does not select Service {svc['metadata']['name']} (labels {svc_labels})")
    port_names = {p.get("name") for p in (svc.get("spec") or {}).get("ports") or []}
    eps = spec.get("endpoints") or []
    if not eps:
        problems.append("no endpoints")
    for ep in eps:
        if ep.get("port") != "http" or "http" not in port_names:
            problems.append(f"endpoint port {ep.get('port')!r} is not the Service's port `http`")
        if ep.get("path", "/metrics") != "/metrics":
            problems.append(f"endpoint path {ep.get('path')!r} is not /metrics")
        if ep.get("interval") != "15s":
            problems.append(f"endpoint interval {ep.get('interval')!r} is not 15s")
        for rl in (ep.get("relabelings") or []) + (ep.get("metricRelabelings") or []):
            if rl.get("targetLabel") == "job":
                problems.append("a relabeling rewrites `job`")
    # The operator sets job to the Service label named by jobLabel, else the Service name.
    job_label = spec.get("jobLabel")
    job = svc_labels.get(job_label) if job_label else svc["metadata"]["name"]
    if job != "sessiongate":
        problems.append(f"the job label would be {job!r}, not sessiongate (rules and alerts select job=\"sessiongate\")")
    need_all(problems)
    return f"job={job}"


def check_prometheusrule(ctx: Ctx):
    pr = ctx.k8s_kind("PrometheusRule")
    need_all(crd_structure(pr, "monitoring.coreos.com/v1"))
    extra = set(pr["spec"]) - {"groups"}
    need(not extra, f"unknown spec keys {sorted(extra)}")
    groups = pr["spec"].get("groups")
    expected = expected_rule_groups(ctx)
    need(isinstance(groups, list) and groups, "spec.groups is empty")
    names = [g.get("name") for g in groups]
    need(len(names) == len(set(names)), f"group names repeat: {names}")
    if groups != expected:
        got, want = [g.get("name") for g in groups], [g.get("name") for g in expected]
        detail = f"groups {got} vs {want}" if got != want else next(
            f"group {g['name']!r} differs" for g, e in zip(groups, expected) if g != e)
        raise Fail(f"{detail}; run `python3 scripts/check_deploy.py --generate`")
    rules = sum(len(g.get("rules") or []) for g in groups)
    return f"{len(groups)} groups, {rules} rules"


def configmap_toml(ctx: Ctx) -> str:
    cm = ctx.k8s_kind("ConfigMap")
    text = (cm.get("data") or {}).get("sessiongate.toml")
    need(isinstance(text, str) and text.strip(), "ConfigMap has no data.sessiongate.toml")
    return text


def check_configmap_matches(ctx: Ctx):
    text = configmap_toml(ctx)
    example = (ctx.deploy / "sessiongate.toml").read_text(encoding="utf-8")
    try:
        parsed = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise Fail(f"ConfigMap's sessiongate.toml is not TOML: {e}")
    if text != example:
        same = parsed == tomllib.loads(example)
        raise Fail("ConfigMap's sessiongate.toml differs from deploy/sessiongate.toml"
                   + (" (same values, different text)" if same else "")
                   + "; run `python3 scripts/check_deploy.py --generate`")


def k8s_container(dep: dict) -> dict:
    containers = dep["spec"]["template"]["spec"].get("containers") or []
    named = [c for c in containers if c.get("name") == "sessiongate"]
    need(named, "Deployment has no container named sessiongate")
    return named[0]


def check_deployment(ctx: Ctx):
    dep = ctx.k8s_kind("Deployment")
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    c = k8s_container(dep)
    problems = []

    if spec.get("replicas") != 2:
        problems.append(f"replicas is {spec.get('replicas')}, not 2")
    ru = (spec.get("strategy") or {}).get("rollingUpdate") or {}
    if (spec.get("strategy") or {}).get("type") != "RollingUpdate" or ru.get("maxUnavailable") != 0 \
            or ru.get("maxSurge") != 1:
        problems.append("strategy is not RollingUpdate with maxUnavailable 0 / maxSurge 1")

    image = c.get("image", "")
    why = image_pinned(image)
    if why:
        problems.append(f"image {why}")

    # Arguments: --config <a ConfigMap file> and --production.
    args = (c.get("command") or []) + (c.get("args") or [])
    if "--production" not in args:
        problems.append("args lack --production")
    config_path = None
    if "--config" in args and args.index("--config") + 1 < len(args):
        config_path = args[args.index("--config") + 1]
    else:
        problems.append("args lack --config FILE")
    cm_name = ctx.k8s_kind("ConfigMap")["metadata"]["name"]
    if config_path:
        mounted = False
        volumes = {v.get("name"): v for v in pod.get("volumes") or []}
        for m in c.get("volumeMounts") or []:
            vol = volumes.get(m.get("name")) or {}
            cmv = vol.get("configMap")
            if not cmv or not config_path.startswith(m["mountPath"].rstrip("/") + "/"):
                continue
            rel = config_path[len(m["mountPath"].rstrip("/")) + 1:]
            keys = {i["path"]: i["key"] for i in cmv.get("items") or []} or {"sessiongate.toml": "sessiongate.toml"}
            if cmv.get("name") == cm_name and keys.get(rel) == "sessiongate.toml":
                mounted = True
        if not mounted:
            problems.append(f"--config {config_path} is not the ConfigMap {cm_name}'s sessiongate.toml as mounted")

    # Probes.
    def probe_path(name):
        pr = c.get(name) or {}
        return (pr.get("httpGet") or {}).get("path"), pr
    live, _ = probe_path("livenessProbe")
    ready, rp = probe_path("readinessProbe")
    start, _ = probe_path("startupProbe")
    if live != "/healthz":
        problems.append(f"livenessProbe path is {live!r}, not /healthz")
    if ready != "/readyz":
        problems.append(f"readinessProbe path is {ready!r}, not /readyz")
    if not start:
        problems.append("no startupProbe")

    # Grace period vs the ConfigMap's shutdown_delay + shutdown_grace.
    server = tomllib.loads(configmap_toml(ctx)).get("server", {})
    delay = parse_duration(server.get("shutdown_delay", "0s"))
    grace = parse_duration(server.get("shutdown_grace", "30s"))
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if not tgps > delay + grace:
        problems.append(f"terminationGracePeriodSeconds {tgps} is not > shutdown_delay {delay:g}s + "
                        f"shutdown_grace {grace:g}s")
    if delay <= 0:
        problems.append("server.shutdown_delay is 0: pods would close their listener while still in endpoints")
    period = rp.get("periodSeconds", 10) * rp.get("failureThreshold", 3)
    if rp and not period < delay:
        problems.append(f"readiness needs up to {period}s to fail, not less than shutdown_delay {delay:g}s")

    # Security context (container settings win over the pod's).
    psc = pod.get("securityContext") or {}
    csc = c.get("securityContext") or {}
    eff = {**psc, **csc}
    if eff.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot is not true")
    if eff.get("runAsUser", 65532) == 0:
        problems.append("runAsUser is 0")
    if csc.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation is not false")
    if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
        problems.append("capabilities do not drop ALL")
    if (eff.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("seccompProfile is not RuntimeDefault")

    res = c.get("resources") or {}
    for kind in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if not (res.get(kind) or {}).get(r):
                problems.append(f"resources.{kind}.{r} not set")

    if not pod.get("topologySpreadConstraints") and not (pod.get("affinity") or {}).get("podAntiAffinity"):
        problems.append("neither topologySpreadConstraints nor podAntiAffinity")

    env_names = {e.get("name") for e in c.get("env") or []}
    for name in ("SESSIONGATE__AUTH__HS256_SECRET", "SESSIONGATE__STORE__REDIS_URL",
                 "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"):
        if name not in env_names:
            problems.append(f"env {name} not set")

    ports = {p.get("containerPort") for p in c.get("ports") or []}
    if 8080 not in ports:
        problems.append("no containerPort 8080")
    need_all(problems)
    return f"grace {tgps}s > {delay:g}s + {grace:g}s; readiness fails within {period}s"


def check_k8s_refs(ctx: Ctx):
    dep, svc = ctx.k8s_kind("Deployment"), ctx.k8s_kind("Service")
    hpa, pdb = ctx.k8s_kind("HorizontalPodAutoscaler"), ctx.k8s_kind("PodDisruptionBudget")
    secret = ctx.k8s_kind("Secret")
    problems = []
    pod_labels = dep["spec"]["template"]["metadata"].get("labels") or {}
    sel = (dep["spec"].get("selector") or {}).get("matchLabels") or {}
    if not sel or any(pod_labels.get(k) != v for k, v in sel.items()):
        problems.append("Deployment selector does not match its pod labels")
    for what, s in (("Service", (svc["spec"].get("selector") or {})),
                    ("PodDisruptionBudget", (pdb["spec"].get("selector") or {}).get("matchLabels") or {})):
        if not s or any(pod_labels.get(k) != v for k, v in s.items()):
            problems.append(f"{what} selector {s} does not select the pods")
    if svc["metadata"]["name"] != "sessiongate":
        problems.append("the Service is not named sessiongate")
    c = k8s_container(dep)
    cports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    sports = svc["spec"].get("ports") or []
    if not any(p.get("name") == "http" for p in sports):
        problems.append("the Service has no port named http")
    for p in sports:
        t = p.get("targetPort", p.get("port"))
        if isinstance(t, str) and t not in cports:
            problems.append(f"Service targetPort {t!r} names no container port")
        if isinstance(t, int) and t not in cports.values():
            problems.append(f"Service targetPort {t} is no container port")
    ref = hpa["spec"].get("scaleTargetRef") or {}
    if ref.get("kind") != "Deployment" or ref.get("name") != dep["metadata"]["name"]:
        problems.append("HPA does not target the Deployment")
    if (hpa["spec"].get("minReplicas"), hpa["spec"].get("maxReplicas")) != (2, 10):
        problems.append("HPA is not min 2 / max 10")
    cpu = [m for m in hpa["spec"].get("metrics") or []
           if m.get("type") == "Resource" and (m.get("resource") or {}).get("name") == "cpu"]
    if not cpu or cpu[0]["resource"].get("target", {}).get("averageUtilization") != 70:
        problems.append("HPA does not target 70% CPU")
    if pdb["spec"].get("minAvailable") != 1:
        problems.append("PDB minAvailable is not 1")
    if "maxUnavailable" in pdb["spec"]:
        problems.append("PDB sets both minAvailable and maxUnavailable (the API server refuses that)")
    skeys = set((secret.get("stringData") or {})) | set((secret.get("data") or {}))
    for e in c.get("env") or []:
        ref = ((e.get("valueFrom") or {}).get("secretKeyRef")) or {}
        if ref and (ref.get("name") != secret["metadata"]["name"] or ref.get("key") not in skeys):
            problems.append(f"env {e.get('name')} refers to secret {ref.get('name')}/{ref.get('key')}, which is not in secret.yaml")
    cm = ctx.k8s_kind("ConfigMap")
    for v in dep["spec"]["template"]["spec"].get("volumes") or []:
        if "configMap" in v and v["configMap"].get("name") != cm["metadata"]["name"]:
            problems.append(f"volume {v.get('name')} mounts ConfigMap {v['configMap'].get('name')}, not in configmap.yaml")
    need_all(problems)


def k8s_env(ctx: Ctx) -> dict[str, str]:
    """The SESSIONGATE_* environment of the pod: image ENV, literal env, test values for secrets."""
    env = {k: v for k, v in dockerfile_runtime_env(ctx).items() if k.startswith("SESSIONGATE")}
    for e in k8s_container(ctx.k8s_kind("Deployment")).get("env") or []:
        name = e.get("name", "")
        if not name.startswith("SESSIONGATE"):
            continue
        if "value" in e:
            env[name] = str(e["value"])
        elif name in TEST_ENV:
            env[name] = TEST_ENV[name]
        else:
            raise Fail(f"env {name} comes from {list(e.get('valueFrom', {}))} and has no test value")
    for k, v in TEST_ENV.items():
        env.setdefault(k, v)
    return env


def check_effective_production(cfg: dict, where: str, delay: str) -> list[str]:
    problems = []
    s, st, t = cfg.get("server", {}), cfg.get("store", {}), cfg.get("telemetry", {})
    host, port = host_port(s.get("listen", ""))
    if (host, port) != ("0.0.0.0", 8080):
        problems.append(f"{where}: server.listen is {s.get('listen')!r}, not 0.0.0.0:8080")
    if st.get("backend") != "redis":
        problems.append(f"{where}: store.backend is {st.get('backend')!r}, not redis")
    if t.get("log_format") != "json":
        problems.append(f"{where}: telemetry.log_format is not json")
    if s.get("shutdown_delay") != delay:
        problems.append(f"{where}: server.shutdown_delay is {s.get('shutdown_delay')!r}, not {delay!r}")
    if s.get("shutdown_grace") != "20s":
        problems.append(f"{where}: server.shutdown_grace is {s.get('shutdown_grace')!r}, not '20s'")
    if not s.get("trusted_proxies"):
        problems.append(f"{where}: server.trusted_proxies is empty")
    if cfg.get("auth", {}).get("hs256_secret") != "[redacted]":
        problems.append(f"{where}: no HS256 secret took effect")
    return problems


def check_configmap_config(ctx: Ctx):
    env = k8s_env(ctx)
    cfg = run_check_config(ctx, env, configmap_toml(ctx))
    problems = check_effective_production(cfg, "ConfigMap", "5s")
    if cfg.get("store", {}).get("redis_url") != TEST_ENV["SESSIONGATE__STORE__REDIS_URL"]:
        problems.append("the Secret's redis URL does not reach store.redis_url")
    need_all(problems)
    return f"valid with {', '.join(sorted(env))}"


def check_example_toml(ctx: Ctx):
    cfg = run_check_config(ctx, dict(TEST_ENV), (ctx.deploy / "sessiongate.toml").read_text(encoding="utf-8"))
    need_all(check_effective_production(cfg, "deploy/sessiongate.toml", "5s"))


# --------------------------------------------------------------------------- checks: compose

def sessiongate_services(ctx: Ctx) -> dict[str, dict]:
    out = {}
    for name, s in ctx.compose_services().items():
        b = s.get("build")
        if isinstance(b, dict):
            ctxdir = (ctx.deploy / b.get("context", ".")).resolve()
            df = (ctxdir / b.get("dockerfile", "Dockerfile")).resolve()
            if df == (ctx.deploy / "Dockerfile").resolve():
                out[name] = s
    return out


def compose_checks(ctx: Ctx) -> list:
    return [
        ("compose: images pinned (a tag, not latest) or built", lambda: check_compose_images(ctx)),
        ("compose: bind-mount sources, build context and named volumes exist", lambda: check_compose_mounts(ctx)),
        ("compose: depends_on targets exist and have the health checks they wait for",
         lambda: check_compose_depends(ctx)),
        ("compose: both sessiongate replicas' environment passes check-config (production)",
         lambda: check_compose_sessiongate(ctx)),
        ("compose: prometheus.yml job sessiongate scrapes exactly the compose replicas",
         lambda: check_prometheus(ctx)),
        ("compose: nginx upstream = the replicas; passive health; safe retries; headers forwarded",
         lambda: check_nginx(ctx)),
        ("compose: otel-collector pipelines use defined components and export to tempo",
         lambda: check_otel(ctx)),
        ("compose: tempo OTLP receiver, local storage on a volume; Grafana datasources reach their services",
         lambda: check_tempo_grafana(ctx)),
    ]


def check_compose_images(ctx: Ctx):
    problems = []
    for name, s in ctx.compose_services().items():
        problems2: list[str] = []
        image = interpolate(str(s.get("image", "")), problems2, name) if s.get("image") else ""
        if not image and not s.get("build"):
            problems.append(f"{name}: neither image nor build")
        elif image:
            why = image_pinned(image)
            if why:
                problems.append(f"{name}: {why}")
        problems += problems2
    need_all(problems)
    return f"{len(ctx.compose_services())} services"


def check_compose_mounts(ctx: Ctx):
    comp = ctx.compose()
    declared = set((comp.get("volumes") or {}).keys())
    problems = []
    for name, s in ctx.compose_services().items():
        for v in s.get("volumes") or []:
            if isinstance(v, str):
                parts = v.split(":")
                src = parts[0] if len(parts) > 1 else None
                kind = "bind" if src and src.startswith((".", "/", "~")) else ("volume" if src else "anon")
            else:
                kind, src = v.get("type", "volume"), v.get("source")
            if kind == "bind":
                p = (ctx.deploy / os.path.expanduser(src)).resolve()
                if not p.exists():
                    problems.append(f"{name}: bind source {src} ({ctx.rel(p)}) does not exist")
            elif kind == "volume" and src and src not in declared:
                problems.append(f"{name}: volume {src} is not declared under top-level volumes")
        b = s.get("build")
        if b is not None:
            b = {"context": b} if isinstance(b, str) else b
            cdir = (ctx.deploy / b.get("context", ".")).resolve()
            if not cdir.is_dir():
                problems.append(f"{name}: build context {b.get('context')} does not exist")
            elif not (cdir / b.get("dockerfile", "Dockerfile")).is_file():
                problems.append(f"{name}: dockerfile {b.get('dockerfile')} not found in the context")
        for ef in ([s["env_file"]] if isinstance(s.get("env_file"), str) else s.get("env_file") or []):
            ef = ef if isinstance(ef, str) else ef.get("path")
            if not (ctx.deploy / ef).is_file():
                problems.append(f"{name}: env_file {ef} does not exist")
    need_all(problems)


def check_compose_depends(ctx: Ctx):
    services = ctx.compose_services()
    built = set(sessiongate_services(ctx))
    df = Dockerfile(ctx.deploy / "Dockerfile")
    image_health = any(i == "HEALTHCHECK" for i, _ in df.stages[-1]["instructions"]) if df.stages else False
    problems = []
    for name, s in services.items():
        deps = s.get("depends_on") or {}
        if isinstance(deps, list):
            deps = {d: {"condition": "service_started"} for d in deps}
        for d, spec in deps.items():
            if d not in services:
                problems.append(f"{name} depends on unknown service {d}")
                continue
            cond = (spec or {}).get("condition", "service_started")
            if cond == "service_healthy" and not services[d].get("healthcheck") \
                    and not (d in built and image_health):
                problems.append(f"{name} waits for {d} to be healthy, but {d} has no health check")
    redis = services.get("redis") or {}
    hc = " ".join(str(x) for x in (redis.get("healthcheck") or {}).get("test") or [])
    if "redis-cli" not in hc or "ping" not in hc:
        problems.append("redis health check is not `redis-cli ping`")
    cmd = " ".join(str(x) for x in redis.get("command") or [])
    if "--appendonly yes" not in cmd:
        problems.append("redis does not run with --appendonly yes")
    need_all(problems)


def compose_effective_env(ctx: Ctx, service: dict, problems: list[str], where: str) -> dict[str, str]:
    env = {k: v for k, v in dockerfile_runtime_env(ctx).items() if k.startswith(("SESSIONGATE", "OTEL_"))}
    for k, v in compose_env(service).items():
        env[k] = interpolate(v, problems, f"{where}.environment.{k}")
    return env


def network_subnets(ctx: Ctx, service: dict, key: str = "subnet") -> list:
    """The `subnet`s (or `ip_range`s) of the networks a compose service is on."""
    nets = service.get("networks") or ["default"]
    names = list(nets) if isinstance(nets, (list, dict)) else []
    out = []
    top = ctx.compose().get("networks") or {}
    for n in names:
        for cfg in ((top.get(n) or {}).get("ipam") or {}).get("config") or []:
            if cfg.get(key):
                p: list[str] = []
                out.append(ipaddress.ip_network(interpolate(cfg[key], p, n)))
    return out


def check_compose_sessiongate(ctx: Ctx):
    services = ctx.compose_services()
    sg = sessiongate_services(ctx)
    need(set(sg) >= {"sessiongate-1", "sessiongate-2"},
         f"expected services sessiongate-1 and sessiongate-2 built from deploy/Dockerfile, found {sorted(sg)}")
    problems = []
    collectors = {n for n, s in services.items() if "opentelemetry-collector" in str(s.get("image", ""))}
    # The balancer's fixed addresses, and the networks they are on.
    lb_addresses, lb_subnets, lb_dynamic = [], [], []
    for n, s in services.items():
        if "nginx" in str(s.get("image", "")):
            lb_subnets += network_subnets(ctx, s)
            lb_dynamic += network_subnets(ctx, s, "ip_range")
            nets = s.get("networks")
            for net in (nets.values() if isinstance(nets, dict) else []):
                for key in ("ipv4_address", "ipv6_address"):
                    if net and net.get(key):
                        lb_addresses.append(ipaddress.ip_address(interpolate(net[key], problems, n)))
            if not lb_addresses:
                problems.append(f"{n}: the balancer has no fixed address for trusted_proxies to name")
    for name, s in sorted(sg.items()):
        env = compose_effective_env(ctx, s, problems, name)
        cmd = s.get("command")
        cmd = shlex.split(cmd) if isinstance(cmd, str) else (cmd or [])
        if "--config" in cmd:
            problems.append(f"{name}: command passes --config, which this check does not model")
        if "--production" not in cmd and env.get("SESSIONGATE_PRODUCTION", "").lower() not in ("1", "true", "yes", "on"):
            # The image's CMD has --production only when command is not overridden.
            if cmd:
                problems.append(f"{name}: command drops --production")
        try:
            cfg = run_check_config(ctx, env)
        except Fail as e:
            problems.append(f"{name}: {e}")
            continue
        try:
            require_production_key(env, name)
        except Fail as e:
            problems.append(str(e))
        problems += check_effective_production(cfg, name, "2s")
        host, _ = host_port(cfg["store"]["redis_url"])
        if host not in services:
            problems.append(f"{name}: store.redis_url host {host!r} is not a compose service")
        trusted = []
        for t in cfg["server"].get("trusted_proxies") or []:
            trusted.append(ipaddress.ip_network(t, strict=False))
        for a in lb_addresses:
            if not any(a in t for t in trusted):
                problems.append(f"{name}: the balancer's address {a} is not within trusted_proxies {trusted}")
            if not any(a in sub for sub in lb_subnets):
                problems.append(f"{name}: the balancer's address {a} is not in its network {lb_subnets}")
            # Docker gives the other containers addresses from ip_range (or
            # the whole subnet): the balancer's must lie outside it, or one
            # of them may take it first and the balancer cannot start.
            if not lb_dynamic or any(a in r for r in lb_dynamic):
                problems.append(f"{name}: the balancer's address {a} is not kept out of the network's "
                                f"dynamic ip_range {lb_dynamic or '(none: the whole subnet)'}")
        # Requests to a published port reach the balancer from the network's
        # gateway (its first address): believing it would let a client from
        # the host choose its own key.
        for sub in lb_subnets:
            gateway = next(sub.hosts())
            if any(gateway in t for t in trusted):
                problems.append(f"{name}: trusted_proxies {trusted} include {gateway}, the gateway of {sub}")
        ep = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        proto = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if not ep:
            problems.append(f"{name}: no OTEL_EXPORTER_OTLP_ENDPOINT")
        else:
            h, p = host_port(ep)
            if h not in collectors:
                problems.append(f"{name}: OTLP endpoint host {h!r} is not the otel-collector service")
            want = otel_receiver_port(ctx, "grpc" if proto == "grpc" else "http")
            if p != want:
                problems.append(f"{name}: OTLP endpoint port {p} is not the collector's {proto} port {want}")
        if proto != "grpc":
            problems.append(f"{name}: OTEL_EXPORTER_OTLP_PROTOCOL is {proto!r}, not grpc")
        if not env.get("OTEL_SERVICE_NAME"):
            problems.append(f"{name}: no OTEL_SERVICE_NAME")
        hc = " ".join(str(x) for x in (s.get("healthcheck") or {}).get("test") or [])
        if hc and ("probe" not in hc or "/readyz" not in hc):
            problems.append(f"{name}: health check does not use `sessiongate probe` on /readyz")
        sgp = parse_duration(str(s.get("stop_grace_period", "10s")))
        need_stop = parse_duration(cfg["server"]["shutdown_delay"]) + parse_duration(cfg["server"]["shutdown_grace"])
        if sgp <= need_stop:
            problems.append(f"{name}: stop_grace_period {sgp:g}s is not > shutdown_delay + shutdown_grace ({need_stop:g}s)")
    need_all(problems)
    return f"{', '.join(sorted(sg))}"


def check_prometheus(ctx: Ctx):
    prom = ctx.doc(ctx.deploy / "prometheus" / "prometheus.yml")
    services = ctx.compose_services()
    sg = sessiongate_services(ctx)
    problems = []
    jobs = {j.get("job_name"): j for j in prom.get("scrape_configs") or []}
    job = jobs.get("sessiongate")
    need(job, "prometheus.yml has no job_name: sessiongate")
    if (prom.get("global") or {}).get("scrape_interval") != "15s":
        problems.append("global scrape_interval is not 15s")
    for rf in prom.get("rule_files") or []:
        if not (ctx.deploy / "prometheus" / rf).is_file():
            problems.append(f"rule file {rf} does not exist")
    if set(prom.get("rule_files") or []) != {"rules.yml", "alerts.yml"}:
        problems.append("rule_files are not rules.yml and alerts.yml")
    targets = [t for sc in job.get("static_configs") or [] for t in sc.get("targets") or []]
    hosts = set()
    for t in targets:
        h, p = host_port(t)
        hosts.add(h)
        if h not in services:
            problems.append(f"target {t}: {h} is not a compose service")
        elif p != 8080:
            problems.append(f"target {t}: port is not 8080")
    if hosts != set(sg):
        problems.append(f"targets {sorted(hosts)} are not the sessiongate replicas {sorted(sg)}")
    mounted = any(str(v).startswith("./prometheus:/etc/prometheus")
                  for v in (services.get("prometheus") or {}).get("volumes") or [])
    if not mounted:
        problems.append("the prometheus service does not mount ./prometheus at /etc/prometheus")
    need_all(problems)
    return f"targets {', '.join(targets)}"


def nginx_text(ctx: Ctx) -> str:
    text = (ctx.deploy / "nginx" / "nginx.conf").read_text(encoding="utf-8")
    return re.sub(r"(?m)(^|\s)#[^\n]*", r"\1", text)


def check_nginx(ctx: Ctx):
    text = nginx_text(ctx)
    need(text.count("{") == text.count("}"), "nginx.conf: unbalanced braces")
    services = ctx.compose_services()
    sg = set(sessiongate_services(ctx))
    problems = []
    ups = dict(re.findall(r"\bupstream\s+(\S+)\s*\{([^}]*)\}", text))
    need(ups, "nginx.conf: no upstream block")
    for passes in re.findall(r"\bproxy_pass\s+https?://([^/;\s]+)", text):
        if passes not in ups:
            problems.append(f"proxy_pass to {passes}, which is no upstream")
    hosts = set()
    for up, body in ups.items():
        for host, port, params in re.findall(r"\bserver\s+([^\s:;]+)(?::(\d+))?([^;]*);", body):
            hosts.add(host)
            if host not in services:
                problems.append(f"upstream {up}: server {host} is not a compose service")
            if port and int(port) != 8080:
                problems.append(f"upstream {up}: {host}:{port} is not port 8080")
            if "max_fails=" not in params or "fail_timeout=" not in params:
                problems.append(f"upstream {up}: {host} lacks max_fails/fail_timeout (passive health)")
            if "resolve" in params.split() and "zone" not in body:
                problems.append(f"upstream {up}: `resolve` needs a `zone`")
    if hosts != sg:
        problems.append(f"upstream servers {sorted(hosts)} are not the replicas {sorted(sg)}")
    nu = re.findall(r"\bproxy_next_upstream\s+([^;]*);", text)
    if not nu or not all({"error", "timeout", "http_502", "http_503"} <= set(x.split()) for x in nu):
        problems.append("proxy_next_upstream is not `error timeout http_502 http_503`")
    if "non_idempotent" in text:
        problems.append("non_idempotent would retry POST/PATCH after they reached a replica")
    headers = {h.lower(): v for h, v in re.findall(r"\bproxy_set_header\s+(\S+)\s+([^;]*);", text)}
    for h, want in (("x-forwarded-for", "$proxy_add_x_forwarded_for"), ("x-request-id", "$"),
                    ("traceparent", "$http_traceparent")):
        if h not in headers or not headers[h].strip().startswith(want):
            problems.append(f"{h} is not forwarded")
    listens = set(re.findall(r"\blisten\s+(?:[\d.]+:)?(\d+)", text))
    lb = [n for n, s in services.items() if "nginx" in str(s.get("image", ""))]
    need(len(lb) == 1, f"expected one nginx service, found {lb}")
    published = {str(p).split(":")[-1].split("/")[0] for p in services[lb[0]].get("ports") or []}
    host_ports = {str(p).split(":")[-2] for p in services[lb[0]].get("ports") or [] if str(p).count(":") >= 1}
    if "8080" not in published or "8080" not in listens or "8080" not in host_ports:
        problems.append(f"{lb[0]} does not publish 8080 to an nginx `listen 8080`")
    mounted = any(str(v).split(":")[:2] == ["./nginx/nginx.conf", "/etc/nginx/nginx.conf"]
                  for v in services[lb[0]].get("volumes") or [])
    if not mounted:
        problems.append(f"{lb[0]} does not mount ./nginx/nginx.conf at /etc/nginx/nginx.conf")
    need_all(problems)
    return f"{lb[0]} → {', '.join(sorted(hosts))}"


def otel_config(ctx: Ctx) -> dict:
    return ctx.doc(ctx.deploy / "otel-collector" / "config.yaml")


def otel_receiver_port(ctx: Ctx, proto: str) -> int | None:
    otlp = (otel_config(ctx).get("receivers") or {}).get("otlp") or {}
    ep = ((otlp.get("protocols") or {}).get(proto) or {})
    if not isinstance(ep, dict):
        ep = {}
    default = 4317 if proto == "grpc" else 4318
    return host_port(ep.get("endpoint", f"localhost:{default}"))[1]


def check_otel(ctx: Ctx):
    cfg = otel_config(ctx)
    services = ctx.compose_services()
    problems = []
    svc = cfg.get("service") or {}
    pipelines = svc.get("pipelines") or {}
    if not any(p.split("/")[0] == "traces" for p in pipelines):
        problems.append("no traces pipeline")
    for pname, p in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            defined = cfg.get(section) or {}
            for comp in p.get(section) or []:
                if comp not in defined:
                    problems.append(f"pipeline {pname} uses {section[:-1]} {comp}, which is not defined")
        if not p.get("receivers") or not p.get("exporters"):
            problems.append(f"pipeline {pname} lacks receivers or exporters")
    for ext in svc.get("extensions") or []:
        if ext not in (cfg.get("extensions") or {}):
            problems.append(f"extension {ext} is not defined")
    otlp = (cfg.get("receivers") or {}).get("otlp") or {}
    for proto, port in (("grpc", 4317), ("http", 4318)):
        ep = ((otlp.get("protocols") or {}).get(proto) or {}).get("endpoint", "")
        h, p = host_port(ep) if ep else ("localhost", port)
        if p != port:
            problems.append(f"OTLP {proto} receiver is not on port {port}")
        if h not in ("0.0.0.0", "", "::"):
            problems.append(f"OTLP {proto} receiver listens on {h!r}: other containers cannot reach it")
    used = {c for p in pipelines.values() for c in p.get("exporters") or []}
    tempo_port = tempo_otlp_grpc_port(ctx)
    to_tempo = False
    for name in used:
        if name.split("/")[0] not in ("otlp", "otlphttp"):
            continue
        ep = ((cfg.get("exporters") or {}).get(name) or {}).get("endpoint", "")
        h, p = host_port(ep)
        if h not in services:
            problems.append(f"exporter {name}: host {h!r} is not a compose service")
        elif "grafana/tempo" in str(services[h].get("image", "")):
            if name.split("/")[0] == "otlp" and p != tempo_port:
                problems.append(f"exporter {name}: port {p} is not tempo's OTLP gRPC port {tempo_port}")
            to_tempo = True
    if not to_tempo:
        problems.append("no pipeline exports to the tempo service over OTLP")
    coll = [n for n, s in services.items() if "opentelemetry-collector" in str(s.get("image", ""))]
    if len(coll) != 1:
        problems.append(f"expected one collector service, found {coll}")
    else:
        cmd = " ".join(str(x) for x in services[coll[0]].get("command") or [])
        m = re.search(r"--config[= ](\S+)", cmd)
        target = m.group(1) if m else "/etc/otelcol-contrib/config.yaml"
        if not any(str(v).split(":")[:2] == ["./otel-collector/config.yaml", target]
                   for v in services[coll[0]].get("volumes") or []):
            problems.append(f"{coll[0]} does not mount ./otel-collector/config.yaml at {target}")
    need_all(problems)
    return f"pipelines {', '.join(pipelines)}"


def tempo_config(ctx: Ctx) -> dict:
    return ctx.doc(ctx.deploy / "tempo" / "tempo.yaml")


def tempo_otlp_grpc_port(ctx: Ctx) -> int | None:
    grpc = ((((tempo_config(ctx).get("distributor") or {}).get("receivers") or {}).get("otlp") or {})
            .get("protocols") or {}).get("grpc")
    if grpc is None:
        return None
    return host_port((grpc or {}).get("endpoint", "0.0.0.0:4317"))[1]


def check_tempo_grafana(ctx: Ctx):
    services = ctx.compose_services()
    t = tempo_config(ctx)
    problems = []
    if tempo_otlp_grpc_port(ctx) is None:
        problems.append("tempo has no OTLP gRPC receiver")
    trace = (t.get("storage") or {}).get("trace") or {}
    if trace.get("backend") != "local":
        problems.append("tempo storage backend is not local")
    tempo_svc = [n for n, s in services.items()
                 if "grafana/tempo" in str(s.get("image", "")) and "-config.file" in " ".join(s.get("command") or [])]
    if len(tempo_svc) != 1:
        problems.append(f"expected one tempo service running -config.file, found {tempo_svc}")
    else:
        s = services[tempo_svc[0]]
        targets = [str(v).split(":")[1] for v in s.get("volumes") or [] if ":" in str(v)]
        for key in ("wal", "local"):
            path = (trace.get(key) or {}).get("path", "")
            if not any(path.startswith(tg.rstrip("/") + "/") for tg in targets):
                problems.append(f"tempo {key} path {path!r} is on no mounted volume")
        cmd = " ".join(s.get("command") or [])
        cfgpath = re.search(r"-config\.file=(\S+)", cmd).group(1)
        if not any(str(v).split(":")[:2] == ["./tempo/tempo.yaml", cfgpath] for v in s.get("volumes") or []):
            problems.append(f"tempo does not mount ./tempo/tempo.yaml at {cfgpath}")
    tempo_http = (t.get("server") or {}).get("http_listen_port", 3200)

    # Grafana datasources.
    dsdir = ctx.deploy / "grafana" / "provisioning" / "datasources"
    sources = []
    for p in sorted(dsdir.glob("*.y*ml")):
        sources += ctx.doc(p).get("datasources") or []
    by_type = {}
    for ds in sources:
        by_type.setdefault(ds.get("type"), []).append(ds)
        h, port = host_port(ds.get("url", ""))
        if h not in services:
            problems.append(f"datasource {ds.get('name')}: {h!r} is not a compose service")
        elif ds.get("type") == "tempo" and port != tempo_http:
            problems.append(f"datasource {ds.get('name')}: port {port} is not tempo's http_listen_port {tempo_http}")
        elif ds.get("type") == "prometheus" and port != 9090:
            problems.append(f"datasource {ds.get('name')}: port {port} is not 9090")
    if not any(d.get("uid") == "prometheus" for d in by_type.get("prometheus", [])):
        problems.append("no Prometheus datasource with uid `prometheus`")
    if not by_type.get("tempo"):
        problems.append("no Tempo datasource")
    if sum(1 for d in sources if d.get("isDefault")) != 1:
        problems.append("not exactly one default datasource")

    # Grafana mounts: provisioning, and the dashboards where the provider reads them.
    g = [n for n, s in services.items() if "grafana/grafana" in str(s.get("image", ""))]
    if len(g) != 1:
        problems.append(f"expected one grafana service, found {g}")
    else:
        vols = [str(v).split(":") for v in services[g[0]].get("volumes") or []]
        if not any(v[:2] == ["./grafana/provisioning", "/etc/grafana/provisioning"] for v in vols):
            problems.append("grafana does not mount ./grafana/provisioning at /etc/grafana/provisioning")
        provider = ctx.doc(ctx.deploy / "grafana" / "provisioning" / "dashboards" / "sessiongate.yml")
        paths = [(p.get("options") or {}).get("path") for p in provider.get("providers") or []]
        dash = [v for v in vols if v[0] == "../dashboards"]
        if not dash or dash[0][1] not in paths:
            problems.append(f"../dashboards is not mounted at the provider's path {paths}")
        if not list((ctx.root / "dashboards").glob("*.json")):
            problems.append("dashboards/ has no JSON dashboards")
        if "3000:3000" not in [str(p) for p in services[g[0]].get("ports") or []]:
            problems.append("grafana does not publish 3000")
    need_all(problems)


# --------------------------------------------------------------------------- checks: Dockerfile

def docker_checks(ctx: Ctx) -> list:
    return [
        ("Dockerfile: multi-stage; builder rust >= 1.85 with cargo build --release --locked",
         lambda: check_docker_builder(ctx)),
        ("Dockerfile: runtime is glibc, non-root USER, probe HEALTHCHECK, ENTRYPOINT/CMD/EXPOSE/ENV",
         lambda: check_docker_runtime(ctx)),
        ("Dockerfile: ldd of the binary needs only what the runtime image provides",
         lambda: check_ldd(ctx)),
        (".dockerignore: keeps target/ and .git out, lets the build's sources in",
         lambda: check_dockerignore(ctx)),
    ]


def builder_stage(df: Dockerfile) -> dict:
    for st in df.stages:
        if any(i == "RUN" and "cargo build" in a for i, a in st["instructions"]):
            return st
    raise Fail("no stage runs `cargo build`")


def check_docker_builder(ctx: Ctx):
    df = Dockerfile(ctx.deploy / "Dockerfile")
    need(len(df.stages) >= 2, f"{len(df.stages)} FROM, not a multi-stage build")
    b = builder_stage(df)
    need(b is not df.stages[-1], "cargo build runs in the final stage")
    problems = []
    m = re.match(r"(?:docker\.io/)?(?:library/)?rust:(\d+)\.(\d+)(?:\.(\d+))?(?:-(\w+))?", b["image"])
    if not m:
        problems.append(f"builder image {b['image']} is not rust:<version>[-<debian>]")
    elif (int(m.group(1)), int(m.group(2))) < (1, 85):
        problems.append(f"builder {b['image']}: Rust < 1.85 cannot build edition 2024")
    runs = [a for i, a in b["instructions"] if i == "RUN" and "cargo build" in a]
    for r in runs:
        words = r.split()
        if "--locked" not in words:
            problems.append("cargo build without --locked")
        if "--release" not in words:
            problems.append("cargo build without --release")
    copied = []
    for i, a in b["instructions"]:
        if i in ("COPY", "ADD") and "--from" not in a:
            srcs = shlex.split(a)[:-1]
            for s in (x for x in srcs if not x.startswith("--")):
                copied.append(s.rstrip("/"))
                if not (ctx.root / s).exists():
                    problems.append(f"COPY source {s} does not exist in the build context")
    # Cargo reads every target the manifest declares, whichever it builds: a
    # declared bench, test or example whose file the image lacks fails the
    # build at the manifest ("can't find `x` bench").
    for path in declared_target_files(ctx.root):
        if not any(path == c or path.startswith(c + "/") for c in copied):
            problems.append(f"Cargo.toml declares {path}, which the builder stage does not COPY")
    need_all(problems)
    return f"{b['image']} AS {b['name']}"


def declared_target_files(root: Path) -> list[str]:
    """The files of the targets Cargo.toml declares (and the build script):
    an explicit `path`, else Cargo's default place for the target's name."""
    manifest = tomllib.loads((root / "Cargo.toml").read_text(encoding="utf-8"))
    out = []
    for table, folder in (("bin", "src/bin"), ("bench", "benches"), ("test", "tests"), ("example", "examples")):
        for t in manifest.get(table, []):
            if "path" in t:
                out.append(t["path"])
            elif (root / folder / f"{t['name']}.rs").exists() or not (root / folder / t["name"]).is_dir():
                out.append(f"{folder}/{t['name']}.rs")
            else:
                out.append(f"{folder}/{t['name']}/main.rs")
    if "lib" in manifest and "path" in manifest["lib"]:
        out.append(manifest["lib"]["path"])
    build = manifest.get("package", {}).get("build")
    if isinstance(build, str):
        out.append(build)
    elif build is None and (root / "build.rs").exists():
        out.append("build.rs")
    return out


def check_docker_runtime(ctx: Ctx):
    df = Dockerfile(ctx.deploy / "Dockerfile")
    need(len(df.stages) >= 2, "not a multi-stage build")
    rt, b = df.stages[-1], builder_stage(df)
    image = rt["image"]
    problems = []
    why = image_pinned(image)
    if why:
        problems.append(f"runtime {why}")
    runtime_release = None
    m = re.search(r"distroless/(cc|base|static)(?:-debian(\d+))?", image)
    if m:
        if m.group(1) != "cc":
            problems.append(f"runtime {image}: distroless {m.group(1)} lacks libgcc_s (use distroless/cc)")
        runtime_release = int(m.group(2)) if m.group(2) else None
    elif re.match(r"(?:docker\.io/)?(?:library/)?debian:", image):
        tag = image.split(":", 1)[1]
        runtime_release = next((v for k, v in DEBIAN_RELEASES.items() if k in tag), None) or \
            (int(tag.split(".")[0]) if tag.split(".")[0].isdigit() else None)
    else:
        problems.append(f"runtime {image} is not a glibc image (distroless cc or debian)")
    bm = re.search(r"-(\w+)$", b["image"])
    builder_release = DEBIAN_RELEASES.get(bm.group(1)) if bm else None
    if builder_release is None:
        problems.append(f"builder {b['image']}: name the Debian release (e.g. -bookworm) to pin its glibc")
    elif runtime_release is not None and builder_release > runtime_release:
        problems.append(f"builder is Debian {builder_release}, runtime Debian {runtime_release}: "
                        "the binary would need a newer glibc than the runtime has")
    ins = rt["instructions"]
    users = [a for i, a in ins if i == "USER"]
    if not users:
        problems.append("the final stage sets no USER")
    elif users[-1].split(":")[0] in ("root", "0", ""):
        problems.append(f"the final stage runs as {users[-1]}")
    hcs = [a for i, a in ins if i == "HEALTHCHECK"]
    if not hcs:
        problems.append("no HEALTHCHECK")
    else:
        m = re.match(r"(?:--\S+\s+)*CMD\s+(.*)$", hcs[-1])
        form = Dockerfile.exec_form(m.group(1)) if m else None
        if not m:
            problems.append("HEALTHCHECK has no CMD")
        elif form is None:
            problems.append("HEALTHCHECK CMD is in shell form: the runtime has no shell")
        elif not (form[0].endswith("sessiongate") and "probe" in form):
            problems.append(f"HEALTHCHECK does not run `sessiongate probe`: {form}")
    ep = [Dockerfile.exec_form(a) for i, a in ins if i == "ENTRYPOINT"]
    if not ep or ep[-1] != ["/usr/local/bin/sessiongate"]:
        problems.append('ENTRYPOINT is not ["/usr/local/bin/sessiongate"]')
    cmd = [Dockerfile.exec_form(a) for i, a in ins if i == "CMD"]
    if not cmd or cmd[-1] != ["serve", "--production"]:
        problems.append('CMD is not ["serve", "--production"]')
    if not any(i == "EXPOSE" and "8080" in a.split() for i, a in ins):
        problems.append("no EXPOSE 8080")
    if df.env(rt).get("SESSIONGATE__SERVER__LISTEN") != "0.0.0.0:8080":
        problems.append("ENV SESSIONGATE__SERVER__LISTEN=0.0.0.0:8080 missing")
    copied = [a for i, a in ins if i == "COPY" and a.startswith("--from=")]
    if not any(re.match(rf"--from={re.escape(b['name'] or '')}\s+\S+\s+/usr/local/bin/sessiongate$", a)
               for a in copied):
        problems.append("the binary is not copied from the builder to /usr/local/bin/sessiongate")
    need_all(problems)
    return f"{image}, USER {users[-1] if users else '?'}"


def check_ldd(ctx: Ctx):
    need(ctx.binary.is_file(), f"{ctx.binary} does not exist (build it, or set SESSIONGATE_BIN)")
    p = subprocess.run(["ldd", str(ctx.binary)], capture_output=True, text=True, timeout=30)
    need(p.returncode == 0, f"ldd failed: {p.stderr.strip() or p.stdout.strip()}")
    libs = []
    for line in p.stdout.splitlines():
        tok = line.strip().split()
        if not tok:
            continue
        if "not found" in line:
            raise Fail(f"ldd: {line.strip()}")
        base = os.path.basename(tok[0])
        libs.append(re.sub(r"\.so(\.\d+)*$", "", base))
    extra = [l for l in libs if l not in GLIBC_LIBS]
    need(not extra, f"needs {extra}, which distroless cc / Debian do not provide")
    return ", ".join(libs)


def check_dockerignore(ctx: Ctx):
    path = ctx.root / ".dockerignore"
    need(path.is_file(), ".dockerignore does not exist")
    pats = [l.strip() for l in path.read_text(encoding="utf-8").splitlines()
            if l.strip() and not l.strip().startswith("#")]
    def ignored(rel: str) -> bool:
        out = False
        for pat in pats:
            neg = pat.startswith("!")
            pt = pat[1:] if neg else pat
            pt = pt.strip("/")
            hit = fnmatch.fnmatch(rel, pt) or fnmatch.fnmatch(rel, pt + "/*") or \
                (pt.startswith("**/") and (fnmatch.fnmatch(rel, pt[3:]) or fnmatch.fnmatch(rel, pt[3:] + "/*")))
            if hit:
                out = not neg
        return out
    problems = [f"{p} is not ignored" for p in ("target", ".git") if not ignored(p)]
    df = Dockerfile(ctx.deploy / "Dockerfile")
    for st in df.stages:
        for i, a in st["instructions"]:
            if i in ("COPY", "ADD") and "--from" not in a:
                for s in (x for x in shlex.split(a)[:-1] if not x.startswith("--")):
                    s = s.rstrip("/")
                    if ignored(s):
                        problems.append(f"COPY source {s} is excluded by .dockerignore")
                    elif (ctx.root / s).is_dir():
                        for f in (ctx.root / s).rglob("*"):
                            rel = str(f.relative_to(ctx.root))
                            if f.is_file() and ignored(rel):
                                problems.append(f"{rel} (needed by COPY {s}) is excluded")
                                break
    need_all(problems)


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO, help="repository to check (default: this one)")
    ap.add_argument("--generate", action="store_true",
                    help="rewrite deploy/k8s/configmap.yaml and prometheusrule.yaml, then exit")
    args = ap.parse_args()
    binary = Path(os.environ.get("SESSIONGATE_BIN") or REPO / "target" / "debug" / "sessiongate")
    if not binary.is_absolute():
        binary = Path.cwd() / binary
    ctx = Ctx(args.root.resolve(), binary)

    if args.generate:
        generate(ctx)
        return 0

    checks = yaml_checks(ctx) + k8s_checks(ctx) + compose_checks(ctx) + docker_checks(ctx)
    passed, failed = 0, []
    for name, fn in checks:
        try:
            detail = fn()
        except Fail as e:
            failed.append(name)
            print(f"FAIL {name}: {' '.join(str(e).split())}", flush=True)
            continue
        except Exception as e:  # a file missing or shaped unlike anything expected
            failed.append(name)
            said = " ".join(str(e).split())
            print(f"FAIL {name}: {type(e).__name__}: {said}", flush=True)
            continue
        passed += 1
        print(f"ok   {name}" + (f" ({detail})" if detail else ""), flush=True)
    print(f"\ncheck_deploy: {passed} passed, {len(failed)} failed")
    if failed:
        print("check_deploy: FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

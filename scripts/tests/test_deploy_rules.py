"""Tests of scripts/deploy_rules.py: the shipped deploy artifacts pass every
rule, and each rule catches a broken input (one change to what the tools
resolved, or to a copy of the files). Also the parts of scripts/check_deploy.py
that are more than a tool call: nginx -t without DNS and compose's unset
variables.

    python -m pytest scripts/tests      (scripts/test.sh runs it)

Needs what check_deploy.py needs: kustomize ($KUSTOMIZE or PATH),
docker-compose, nginx and the debug binary ($SESSIONGATE_BIN).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SCRIPTS))
import check_deploy  # noqa: E402
import deploy_rules as r  # noqa: E402

ROOT = SCRIPTS.parent


@pytest.fixture(scope="session")
def shipped() -> r.Bundle:
    binary = Path(os.environ.get("SESSIONGATE_BIN") or ROOT / "target" / "debug" / "sessiongate").absolute()
    return r.load(ROOT, binary, kustomize=check_deploy.tool("kustomize", "KUSTOMIZE"),
                  compose_cmd=check_deploy.tool("docker-compose"))


@pytest.fixture
def b(shipped) -> r.Bundle:
    return shipped.copy()


def caught(rule, b: r.Bundle, *words: str) -> list[str]:
    problems = r.run(rule, b)
    assert any(all(w in p for w in words) for p in problems), f"{rule.__name__} said {problems}, wanted {words}"
    return problems


def dep(b):
    return r.kind(b, "Deployment")


def svc(b, name):
    return b.compose["services"][name]


def replace_ins(b, cmd, fn):
    """Apply fn to each Dockerfile instruction named cmd (None drops it)."""
    out = []
    for c in b.dockerfile:
        if c.cmd == cmd:
            c = fn(c)
        if c is not None:
            out.append(c)
    b.dockerfile = out


@pytest.mark.parametrize("rule", r.RULES, ids=lambda f: f.__name__)
def test_shipped_artifacts_pass(shipped, rule):
    assert r.run(rule, shipped) == []


# --------------------------------------------------------------------------- k8s_config

def test_k8s_config_configmap_not_from_the_toml(b):
    r.kind(b, "ConfigMap")["data"]["sessiongate.toml"] += "# drift\n"
    caught(r.rule_k8s_config, b, "is not deploy/k8s/sessiongate.toml")


def test_k8s_config_without_production(b):
    r.container(b)["args"].remove("--production")
    caught(r.rule_k8s_config, b, "lack --production")


def test_k8s_config_path_not_the_mounted_file(b):
    args = r.container(b)["args"]
    args[args.index("--config") + 1] = "/etc/other/sessiongate.toml"
    caught(r.rule_k8s_config, b, "/etc/other/sessiongate.toml", "as mounted")


def test_k8s_config_refused_by_check_config(b):
    b.toml_text += "\n[server]\nno_such_key = 1\n"
    caught(r.rule_k8s_config, b, "check-config refused")


def test_k8s_config_secret_not_reaching_the_config(b):
    # A literal value later in env shadows the Secret's.
    r.container(b)["env"].append({"name": "SESSIONGATE__STORE__REDIS_URL", "value": "redis://literal:6379"})
    caught(r.rule_k8s_config, b, "redis-url does not reach store.redis_url")


def test_k8s_config_replicas_on_a_memory_store(b):
    b.toml_text = b.toml_text.replace('backend = "redis"', 'backend = "memory"')
    r.kind(b, "ConfigMap")["data"]["sessiongate.toml"] = b.toml_text
    caught(r.rule_k8s_config, b, "replicas on store.backend 'memory'")


# --------------------------------------------------------------------------- k8s_references

def test_k8s_references_service_selects_no_pod(b):
    r.kind(b, "Service")["spec"]["selector"]["app.kubernetes.io/component"] = "web"
    caught(r.rule_k8s_references, b, "Service sessiongate", "does not select the pods")


def test_k8s_references_missing_secret_key(b):
    for e in r.container(b)["env"]:
        if e["name"] == "SESSIONGATE__AUTH__HS256_SECRET":
            e["valueFrom"]["secretKeyRef"]["key"] = "hs256"
    caught(r.rule_k8s_references, b, "has no key 'hs256'")


def test_k8s_references_probe_on_unknown_port(b):
    r.container(b)["readinessProbe"]["httpGet"]["port"] = "metrics"
    caught(r.rule_k8s_references, b, "readinessProbe port 'metrics'")


def test_k8s_references_servicemonitor_job_no_rule_selects(b):
    r.kind(b, "ServiceMonitor")["spec"]["jobLabel"] = "app.kubernetes.io/component"
    caught(r.rule_k8s_references, b, "job label would be 'api'")


def test_k8s_references_hpa_scales_something_else(b):
    r.kind(b, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]["name"] = "other"
    caught(r.rule_k8s_references, b, "does not scale the Deployment")


# --------------------------------------------------------------------------- graceful_shutdown

def test_graceful_shutdown_grace_period_too_short(b):
    dep(b)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 20
    caught(r.rule_graceful_shutdown, b, "terminationGracePeriodSeconds 20")


def test_graceful_shutdown_readiness_too_slow(b):
    r.container(b)["readinessProbe"].update(periodSeconds=10, failureThreshold=3)
    caught(r.rule_graceful_shutdown, b, "readiness needs up to 30s")


def test_graceful_shutdown_liveness_on_readyz(b):
    r.container(b)["livenessProbe"]["httpGet"]["path"] = "/readyz"
    caught(r.rule_graceful_shutdown, b, "liveness probe GETs /readyz")


def test_graceful_shutdown_compose_stop_grace(b):
    svc(b, "sessiongate-2")["stop_grace_period"] = "10s"
    caught(r.rule_graceful_shutdown, b, "sessiongate-2: stop_grace_period 10s")


# --------------------------------------------------------------------------- compose_config

def test_compose_config_short_secret(b):
    svc(b, "sessiongate-1")["environment"]["SESSIONGATE__AUTH__HS256_SECRET"] = "short"
    caught(r.rule_compose_config, b, "sessiongate-1", "shorter than 32 bytes")


def test_compose_config_drops_production(b):
    svc(b, "sessiongate-1")["command"] = ["serve"]
    caught(r.rule_compose_config, b, "drops --production")


def test_compose_config_refused_by_check_config(b):
    svc(b, "sessiongate-2")["environment"]["SESSIONGATE__STORE__COMMAND_TIMEOUT"] = "soon"
    caught(r.rule_compose_config, b, "sessiongate-2", "check-config refused")


def test_compose_config_redis_host_not_a_service(b):
    svc(b, "sessiongate-1")["environment"]["SESSIONGATE__STORE__REDIS_URL"] = "redis://cache:6379"
    caught(r.rule_compose_config, b, "redis_url host 'cache'")


def test_compose_config_otlp_port_of_the_other_protocol(b):
    svc(b, "sessiongate-1")["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"] = "http://otel-collector:4318"
    caught(r.rule_compose_config, b, "OTLP endpoint port 4318", "grpc receiver port 4317")


# --------------------------------------------------------------------------- trusted_proxies

def test_trusted_proxies_balancer_not_trusted(b):
    svc(b, "lb")["networks"]["backend"]["ipv4_address"] = "172.30.80.11"
    caught(r.rule_trusted_proxies, b, "172.30.80.11 is not in trusted_proxies")


def test_trusted_proxies_gateway_trusted(b):
    for n in ("sessiongate-1", "sessiongate-2"):
        svc(b, n)["environment"]["SESSIONGATE__SERVER__TRUSTED_PROXIES"] = '["172.30.80.0/24"]'
    caught(r.rule_trusted_proxies, b, "172.30.80.1, the gateway")


def test_trusted_proxies_balancer_in_dynamic_range(b):
    b.compose["networks"]["backend"]["ipam"]["config"][0]["ip_range"] = "172.30.80.0/25"
    caught(r.rule_trusted_proxies, b, "not kept out of the dynamic ip_range")


# --------------------------------------------------------------------------- ports

def test_ports_image_exposes_another_port(b):
    replace_ins(b, "EXPOSE", lambda c: c._replace(value=("9090",)))
    caught(r.rule_ports, b, "EXPOSEs [9090]")


def test_ports_container_port(b):
    r.container(b)["ports"][0]["containerPort"] = 9000
    caught(r.rule_ports, b, "container ports are [9000]")


def test_ports_nginx_upstream_port(b):
    for d in r._walk(b.nginx):
        if d["directive"] == "server" and d["args"] and d["args"][0] == "sessiongate-2:8080":
            d["args"][0] = "sessiongate-2:8081"
    caught(r.rule_ports, b, "nginx upstream servers")


def test_ports_prometheus_misses_a_replica(b):
    b.prometheus["scrape_configs"][0]["static_configs"][0]["targets"] = ["sessiongate-1:8080"]
    caught(r.rule_ports, b, "prometheus job sessiongate scrapes")


def test_ports_lb_publishes_no_nginx_listen(b):
    svc(b, "lb")["ports"][0]["target"] = 8082
    caught(r.rule_ports, b, "publishes [8082]")


# --------------------------------------------------------------------------- compose_mounts

def test_compose_mounts_missing_bind_source(b):
    svc(b, "lb")["volumes"][0]["source"] = str(ROOT / "deploy" / "nginx" / "missing.conf")
    caught(r.rule_compose_mounts, b, "missing.conf does not exist")


def test_compose_mounts_config_flag_outside_mounts(b):
    svc(b, "prometheus")["command"][0] = "--config.file=/etc/prom/prometheus.yml"
    caught(r.rule_compose_mounts, b, "prometheus: reads /etc/prom/prometheus.yml")


def test_compose_mounts_shipped_config_unmounted(b):
    svc(b, "otel-collector")["volumes"] = []
    problems = caught(r.rule_compose_mounts, b, "deploy/otel-collector/config.yaml is mounted by no")
    assert any("otel-collector: reads" in p for p in problems)


def test_compose_mounts_dashboards_elsewhere(b):
    b.dashboard_providers[0]["options"]["path"] = "/dashboards"
    caught(r.rule_compose_mounts, b, "dashboards/ is not mounted")


def test_compose_mounts_tempo_wal_off_the_volume(b):
    b.tempo["storage"]["trace"]["wal"]["path"] = "/tmp/wal"
    caught(r.rule_compose_mounts, b, "tempo's wal path /tmp/wal")


# --------------------------------------------------------------------------- compose_health

def test_compose_health_waits_on_no_healthcheck(b):
    del svc(b, "redis")["healthcheck"]
    caught(r.rule_compose_health, b, "waits for redis to be healthy")


def test_compose_health_image_healthcheck_counts(b):
    replace_ins(b, "HEALTHCHECK", lambda c: None)
    assert r.run(r.rule_compose_health, b) == []  # the replicas' own healthcheck still stands
    del svc(b, "sessiongate-1")["healthcheck"]
    caught(r.rule_compose_health, b, "waits for sessiongate-1 to be healthy")


# --------------------------------------------------------------------------- telemetry_wiring

def test_telemetry_exporter_port(b):
    b.otel["exporters"]["otlp/tempo"]["endpoint"] = "tempo:4318"
    caught(r.rule_telemetry_wiring, b, "port 4318 is not tempo's OTLP gRPC port 4317")


def test_telemetry_exporter_host(b):
    b.otel["exporters"]["otlp/tempo"]["endpoint"] = "jaeger:4317"
    problems = caught(r.rule_telemetry_wiring, b, "'jaeger' is not a compose service")
    assert any("no collector pipeline exports to the tempo" in p for p in problems)


def test_telemetry_datasource_port(b):
    for ds in b.datasources:
        if ds["type"] == "prometheus":
            ds["url"] = "http://prometheus:9091"
    caught(r.rule_telemetry_wiring, b, "port 9091 is not prometheus's 9090")


# --------------------------------------------------------------------------- dockerfile_context

def test_dockerfile_context_declared_bench_not_copied(b):
    replace_ins(b, "COPY", lambda c: None if c.value[0] == "benches" else c)
    caught(r.rule_dockerfile_context, b, "declares benches/", "does not COPY")


def test_dockerfile_context_copy_source_missing(b):
    replace_ins(b, "COPY", lambda c: c._replace(value=("assets", "./assets")) if c.value[0] == "benches" else c)
    caught(r.rule_dockerfile_context, b, "COPY assets: not in the build context")


def test_dockerfile_context_dockerignore_excludes_a_copy(b):
    b.dockerignore.append("benches/")
    caught(r.rule_dockerfile_context, b, "COPY benches: excluded by .dockerignore")


def test_dockerfile_context_rust_too_old_for_the_edition(b):
    replace_ins(b, "FROM", lambda c: c._replace(value=("rust:1.80.0-bookworm",) + c.value[1:])
                if c.value[0].startswith("rust:") else c)
    caught(r.rule_dockerfile_context, b, "rust:1.80.0-bookworm is older than Rust 1.85")


# --------------------------------------------------------------------------- runtime_runs_binary

def test_runtime_binary_needs_a_library_the_image_lacks(b):
    b.ldd = lambda p: "\tlinux-vdso.so.1 (0x0)\n\tlibssl.so.3 => /lib/libssl.so.3 (0x0)\n\tlibc.so.6 => /lib/libc.so.6 (0x0)\n"
    caught(r.rule_runtime_runs_binary, b, "needs ['libssl']")


def test_runtime_older_debian_than_the_builder(b):
    replace_ins(b, "FROM", lambda c: c._replace(value=("gcr.io/distroless/cc-debian11:nonroot",) + c.value[1:])
                if "distroless" in c.value[0] else c)
    caught(r.rule_runtime_runs_binary, b, "builder Debian 12 is newer than runtime Debian 11")


def test_runtime_distroless_without_libgcc(b):
    replace_ins(b, "FROM", lambda c: c._replace(value=("gcr.io/distroless/static-debian12:nonroot",) + c.value[1:])
                if "distroless" in c.value[0] else c)
    caught(r.rule_runtime_runs_binary, b, "distroless static lacks libgcc_s")


# --------------------------------------------------------------------------- identity

def test_identity_pod_uid_differs_from_image_user(b):
    r.container(b)["securityContext"]["runAsUser"] = 1000
    caught(r.rule_identity, b, "runs as uid 1000", "USER is 65532")


def test_identity_image_tag_not_the_crate_version(b):
    r.container(b)["image"] = "ghcr.io/example/sessiongate:0.2.0"
    caught(r.rule_identity, b, "k8s: image ghcr.io/example/sessiongate:0.2.0")


# --------------------------------------------------------------------------- prometheusrule

def test_prometheusrule_drift(b):
    r.kind(b, "PrometheusRule")["spec"]["groups"][0]["rules"].pop()
    caught(r.rule_prometheusrule, b, "--generate")


# --------------------------------------------------------------------------- kustomization_complete

def test_kustomization_misses_a_manifest(b, tmp_path):
    shutil.copytree(ROOT / "deploy" / "k8s", tmp_path / "deploy" / "k8s")
    (tmp_path / "deploy" / "k8s" / "networkpolicy.yaml").write_text("kind: NetworkPolicy\n")
    b.root = tmp_path
    caught(r.rule_kustomization_complete, b, "networkpolicy.yaml is not in kustomization.yaml")


# --------------------------------------------------------------------------- check_deploy's own steps

def copy_deploy(tmp_path: Path) -> Path:
    shutil.copytree(ROOT / "deploy", tmp_path / "deploy", symlinks=True)
    return tmp_path


def test_nginx_t_passes_and_resolves_only_compose_services(tmp_path, shipped):
    root = copy_deploy(tmp_path)
    services = sorted(shipped.compose["services"])
    assert "compose services" in check_deploy.nginx_t(root, services)
    conf = root / "deploy" / "nginx" / "nginx.conf"
    conf.write_text(conf.read_text().replace("server sessiongate-2:8080", "server sessiongate-3:8080"))
    with pytest.raises(check_deploy.Fail, match="host not found in upstream"):
        check_deploy.nginx_t(root, services)


def test_nginx_t_catches_a_bad_directive(tmp_path, shipped):
    root = copy_deploy(tmp_path)
    conf = root / "deploy" / "nginx" / "nginx.conf"
    conf.write_text(conf.read_text().replace("proxy_next_upstream_tries 2;", "proxy_next_upstream_tries two;"))
    with pytest.raises(check_deploy.Fail, match="invalid number in .*nginx.conf:93"):
        check_deploy.nginx_t(root, sorted(shipped.compose["services"]))


def test_compose_config_fails_on_a_variable_without_default(tmp_path):
    root = copy_deploy(tmp_path)
    compose = root / "deploy" / "compose.yaml"
    compose.write_text(compose.read_text().replace("${GRAFANA_ADMIN_PASSWORD:-admin}", "${GRAFANA_ADMIN_PASSWORD}"))
    with pytest.raises(check_deploy.Fail, match="GRAFANA_ADMIN_PASSWORD"):
        check_deploy.compose_config(root)

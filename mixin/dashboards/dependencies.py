"""Dependencies: the session store (memory or Redis) and the agent backend."""

from __future__ import annotations

from config import Config
from grafana import Alert, Q, Row, dash_sel, stat, timeseries

SLUG = "dependencies"
TITLE = "Dependencies"
DESCRIPTION = "The session store (memory or Redis) and the agent backend: availability, latency, throughput and errors."

STORE = Alert("SessiongateStoreUnavailable", "store-unavailable")


def items(c: Config) -> list:
    f = lambda *extra: dash_sel(c, *extra)  # noqa: E731

    def rate(metric: str, *extra: str) -> str:
        return f"rate({metric}{f(*extra)}[$__rate_interval])"

    agent_count = "sessiongate_agent_query_duration_seconds_count"
    agent_bucket = "sessiongate_agent_query_duration_seconds_bucket"
    store_bucket = "sessiongate_store_operation_duration_seconds_bucket"
    not_ok = 'outcome!="ok"'
    agent_error_ratio = f"(sum({rate(agent_count, not_ok)}) or vector(0)) / sum({rate(agent_count)})"

    def agent_q(q: str) -> str:
        return f"histogram_quantile({q}, sum by (le, tool_set) ({rate(agent_bucket)}))"

    def store_q(q: str) -> str:
        return f"histogram_quantile({q}, sum by (le, backend, operation) ({rate(store_bucket)}))"

    return [
        stat(
            "Store availability",
            "Whether every selected replica can reach its session store (min across replicas). DOWN means "
            "session requests are failing with 503.",
            "none",
            [Q(f"min(sessiongate_store_up{f()})", "store up")],
            thresholds=[("red", None), ("green", 1)],
            mappings=[
                {
                    "type": "value",
                    "options": {
                        "0": {"text": "DOWN", "color": "red", "index": 0},
                        "1": {"text": "UP", "color": "green", "index": 1},
                    },
                }
            ],
            color_mode="background",
            graph_mode="none",
            alerts=(STORE,),
        ),
        stat(
            "Store errors",
            "Store operations failing per second. Should be 0.",
            "ops",
            [Q(f"sum({rate('sessiongate_store_errors_total')})", "errors")],
            thresholds=[("green", None), ("red", 0.001)],
            alerts=(STORE,),
        ),
        stat(
            "Agent error ratio",
            "Share of agent calls that ended in error or timeout. Above a few percent is bad.",
            "percentunit",
            [Q(agent_error_ratio, "error ratio")],
            decimals=2,
            thresholds=[("green", None), ("orange", 0.01), ("red", 0.05)],
        ),
        stat(
            "Agent p99 latency",
            "99th percentile of agent call duration, all tool sets. Compare with the configured agent "
            "timeout: close to it means timeouts are imminent.",
            "s",
            [Q(f"histogram_quantile(0.99, sum by (le) ({rate(agent_bucket)}))", "p99")],
        ),
        Row(
            "Session store",
            [
                timeseries(
                    "Store availability by backend",
                    "1 when every selected replica can reach the store, 0 when at least one cannot (min "
                    "across replicas). Any dip to 0 means 503s for session requests.",
                    "none",
                    [Q(f"min by (backend) (sessiongate_store_up{f()})", "{{backend}}")],
                    decimals=0,
                    max=1,
                    thresholds=[("red", None), ("green", 1)],
                    threshold_line=True,
                    alerts=(STORE,),
                ),
                timeseries(
                    "Store operation rate",
                    "Store operations per second by backend and operation. A drop to zero while traffic "
                    "continues means the store is unreachable.",
                    "ops",
                    [Q(f"sum by (backend, operation) ({rate('sessiongate_store_operation_duration_seconds_count')})",
                       "{{backend}} {{operation}}")],
                    legend_table=True,
                ),
                timeseries(
                    "Store latency p50 by operation",
                    "Median store latency by backend and operation. Redis normally answers in well under a "
                    "millisecond; a rising median means network or Redis load.",
                    "s",
                    [Q(store_q("0.5"), "{{backend}} {{operation}}")],
                    legend_table=True,
                ),
                timeseries(
                    "Store latency p99 by operation",
                    "99th percentile store latency by backend and operation. Values approaching the store "
                    "command timeout mean errors are about to follow.",
                    "s",
                    [Q(store_q("0.99"), "{{backend}} {{operation}}")],
                    legend_table=True,
                ),
                timeseries(
                    "Store errors by operation",
                    "Failed store operations per second by backend and operation. Should be 0; any "
                    "sustained value means Redis is down, slow (timeouts) or refusing commands.",
                    "ops",
                    [Q(f"sum by (backend, operation) ({rate('sessiongate_store_errors_total')})",
                       "{{backend}} {{operation}}")],
                    legend_table=True,
                    alerts=(STORE,),
                ),
                timeseries(
                    "Redis Cluster slot-map refreshes by outcome",
                    "Redis Cluster only (always 0 on one Redis). A failover looks like this: store errors "
                    "for the failed master's slots, refreshes by the second with outcome unchanged while the "
                    "cluster elects a replica, one changed when the replica is promoted, then errors stop. "
                    "Refreshes that keep failing, or errors that outlast a changed refresh, mean the cluster "
                    "did not heal: see the store-unavailable runbook.",
                    "ops",
                    [Q(f"sum by (outcome) ({rate('sessiongate_store_topology_refreshes_total')})", "{{outcome}}")],
                    legend_table=True,
                    alerts=(STORE,),
                ),
            ],
        ),
        Row(
            "Agent",
            [
                timeseries(
                    "Agent latency p50 / p95 / p99 by tool set",
                    "Agent call duration quantiles per tool set (all outcomes). p99 near the agent timeout "
                    "means timeouts are imminent.",
                    "s",
                    [
                        Q(agent_q("0.5"), "p50 {{tool_set}}"),
                        Q(agent_q("0.95"), "p95 {{tool_set}}"),
                        Q(agent_q("0.99"), "p99 {{tool_set}}"),
                    ],
                    legend_table=True,
                ),
                timeseries(
                    "Agent calls by outcome",
                    "Agent calls per second by outcome (ok, error, timeout). Any error or timeout line "
                    "rising is bad.",
                    "ops",
                    [Q(f"sum by (outcome) ({rate(agent_count)})", "{{outcome}}")],
                ),
                timeseries(
                    "Agent error ratio",
                    "Share of agent calls that ended in error or timeout, overall and per tool set. Should "
                    "be near 0; above a few percent is bad.",
                    "percentunit",
                    [
                        Q(agent_error_ratio, "all tool sets"),
                        Q(
                            f"(sum by (tool_set) ({rate(agent_count, not_ok)}) or 0 * sum by (tool_set) "
                            f"({rate(agent_count)})) / sum by (tool_set) ({rate(agent_count)})",
                            "{{tool_set}}",
                        ),
                    ],
                    w=24,
                    thresholds=[("green", None), ("red", 0.05)],
                    threshold_line=True,
                ),
            ],
        ),
    ]

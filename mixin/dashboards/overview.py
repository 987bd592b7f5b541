"""Service overview: the SLOs (burn rates and budget left, on the recording
rules the paging alerts read), traffic, errors, latency and saturation."""

from __future__ import annotations

from alerts import PAGE_WINDOWS
from config import Config, number
from grafana import Alert, Q, Row, dash_sel, env_legend, rule_sel, stat, timeseries
from rules import availability_record, latency_record

SLUG = "overview"
TITLE = "Service overview"
DESCRIPTION = (
    "Service-level objectives (burn rates, error budget left), traffic, errors, latency and "
    "saturation of sessiongate (RED + USE)."
)

AVAILABILITY = Alert("SessiongateAvailabilityBudgetBurn", "availability-budget-burn")
LATENCY = Alert("SessiongateLatencyBudgetBurn", "latency-budget-burn")
TARGET_DOWN = Alert("SessiongateTargetDown", "target-down")
SHED = Alert("SessiongateRequestsShed", "requests-shed")


def _num(d) -> int | float:
    """A threshold as JSON writes it: 6, not 6.0."""
    return int(d) if d == int(d) else float(d)


def _slo_panels(c: Config, name: str, record, budget, alert: Alert, what: str) -> list:
    env = env_legend(c)
    sel = rule_sel(c)
    b = number(budget)
    pct = number(budget * 100)
    panels = []
    for w in PAGE_WINDOWS:
        factor = number(w.factor(c))
        panels.append(
            timeseries(
                f"{name} burn rate, {w.long} and {w.short} windows",
                f"How fast the {name.lower()} error budget ({pct}% of {what} over {c.slo.period_words}) "
                f"burns, over the last {w.long} and the last {w.short}: 1 spends exactly the budget in "
                f"{c.slo.period_words}. Both above {factor} (the line) for two minutes pages "
                f"({alert.name}, severity page).",
                "suffix:×",
                [
                    Q(f"{record(w.long)}{sel} / {b}", f"{env} {w.long}"),
                    Q(f"{record(w.short)}{sel} / {b}", f"{env} {w.short}"),
                ],
                w=9,
                thresholds=[("green", None), ("red", _num(w.factor(c)))],
                threshold_line=True,
                alerts=(alert,),
            )
        )
    panels.append(
        stat(
            f"{name} error budget left ({c.slo.period})",
            f"The share of the {name.lower()} error budget over {c.slo.period_words} ({pct}% of {what}) not yet "
            "spent, per environment. Below 0 the objective is missed over the period.",
            "percentunit",
            [Q(f"1 - {record(c.slo.period)}{sel} / {b}", env)],
            w=6,
            h=8,
            decimals=1,
            thresholds=[("red", None), ("orange", 0), ("green", 0.25)],
            text_mode="value_and_name",
            alerts=(alert,),
        )
    )
    return panels


def items(c: Config) -> list:
    f = lambda *extra: dash_sel(c, *extra)  # noqa: E731
    count = "http_server_request_duration_seconds_count"
    bucket = "http_server_request_duration_seconds_bucket"
    v1 = 'http_route=~"/v1/.*"'
    five_xx = 'http_response_status_code=~"5.."'
    four_xx = 'http_response_status_code=~"4.."'
    not_499 = 'http_response_status_code!="499"'
    ratio_5xx = (
        f'(sum(rate({count}{f(v1, five_xx)}[$__rate_interval])) or vector(0))'
        f" / sum(rate({count}{f(v1)}[$__rate_interval]))"
    )
    ratio_4xx = (
        f'(sum(rate({count}{f(v1, four_xx, not_499)}'
        "[$__rate_interval])) or vector(0))"
        f" / sum(rate({count}{f(v1)}[$__rate_interval]))"
    )

    def quantile(q: str, by: str = "", *extra: str) -> str:
        labels = "le" + (f", {by}" if by else "")
        return f"histogram_quantile({q}, sum by ({labels}) (rate({bucket}{f(*extra)}[$__rate_interval])))"

    return [
        stat(
            "Build info",
            "Replicas running each version, revision and store backend (the value is the replica count). "
            "More than one row outside a rollout means a mixed fleet.",
            "none",
            [Q(f"count by (version, revision, store_backend) (sessiongate_build_info{f()})",
               "{{version}} ({{revision}}) store={{store_backend}}")],
            w=8,
            color_mode="none",
            graph_mode="none",
            text_mode="value_and_name",
        ),
        stat(
            "Uptime",
            "Time since each replica started. Low values mean a recent restart; values that keep "
            "resetting mean a crash loop.",
            "s",
            [Q(f"time() - process_start_time_seconds{f()}", "{{instance}}")],
            thresholds=[("orange", None), ("green", 600)],
            graph_mode="none",
        ),
        stat(
            "Replicas",
            "Replicas reporting sessiongate_build_info. Fewer than expected means replicas are down or "
            "not scraped.",
            "none",
            [Q(f"count(sessiongate_build_info{f()})", "replicas")],
            w=2,
            graph_mode="none",
            alerts=(TARGET_DOWN,),
        ),
        stat(
            "Request rate",
            "All HTTP requests per second across the selected replicas. A sudden drop to zero is as bad "
            "as a spike.",
            "reqps",
            [Q(f"sum(rate({count}{f()}[$__rate_interval]))", "total")],
            w=4,
        ),
        stat(
            "5xx ratio (/v1)",
            "Share of /v1 responses that are 5xx. Should be ~0; above 1% is bad.",
            "percentunit",
            [Q(ratio_5xx, "5xx ratio")],
            w=4,
            decimals=2,
            thresholds=[("green", None), ("orange", 0.001), ("red", 0.01)],
            alerts=(AVAILABILITY,),
        ),
        Row(
            "Service-level objectives",
            _slo_panels(c, "Availability", availability_record, c.slo.availability_budget, AVAILABILITY,
                        "/v1 requests answered with a 5xx")
            + _slo_panels(c, "Latency", latency_record, c.slo.latency_budget, LATENCY,
                          f"/v1 requests slower than {number(c.slo.latency_threshold_seconds * 1000)} ms"),
        ),
        Row(
            "Traffic and errors",
            [
                timeseries(
                    "Request rate by route",
                    "Requests per second by route template, and the total. Watch for sudden drops (clients "
                    "cut off) or spikes (retry storms, abuse).",
                    "reqps",
                    [
                        Q(f"sum by (http_route) (rate({count}{f()}[$__rate_interval]))", "{{http_route}}"),
                        Q(f"sum(rate({count}{f()}[$__rate_interval]))", "total"),
                    ],
                    legend_table=True,
                ),
                timeseries(
                    "Request rate by status code",
                    "Requests per second by response status. 5xx should be absent; a rise in 401/403 "
                    "points at auth, 429 at rate limits or the session cap, 503 at the store or at "
                    "shedding.",
                    "reqps",
                    [Q(f"sum by (http_response_status_code) (rate({count}{f()}[$__rate_interval]))",
                       "{{http_response_status_code}}")],
                    legend_table=True,
                ),
                timeseries(
                    "Error ratio: 5xx / all (/v1)",
                    "Share of /v1 requests answered with a 5xx (503 = store unavailable or overloaded). "
                    "Should be ~0; sustained values above 1% are bad.",
                    "percentunit",
                    [Q(ratio_5xx, "5xx ratio")],
                    thresholds=[("green", None), ("red", 0.01)],
                    threshold_line=True,
                    alerts=(AVAILABILITY,),
                ),
                timeseries(
                    "4xx ratio (/v1)",
                    "Share of /v1 requests answered with a 4xx (auth failures, rate limits, bad input, "
                    "unknown sessions). A jump usually means a broken client or a too-strict policy. "
                    "Requests the client abandoned (499) are left out: they are not the client's errors.",
                    "percentunit",
                    [Q(ratio_4xx, "4xx ratio")],
                ),
            ],
        ),
        Row(
            "Latency",
            [
                timeseries(
                    "Latency p50 / p95 / p99 (all /v1 routes)",
                    "Request latency quantiles over all /v1 routes. This service normally answers in a "
                    "few ms; a p99 in the hundreds of ms is bad.",
                    "s",
                    [
                        Q(quantile("0.5", "", v1), "p50"),
                        Q(quantile("0.95", "", v1), "p95"),
                        Q(quantile("0.99", "", v1), "p99"),
                    ],
                    alerts=(LATENCY,),
                ),
                *(
                    timeseries(
                        f"Latency {name} by route",
                        description,
                        "s",
                        [Q(quantile(q, "http_route"), "{{http_route}}")],
                        legend_table=True,
                    )
                    for name, q, description in [
                        ("p50", "0.5", "Median request latency per route template. A rising median means "
                         "every request is slower (store or CPU trouble)."),
                        ("p95", "0.95", "95th percentile latency per route template. Queries include the "
                         "agent call, so they are naturally slower than session CRUD."),
                        ("p99", "0.99", "99th percentile latency per route template. Spikes on session "
                         "routes usually come from a slow store; on queries from the agent."),
                    ]
                ),
            ],
        ),
        Row(
            "Saturation",
            [
                timeseries(
                    "Active requests (in flight)",
                    "Requests being served right now, per replica. Growth without more traffic means "
                    "requests are stuck (slow store or agent); at server.max_in_flight, more are shed.",
                    "short",
                    [Q(f"sum by (instance) (http_server_active_requests{f()})", "{{instance}}")],
                ),
                timeseries(
                    "Requests shed (503 OVERLOADED)",
                    "Requests per second answered 503 OVERLOADED at once, without being served, because "
                    "server.max_in_flight requests were in flight on that replica. Should be 0; "
                    "sustained shedding means too little capacity for the traffic.",
                    "reqps",
                    [Q(f"sum by (instance) (rate(sessiongate_requests_shed_total{f()}[$__rate_interval]))",
                       "{{instance}}")],
                    thresholds=[("green", None), ("red", 1)],
                    threshold_line=True,
                    alerts=(SHED,),
                ),
                timeseries(
                    "CPU usage",
                    "CPU used per replica (100% = one full core). Sustained use near the core limit means "
                    "the replica is saturated.",
                    "percentunit",
                    [Q(f"rate(process_cpu_seconds_total{f()}[$__rate_interval])", "{{instance}}")],
                    w=8,
                ),
                timeseries(
                    "Resident memory",
                    "Resident memory per replica. Steady growth without more sessions or traffic suggests "
                    "a leak; near the container limit means OOM kills.",
                    "bytes",
                    [Q(f"process_resident_memory_bytes{f()}", "{{instance}}")],
                    w=8,
                ),
                timeseries(
                    "Open file descriptors",
                    "Open fds per replica (sockets included). Steady growth means leaked connections; "
                    "near the fd limit, accepts start failing.",
                    "short",
                    [Q(f"process_open_fds{f()}", "{{instance}}")],
                    w=8,
                ),
            ],
        ),
    ]

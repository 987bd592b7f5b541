"""Alerts. Every one aggregates by the configured labels (plus `instance`
where the trouble is one replica's), so each names its environment; every one
has a runbook (deploy/runbooks/<runbook>.md, linked absolutely through the
config's pattern) and promtool tests (deploy/prometheus/tests/).

Severity `page` wakes someone; `ticket` can wait for working hours.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from config import Config, number
from rules import availability_record, latency_record

COUNT = "http_server_request_duration_seconds_count"
V1 = 'http_route=~"/v1/.*"'


@dataclass(frozen=True)
class BurnWindow:
    """Alert when `share` of the period's budget goes within `long`, checked
    over `short` too (so the alert stops soon after the burning stops)."""

    long: str
    short: str
    share: Decimal

    def factor(self, c: Config) -> Decimal:
        hours = {"m": Decimal(1) / 60, "h": Decimal(1), "d": Decimal(24)}
        long_hours = Decimal(self.long[:-1]) * hours[self.long[-1]]
        return (self.share * c.slo.period_hours / long_hours).normalize()


# Multi-window, multi-burn-rate (Google SRE workbook, ch. 5): 2% of the budget
# in 1h or 5% in 6h pages; 10% in 1d or in 3d makes a ticket. Over 30 days the
# burn rates are 14.4, 6, 3 and 1.
PAGE_WINDOWS = (BurnWindow("1h", "5m", Decimal("0.02")), BurnWindow("6h", "30m", Decimal("0.05")))
TICKET_WINDOWS = (BurnWindow("1d", "2h", Decimal("0.10")), BurnWindow("3d", "6h", Decimal("0.10")))
BURNS = (("page", "2m", PAGE_WINDOWS), ("ticket", "15m", TICKET_WINDOWS))


def where(c: Config) -> str:
    """How an annotation names the environment: `{{ $labels.job }} in
    {{ $labels.cluster }}/{{ $labels.namespace }}` for the default labels."""
    others = [f"{{{{ $labels.{label} }}}}" for label in c.aggregation_labels if label != "job"]
    who = "{{ $labels.job }}" if "job" in c.aggregation_labels else "sessiongate"
    return who + (" in " + "/".join(others) if others else "")


def _burn_expr(record, budget: str, windows, c: Config) -> str:
    parts = []
    for w in windows:
        f = number(w.factor(c))
        parts.append(
            "(\n"
            f"  {record(w.long)} > ({f} * {budget})\n"
            "  and\n"
            f"  {record(w.short)} > ({f} * {budget})\n"
            ")"
        )
    return "\nor\n".join(parts) + "\n"


def _rule(name, expr, for_, severity, summary, description, runbook, c: Config) -> dict:
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity},
        "annotations": {
            "summary": summary,
            "description": description,
            "runbook_url": c.runbook_url(runbook),
        },
    }


def slo_alerts(c: Config) -> list[dict]:
    at = where(c)
    a_budget = number(c.slo.availability_budget)
    a_pct = number(c.slo.availability_budget * 100)
    l_budget = number(c.slo.latency_budget)
    l_pct = number(c.slo.latency_budget * 100)
    ms = number(c.slo.latency_threshold_seconds * 1000)
    period = c.slo.period_words
    # (name, its recording rule, budget, what a burn is, the description's
    # end when fast, when slow)
    objectives = [
        (
            "availability", availability_record, a_budget,
            "{{ $value | humanizePercentage }} of /v1 requests of " + at + " are answered with a 5xx",
            f"; at this rate the error budget of {period} ({a_pct}%) is gone within days.",
            f", above the {a_pct}% the objective allows over {period}.",
        ),
        (
            "latency", latency_record, l_budget,
            "{{ $value | humanizePercentage }} of /v1 requests (agent queries excepted) of " + at
            + f" take longer than {ms} ms",
            f"; the objective allows {l_pct}%.",
            f", above the {l_pct}% the objective allows.",
        ),
    ]
    out = []
    for name, record, budget, what, fast_end, slow_end in objectives:
        for severity, for_, windows in BURNS:
            fast = severity == "page"
            out.append(
                _rule(
                    f"Sessiongate{name.capitalize()}BudgetBurn",
                    _burn_expr(record, budget, windows, c),
                    for_,
                    severity,
                    f"{at} is {'burning' if fast else 'slowly burning'} its {name} error budget"
                    + (" fast" if fast else ""),
                    what + (fast_end if fast else slow_end),
                    f"{name}-budget-burn",
                    c,
                )
            )
    return out


def component_alerts(c: Config) -> list[dict]:
    at = where(c)
    by = c.by()
    by_instance = c.by("instance")
    s = c.sel
    store_errors = f"sessiongate_ratelimit_store_errors_total{s()}"
    decisions = f"sessiongate_ratelimit_decisions_total{s()}"
    auth = "sessiongate_auth_failures_total" + s('reason!="forbidden"')
    requests_v1 = COUNT + s(V1)
    cap = f"sessiongate_session_limit_hits_total{s()}"
    jwks_error = "sessiongate_jwks_refreshes_total" + s('outcome="error"')
    jwks_ok = "sessiongate_jwks_refreshes_total" + s('outcome="ok"')
    shed = f"sessiongate_requests_shed_total{s()}"
    requests = f"{COUNT}{s()}"
    return [
        _rule(
            "SessiongateStoreUnavailable",
            f"min {c.by('instance', 'backend')} (sessiongate_store_up{s()}) == 0\n",
            "1m",
            "page",
            "sessiongate {{ $labels.instance }} (" + at + ") cannot reach its {{ $labels.backend }} session store",
            "Session requests on {{ $labels.instance }} are answered 503 STORE_UNAVAILABLE "
            '(/readyz says "store": "down"). It recovers by itself within seconds of the store answering again.',
            "store-unavailable",
            c,
        ),
        # Over 1% of the checks of the last 5 minutes, and more than ten of
        # them: one timed-out command (a failover blip) is not a ticket. A
        # failed check counts no decision, so the share is of errors and
        # decisions.
        _rule(
            "SessiongateRateLimiterStoreErrors",
            "(\n"
            f"  sum {by_instance} (rate({store_errors}[5m]))\n"
            "  /\n"
            "  (\n"
            f"    sum {by_instance} (rate({store_errors}[5m]))\n"
            "    +\n"
            "    (\n"
            f"      sum {by_instance} (rate({decisions}[5m]))\n"
            "      or\n"
            f"      0 * sum {by_instance} (rate({store_errors}[5m]))\n"
            "    )\n"
            "  )\n"
            ") > 0.01\n"
            "and\n"
            f"sum {by_instance} (increase({store_errors}[5m])) > 10\n",
            "2m",
            "ticket",
            "sessiongate {{ $labels.instance }} (" + at + "): the rate limiter cannot reach its store",
            "{{ $value | humanizePercentage }} of the rate-limit checks on {{ $labels.instance }} are decided "
            'by rate_limit.on_store_error instead of by the counters: with "allow" (the default) '
            'limits are not enforced (failing open); with "deny" clients get 503.',
            "ratelimiter-store-errors",
            c,
        ),
        _rule(
            "SessiongateAuthFailureSpike",
            "(\n"
            f"  sum {by} (rate({auth}[5m]))\n"
            "  /\n"
            f"  sum {by} (rate({requests_v1}[5m]))\n"
            ") > 0.2\n"
            "and\n"
            f"sum {by} (rate({auth}[5m])) > 1\n",
            "10m",
            "ticket",
            "More than 20% of the requests of " + at + " fail authentication",
            "{{ $value | humanizePercentage }} of /v1 requests to " + at + " are refused with 401: "
            "an identity-provider change (keys, issuer, audience), a broken client release, or "
            "credential stuffing.",
            "auth-failure-spike",
            c,
        ),
        # Every JWKS fetch of the last 15 minutes failed (a failed fetch is
        # retried after auth.jwks_cooldown, so a JWKS endpoint down for that
        # long fails many): the last good keys are still used, but keys the
        # identity provider rotates in are not picked up.
        _rule(
            "SessiongateJwksRefreshFailing",
            f"sum {by_instance} (increase({jwks_error}[15m])) > 0\n"
            "unless\n"
            f"sum {by_instance} (increase({jwks_ok}[15m])) > 0\n",
            "5m",
            "ticket",
            "sessiongate {{ $labels.instance }} (" + at + ") cannot refresh its JWKS",
            "Every JWKS fetch of {{ $labels.instance }} in the last 15 minutes failed "
            "({{ $value | printf \"%.0f\" }} of them). It keeps verifying tokens with the last good keys, "
            "but a key the identity provider rotates in is unknown to it: tokens signed with it get 401.",
            "jwks-refresh-failing",
            c,
        ),
        # Requests past server.max_in_flight are answered 503 OVERLOADED at
        # once. A moment of it is the bound doing its job; more than 1% of
        # the requests (and more than one a second) for ten minutes is too
        # little capacity for the traffic.
        _rule(
            "SessiongateRequestsShed",
            "(\n"
            f"  sum {by} (rate({shed}[5m]))\n"
            "  /\n"
            f"  sum {by} (rate({requests}[5m]))\n"
            ") > 0.01\n"
            "and\n"
            f"sum {by} (rate({shed}[5m])) > 1\n",
            "10m",
            "ticket",
            at + " is shedding requests: more are in flight than server.max_in_flight",
            "{{ $value | humanizePercentage }} of the requests to " + at + " are answered "
            "503 OVERLOADED without being served: the replicas are at their in-flight bound.",
            "requests-shed",
            c,
        ),
        _rule(
            "SessiongateSessionCapHitsSurging",
            f"sum {by} (rate({cap}[10m])) > 0.1\n"
            "and\n"
            f"sum {by} (rate({cap}[10m]))\n"
            f"  > 5 * sum {by} (rate({cap}[1d] offset 10m))\n",
            "10m",
            "ticket",
            "Users of " + at + " are hitting the session cap five times more often than usual",
            '{{ $value | printf "%.2f" }} creates per second find their user at sessions.max_per_user '
            "(rejected or evicting): a client leaking sessions, or a cap set too low.",
            "session-cap-surge",
            c,
        ),
        _rule(
            "SessiongateReaperStalled",
            f"(time() - max {by_instance} (sessiongate_reaper_last_sweep_timestamp_seconds{s()})) > 120\n"
            "or\n"
            f"max {by_instance} (min_over_time(sessiongate_sessions_expired_pending{s()}[10m])) > 1000\n",
            "5m",
            "ticket",
            "sessiongate {{ $labels.instance }} (" + at + "): expired sessions are not being removed",
            "The reaper on {{ $labels.instance }} has not finished a sweep for over two minutes, or "
            "more than 1000 expired sessions have waited for removal for ten minutes. Expired "
            "sessions are already invisible to clients; storage grows and the ended counters lag.",
            "reaper-stalled",
            c,
        ),
        # `up` carries every target label, so a down target names its
        # environment; `absent` (no target at all) can name only the
        # selector's labels.
        _rule(
            "SessiongateTargetDown",
            f"up{s()} == 0 or absent(up{s()})\n",
            "2m",
            "page",
            "{{ if $labels.instance }}Prometheus cannot scrape sessiongate {{ $labels.instance }} (" + at + ")"
            "{{ else }}No sessiongate target is left to scrape ({{ $labels.job }}){{ end }}",
            "{{ if $labels.instance }}The target {{ $labels.instance }} of " + at + " is down or gone: "
            "the process is not running, or /metrics is unreachable.{{ else }}Prometheus has no target "
            "of {{ $labels.job }} at all: every replica is gone from service discovery.{{ end }}",
            "target-down",
            c,
        ),
    ]


def groups(c: Config) -> list[dict]:
    return [
        {"name": "sessiongate-slo", "rules": slo_alerts(c)},
        {"name": "sessiongate-components", "rules": component_alerts(c)},
    ]


def names(c: Config) -> list[str]:
    """Every alert's name, once each."""
    out: list[str] = []
    for g in groups(c):
        for r in g["rules"]:
            if r["alert"] not in out:
                out.append(r["alert"])
    return out


def header(c: Config) -> str:
    return (
        "# GENERATED by mixin/render.py from mixin/config.yaml: edit the mixin, not this file.\n"
        "#\n"
        "# Alerts for sessiongate's targets ({" + c.selector + "}), each aggregated by\n"
        f"# {', '.join(c.aggregation_labels)} (and instance where one replica is in trouble), so\n"
        "# every alert names its environment. Each links its runbook (deploy/runbooks/)\n"
        "# and has promtool tests in tests/. Severity `page` wakes someone; `ticket`\n"
        "# can wait for working hours.\n"
    )

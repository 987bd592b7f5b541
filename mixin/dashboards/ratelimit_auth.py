"""Rate limiting and auth: decisions, 429s by cause, shadow policies, auth
failures, JWKS refreshes and runtime config changes."""

from __future__ import annotations

from config import Config
from grafana import Alert, Q, Row, dash_sel, eq, stat, timeseries

SLUG = "ratelimit-auth"
TITLE = "Rate limiting & auth"
DESCRIPTION = (
    "Rate-limit decisions, 429s by cause, shadow policies, auth failures, JWKS refreshes and runtime config changes."
)

STORE_ERRORS = Alert("SessiongateRateLimiterStoreErrors", "ratelimiter-store-errors")
AUTH = Alert("SessiongateAuthFailureSpike", "auth-failure-spike")
JWKS = Alert("SessiongateJwksRefreshFailing", "jwks-refresh-failing")


def items(c: Config) -> list:
    f = lambda *extra: dash_sel(c, *extra)  # noqa: E731

    def rate(metric: str, *extra: str) -> str:
        return f"rate({metric}{f(*extra)}[$__rate_interval])"

    def increase(metric: str) -> str:
        return f"increase({metric}{f()}[$__rate_interval])"

    count = "http_server_request_duration_seconds_count"
    cap_rejected = f"sum({rate('sessiongate_session_limit_hits_total', eq('action', 'rejected'))})"
    keys = f"sum({rate('sessiongate_idempotency_keys_exhausted_total')})"
    limited = (
        f"clamp_min((sum({rate(count, eq('http_response_status_code', '429'))}) or vector(0))"
        f" - ({cap_rejected} or vector(0)) - ({keys} or vector(0)), 0)"
    )
    decisions = "sessiongate_ratelimit_decisions_total"
    return [
        stat(
            "Rate-limited (429)",
            "Requests answered 429 other than for the session cap, per second: refused by a rate-limit "
            "policy or the per-IP limit (or, rarely, for holding too many idempotency keys). Counted per "
            "request, from the HTTP histogram. Some is normal; a surge means abuse or a policy set too tight.",
            "reqps",
            [Q(limited, "limited")],
        ),
        stat(
            "Session cap rejections (429)",
            "Creates refused because the user is at the session cap, per second. Non-zero only when the "
            "cap policy is reject.",
            "reqps",
            [Q(cap_rejected, "rejected")],
        ),
        stat(
            "Auth failures",
            "Requests refused by authentication or authorisation per second. A jump means a client with a "
            "broken token, a key rotation problem, or probing.",
            "reqps",
            [Q(f"sum({rate('sessiongate_auth_failures_total')})", "auth failures")],
            alerts=(AUTH,),
        ),
        stat(
            "Rate-limit store errors",
            "Rate-limit checks that could not reach the store, per second. Should be 0; while non-zero, "
            "limits fail open or closed per configuration.",
            "ops",
            [Q(f"sum({rate('sessiongate_ratelimit_store_errors_total')})", "errors")],
            thresholds=[("green", None), ("red", 0.001)],
            alerts=(STORE_ERRORS,),
        ),
        Row(
            "Rate limiting",
            [
                timeseries(
                    "Decisions by policy and decision",
                    "Rate-limit decisions per second by policy and outcome (allowed, limited, "
                    "shadow_limited). A limited line rising against its allowed line means that policy is "
                    "biting.",
                    "ops",
                    [Q(f"sum by (policy, decision) ({rate(decisions)})", "{{policy}} {{decision}}")],
                    w=24,
                    legend_table=True,
                ),
                timeseries(
                    "429s by cause: rate limit, session cap, idempotency keys",
                    "Side by side, per request: 429s from the rate limits (policies and per-IP) and 429s "
                    "from the per-user session cap. Tells on-call which mechanism is refusing clients.",
                    "reqps",
                    [Q(limited, "rate limit"), Q(cap_rejected, "session cap"), Q(keys, "idempotency keys")],
                ),
                timeseries(
                    "Rate-limited by policy",
                    "Requests refused per second by each enforcing policy (per_ip is the per-address layer). "
                    "One policy dominating points at its config or at one abusive client. Counted per policy "
                    "check: a request refused by two policies counts once in each.",
                    "reqps",
                    [Q(f"sum by (policy) ({rate(decisions, eq('decision', 'limited'))})",
                       "{{policy}}")],
                ),
                timeseries(
                    "Shadow rejections by policy",
                    "Requests a shadow policy would have refused (they were served). High values mean "
                    "enforcing that policy as configured would hurt clients.",
                    "reqps",
                    [Q(f"sum by (policy) ({rate(decisions, eq('decision', 'shadow_limited'))})",
                       "{{policy}}")],
                    w=8,
                ),
                timeseries(
                    "Per-IP limited",
                    "Requests refused by the per-IP layer, per second. Spikes mean a flood from few "
                    "addresses; a steady level may mean many users behind one NAT or an untrusted proxy.",
                    "reqps",
                    [Q(f"sum({rate(decisions, eq('policy', 'per_ip'), eq('decision', 'limited'))})",
                       "per-IP limited")],
                    w=8,
                ),
                timeseries(
                    "Rate-limit store errors by policy",
                    "Rate-limit checks per second that failed on the store, by policy. Should be 0; non-zero "
                    "means Redis trouble, and limits are not being enforced as usual.",
                    "ops",
                    [Q(f"sum by (policy) ({rate('sessiongate_ratelimit_store_errors_total')})", "{{policy}}")],
                    w=8,
                    alerts=(STORE_ERRORS,),
                ),
            ],
        ),
        Row(
            "Authentication and configuration",
            [
                timeseries(
                    "Auth failures by reason",
                    "Refused credentials per second by reason. expired: clients not refreshing tokens; "
                    "bad_signature/unknown_kid: key rotation or JWKS trouble; forbidden: missing role; "
                    "bad_api_key: a revoked or mistyped key.",
                    "reqps",
                    [Q(f"sum by (reason) ({rate('sessiongate_auth_failures_total')})", "{{reason}}")],
                    legend_table=True,
                    alerts=(AUTH,),
                ),
                timeseries(
                    "JWKS refreshes by outcome",
                    "JWKS fetches in each rate window, by outcome. Any error means new signing keys may not "
                    "be picked up (then unknown_kid failures follow).",
                    "short",
                    [Q(f"sum by (outcome) ({increase('sessiongate_jwks_refreshes_total')})", "{{outcome}}")],
                    w=6,
                    alerts=(JWKS,),
                ),
                timeseries(
                    "Runtime config changes by source",
                    "Runtime config changes in each rate window: api (an admin PATCH), replica (picked up "
                    "from another replica), startup. Correlate unexpected changes with behaviour changes.",
                    "short",
                    [Q(f"sum by (source) ({increase('sessiongate_config_changes_total')})", "{{source}}")],
                    w=6,
                ),
            ],
        ),
    ]

"""Sessions: live sessions, creates, ends, lifetimes, migrations, the
per-user cap and the reaper."""

from __future__ import annotations

from config import Config
from grafana import Alert, Q, Row, dash_sel, heatmap, stat, timeseries

SLUG = "sessions"
TITLE = "Sessions"
DESCRIPTION = "Session lifecycle: live sessions, creates, ends, lifetimes, migrations, the per-user cap and the reaper."

CAP = Alert("SessiongateSessionCapHitsSurging", "session-cap-surge")
REAPER = Alert("SessiongateReaperStalled", "reaper-stalled")


def items(c: Config) -> list:
    f = lambda *extra: dash_sel(c, *extra)  # noqa: E731

    def rate(metric: str, *extra: str) -> str:
        return f"rate({metric}{f(*extra)}[$__rate_interval])"

    def lifetime(q: str) -> str:
        return f"histogram_quantile({q}, sum by (le, reason) ({rate('sessiongate_session_lifetime_seconds_bucket')}))"

    active_total = f"sum(max by (tool_set) (sessiongate_sessions_active{f()}))"
    return [
        stat(
            "Active sessions (global)",
            "Live sessions across all tool sets. On Redis every replica reports the same global figure, so "
            "it is taken with max across replicas. A sharp drop means mass expiry or revocation; unbounded "
            "growth means sessions are not ending.",
            "short",
            [Q(active_total, "active")],
        ),
        stat(
            "Sessions created",
            "Sessions created per second, all tool sets. Zero during business hours means clients cannot "
            "create sessions.",
            "ops",
            [Q(f"sum({rate('sessiongate_sessions_created_total')})", "created")],
        ),
        stat(
            "Expired, not yet reaped",
            "Sessions past their expiry that the reaper has not removed yet (max across replicas). Should "
            "stay near 0; a growing value means the reaper is falling behind.",
            "short",
            [Q(f"max(sessiongate_sessions_expired_pending{f()})", "pending")],
            thresholds=[("green", None), ("orange", 100), ("red", 1000)],
            alerts=(REAPER,),
        ),
        stat(
            "Time since last reaper sweep",
            "Age of the oldest last-sweep among the selected replicas. The reaper runs every few seconds "
            "at most; tens of seconds or more means a reaper is stuck.",
            "s",
            [Q(f"time() - min(sessiongate_reaper_last_sweep_timestamp_seconds{f()})", "since last sweep")],
            thresholds=[("green", None), ("orange", 30), ("red", 120)],
            alerts=(REAPER,),
        ),
        Row(
            "Live sessions",
            [
                timeseries(
                    "Active sessions by tool set",
                    "Live sessions per tool set (max across replicas: on Redis each replica reports the "
                    "global figure), and their total. Unbounded growth means sessions are not ending.",
                    "short",
                    [
                        Q(f"max by (tool_set) (sessiongate_sessions_active{f()})", "{{tool_set}}"),
                        Q(active_total, "total"),
                    ],
                    legend_table=True,
                ),
                timeseries(
                    "Sessions created by tool set",
                    "Creates per second per tool set. A drop to zero while traffic continues means creates "
                    "are failing (see status codes and the cap).",
                    "ops",
                    [Q(f"sum by (tool_set) ({rate('sessiongate_sessions_created_total')})", "{{tool_set}}")],
                ),
                timeseries(
                    "Sessions ended by reason",
                    "Ends per second by reason: deleted (by the client), expired (idle or max age), evicted "
                    "(by the per-user cap), revoked (by an admin). A surge of evicted or revoked is worth a "
                    "look.",
                    "ops",
                    [Q(f"sum by (reason) ({rate('sessiongate_sessions_ended_total')})", "{{reason}}")],
                ),
                timeseries(
                    "Session cap hits by action",
                    "Creates that found the user at the session cap: rejected (429 to the client) or evicted "
                    "(the least recently active session ended). A rise in rejected means users are blocked.",
                    "ops",
                    [Q(f"sum by (action) ({rate('sessiongate_session_limit_hits_total')})", "{{action}}")],
                    alerts=(CAP,),
                ),
            ],
        ),
        Row(
            "Lifetimes and activity",
            [
                timeseries(
                    "Session lifetime p50 / p90 / p99 by reason",
                    "How long sessions lived before ending, by end reason. Very short lifetimes for evicted "
                    "sessions mean users hit the cap constantly.",
                    "s",
                    [
                        Q(lifetime("0.5"), "p50 {{reason}}"),
                        Q(lifetime("0.9"), "p90 {{reason}}"),
                        Q(lifetime("0.99"), "p99 {{reason}}"),
                    ],
                    legend_table=True,
                ),
                heatmap(
                    "Session lifetime distribution",
                    "Distribution of session lifetimes over time, all end reasons (cells: sessions ended per "
                    "second in each bucket). A shift to the bottom means sessions end much sooner than usual.",
                    "ops",
                    [Q(f"sum by (le) ({rate('sessiongate_session_lifetime_seconds_bucket')})", "{{le}}",
                       format="heatmap")],
                ),
                timeseries(
                    "Migrations by tool set",
                    "Sessions migrated in place per second, from -> to tool set. Informational; a sudden "
                    "flood may mean a client loop.",
                    "ops",
                    [Q(f"sum by (from_tool_set, to_tool_set) ({rate('sessiongate_session_migrations_total')})",
                       "{{from_tool_set}} -> {{to_tool_set}}")],
                ),
                timeseries(
                    "Heartbeats",
                    "Heartbeats per second on live sessions. A drop to zero while sessions are active means "
                    "clients stopped heartbeating (sessions will idle out).",
                    "ops",
                    [Q(f"sum({rate('sessiongate_session_heartbeats_total')})", "heartbeats")],
                ),
            ],
        ),
        Row(
            "Reaper",
            [
                timeseries(
                    "Expired sessions awaiting the reaper",
                    "Sessions past expiry not yet removed (max across replicas). Should stay near 0; a "
                    "growing line means the reaper cannot keep up or is stuck.",
                    "short",
                    [Q(f"max(sessiongate_sessions_expired_pending{f()})", "pending")],
                    alerts=(REAPER,),
                ),
                timeseries(
                    "Time since last reaper sweep",
                    "Seconds since each replica's reaper last swept. It should stay at about the reaper "
                    "interval; a line climbing steadily means that reaper is stuck.",
                    "s",
                    [Q(f"time() - sessiongate_reaper_last_sweep_timestamp_seconds{f()}", "{{instance}}")],
                    thresholds=[("green", None), ("red", 120)],
                    threshold_line=True,
                    alerts=(REAPER,),
                ),
            ],
        ),
    ]

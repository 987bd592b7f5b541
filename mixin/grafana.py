"""Grafana dashboard JSON, built from a few typed pieces: a query, a panel
(stat, time series, heatmap), a row, and the dashboard around them with its
variables, annotations and links. Layout is computed: panels flow left to
right within their row, wrapping at 24 columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from config import Config

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GREEN = [("green", None)]


@dataclass(frozen=True)
class Q:
    """One query: its PromQL, its legend, and (for heatmaps) its format."""

    expr: str
    legend: str
    format: str | None = None


@dataclass(frozen=True)
class Alert:
    """The alert a panel shows the signal of: the panel links its runbook."""

    name: str
    runbook: str


@dataclass
class Panel:
    kind: str  # stat, timeseries, heatmap
    title: str
    description: str
    unit: str
    queries: list[Q]
    w: int
    h: int
    thresholds: list[tuple[str, float | None]] = field(default_factory=lambda: list(GREEN))
    decimals: int | None = None
    min: float | None = None
    max: float | None = None
    mappings: list[dict] = field(default_factory=list)
    color_mode: str = "value"
    graph_mode: str = "area"
    text_mode: str = "auto"
    legend_table: bool = False
    threshold_line: bool = False
    alerts: tuple[Alert, ...] = ()


def stat(title, description, unit, queries, *, w=6, h=4, **kw) -> Panel:
    return Panel("stat", title, description, unit, list(queries), w, h, **kw)


def timeseries(title, description, unit, queries, *, w=12, h=8, **kw) -> Panel:
    kw.setdefault("min", 0)
    return Panel("timeseries", title, description, unit, list(queries), w, h, **kw)


def heatmap(title, description, unit, queries, *, w=12, h=8, **kw) -> Panel:
    return Panel("heatmap", title, description, unit, list(queries), w, h, **kw)


@dataclass
class Row:
    title: str
    panels: list[Panel]


def _thresholds(steps) -> dict:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def _targets(p: Panel) -> list[dict]:
    out = []
    for i, q in enumerate(p.queries):
        t = {
            "datasource": DATASOURCE,
            "expr": q.expr,
            "legendFormat": q.legend,
            "range": True,
            "instant": False,
            "refId": chr(ord("A") + i),
        }
        if q.format:
            t["format"] = q.format
        out.append(t)
    return out


def _links(p: Panel, c: Config) -> list[dict]:
    return [
        {"title": f"Runbook: {a.name}", "url": c.runbook_url(a.runbook), "targetBlank": True}
        for a in p.alerts
    ]


def _panel_json(p: Panel, pid: int, pos: dict, c: Config) -> dict:
    base: dict[str, Any] = {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": pos,
    }
    if p.alerts:
        base["links"] = _links(p, c)
    if p.kind == "stat":
        defaults: dict[str, Any] = {"unit": p.unit}
        if p.decimals is not None:
            defaults["decimals"] = p.decimals
        defaults["color"] = {"mode": "thresholds"}
        defaults["thresholds"] = _thresholds(p.thresholds)
        defaults["mappings"] = p.mappings
        base["fieldConfig"] = {"defaults": defaults, "overrides": []}
        base["options"] = {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": p.color_mode,
            "graphMode": p.graph_mode,
            "justifyMode": "auto",
            "orientation": "auto",
            "textMode": p.text_mode,
            "wideLayout": True,
            "showPercentChange": False,
        }
    elif p.kind == "timeseries":
        defaults = {
            "unit": p.unit,
            "color": {"mode": "palette-classic"},
            "custom": {
                "drawStyle": "line",
                "lineInterpolation": "linear",
                "lineWidth": 1,
                "fillOpacity": 10,
                "gradientMode": "none",
                "showPoints": "never",
                "spanNulls": False,
                "axisPlacement": "auto",
                "stacking": {"mode": "none", "group": "A"},
                "thresholdsStyle": {"mode": "line" if p.threshold_line else "off"},
            },
            "thresholds": _thresholds(p.thresholds),
        }
        if p.decimals is not None:
            defaults["decimals"] = p.decimals
        if p.min is not None:
            defaults["min"] = p.min
        if p.max is not None:
            defaults["max"] = p.max
        base["fieldConfig"] = {"defaults": defaults, "overrides": []}
        base["options"] = {
            "legend": {
                "showLegend": True,
                "displayMode": "table" if p.legend_table else "list",
                "placement": "bottom",
                "calcs": ["mean", "max", "lastNotNull"] if p.legend_table else [],
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        }
    elif p.kind == "heatmap":
        base["fieldConfig"] = {
            "defaults": {
                "unit": p.unit,
                "custom": {
                    "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                    "scaleDistribution": {"type": "linear"},
                },
            },
            "overrides": [],
        }
        base["options"] = {
            "calculate": False,
            "cellGap": 1,
            "cellValues": {"unit": p.unit},
            "color": {
                "mode": "scheme",
                "scheme": "Oranges",
                "scale": "exponential",
                "exponent": 0.5,
                "steps": 64,
                "fill": "dark-orange",
                "reverse": False,
            },
            "exemplars": {"color": "rgba(255,0,255,0.7)"},
            "filterValues": {"le": 1e-09},
            "legend": {"show": True},
            "rowsFrame": {"layout": "auto"},
            "tooltip": {"mode": "single", "show": True, "yHistogram": False},
            "yAxis": {"axisPlacement": "left", "reverse": False, "unit": "s"},
        }
    else:
        raise ValueError(p.kind)
    base["targets"] = _targets(p)
    return base


def _layout(items: list[Panel | Row], c: Config) -> list[dict]:
    out: list[dict] = []
    pid = 0
    y = 0

    def flow(panels: list[Panel]) -> None:
        nonlocal pid, y
        x, row_h = 0, 0
        for p in panels:
            if x + p.w > 24:
                y += row_h
                x, row_h = 0, 0
            pid += 1
            out.append(_panel_json(p, pid, {"h": p.h, "w": p.w, "x": x, "y": y}, c))
            x += p.w
            row_h = max(row_h, p.h)
        y += row_h

    loose: list[Panel] = []
    for item in items:
        if not isinstance(item, Row):
            loose.append(item)
            continue
        if loose:
            flow(loose)
            loose = []
        if isinstance(item, Row):
            pid += 1
            out.append(
                {
                    "id": pid,
                    "type": "row",
                    "title": item.title,
                    "collapsed": False,
                    "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                    "panels": [],
                }
            )
            y += 1
            flow(item.panels)
    if loose:
        flow(loose)
    return out


# ---------------------------------------------------------------------------
# Variables and selectors


def variables(c: Config) -> list[str]:
    """The dashboards' query variables, in chain order."""
    return list(c.aggregation_labels) + ["instance"]


def dash_sel(c: Config, *extra: str, instance: bool = True) -> str:
    """`{selector, cluster=~"$cluster", …, instance=~"$instance", extra…}`."""
    names = variables(c) if instance else list(c.aggregation_labels)
    return "{" + ", ".join([c.selector] + [f'{v}=~"${v}"' for v in names] + list(extra)) + "}"


def eq(label: str, value: str) -> str:
    """The matcher `label="value"`."""
    return f'{label}="{value}"'


def rule_sel(c: Config) -> str:
    """The variables' matchers for a recording rule (it keeps only the
    aggregation labels)."""
    return "{" + ", ".join(f'{v}=~"${v}"' for v in c.aggregation_labels) + "}"


def env_legend(c: Config) -> str:
    """A legend naming the environment: `{{cluster}}/{{namespace}}`."""
    labels = [label for label in c.aggregation_labels if label != "job"] or list(c.aggregation_labels)
    return "/".join("{{" + label + "}}" for label in labels)


def _templating(c: Config) -> dict:
    out: list[dict] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "includeAll": False,
            "multi": False,
            "options": [],
            "refresh": 1,
            "regex": "",
        }
    ]
    chain: list[str] = []
    for name in variables(c):
        matchers = ", ".join([c.selector] + [f'{v}=~"${v}"' for v in chain])
        query = f"label_values(sessiongate_build_info{{{matchers}}}, {name})"
        # One job at a time (a job is one service); every other label can
        # take several values, or all of them: `.*` also matches a label that
        # is absent (a `cluster` Prometheus adds only as an external label).
        single = name == "job"
        var: dict[str, Any] = {
            "name": name,
            "label": name.capitalize(),
            "type": "query",
            "datasource": DATASOURCE,
            "query": query,
            "definition": query,
            "current": {} if single else {"selected": True, "text": ["All"], "value": ["$__all"]},
            "hide": 0,
            "includeAll": not single,
            "multi": not single,
            "options": [],
            "refresh": 2,
            "regex": "",
            "sort": 1,
        }
        if not single:
            var["allValue"] = ".*"
        out.append(var)
        chain.append(name)
    return {"list": out}


def _annotations(c: Config, alert_names: list[str]) -> dict:
    env = ", ".join(f'{v}=~"${v}"' for v in c.aggregation_labels)
    by = ", ".join(c.aggregation_labels + ("version", "revision"))
    build = f"sessiongate_build_info{{{c.selector}, {env}}}"
    text_env = " ".join("{{" + label + "}}" for label in c.aggregation_labels)
    return {
        "list": [
            {
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            },
            {
                "name": "Firing alerts",
                "datasource": DATASOURCE,
                "enable": True,
                "hide": False,
                "iconColor": "red",
                "expr": f'ALERTS{{alertname=~"{"|".join(alert_names)}", alertstate="firing", {env}}}',
                "step": "1m",
                "titleFormat": "{{alertname}} ({{severity}})",
                "textFormat": text_env + " {{instance}}",
                "tagKeys": "severity," + ",".join(c.aggregation_labels),
                "useValueForTime": False,
            },
            {
                # A version or revision that was not running in that
                # environment five minutes before: a deploy (or a rollback).
                "name": "Deploys",
                "datasource": DATASOURCE,
                "enable": True,
                "hide": False,
                "iconColor": "blue",
                "expr": f"group by ({by}) ({build}) unless group by ({by}) ({build} offset 5m)",
                "step": "1m",
                "titleFormat": "Deploy {{version}} ({{revision}})",
                "textFormat": text_env,
                "tagKeys": "version," + ",".join(c.aggregation_labels),
                "useValueForTime": False,
            },
        ]
    }


def dashboard(c: Config, slug: str, title: str, description: str, items, alert_names: list[str]) -> dict:
    tag = c.dashboards.tags[0]
    return {
        "annotations": _annotations(c, alert_names),
        "description": description,
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {
                "type": "dashboards",
                "title": tag,
                "tags": [tag],
                "asDropdown": True,
                "includeVars": True,
                "keepTime": True,
                "targetBlank": False,
                "icon": "external link",
                "tooltip": "",
                "url": "",
            }
        ],
        "panels": _layout(items, c),
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": list(c.dashboards.tags),
        "templating": _templating(c),
        "time": {"from": "now-1h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": c.dashboards.title_prefix + title,
        "uid": c.dashboards.uid_prefix + slug,
        "version": 1,
        "weekStart": "",
    }

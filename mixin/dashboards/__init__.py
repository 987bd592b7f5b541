"""The dashboards: one module each, rendered to dashboards/<uid>.json."""

from __future__ import annotations

from alerts import names as alert_names
from config import Config
from grafana import dashboard

from . import dependencies, overview, ratelimit_auth, sessions

MODULES = (overview, sessions, ratelimit_auth, dependencies)


def render(c: Config) -> dict[str, dict]:
    """{file name: dashboard JSON} for every dashboard."""
    out = {}
    for m in MODULES:
        d = dashboard(c, m.SLUG, m.TITLE, m.DESCRIPTION, m.items(c), alert_names(c))
        out[f"{d['uid']}.json"] = d
    return out

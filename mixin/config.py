"""The mixin's config: its schema, its loading, and what every part reads.

A config file (YAML) must hold every key of the schema below and no other:
a misspelt key is an error, not a silently ignored default. Loading fails with
a `ConfigError` naming the key and what it must hold.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

# The bucket bounds of http_server_request_duration_seconds
# (HTTP_DURATION_BUCKETS in src/telemetry/catalog.rs; a test compares them):
# the latency SLO reads the bucket `le` = the threshold, so it must be one.
HTTP_DURATION_BUCKETS = (
    "0.0005", "0.001", "0.002", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.075",
    "0.1", "0.25", "0.5", "0.75", "1", "2.5", "5", "7.5", "10",
)

# The labels a target's series carry of their own, or that the mixin uses per
# target or per bucket: aggregating by them would not keep environments apart
# but split each one.
RESERVED_LABELS = ("instance", "le", "__name__")

LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
# A matcher list as it stands between PromQL's braces: name op "value", ...
MATCHER = re.compile(r'\s*[a-zA-Z_][a-zA-Z0-9_]*\s*(=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*')
PERIOD = re.compile(r"^([1-9][0-9]*)(h|d|w)$")
HOURS = {"h": 1, "d": 24, "w": 168}


class ConfigError(ValueError):
    """A config the mixin cannot render from; the message names the key."""


@dataclass(frozen=True)
class Slo:
    period: str
    availability_objective: Decimal
    latency_objective: Decimal
    latency_threshold_seconds: Decimal

    @property
    def period_hours(self) -> int:
        m = PERIOD.match(self.period)
        assert m
        return int(m.group(1)) * HOURS[m.group(2)]

    @property
    def period_words(self) -> str:
        """The period as people say it: 30 days, 4 weeks, 36 hours."""
        m = PERIOD.match(self.period)
        assert m
        unit = {"h": "hour", "d": "day", "w": "week"}[m.group(2)]
        return f"{m.group(1)} {unit}" + ("s" if m.group(1) != "1" else "")

    @property
    def availability_budget(self) -> Decimal:
        return 1 - self.availability_objective

    @property
    def latency_budget(self) -> Decimal:
        return 1 - self.latency_objective

    @property
    def latency_le(self) -> str:
        return number(self.latency_threshold_seconds)


@dataclass(frozen=True)
class Dashboards:
    uid_prefix: str
    title_prefix: str
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Config:
    selector: str
    aggregation_labels: tuple[str, ...]
    slo: Slo
    runbook_url_pattern: str
    dashboards: Dashboards

    def runbook_url(self, name: str) -> str:
        return self.runbook_url_pattern.replace("%s", name)

    def by(self, *extra: str) -> str:
        """`by (cluster, namespace, job[, extra…])`: the aggregation clause."""
        return "by (" + ", ".join(self.aggregation_labels + extra) + ")"

    def sel(self, *matchers: str) -> str:
        """`{selector, matchers…}`: the series of our targets."""
        return "{" + ", ".join((self.selector,) + matchers) + "}"


def number(d: Decimal) -> str:
    """A decimal as Prometheus and people write it: 0.001, 14.4, 6, 1."""
    return format(d.normalize(), "f")


# The schema: key -> (type check, what it must hold). Nested mappings are
# schemas of their own.
def _str(v: Any) -> bool:
    return isinstance(v, str) and v.strip() != ""


def _objective(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1


def _seconds(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(_str(x) for x in v)


SCHEMA: dict[str, Any] = {
    "selector": (_str, 'PromQL label matchers, e.g. job="sessiongate"'),
    "aggregation_labels": (_str_list, "a non-empty list of label names, e.g. [cluster, namespace, job]"),
    "slo": {
        "period": (_str, "a duration in hours, days or weeks, e.g. 30d"),
        "availability_objective": (_objective, "a number between 0 and 1, e.g. 0.999"),
        "latency_objective": (_objective, "a number between 0 and 1, e.g. 0.99"),
        "latency_threshold_seconds": (_seconds, "a number of seconds, e.g. 0.1"),
    },
    "runbook_url_pattern": (_str, "an absolute URL with %s for the runbook's name"),
    "dashboards": {
        "uid_prefix": (_str, "a string, e.g. sessiongate-"),
        "title_prefix": (_str, "a string, e.g. 'sessiongate / '"),
        "tags": (_str_list, "a non-empty list of strings"),
    },
}


def _check_keys(raw: Any, schema: dict[str, Any], where: str) -> None:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'the config'}: must be a mapping of keys to values")
    unknown = sorted(set(raw) - set(schema))
    if unknown:
        known = ", ".join(f"{where}{k}" for k in schema)
        raise ConfigError(f"unknown key {where}{unknown[0]} (the keys are: {known})")
    for key, rule in schema.items():
        name = f"{where}{key}"
        if key not in raw:
            raise ConfigError(f"missing key {name}: it must be {rule[1] if isinstance(rule, tuple) else 'a mapping'}")
        if isinstance(rule, dict):
            _check_keys(raw[key], rule, f"{name}.")
        elif not rule[0](raw[key]):
            raise ConfigError(f"{name}: must be {rule[1]}, not {raw[key]!r}")


def from_mapping(raw: Any) -> Config:
    """The config of a parsed YAML document, checked whole."""
    _check_keys(raw, SCHEMA, "")

    selector = raw["selector"].strip()
    rest = selector
    while rest:
        m = MATCHER.match(rest)
        if not m:
            raise ConfigError(f'selector: must be PromQL label matchers such as job="sessiongate", not {selector!r}')
        rest = rest[m.end():]
        if rest.startswith(","):
            rest = rest[1:]
            if not rest.strip():
                raise ConfigError(f"selector: a trailing comma in {selector!r}")
        elif rest:
            raise ConfigError(f'selector: must be PromQL label matchers such as job="sessiongate", not {selector!r}')

    labels = tuple(raw["aggregation_labels"])
    if not labels:
        raise ConfigError(
            "aggregation_labels: must name at least one label (default [cluster, namespace, job]): "
            "without them every environment in one Prometheus is summed into one"
        )
    for label in labels:
        if not LABEL_NAME.match(label):
            raise ConfigError(f"aggregation_labels: {label!r} is not a Prometheus label name")
        if label in RESERVED_LABELS or label.startswith("__"):
            raise ConfigError(f"aggregation_labels: {label!r} cannot be one (it splits a service, it does not name one)")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"aggregation_labels: {list(labels)} names a label twice")

    s = raw["slo"]
    if not PERIOD.match(s["period"]):
        raise ConfigError(f"slo.period: must be a duration in hours, days or weeks, e.g. 30d, not {s['period']!r}")
    threshold = Decimal(str(s["latency_threshold_seconds"]))
    if number(threshold) not in HTTP_DURATION_BUCKETS:
        raise ConfigError(
            f"slo.latency_threshold_seconds: {number(threshold)} is not a bucket bound of "
            f"http_server_request_duration_seconds ({', '.join(HTTP_DURATION_BUCKETS)})"
        )
    slo = Slo(
        period=s["period"],
        availability_objective=Decimal(str(s["availability_objective"])),
        latency_objective=Decimal(str(s["latency_objective"])),
        latency_threshold_seconds=threshold,
    )
    if slo.period_hours < 72:
        raise ConfigError(f"slo.period: must be at least 3d (the slowest burn-rate window), not {s['period']}")

    pattern = raw["runbook_url_pattern"]
    if pattern.count("%s") != 1:
        raise ConfigError(f"runbook_url_pattern: must hold %s exactly once, not {pattern!r}")
    if not re.match(r"^https?://[^/\s]+/", pattern):
        raise ConfigError(f"runbook_url_pattern: must give absolute http(s) URLs, not {pattern!r}")

    d = raw["dashboards"]
    if not re.match(r"^[a-zA-Z0-9_-]*$", d["uid_prefix"]) or len(d["uid_prefix"]) > 24:
        raise ConfigError(
            f"dashboards.uid_prefix: letters, digits, - and _ only, at most 24 (Grafana's uid is at most 40), not {d['uid_prefix']!r}"
        )
    dashboards = Dashboards(uid_prefix=d["uid_prefix"], title_prefix=d["title_prefix"], tags=tuple(d["tags"]))
    if not dashboards.tags:
        raise ConfigError("dashboards.tags: must hold at least one tag")

    return Config(
        selector=selector,
        aggregation_labels=labels,
        slo=slo,
        runbook_url_pattern=pattern,
        dashboards=dashboards,
    )


def load(path: Path) -> Config:
    """The config of a YAML file; a `ConfigError` names the file and the key."""
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from e
    try:
        return from_mapping(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e

"""The mixin's own tests: bad configs fail with a message naming the key; the
render follows the config (selector, labels, objectives, runbook pattern,
uids); `--check` notices a drift. Run: python3 -m unittest discover mixin/tests
"""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

MIXIN = Path(__file__).resolve().parents[1]
REPO = MIXIN.parent
sys.path.insert(0, str(MIXIN))

import yaml  # noqa: E402

import render  # noqa: E402
from config import HTTP_DURATION_BUCKETS, ConfigError, from_mapping  # noqa: E402

DEFAULT = yaml.safe_load((MIXIN / "config.yaml").read_text())


def with_(**changes):
    raw = copy.deepcopy(DEFAULT)
    for dotted, value in changes.items():
        *path, last = dotted.split("__")
        node = raw
        for key in path:
            node = node[key]
        if value is KeyError:
            del node[last]
        else:
            node[last] = value
    return raw


def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = render.main(argv)
    return code, out.getvalue(), err.getvalue()


class BadConfigs(unittest.TestCase):
    def assert_refused(self, raw, *words):
        with self.assertRaises(ConfigError) as e:
            from_mapping(raw)
        for w in words:
            self.assertIn(w, str(e.exception))

    def test_an_unknown_key_is_refused(self):
        raw = with_(aggregation_label=["cluster"])
        self.assert_refused(raw, "unknown key aggregation_label", "aggregation_labels")
        raw = with_(slo__availabilty_objective=0.99)
        self.assert_refused(raw, "unknown key slo.availabilty_objective")

    def test_missing_or_empty_aggregation_labels_are_refused(self):
        self.assert_refused(with_(aggregation_labels=KeyError), "missing key aggregation_labels")
        self.assert_refused(with_(aggregation_labels=[]), "aggregation_labels", "at least one label")
        self.assert_refused(with_(aggregation_labels=None), "aggregation_labels")

    def test_labels_that_split_a_service_are_refused(self):
        self.assert_refused(with_(aggregation_labels=["namespace", "instance"]), "'instance'")
        self.assert_refused(with_(aggregation_labels=["namespace", "namespace"]), "twice")
        self.assert_refused(with_(aggregation_labels=["name-space"]), "not a Prometheus label name")

    def test_other_values_are_checked(self):
        self.assert_refused(with_(runbook_url_pattern="deploy/runbooks/%s.md"), "runbook_url_pattern", "absolute")
        self.assert_refused(with_(runbook_url_pattern="https://x.example/runbooks.md"), "%s exactly once")
        self.assert_refused(with_(selector="sessiongate"), "selector")
        self.assert_refused(with_(selector='job="a",'), "selector")
        self.assert_refused(with_(slo__latency_threshold_seconds=0.2), "not a bucket bound")
        self.assert_refused(with_(slo__availability_objective=1.5), "slo.availability_objective")
        self.assert_refused(with_(slo__period="2d"), "slo.period")
        self.assert_refused(with_(slo__period="month"), "slo.period")
        self.assert_refused(with_(dashboards__tags=[]), "dashboards.tags")
        self.assert_refused(with_(dashboards__uid_prefix="a b"), "dashboards.uid_prefix")
        self.assert_refused(["not", "a", "mapping"], "mapping")

    def test_the_command_line_says_which_key_and_renders_nothing(self):
        with tempfile.TemporaryDirectory() as d:
            bad = Path(d) / "bad.yaml"
            bad.write_text(yaml.safe_dump(with_(aggregation_lables=["cluster"])))
            code, _, err = run(["--config", str(bad), "--out", d])
            self.assertEqual(code, 2)
            self.assertIn("unknown key aggregation_lables", err)
            bad.write_text(yaml.safe_dump(with_(aggregation_labels=[])))
            code, _, err = run(["--config", str(bad), "--out", d])
            self.assertEqual(code, 2)
            self.assertIn("aggregation_labels: must name at least one label", err)
            self.assertFalse((Path(d) / "dashboards").exists())

    def test_the_buckets_are_the_servers(self):
        source = (REPO / "src/telemetry/catalog.rs").read_text()
        block = re.search(r"HTTP_DURATION_BUCKETS: &\[f64\] = &\[(.*?)\];", source, re.S).group(1)
        bounds = [format(float(x), "g") for x in re.findall(r"[0-9.]+", block)]
        self.assertEqual(bounds, [format(float(x), "g") for x in HTTP_DURATION_BUCKETS])


class Rendering(unittest.TestCase):
    def test_the_committed_files_are_the_render(self):
        code, out, err = run(["--check"])
        self.assertEqual(code, 0, err)
        self.assertIn("are what config.yaml renders", out)

    def test_check_notices_a_drift_and_a_stray_dashboard(self):
        with tempfile.TemporaryDirectory() as d:
            self.assertEqual(run(["--out", d])[0], 0)
            self.assertEqual(run(["--check", "--out", d])[0], 0)
            alerts = Path(d) / "deploy/prometheus/alerts.yml"
            alerts.write_text(alerts.read_text().replace("for: 2m", "for: 3m", 1))
            code, _, err = run(["--check", "--out", d])
            self.assertEqual(code, 1)
            self.assertIn("-    for: 3m", err)
            self.assertIn("+    for: 2m", err)
            self.assertEqual(run(["--out", d])[0], 0)
            (Path(d) / "dashboards/stray.json").write_text("{}")
            code, _, err = run(["--check", "--out", d])
            self.assertEqual(code, 1)
            self.assertIn("dashboards/stray.json: not rendered", err)

    def test_another_config_changes_every_file(self):
        raw = with_(
            selector='job="sg-api", team="agents"',
            aggregation_labels=["region", "namespace", "job"],
            slo__availability_objective=0.995,
            slo__latency_threshold_seconds=0.25,
            runbook_url_pattern="https://runbooks.example.org/sessiongate/%s",
            dashboards__uid_prefix="sg-",
            dashboards__tags=["agents", "sessiongate"],
        )
        with tempfile.TemporaryDirectory() as d:
            cfg = Path(d) / "config.yaml"
            cfg.write_text(yaml.safe_dump(raw))
            self.assertEqual(run(["--config", str(cfg), "--out", d])[0], 0)
            rules = (Path(d) / "deploy/prometheus/rules.yml").read_text()
            alerts = (Path(d) / "deploy/prometheus/alerts.yml").read_text()
            for text in (rules, alerts):
                self.assertNotIn('{job="sessiongate"', text)
                self.assertIn('{job="sg-api", team="agents"', text)
                # Every aggregation keeps the configured labels.
                for by in re.findall(r"\b(?:sum|min|max) by \(([^)]*)\)", text):
                    self.assertTrue(by.startswith("region, namespace, job"), by)
            self.assertIn('le="0.25"', rules)
            self.assertIn("(14.4 * 0.005)", alerts)
            self.assertIn("runbook_url: https://runbooks.example.org/sessiongate/availability-budget-burn\n", alerts)
            self.assertIn("{{ $labels.region }}/{{ $labels.namespace }}", alerts)
            names = sorted(p.name for p in (Path(d) / "dashboards").glob("*.json"))
            self.assertEqual(names, ["sg-dependencies.json", "sg-overview.json", "sg-ratelimit-auth.json", "sg-sessions.json"])
            overview = json.loads((Path(d) / "dashboards/sg-overview.json").read_text())
            self.assertEqual(overview["tags"], ["agents", "sessiongate"])
            variables = [v["name"] for v in overview["templating"]["list"]]
            self.assertEqual(variables, ["datasource", "region", "namespace", "job", "instance"])
            queries = [v.get("query") for v in overview["templating"]["list"]]
            self.assertIn('label_values(sessiongate_build_info{job="sg-api", team="agents", region=~"$region"}, namespace)',
                          queries)
            if shutil.which("promtool"):
                done = subprocess.run(
                    ["promtool", "check", "rules", str(Path(d) / "deploy/prometheus/rules.yml"),
                     str(Path(d) / "deploy/prometheus/alerts.yml")],
                    capture_output=True, text=True,
                )
                self.assertEqual(done.returncode, 0, done.stdout + done.stderr)

    def test_every_alert_and_rule_aggregates_by_the_labels(self):
        for rel in ("deploy/prometheus/rules.yml", "deploy/prometheus/alerts.yml"):
            doc = yaml.safe_load((REPO / rel).read_text())
            for group in doc["groups"]:
                for rule in group["rules"]:
                    expr = rule["expr"]
                    aggregations = re.findall(r"\b(sum|min|max|avg|count)\b\s*(by \([^)]*\))?\s*\(", expr)
                    for op, by in aggregations:
                        self.assertTrue(
                            by.startswith("by (cluster, namespace, job"),
                            f"{rel}: {rule.get('alert') or rule.get('record')}: {op} {by!r}",
                        )

    def test_every_panel_that_matches_an_alert_links_its_runbook(self):
        alerts = yaml.safe_load((REPO / "deploy/prometheus/alerts.yml").read_text())
        urls = {r["annotations"]["runbook_url"] for g in alerts["groups"] for r in g["rules"]}
        linked = set()
        for path in (REPO / "dashboards").glob("*.json"):
            d = json.loads(path.read_text())
            for p in d["panels"]:
                for link in p.get("links", []):
                    self.assertIn(link["url"], urls, f"{path.name}: {p['title']}")
                    linked.add(link["url"])
        self.assertEqual(linked, urls, "an alert whose runbook no panel links")


if __name__ == "__main__":
    unittest.main()

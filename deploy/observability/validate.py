#!/usr/bin/env python3
"""Checks the Grafana dashboard and the Prometheus alerts against each other, the docs and the code.

- The dashboard is JSON with a Prometheus data source variable that every panel and query uses,
  unique panel ids, and only variables it defines (or Grafana's own).
- Every PromQL expression of the dashboard is valid: each is written, its variables replaced by
  sample values, as a recording rule into a temporary rules file that `promtool check rules`
  parses.
- Every metric the dashboard and the alerts name is one the services export: the names are read
  from the Rust sources (the metric constructors under crates/*/src), so a renamed or removed
  metric fails here rather than in an empty panel or an alert that can never fire. Prometheus's
  own `up` is the one other name allowed.
- Every exported metric is described in deploy/README.md ("Observing it").
- Every alert has `summary`, `description` and a `runbook` naming a section of deploy/README.md,
  and alerts.test.yaml makes each one fire and checks that none fires when all is well.

Usage: validate.py PROMTOOL (run from anywhere; paths are taken from this file's place).
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
DASHBOARD = HERE / "grafana" / "waybill.json"
ALERTS = HERE / "prometheus" / "alerts.yaml"
ALERT_TESTS = HERE / "prometheus" / "alerts.test.yaml"
DEPLOY_README = ROOT / "deploy" / "README.md"

# Every service's registry puts this before its metric names (crates/runtime/src/http.rs).
NAMESPACE = "waybill_"
# Names Prometheus itself gives each target.
PROMETHEUS_OWN = {"up"}
# Sample values of the dashboard's variables and of Grafana's built-in ones, for promtool.
SAMPLE_VALUES = {
    "namespace": ".*",
    "job": "waybill-dispatcher",
    "prefix": "waybill",
    "__rate_interval": "5m",
    "__interval": "1m",
    "__range": "6h",
}
BUILTIN_VARIABLES = {"__rate_interval", "__interval", "__range"}

PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
    "and", "or", "unless", "inf", "nan", "atan2",
}

failures = []


def fail(message):
    failures.append(message)


def exported_metrics():
    """Metric names the services register, from the constructors in the Rust sources."""
    ctor = re.compile(
        r"\b(HistogramOpts|Opts|IntGauge|Gauge|IntCounter|Counter)::new\(\s*\"([a-zA-Z_:][a-zA-Z0-9_:]*)\""
    )
    names = set()
    for source in sorted(ROOT.glob("crates/*/src/**/*.rs")):
        for kind, name in ctor.findall(source.read_text()):
            full = NAMESPACE + name
            if kind == "HistogramOpts":
                names.update({full + "_bucket", full + "_sum", full + "_count"})
            names.add(full)
    return names


def metric_names(expr):
    """The metric names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # label lists
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = m.group(0)
        rest = text[m.end():].lstrip()
        if rest.startswith("(") or word.lower() in PROMQL_KEYWORDS:
            continue  # a function or an operator
        if re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def heading_anchors(markdown):
    """GitHub's anchors of a Markdown file's headings."""
    anchors = set()
    for line in markdown.splitlines():
        m = re.match(r"#+\s+(.*)", line)
        if m:
            slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug)
    return anchors


def substitute(expr, defined):
    def value(m):
        name = m.group(1) or m.group(2)
        if name not in defined and name not in BUILTIN_VARIABLES:
            fail(f"dashboard: variable ${name} is not defined: {expr}")
        return SAMPLE_VALUES.get(name, "x")

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def check_dashboard(promtool, exported):
    try:
        dash = json.loads(DASHBOARD.read_text())
    except json.JSONDecodeError as e:
        fail(f"{DASHBOARD.name} is not JSON: {e}")
        return set()
    if not isinstance(dash.get("schemaVersion"), int):
        fail("dashboard: no schemaVersion")
    variables = dash.get("templating", {}).get("list", [])
    defined = {v.get("name") for v in variables}
    source = [v for v in variables if v.get("type") == "datasource"]
    if not any(v.get("name") == "datasource" and v.get("query") == "prometheus" for v in source):
        fail("dashboard: no `datasource` variable of type datasource for prometheus")
    wanted = {"type": "prometheus", "uid": "${datasource}"}
    ids = set()
    exprs = []
    for panel in dash.get("panels", []):
        pid = panel.get("id")
        if pid in ids:
            fail(f"dashboard: panel id {pid} is used twice")
        ids.add(pid)
        if panel.get("type") == "row":
            continue
        title = panel.get("title", f"panel {pid}")
        if panel.get("datasource") != wanted:
            fail(f"dashboard: panel {title!r} does not use the ${{datasource}} variable")
        targets = panel.get("targets") or []
        if not targets:
            fail(f"dashboard: panel {title!r} has no query")
        for target in targets:
            if target.get("datasource") != wanted:
                fail(f"dashboard: a query of {title!r} does not use the ${{datasource}} variable")
            expr = target.get("expr", "")
            if not expr.strip():
                fail(f"dashboard: a query of {title!r} is empty")
                continue
            exprs.append((title, pid, target.get("refId", "A"), expr))
    for v in variables:
        query = v.get("query")
        if v.get("type") == "query" and isinstance(query, dict):
            m = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query.get("query", ""))
            if not m:
                fail(f"dashboard: variable {v.get('name')} is not a label_values(metric, label) query")
            elif m.group(1) not in exported:
                fail(f"dashboard: variable {v.get('name')} reads {m.group(1)}, which no service exports")

    rules = {"groups": [{"name": "dashboard", "rules": []}]}
    for title, pid, ref, expr in exprs:
        rules["groups"][0]["rules"].append(
            {"record": f"dashboard:panel_{pid}_{ref}", "expr": substitute(expr, defined)}
        )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(rules, f)
        path = f.name
    try:
        checked = subprocess.run([promtool, "check", "rules", path], capture_output=True, text=True)
        if checked.returncode != 0:
            fail("dashboard: promtool refuses a query:\n" + checked.stdout + checked.stderr)
    finally:
        Path(path).unlink()

    used = set()
    for title, _, _, expr in exprs:
        for name in metric_names(substitute(expr, defined)):
            used.add(name)
            if name not in exported and name not in PROMETHEUS_OWN:
                fail(f"dashboard: panel {title!r} reads {name}, which no service exports")
    print(f"dashboard: {len(exprs)} queries in {len(ids)} panels, {len(used)} metrics")
    return used


def check_alerts(exported, anchors):
    doc = yaml.safe_load(ALERTS.read_text())
    alerts = [r for g in doc.get("groups", []) for r in g.get("rules", []) if "alert" in r]
    used = set()
    for rule in alerts:
        name = rule["alert"]
        annotations = rule.get("annotations") or {}
        for key in ("summary", "description", "runbook"):
            if not str(annotations.get(key, "")).strip():
                fail(f"alerts: {name} has no {key}")
        runbook = str(annotations.get("runbook", ""))
        path, _, anchor = runbook.partition("#")
        if path != "deploy/README.md" or anchor not in anchors:
            fail(f"alerts: {name}'s runbook {runbook!r} is no section of deploy/README.md")
        if not rule.get("labels", {}).get("severity"):
            fail(f"alerts: {name} has no severity")
        for metric in metric_names(rule["expr"]):
            used.add(metric)
            if metric not in exported and metric not in PROMETHEUS_OWN:
                fail(f"alerts: {name} reads {metric}, which no service exports")

    tests = yaml.safe_load(ALERT_TESTS.read_text()).get("tests", [])
    fired = set()
    silent = set()
    for test in tests:
        for case in test.get("alert_rule_test", []):
            if case.get("exp_alerts"):
                fired.add(case["alertname"])
            elif test.get("name") == "healthy":
                silent.add(case["alertname"])
    for rule in alerts:
        if rule["alert"] not in fired:
            fail(f"alerts.test.yaml: no test makes {rule['alert']} fire")
        if rule["alert"] not in silent:
            fail(f"alerts.test.yaml: the healthy test does not check that {rule['alert']} stays silent")
    print(f"alerts: {len(alerts)} alerts, {len(used)} metrics")
    return used


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    promtool = sys.argv[1]
    exported = exported_metrics()
    if not exported:
        sys.exit("no metric found in the Rust sources: has their layout changed?")
    readme = DEPLOY_README.read_text()
    anchors = heading_anchors(readme)
    check_dashboard(promtool, exported)
    check_alerts(exported, anchors)
    observing = readme.partition("\n## Observing it\n")[2]
    if not observing:
        fail("deploy/README.md has no section \"## Observing it\"")
    documented = set(re.findall(r"\bwaybill_[a-z0-9_]+", observing))
    for name in sorted(exported):
        if re.search(r"_(bucket|sum|count)$", name) and re.sub(r"_(bucket|sum|count)$", "", name) in exported:
            continue
        if name not in documented:
            fail(f"deploy/README.md (Observing it) does not describe {name}")
    if failures:
        for f in failures:
            print("error: " + f, file=sys.stderr)
        sys.exit(1)
    print(f"every metric used is exported ({len(exported)} names found in the sources) and documented")


if __name__ == "__main__":
    main()

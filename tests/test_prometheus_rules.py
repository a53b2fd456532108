"""The alert rules and the dashboard shipped in deploy/: valid, tested, and about real metrics.

``promtool`` (Debian's ``prometheus`` package; scripts/test_services.py installs
it) checks the rules and runs their unit tests
(deploy/prometheus/tasksite-rules.test.yml); every metric a rule or a dashboard
panel names is one the service exports (tasks/metrics.py and the metrics named
below), so a renamed metric cannot leave an alert that never fires.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.servers import ROOT

PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "tasksite-rules.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tasksite-dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
# Exported by the service besides tasks/metrics.py's own registry: the alert,
# queue, build and schedule metrics, and Prometheus's own ``up``.
OTHER_METRICS = {
    "up",
    "tasksite_alerts_total",
    "tasksite_queue_depth",
    "tasksite_build_info",
    "tasksite_operation_last_started_timestamp_seconds",
    "tasksite_operation_next_due_timestamp_seconds",
    "tasksite_beat_last_tick_timestamp_seconds",
}
NAME = re.compile(r"\b(up|tasksite_[a-z_]+)\b")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool is missing: apt-get install -y prometheus")
    return found


def exported() -> set[str]:
    source = (ROOT / "tasks" / "metrics.py").read_text()
    return set(re.findall(r'"(tasksite_[a-z_]+)"', source)) | OTHER_METRICS


def named(expr: str) -> set[str]:
    """The metrics an expression reads (a histogram's series by the histogram's name)."""
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in NAME.findall(expr)}


def rules() -> list[dict]:
    return [
        rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]
    ]


def test_the_rules_pass_promtool_s_check_and_their_unit_tests():
    check = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = subprocess.run(
        [promtool(), "test", "rules", "tasksite-rules.test.yml"],
        cwd=PROMETHEUS,
        capture_output=True,
        text=True,
    )
    assert tests.returncode == 0 and "SUCCESS" in tests.stdout, tests.stdout + tests.stderr


def test_every_rule_has_a_unit_test_and_a_runbook_entry():
    tested = yaml.safe_load((PROMETHEUS / "tasksite-rules.test.yml").read_text())["tests"]
    fired = {
        case["alertname"]
        for test in tested
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    runbook = OPERATIONS.read_text()
    names = [rule["alert"] for rule in rules()]
    assert len(names) == len(set(names))
    for rule in rules():
        assert rule["alert"] in fired, f"{rule['alert']}: no unit test sees it fire"
        anchor = rule["annotations"]["runbook"].split("#")[1]
        assert anchor == rule["alert"].lower()
        assert f"### {rule['alert']}" in runbook, f"{rule['alert']}: no runbook entry"
        assert rule["labels"]["severity"] in ("critical", "warning")


def test_the_example_scrape_configuration_loads_the_rules(tmp_path):
    token = tmp_path / "token"
    token.write_text("metrics-token\n")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        (PROMETHEUS / "scrape.example.yml")
        .read_text()
        .replace("/etc/prometheus/rules/tasksite.yml", str(RULES))
        .replace("/etc/prometheus/tasksite-metrics-token", str(token))
    )
    check = subprocess.run([promtool(), "check", "config", str(config)], capture_output=True)
    assert check.returncode == 0, check.stdout + check.stderr
    jobs = {job["job_name"] for job in yaml.safe_load(config.read_text())["scrape_configs"]}
    for rule in rules():
        for job in re.findall(r'job=~"tasksite-\(([^)]*)\)"', rule["expr"]):
            assert {f"tasksite-{name}" for name in job.split("|")} == jobs


def test_rules_and_dashboard_read_only_metrics_the_service_exports():
    known = exported()
    assert "tasksite_jobs_finished_total" in known and "tasksite_beat_lock_held" in known
    for rule in rules():
        assert named(rule["expr"]), rule["alert"]
        assert named(rule["expr"]) <= known, (rule["alert"], named(rule["expr"]) - known)

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["panels"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    shown: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = named(target["expr"])
            assert names and names <= known, (panel["title"], names - known)
            shown |= names
    # Everything an alert is about can be looked at.
    alerting = set().union(*(named(rule["expr"]) for rule in rules()))
    assert alerting <= shown, alerting - shown


def test_the_checks_fail_on_a_metric_that_does_not_exist():
    """The name check is no formality: a misspelt metric is caught."""
    assert named("rate(tasksite_jobs_finshed_total[5m])") - exported() == {
        "tasksite_jobs_finshed_total"
    }
    assert named("histogram_quantile(0.9, rate(tasksite_job_duration_seconds_bucket[5m]))") == {
        "tasksite_job_duration_seconds"
    }
    assert Path(RULES).exists()

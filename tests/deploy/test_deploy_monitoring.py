"""deploy/monitoring: the alerts and the dashboard name only what the service exports.

Every metric named in an alert expression, a dashboard query or a dashboard variable must be
in a running service's /metrics (a histogram's as _bucket, _sum or _count). Each alert has a
promtool unit test and a section in docs/operations.md; each dashboard panel is described
there too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
from conftest import DEPLOY, Harness
from test_deploy_k8s import TOOL_TIMEOUT, run_tool, yaml_document, yaml_documents

from service.intake.answers import REFUSAL_REASONS

MONITORING = DEPLOY / "monitoring"
OPERATIONS = DEPLOY.parent / "docs" / "operations.md"

# PromQL words that are not metric names (functions are told apart by their `(`).
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}
_KEYWORDS |= {"unless", "bool", "offset", "inf", "nan"}
_NAME = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression (Grafana variables allowed) selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)  # strings: label values, regexes
    text = re.sub(r"\{[^{}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges, [$__rate_interval] included
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"\$\w+", "", text)  # Grafana variables
    names = set()
    for match in _NAME.finditer(text):
        rest = text[match.end() :].lstrip()
        word = match[0]
        if rest.startswith("(") or word.lower() in _KEYWORDS:
            continue
        if text[max(0, match.start() - 1)].isdigit():  # the unit of 5m, 1h, 1e3 ...
            continue
        names.add(word)
    return names


def dashboard() -> dict[str, Any]:
    board: dict[str, Any] = json.loads((MONITORING / "dashboard.json").read_text())
    return board


def dashboard_expressions() -> list[str]:
    board = dashboard()
    found = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):  # label_values(metric, label)
            found.append(re.sub(r"label_values\((\w+),.*\)", r"\1", query["query"]))
    return found


def alerts() -> list[dict[str, Any]]:
    rules = yaml_document((MONITORING / "alerts.yaml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"]]


def exported_names(text: str) -> set[str]:
    """Every series name /metrics offers, including those of labelled metrics without
    samples yet (from their `# TYPE` line)."""
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def test_metric_names_are_found_in_promql() -> None:
    expression = (
        'sum without (instance, route) (rate(upload_x_total{status=~"5..", a="b(c)"}[5m]))'
        " / on (job) group_left"
        " histogram_quantile(0.9, sum by (le) (rate(h_bucket[$__rate_interval])))"
        ' > 0.05 and process_open_fds{job=~"$job"} offset 1h'
    )
    assert metric_names(expression) == {"upload_x_total", "h_bucket", "process_open_fds"}


async def test_alerts_and_dashboard_name_only_exported_metrics(
    harness: Harness, http: aiohttp.ClientSession
) -> None:
    async with http.get(f"http://127.0.0.1:{harness.service.metrics_port}/metrics") as response:
        assert response.status == 200
        exported = exported_names(await response.text())
    used: dict[str, set[str]] = {}
    for where, expressions in (
        ("alerts.yaml", [rule["expr"] for rule in alerts()]),
        ("dashboard.json", dashboard_expressions()),
    ):
        for expression in expressions:
            names = metric_names(expression)
            assert names, f"{where}: no metric found in {expression!r}"
            for name in names:
                used.setdefault(name, set()).add(where)
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, f"not in the service's /metrics: {missing}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query, Grafana's variables given plausible values."""
    expressions = dashboard_expressions()
    rules: dict[str, Any] = {"groups": [{"name": "dashboard", "rules": []}]}
    for number, expression in enumerate(expressions):
        promql = expression.replace("$__rate_interval", "5m").replace("$job", ".+")
        rules["groups"][0]["rules"].append({"record": f"panel:query_{number}", "expr": promql})
    path = tmp_path / "dashboard-rules.yaml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    checked = run_tool("promtool", "check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_panels_are_well_formed_and_documented() -> None:
    board = dashboard()
    operations = OPERATIONS.read_text()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert f"**{panel['title']}**" in operations, f"docs/operations.md: {panel['title']}"


def sorted_reasons(text: str, reasons: set[str]) -> tuple[set[str], set[str]]:
    """The `reasons` named in `text` before "Ours or Discord's" (the clients' mistakes) and
    after it."""
    parts = " ".join(text.split()).split("Ours or Discord's")
    clients, ours = (set(re.findall(r"\b[a-z_]+\b", part)) & reasons for part in parts)
    return clients, ours


def test_every_refusal_reason_is_sorted_alike_by_the_docs_the_dashboard_and_the_alert() -> None:
    """Each reason the service counts refused chunks by is, in docs/operations.md's "Chunks
    refused, by reason", the dashboard panel's description and UploadChunksFailing alike,
    either the clients' mistake or ours (or Discord's), which the alert counts."""
    reasons = set(REFUSAL_REASONS)
    operations = OPERATIONS.read_text()
    bullet = operations.split("- **Chunks refused, by reason**")[1].split("\n- **")[0]
    (panel,) = [p for p in dashboard()["panels"] if p.get("title") == "Chunks refused, by reason"]
    (rule,) = [rule for rule in alerts() if rule["alert"] == "UploadChunksFailing"]
    listed = re.search(r'reason=~"([^"]+)"', rule["expr"])
    assert listed, f"UploadChunksFailing names no reasons: {rule['expr']}"
    alerted = set(listed[1].split("|"))
    for where, text in (("docs/operations.md", bullet), ("dashboard.json", panel["description"])):
        clients, ours = sorted_reasons(text, reasons)
        assert clients | ours == reasons, f"{where} does not name {reasons - clients - ours}"
        assert not clients & ours, f"{where} names {clients & ours} as both"
        assert ours == alerted, f"{where} and UploadChunksFailing's regex differ"


def test_every_alert_has_a_unit_test_and_a_runbook_section() -> None:
    tests = yaml_document((MONITORING / "alerts.test.yaml").read_text())
    tested = {case["alertname"] for t in tests["tests"] for case in t["alert_rule_test"]}
    headings = re.findall(r"^### (\w+)", OPERATIONS.read_text(), flags=re.MULTILINE)
    for rule in alerts():
        name = rule["alert"]
        assert name in tested, f"alerts.test.yaml does not test {name}"
        assert name in headings, f"docs/operations.md has no section {name}"
        assert rule["annotations"]["runbook"] == f"docs/operations.md#{name.lower()}"


def test_alert_rules_pass_promtool() -> None:
    for command in (["check", "rules", "alerts.yaml"], ["test", "rules", "alerts.test.yaml"]):
        result = run_tool("promtool", *command, cwd=MONITORING)
        assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_rule_is_rendered_from_the_alerts() -> None:
    rendered = subprocess.run(
        [sys.executable, str(MONITORING / "render_rules.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=TOOL_TIMEOUT,
    )
    assert rendered.returncode == 0, rendered.stderr
    rule = yaml_document((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["spec"] == yaml_document((MONITORING / "alerts.yaml").read_text())


def test_the_pod_monitor_scrapes_the_instances_and_nothing_else() -> None:
    monitor = yaml_document((MONITORING / "podmonitor.yaml").read_text())["spec"]
    selector = monitor["selector"]["matchLabels"].items()
    [endpoint] = monitor["podMetricsEndpoints"]
    assert endpoint["path"] == "/metrics"
    workloads = {
        doc["metadata"]["name"]: doc["spec"]["template"]
        for path in ("statefulset.yaml", "router.yaml")
        for doc in yaml_documents((DEPLOY / "k8s" / path).read_text())
        if doc["kind"] in ("StatefulSet", "Deployment")
    }
    instance, router = workloads["upload"], workloads["upload-router"]
    assert selector <= instance["metadata"]["labels"].items()
    assert not selector <= router["metadata"]["labels"].items()
    container = instance["spec"]["containers"][0]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    env = {variable["name"]: variable.get("value") for variable in container["env"]}
    # The metrics port of its own (METRICS_PORT), not the chunk port the router reaches.
    assert endpoint["port"] == "metrics"
    assert ports["metrics"] == int(env["METRICS_PORT"]) != int(env["PORT"]) == ports["http"]

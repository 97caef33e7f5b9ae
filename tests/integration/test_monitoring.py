"""The Grafana dashboard (deploy/grafana/consent-ledger.json) and the Prometheus
alert rules (deploy/prometheus/alerts.yaml) ask only for metrics the service
exports: every metric name in every PromQL expression of both files is in a
real ``/metrics`` scrape of the API on a real database that a real worker batch
wrote to. The files have the shape Grafana and Prometheus load, and promtool,
where it is installed, agrees."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import yaml

from consent_ledger.api.app import create_app
from consent_ledger.core.batch import Record
from consent_ledger.core.policy import load_reference_policy
from consent_ledger.core.verdicts import Severity
from consent_ledger.devtools.processes import find_free_port
from consent_ledger.integrity.keyring import KeyRing
from consent_ledger.settings import Settings
from consent_ledger.worker.pipeline import BatchPipeline
from tests.conftest import bearer, issue_token, signed_in_client
from tests.e2e.conftest import SCENARIOS

pytestmark = [pytest.mark.integration]

DEPLOY = Path(__file__).parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "consent-ledger.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yaml"
MASTER_KEY = os.urandom(32)
# What the issue asks both files to watch.
WATCHED = {
    "consent_ledger_consumer_lag",
    "consent_ledger_batch_duration_seconds_bucket",
    "consent_ledger_outbox_depth",
    "consent_ledger_outbox_dead",
    "consent_ledger_violations_opened_total",
    "consent_ledger_auth_failures_total",
    "consent_ledger_webhook_deliveries",
    "consent_ledger_webhook_failed_attempts_total",
    "consent_ledger_webhook_oldest_pending_age_seconds",
}

# -- metric names in PromQL: a small tokenizer --------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")  # a range or a subquery's [5m:1m]
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")  # Grafana's $job, ${datasource}, $__rate_interval
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)(?:ms|[smhdwy])?")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)")


def metric_names(expression: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings,
    label matchers, ranges, label lists, variables and numbers are taken out,
    that are neither followed by "(" (functions, aggregations) nor keywords."""
    text = _STRING.sub('""', expression)
    for pattern in (_MATCHERS, _RANGE, _LABEL_LIST, _VARIABLE, _NUMBER):
        text = pattern.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if text[match.end() :].lstrip().startswith("("):
            continue
        if match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


@pytest.mark.parametrize(
    ("expression", "names"),
    [
        (
            'histogram_quantile(0.9, sum by (le) (rate(a_bucket{x="y(z)", j=~"$job"}[5m])))'
            " > bool 2 and on (p) b offset 5m",
            {"a_bucket", "b"},
        ),
        ("sum(rate(c_total[$__rate_interval])) by (reason) * 60 / 1e3", {"c_total"}),
        ("max without (instance) (d) unless ignoring(x) group_left(y) e:rule", {"d", "e:rule"}),
        ("max_over_time(f[1h:5m]) - inf", {"f"}),
    ],
)
def test_the_tokenizer_finds_the_metric_names(expression: str, names: set[str]) -> None:
    assert metric_names(expression) == names


# -- the two files ------------------------------------------------------------------


def _expressions_in(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str):
                yield value
            else:
                yield from _expressions_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from _expressions_in(item)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text("utf-8"))
    return loaded


def alert_rules() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(ALERTS.read_text("utf-8"))
    return loaded


def dashboard_metric_names() -> dict[str, set[str]]:
    """{expression: metric names} of every panel target and query variable."""
    board = dashboard()
    found = {expr: metric_names(expr) for expr in _expressions_in(board["panels"])}
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            match = _LABEL_VALUES.match(query)
            assert match, f"variable {variable['name']}: {query!r} is not label_values(METRIC, ...)"
            found[query] = {match.group(1)}
    return found


def alert_metric_names() -> dict[str, set[str]]:
    return {
        rule["expr"]: metric_names(rule["expr"])
        for group in alert_rules()["groups"]
        for rule in group["rules"]
    }


def test_the_dashboard_has_the_shape_grafana_imports() -> None:
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["title"] and panel["description"], panel
        assert panel["targets"], panel["title"]
        # The data source is the variable, so the board imports against any Prometheus.
        for holder in (panel, *panel["targets"]):
            assert holder["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
    used = set().union(*dashboard_metric_names().values())
    assert used >= WATCHED, WATCHED - used


def test_the_alert_rules_have_the_shape_prometheus_loads() -> None:
    rules = alert_rules()
    assert set(rules) == {"groups"}
    names = []
    for group in rules["groups"]:
        assert group["name"] and group["rules"], group
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule
            assert re.fullmatch(r"ConsentLedger[A-Z][A-Za-z]+", rule["alert"]), rule
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            if "for" in rule:
                assert re.fullmatch(r"\d+[smh]", rule["for"]), rule
            assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule
            assert rule["annotations"]["summary"] and rule["annotations"]["description"]
            names.append(rule["alert"])
    assert len(names) == len(set(names)), names
    used = set().union(*alert_metric_names().values())
    assert used >= WATCHED, WATCHED - used


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_alert_rules() -> None:
    checked = subprocess.run(
        [shutil.which("promtool") or "promtool", "check", "rules", str(ALERTS)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- a real scrape --------------------------------------------------------------------


def exported_names(exposition: str) -> set[str]:
    """Every name a scrape offers: its families (with a histogram's and a summary's
    suffixes, which Prometheus stores as names of their own) and its samples."""
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            names.add(name)
            if kind == "histogram":
                names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
            elif kind == "summary":
                names |= {f"{name}_sum", f"{name}_count"}
        elif line and not line.startswith("#"):
            match = _IDENTIFIER.match(line)
            assert match, line
            names.add(match.group())
    return names


@pytest.fixture
async def scrape(pool: asyncpg.Pool, unique_name: Callable[[str], str]) -> AsyncIterator[str]:
    """/metrics of the API after a worker batch of the `erasure` scenario (violations
    of every severity the scenario breaks, a latency in the histogram) and one
    failed sign-in, as an operator (Prometheus' role) reads it."""
    settings = Settings(
        events_topic=unique_name("events"),
        kafka_bootstrap=f"127.0.0.1:{find_free_port()}",  # nothing listens: broker_up 0
        kafka_idempotence=False,
        master_key=base64.b64encode(MASTER_KEY).decode(),
    )
    pipeline = BatchPipeline(pool, KeyRing(MASTER_KEY), load_reference_policy(), settings)
    lines = (SCENARIOS / "erasure" / "events.jsonl").read_bytes().splitlines()
    await pipeline.process([Record(0, offset, line) for offset, line in enumerate(lines)])
    app = create_app(settings, pool=pool, policy=load_reference_policy())
    async with signed_in_client(app, await issue_token(pool, "operator")) as client:
        refused = await client.get("/metrics", headers=bearer("clt_" + "0" * 43))
        assert refused.status_code == 401
        response = await client.get("/metrics")
    assert response.status_code == 200
    yield response.text


async def test_every_metric_the_files_use_is_exported(scrape: str) -> None:
    exported = exported_names(scrape)
    assert {
        "consent_ledger_batch_duration_seconds_bucket",
        "consent_ledger_violations_opened_total",
        "consent_ledger_auth_failures_total",
    } <= {line.split("{")[0] for line in scrape.splitlines() if not line.startswith("#")}
    for source, found in (
        ("dashboard", dashboard_metric_names()),
        ("alerts", alert_metric_names()),
    ):
        for expression, names in found.items():
            assert names, f"{source}: no metric in {expression!r}"
            assert names <= exported, f"{source}: {names - exported} not exported ({expression!r})"


async def test_the_new_figures_match_the_database(scrape: str, pool: asyncpg.Pool) -> None:
    async with pool.acquire() as connection:
        by_severity = dict(
            await connection.fetch("SELECT severity, count(*) FROM violations GROUP BY 1")
        )
        batches = await connection.fetchval("SELECT sum(batches) FROM consumer_positions")
    lines = scrape.splitlines()
    assert by_severity  # the scenario breaks rules
    for severity in Severity:  # every severity, 0 when none was opened
        count = by_severity.get(severity.value, 0)
        assert f'consent_ledger_violations_opened_total{{severity="{severity}"}} {count}' in lines
    buckets = [
        int(line.rsplit(" ", 1)[1])
        for line in lines
        if line.startswith("consent_ledger_batch_duration_seconds_bucket{")
    ]
    assert buckets == sorted(buckets) and buckets[-1] == batches == 1  # cumulative, +Inf last
    assert 'consent_ledger_auth_failures_total{reason="unknown-token"} 1' in lines


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
async def test_promtool_accepts_the_scrape(scrape: str) -> None:
    checked = await asyncio.to_thread(
        subprocess.run,
        [shutil.which("promtool") or "promtool", "check", "metrics"],
        input=scrape, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


# Each alert on made-up series (promtool's rule unit tests): the series that must
# fire it by eval_time with these labels, and healthy ones that must not. Two
# replicas (instance a, b) report the database's figures alike where it matters.
ALERT_CASES: list[tuple[str, dict[str, str], str, list[dict[str, str]]]] = [
    ("ConsentLedgerBrokerUnreachable",
     {'consent_ledger_broker_up{instance="a"}': "0x10", 'consent_ledger_broker_up{instance="b"}': "0x10"},
     "6m", [{"severity": "critical"}]),
    ("ConsentLedgerBrokerUnreachable",  # one replica still reaches it
     {'consent_ledger_broker_up{instance="a"}': "0x10", 'consent_ledger_broker_up{instance="b"}': "1x10"},
     "6m", []),
    ("ConsentLedgerConsumerLagGrowing",
     {'consent_ledger_consumer_lag{instance="a",topic="t",partition="0"}': "0+200x30"},
     "20m", [{"severity": "warning", "topic": "t", "partition": "0"}]),
    ("ConsentLedgerConsumerLagGrowing",  # large but shrinking
     {'consent_ledger_consumer_lag{instance="a",topic="t",partition="0"}': "9000-100x30"},
     "20m", []),
    ("ConsentLedgerBatchLatencyHigh",  # every batch between 1 and 2.5 s
     {'consent_ledger_batch_duration_seconds_bucket{instance="a",topic="t",partition="0",le="1.0"}': "0x30",
      'consent_ledger_batch_duration_seconds_bucket{instance="a",topic="t",partition="0",le="2.5"}': "0+10x30",
      'consent_ledger_batch_duration_seconds_bucket{instance="a",topic="t",partition="0",le="+Inf"}': "0+10x30"},
     "20m", [{"severity": "warning"}]),
    ("ConsentLedgerBatchLatencyHigh",
     {'consent_ledger_batch_duration_seconds_bucket{instance="a",topic="t",partition="0",le="1.0"}': "0+10x30",
      'consent_ledger_batch_duration_seconds_bucket{instance="a",topic="t",partition="0",le="+Inf"}': "0+10x30"},
     "20m", []),
    ("ConsentLedgerRecordsIsolated",
     {'consent_ledger_records_isolated_total{instance="a",topic="t"}': "0 0 1 1 1"},
     "3m", [{"severity": "warning"}]),
    ("ConsentLedgerOutboxBacklog",
     {'consent_ledger_outbox_oldest_age_seconds{instance="a"}': "0+60x20"},
     "12m", [{"severity": "warning"}]),
    ("ConsentLedgerOutboxRelayStuck",
     {'consent_ledger_outbox_seconds_since_progress{instance="a"}': "0+60x20",
      'consent_ledger_outbox_depth{instance="a"}': "3x20"},
     "12m", [{"severity": "critical"}]),
    ("ConsentLedgerOutboxRelayStuck",  # idle, but nothing waits
     {'consent_ledger_outbox_seconds_since_progress{instance="a"}': "0+60x20",
      'consent_ledger_outbox_depth{instance="a"}': "0x20"},
     "12m", []),
    ("ConsentLedgerOutboxDeadMessages",
     {'consent_ledger_outbox_dead{instance="a"}': "0 0 0 1 1 1"},
     "5m", [{"severity": "warning"}]),
    ("ConsentLedgerCriticalViolationOpened",
     {'consent_ledger_violations_opened_total{instance="a",severity="critical"}': "0 0 1 1 1",
      'consent_ledger_violations_opened_total{instance="a",severity="high"}': "0+5x5"},
     "3m", [{"severity": "warning"}]),
    ("ConsentLedgerCriticalViolationOpened",  # only high ones
     {'consent_ledger_violations_opened_total{instance="a",severity="critical"}': "2x5",
      'consent_ledger_violations_opened_total{instance="a",severity="high"}': "0+5x5"},
     "3m", []),
    ("ConsentLedgerViolationSurge",
     {'consent_ledger_violations_opened_total{instance="a",severity="high"}': "0+20x30",
      'consent_ledger_violations_opened_total{instance="b",severity="high"}': "0+20x30"},
     "25m", [{"severity": "warning", "violation_severity": "high"}]),
    ("ConsentLedgerFailedSignIns",  # 40 a minute over two replicas
     {'consent_ledger_auth_failures_total{instance="a",reason="unknown-token"}': "0+20x30",
      'consent_ledger_auth_failures_total{instance="b",reason="expired"}': "0+20x30"},
     "20m", [{"severity": "warning"}]),
    ("ConsentLedgerFailedSignIns",
     {'consent_ledger_auth_failures_total{instance="a",reason="unknown-token"}': "0+5x30"},
     "20m", []),
    ("ConsentLedgerServerErrors",
     {'consent_ledger_http_requests_total{instance="a",status="500"}': "0+10x30",
      'consent_ledger_http_requests_total{instance="a",status="200"}': "0+90x30"},
     "20m", [{"severity": "warning"}]),
    ("ConsentLedgerWebhookFailing",
     {'consent_ledger_webhook_failed_attempts_total{instance="a",url="siem"}': "0+2x40",
      'consent_ledger_webhook_deliveries{instance="a",url="siem",state="pending"}': "4x40",
      'consent_ledger_webhook_failed_attempts_total{instance="a",url="chat"}': "0+2x40",
      'consent_ledger_webhook_deliveries{instance="a",url="chat",state="pending"}': "0x40"},
     "20m", [{"severity": "warning", "url": "siem"}]),
    ("ConsentLedgerWebhookBacklog",
     {'consent_ledger_webhook_oldest_pending_age_seconds{instance="a",url="siem"}': "3000+60x30"},
     "20m", [{"severity": "warning", "url": "siem"}]),
    ("ConsentLedgerWebhookDeadAlerts",
     {'consent_ledger_webhook_deliveries{instance="a",url="siem",state="dead"}': "0 0 0 2 2 2",
      'consent_ledger_webhook_deliveries{instance="a",url="chat",state="dead"}': "5x6"},
     "5m", [{"severity": "critical", "url": "siem"}]),
]  # fmt: skip


def test_every_alert_has_a_case_that_fires_it() -> None:
    fired = {name for name, _, _, expected in ALERT_CASES if expected}
    assert fired == {rule["alert"] for rule in _all_rules()}


def _all_rules() -> list[dict[str, Any]]:
    return [rule for group in alert_rules()["groups"] for rule in group["rules"]]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_the_alerts_fire_on_what_they_watch_and_not_otherwise(tmp_path: Path) -> None:
    """promtool compares annotations too: the rules are tested without theirs
    (their templates are checked by `promtool check rules` above)."""
    rules = alert_rules()
    for rule in (rule for group in rules["groups"] for rule in group["rules"]):
        rule.pop("annotations")
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules), "utf-8")
    cases = {
        "rule_files": ["alerts.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "name": f"{name} {number}",
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series.items()],
                "alert_rule_test": [
                    {
                        "eval_time": at,
                        "alertname": name,
                        "exp_alerts": [{"exp_labels": labels} for labels in expected],
                    }
                ],
            }
            for number, (name, series, at, expected) in enumerate(ALERT_CASES)
        ],
    }
    (tmp_path / "cases.yaml").write_text(yaml.safe_dump(cases), "utf-8")
    checked = subprocess.run(
        [shutil.which("promtool") or "promtool", "test", "rules", "cases.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr

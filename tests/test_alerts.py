"""deploy/prometheus/alerts.yml: valid for Prometheus (promtool), each rule fires when it should and only then, and
every metric it names is one feedworker really serves."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.test_metrics import scrape

ALERTS = Path(__file__).parent.parent / "deploy" / "prometheus" / "alerts.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install "
                                                               "prometheus); the structure tests still run")


def rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"]}


def test_the_rules_an_operator_needs_are_there_and_complete() -> None:
    found = rules()
    assert {"FeedworkerBacklogTooOld", "FeedworkerFailureRateHigh", "FeedworkerNoWorkers"} <= set(found)
    for name, rule in found.items():
        assert rule["expr"].strip() and re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name


def test_every_metric_named_is_served(tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from worker.celeryapp.celery_app import make_app
    from worker.observing import metrics, metricserver
    from worker.settings import Settings

    redis.Redis.from_url(redis_url).flushdb()
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    store_url = f"sqlite:///{tmp_path / 'fw.db'}"
    from tasks.store.ledger import Store
    from tasks.store.migrate import upgrade

    store = Store(store_url)
    upgrade(store)
    from tasks.store.webhooks import ensure

    ensure(store, ["hook"])  # a webhook endpoint's gauges exist once it has its row
    store.dispose()
    settings = Settings(broker_url=redis_url, store_url=store_url)
    server = metricserver.serve(0, "127.0.0.1", settings, app=make_app(settings))
    try:
        metrics.drops_discovered("watch", 1)  # the process's counters exist from their first use
        served = {name for name, _ in scrape(server.port)}
    finally:
        server.stop()
    named = {m for r in rules().values() for m in re.findall(r"feedworker_[a-z_]+", r["expr"])}
    assert named and named <= served, named - served


@needs_promtool
def test_promtool_check_rules() -> None:
    res = subprocess.run([str(PROMTOOL), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"SUCCESS: {len(rules())} rules found" in res.stdout


def case(alert: str, series: dict[str, str], at: str, summary: str | None, **labels: str) -> dict[str, Any]:
    """One promtool unit test: ``series`` over time; at ``at`` the alert fires with ``summary`` (None: silent)."""
    expected = []
    if summary is not None:
        annotations = {"summary": summary, "description": rules()[alert]["annotations"]["description"]}
        expected = [{"exp_labels": {"severity": rules()[alert]["labels"]["severity"], **labels},
                     "exp_annotations": annotations}]
    return {"interval": "1m", "input_series": [{"series": s, "values": v} for s, v in series.items()],
            "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}]}


CASES = [
    # The oldest drop ages a minute a minute: over 10 min at 11m, for 5m, so firing at 16m.
    case("FeedworkerBacklogTooOld", {"feedworker_oldest_queued_age_seconds": "0+60x30"}, "10m", None),
    case("FeedworkerBacklogTooOld", {"feedworker_oldest_queued_age_seconds": "0+60x30"}, "20m",
         "feedworker is behind: the oldest queued drop has waited 20m 0s"),
    case("FeedworkerStalled", {"feedworker_backlog_drops": "5x40",
                               'feedworker_drops_total{outcome="published",stage="publish"}': "100x40"}, "25m",
         "feedworker has a backlog of 5 drops and finished none in 10 minutes"),
    case("FeedworkerStalled", {"feedworker_backlog_drops": "5x40",
                               'feedworker_drops_total{outcome="published",stage="publish"}': "0+10x40"}, "25m",
         None),
    case("FeedworkerFailureRateHigh", {'feedworker_drops_total{outcome="failed",stage="parse"}': "0+3x40",
                                       'feedworker_drops_total{outcome="published",stage="publish"}': "0+7x40"},
         "35m", "30% of drops failed over the last 15 minutes"),
    case("FeedworkerFailureRateHigh", {'feedworker_drops_total{outcome="failed",stage="parse"}': "0+1x40",
                                       'feedworker_drops_total{outcome="published",stage="publish"}': "0+9x40"},
         "35m", None),
    case("FeedworkerNoWorkers", {"feedworker_workers": "0x10", "feedworker_broker_up": "1x10"}, "5m",
         "No feedworker (Celery) worker answers"),
    case("FeedworkerNoWorkers", {"feedworker_workers": "0x10", "feedworker_broker_up": "0x10"}, "5m", None),
    case("FeedworkerNoWorkers", {"feedworker_workers": "2x10", "feedworker_broker_up": "1x10"}, "5m", None),
    case("FeedworkerBrokerDown", {"feedworker_broker_up": "0x10"}, "5m", "feedworker cannot reach its broker (Redis)"),
    case("FeedworkerStoreDown", {"feedworker_store_up": "0x10"}, "5m", "feedworker cannot read its store (database)"),
    case("FeedworkerStoreDown", {"feedworker_store_up": "1x10"}, "5m", None),
    case("FeedworkerReservedFolderTampered", {"feedworker_reserved_folders_tampered": "0x5 2x10"}, "10m",
         "2 reserved folder(s) of the drop folder are not the service's own"),
    case("FeedworkerReservedFolderTampered", {"feedworker_reserved_folders_tampered": "0x10 1x1 0x10"}, "10m", None),
    case("FeedworkerPoisonDrop", {'feedworker_poison_drops_total{stage="parse"}': "0x10 1x20"}, "15m",
         "1 drop(s) killed their worker process repeatedly and were failed as poison"),
    case("FeedworkerPoisonDrop", {'feedworker_poison_drops_total{stage="parse"}': "0x30"}, "15m", None),
    case("FeedworkerWorkersDying", {'feedworker_batch_redeliveries_total{stage="parse"}': "0+3x60"}, "40m",
         "45 batch deliveries in 15 minutes followed a worker that died"),
    case("FeedworkerWorkersDying", {'feedworker_batch_redeliveries_total{stage="parse"}': "0+1x60"}, "40m", None),
    case("FeedworkerWebhookFailing", {'feedworker_webhook_failing_seconds{endpoint="search"}': "0+60x30",
                                      'feedworker_webhook_failing_seconds{endpoint="site"}': "0x30"}, "20m",
         "Webhook endpoint search has refused changes for 20m 0s", endpoint="search"),
    case("FeedworkerWebhookFailing", {'feedworker_webhook_failing_seconds{endpoint="search"}': "0+60x30"}, "12m",
         None),
    case("FeedworkerMetricsDown", {'up{job="feedworker",instance="w2:9108"}': "0x10"}, "6m",
         "The feedworker metrics endpoint w2:9108 does not answer", job="feedworker", instance="w2:9108"),
]


@needs_promtool
def test_each_rule_fires_when_it_should(tmp_path: Path) -> None:
    spec = tmp_path / "alerts_test.yml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(ALERTS)], "evaluation_interval": "1m", "tests": CASES}),
                    encoding="utf-8")
    res = subprocess.run([str(PROMTOOL), "test", "rules", str(spec)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout

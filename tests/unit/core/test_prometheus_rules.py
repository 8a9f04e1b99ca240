"""`deploy/prometheus/`: promtool accepts the scrape configuration and the alerting rules, and
every metric the rules use is one the services export."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
DEPLOY = ROOT / "deploy" / "prometheus"


def test_promtool_accepts_the_config_and_the_rules(promtool: str) -> None:
    for args in (["check", "config", str(DEPLOY / "prometheus.yml")], ["check", "rules", str(DEPLOY / "alerts.yml")]):
        done = subprocess.run([promtool, *args], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "SUCCESS" in done.stdout + done.stderr


def test_the_rules_name_only_exported_metrics() -> None:
    sources = ("shared/metrics.py", "services/notification/telemetry.py")
    exported = "".join((ROOT / path).read_text() for path in sources)
    used = set(re.findall(r"placematch_[a-z_]+", (DEPLOY / "alerts.yml").read_text()))
    assert used, "the rules use placematch metrics"
    for name in used:
        assert f'"{name}"' in exported, name
    assert {"placematch_consumer_lag", "placematch_outbox_oldest_age_seconds", "placematch_dead_lettered_total",
            "placematch_webhook_attempts_total", "placematch_webhook_subscriptions_disabled_total"} <= used

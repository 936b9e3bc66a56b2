"""deploy/: the systemd unit passes systemd-analyze and its stop timeout covers the budget."""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

from taonode.config import NodeSection

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "deploy" / "systemd" / "taonode@.service"
MAX_SHUTDOWN_STAGES = 5


def test_systemd_unit_verifies_succeeds(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze is not None, "systemd-analyze is part of this machine kind"
    # verify checks that ExecStart exists: point it at this interpreter instead of /opt/taonode.
    text = UNIT.read_text().replace("/opt/taonode/.venv/bin/taonode", sys.executable)
    instance = tmp_path / "taonode@prover.service"
    instance.write_text(text)
    result = subprocess.run(
        [analyze, "verify", str(instance)], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    # systemd only warns (exit 0) on unknown keys or bad values: any output is a defect.
    assert result.stderr.strip() == "", result.stderr
    assert result.stdout.strip() == ""


def test_systemd_unit_sandboxing_and_stop_budget_succeeds() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["Restart"] == "on-failure"
    assert service["User"] != "root"
    assert "/var/lib/taonode/%i" in service["ReadWritePaths"]
    default_stage = NodeSection.__dataclass_fields__["shutdown_stage_timeout_s"].default
    assert isinstance(default_stage, float)
    assert float(service["TimeoutStopSec"]) > MAX_SHUTDOWN_STAGES * default_stage


PROMTOOL = ROOT / ".tools" / "usr" / "bin" / "promtool"
PROMETHEUS = ROOT / "deploy" / "prometheus"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL.exists(), "run `make tools` (make test does) to unpack promtool"
    return subprocess.run(
        [str(PROMTOOL), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
        cwd=PROMETHEUS,
    )


def test_prometheus_config_and_alert_rules_check_succeeds() -> None:
    rules = _promtool("check", "rules", "alerts.yml")
    assert rules.returncode == 0, rules.stdout + rules.stderr
    config = _promtool("check", "config", "prometheus.yml")
    assert config.returncode == 0, config.stdout + config.stderr


def test_alert_rules_unit_tests_succeeds() -> None:
    result = _promtool("test", "rules", "alerts.test.yml")
    assert result.returncode == 0, result.stdout + result.stderr

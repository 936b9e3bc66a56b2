"""The Grafana dashboard and the alert rules only use metrics a full node really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from taonode.config import parse_config
from taonode.node import Node

ROOT = Path(__file__).resolve().parents[2]
METRIC = re.compile(r"\btaonode_[a-z0-9_]+")
SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_info", "_created")


def _referenced() -> set[str]:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "taonode.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [dashboard["templating"]["list"][1]["query"]]
    alerts = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    exprs += [line for line in alerts.splitlines() if "expr:" in line]
    return {m for expr in exprs for m in METRIC.findall(expr)}


async def test_dashboard_and_alerts_use_exported_metrics_succeeds(tmp_path: Path) -> None:
    config = parse_config(
        {
            "node": {
                "data_dir": str(tmp_path / "data"),
                "roles": ["prover", "challenger", "voter"],
            },
            "api": {"port": 0},
        },
        tmp_path / "node.toml",
        environ={},
    )
    node = Node(config)
    await node.assemble()
    try:
        exported = {family.name for family in node.registry.collect()}
    finally:
        assert node.role_node is not None
        node.role_node.store.close()
    referenced = _referenced()
    assert len(referenced) >= 10
    missing = []
    for name in sorted(referenced):
        base = name
        for suffix in SUFFIXES:
            base = base.removesuffix(suffix)
        if name not in exported and base not in exported:
            missing.append(name)
    assert not missing, f"dashboard/alerts reference metrics no node exports: {missing}"

"""schemathesis against a live prover daemon, generated from its own ``/openapi.json``.

Every check is on (server errors, status codes, content types, response headers and schemas,
negative data rejected, positive data accepted, 405 + ``Allow``, …); bounded in examples
(60 per operation and phase, fixed seed). Any failure fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.node.daemon import ROOT, Daemon, write_config

pytestmark = pytest.mark.slow
CONFIG = Path(__file__).with_name("schemathesis.toml")


def test_schemathesis_every_check_against_live_node_succeeds(tmp_path: Path) -> None:
    with Daemon(write_config(tmp_path, tmp_path / "data"), "--role", "prover") as node:
        port = node.wait_port(120)
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "schemathesis.cli",
                "--config-file",
                str(CONFIG),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                "60",
                "--seed",
                "7",
                "--workers",
                "1",
                "--request-timeout",
                "30",
            ],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=400,
            check=False,
            env=dict(os.environ, NO_COLOR="1"),
        )
        assert node.proc.poll() is None, "the node died under fuzzing"
    summary = result.stdout[-4000:]
    assert result.returncode == 0, summary + result.stderr[-2000:]
    assert " passed" in summary
    assert "failure" not in summary.split("SUMMARY")[-1], summary

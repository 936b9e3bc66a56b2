"""The daemon as an operator runs it: endpoints, SIGTERM, the data-dir lock, start-up errors."""

from __future__ import annotations

import fcntl
import json
import signal
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.node.daemon import ROOT, Daemon, run_taonode, write_config


def _get(port: int, path: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def _json(port: int, path: str) -> tuple[int, Any]:
    status, body, _ = _get(port, path)
    return status, json.loads(body)


def _wait_ready(port: int) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status, body = _json(port, "/readyz")
        if status == 200:
            assert isinstance(body, dict)
            return body
        time.sleep(0.05)
    raise AssertionError("never ready")


def test_daemon_serves_endpoints_and_stops_on_sigterm_succeeds(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with Daemon(write_config(tmp_path, data_dir), "--role", "voter") as node:
        port = node.wait_port()
        assert _json(port, "/healthz") == (200, {"status": "ok"})
        ready = _wait_ready(port)
        assert ready["ready"] is True
        assert ready["components"]["api"] is True

        status, body, ctype = _get(port, "/metrics")
        assert status == 200
        assert ctype.startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(body.decode())}
        assert families["taonode_build_info"].samples[0].labels["version"]
        assert families["taonode_uptime_seconds"].samples[0].value >= 0
        assert "taonode_event_loop_lag_seconds" in families
        assert families["taonode_ready"].samples[0].value == 1.0

        status, doc = _json(port, "/openapi.json")
        assert status == 200
        assert doc["openapi"].startswith("3.")
        for path, methods in doc["paths"].items():
            assert "get" in methods
            assert _get(port, path)[0] in (200, 503), path
        assert {"/healthz", "/readyz", "/metrics", "/v1/status", "/openapi.json"} <= set(
            doc["paths"]
        )

        status, info = _json(port, "/v1/status")
        assert status == 200
        assert info["roles"] == ["voter"]
        # A voter node runs the whole role stack (on its embedded development chain).
        for component in ("state", "p2p", "sender", "watcher", "voter", "protocol"):
            assert info["components"][component] is True, component
        assert _json(port, "/no/such/route")[0] == 404

        started = time.monotonic()
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(20) == 0
        assert time.monotonic() - started < 2 * 2.0 + 3
    events = [e.get("event") for e in node.events()]
    assert "stop requested" in events
    assert "node stopped" in events
    # The lock is free again: we can take it ourselves.
    with (data_dir / "taonode.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_daemon_second_instance_same_data_dir_reverts(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    config = write_config(tmp_path, data_dir)
    with Daemon(config) as first:
        first.wait_port()
        second = run_taonode("--config", str(config))
        assert second.returncode == 2
        assert "in use by another taonode" in second.stderr
        assert first.proc.poll() is None


def test_daemon_port_in_use_reverts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, tmp_path / "data", port=port)
        result = run_taonode("--config", str(config))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_daemon_unusable_data_dir_reverts(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    config = write_config(tmp_path, blocker / "data")
    result = run_taonode("--config", str(config))
    assert result.returncode == 2
    assert "node.data_dir: cannot create" in result.stderr
    assert "Traceback" not in result.stderr


def test_daemon_example_config_starts_succeeds(tmp_path: Path) -> None:
    # The example as shipped, with its data dir and port moved out of the way.
    text = (ROOT / "node.toml.example").read_text()
    text = text.replace('data_dir = ".data/node"', f'data_dir = "{tmp_path / "data"}"')
    text = text.replace("port = 8740", "port = 0")
    config = tmp_path / "example.toml"
    config.write_text(text)
    with Daemon(config, "--role", "voter") as node:
        port = node.wait_port()
        _wait_ready(port)
        node.proc.send_signal(signal.SIGINT)
        assert node.proc.wait(20) == 0

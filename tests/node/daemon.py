"""Runs ``taonode`` as a real subprocess and finds its API port from the JSON log."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parents[2]


def write_config(
    tmp_path: Path, data_dir: Path, *, port: int = 0, extra: str = "", roles: str = "[]"
) -> Path:
    """A node config; without roles the node runs only its API and health components."""
    path = tmp_path / "node.toml"
    path.write_text(
        f'[node]\ndata_dir = "{data_dir}"\nroles = {roles}\nshutdown_stage_timeout_s = 2.0\n'
        f'[api]\nport = {port}\n[log]\nformat = "json"\n{extra}'
    )
    return path


class Daemon:
    """A taonode process; ``lines`` collects its stderr (JSON log lines)."""

    def __init__(self, config: Path, *args: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "taonode", "--config", str(config), *args],
            # Only stderr (the log) is read; an unread stdout pipe could fill and block the node.
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def events(self) -> list[dict[str, object]]:
        out = []
        for line in list(self.lines):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out

    def wait_port(self, timeout: float = 60.0) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events():
                if event.get("event") == "api listening":
                    port = event["port"]
                    assert isinstance(port, int)
                    return port
            if self.proc.poll() is not None:
                raise AssertionError(f"taonode exited early: {self.lines}")
            time.sleep(0.05)
        raise AssertionError(f"taonode never listened: {self.lines}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def run_taonode(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m taonode ARGS`` to completion (for start-up failures)."""
    return subprocess.run(
        [sys.executable, "-m", "taonode", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        check=False,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )

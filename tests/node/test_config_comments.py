"""The commands in the anvil configs' header comments really work, as written.

Issue 13: the comment said to start anvil without interval mining (the chain never reached a
deadline) and to deploy without ``--password-file``. This runs the comment's commands — anvil,
``keys import``, ``contracts deploy`` — on a free port in a scratch folder, and checks that the
chain advances while idle.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from taonode.chain.anvil import free_port
from tests.node.daemon import ROOT

CONFIGS = sorted((ROOT / "deploy" / "configs").glob("anvil-*.toml"))
# anvil's first default dev account (printed by anvil at start; public knowledge).
ANVIL_KEY_0 = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"


def comment_commands(config: Path) -> list[str]:
    """The indented command lines of the header comment, continuations joined."""
    commands: list[str] = []
    pending = ""
    for line in config.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("#   "):
            continue
        text = line[4:].strip()
        if pending:
            text = pending + " " + text
        if text.endswith("\\"):
            pending = text[:-1].strip()
            continue
        pending = ""
        commands.append(text)
    return commands


def _rpc(url: str, method: str) -> object:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": []}).encode()
    req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=5) as resp:
        return json.loads(resp.read())["result"]


@pytest.mark.anvil
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_anvil_config_comment_commands_work_succeeds(tmp_path: Path, config: Path) -> None:
    commands = comment_commands(config)
    anvil = [c for c in commands if "bin/anvil" in c]
    assert len(anvil) == 1, commands
    assert "--block-time" in anvil[0]  # interval mining, or deadlines never come
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = shlex.split(anvil[0].replace("8545", str(port)))
    argv[0] = str(ROOT / argv[0])
    (tmp_path / "keys").mkdir()
    (tmp_path / "deployer.key").write_text(ANVIL_KEY_0)
    password = tmp_path / "keys" / "deployer.pass"
    password.write_text("a deployer password")
    password.chmod(0o600)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                _rpc(url, "eth_chainId")
                break
            except OSError:
                time.sleep(0.1)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        ran = 0
        for command in commands:
            if not command.startswith(("taonode keys", "taonode contracts")):
                continue  # calibrate / model add are exercised by tests/node/test_profile_k.py
            words = shlex.split(command.replace("8545", str(port)))
            if words[:2] == ["taonode", "keys"]:
                words += ["--scrypt-n", "16"]  # the test's only departure: a cheap work factor
            done = subprocess.run(
                [sys.executable, "-m", "taonode", *words[1:]],
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert done.returncode == 0, (command, done.stderr)
            ran += 1
        assert ran == 2
        deployment = json.loads((tmp_path / "deployment.json").read_text())
        assert deployment["chainId"] == 31337
        # Idle chain, no transactions: interval mining still moves the block number.
        first = int(str(_rpc(url, "eth_blockNumber")), 16)
        for _ in range(100):
            if int(str(_rpc(url, "eth_blockNumber")), 16) >= first + 2:
                break
            time.sleep(0.1)
        else:
            raise AssertionError("anvil mines no blocks while idle: no interval mining")
        # The real binary, not the npm wrapper: a signal to this PID reaches anvil itself.
        proc.kill()
        assert proc.wait(10) != 0
        with pytest.raises(urllib.error.URLError):
            _rpc(url, "eth_chainId")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)

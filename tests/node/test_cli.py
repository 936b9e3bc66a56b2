"""The command line as a user runs it: version, validate, bad usage and exit codes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from taonode import __version__
from taonode.cli import COMMANDS
from tests.node.daemon import run_taonode

ROOT = Path(__file__).resolve().parents[2]


def _taonode(*args: str) -> subprocess.CompletedProcess[str]:
    return run_taonode(*args, timeout=120)


def test_cli_version_succeeds() -> None:
    result = _taonode("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"taonode {__version__}"


def test_cli_config_validate_example_succeeds() -> None:
    result = _taonode("config", "validate", "node.toml.example")
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout


def test_cli_config_validate_bad_file_reverts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\ndata_dir = "d"\n[api]\nport = "http"\n')
    result = _taonode("config", "validate", str(bad))
    assert result.returncode == 2
    assert f"{bad}: api.port: must be an integer" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_bad_usage_reverts() -> None:
    for args in (("--role", "miner", "--config", "x"), ("--frobnicate",), ()):
        result = _taonode(*args)
        assert result.returncode == 2, args
        assert "usage:" in result.stderr
        assert "Traceback" not in result.stderr


def test_cli_lists_every_command_succeeds() -> None:
    result = _taonode("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert name in result.stdout


def test_cli_unsafe_cheat_off_local_chain_reverts(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp_path / "d"}"\n[chain]\nchain_id = 1\n')
    result = _taonode("--config", str(config), "--unsafe-adversary", "fp16-weights")
    assert result.returncode == 2
    assert "refused (local chains only" in result.stderr
    unknown = tmp_path / "local.toml"
    unknown.write_text(f'[node]\ndata_dir = "{tmp_path / "d"}"\n[chain]\nchain_id = 31337\n')
    result = _taonode("--config", str(unknown), "--unsafe-adversary", "no-such-cheat")
    assert result.returncode == 2
    assert "refused" in result.stderr

"""Config parsing: the example loads, every kind of bad config is reported with file and key."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from taonode.config import ConfigError, documented_keys, load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "node.toml.example"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def _problems(path: Path, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ=environ or {})
    return info.value.problems


def test_load_config_example_succeeds() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.node.roles == ("voter",)
    assert config.node.data_dir == ROOT / ".data" / "node"
    assert config.chain.rpc == "embedded"


def test_example_documents_every_key_succeeds() -> None:
    text = EXAMPLE.read_text()
    # Commented-out keys count as documented: strip one leading "# " before parsing.
    uncommented = "\n".join(
        line[2:] if line.startswith("# ") and "=" in line else line for line in text.splitlines()
    )
    data = tomllib.loads(uncommented)
    for section, keys in documented_keys().items():
        assert section in data, f"[{section}] missing from the example"
        for key in keys:
            assert key in data[section], f"{section}.{key} missing from the example"


def test_load_config_reports_all_problems_at_once_reverts(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[node]\ndata_dir = "d"\nroles = ["miner"]\nextra = 1\n'
        '[api]\nport = 70000\nhost = 5\n[chain]\nconfirmations = -1\nrpc = "ftp://x"\n'
        "[challenger]\nsample_rate = 1.5\n[nope]\n",
    )
    problems = _problems(path)
    text = "\n".join(problems)
    assert all(p.startswith(f"{path}: ") for p in problems)
    for expected in (
        "node.roles: must be one of",
        "node.extra: unknown key",
        "api.port: must be ≤ 65535",
        "api.host: must be a string",
        "chain.confirmations: must be ≥ 0",
        'chain.rpc: must be "embedded"',
        "challenger.sample_rate: must be ≤ 1.0",
        "nope: unknown section",
    ):
        assert expected in text, expected
    assert len(problems) == 8


def test_load_config_malformed_toml_reverts(tmp_path: Path) -> None:
    problems = _problems(_write(tmp_path, "[node\ndata_dir = 1"))
    assert len(problems) == 1
    assert "malformed TOML" in problems[0]


def test_load_config_missing_file_reverts(tmp_path: Path) -> None:
    assert "file not found" in _problems(tmp_path / "absent.toml")[0]


def test_load_config_missing_data_dir_reverts(tmp_path: Path) -> None:
    assert any("node.data_dir: missing" in p for p in _problems(_write(tmp_path, "[node]\n")))
    assert any("missing section [node]" in p for p in _problems(_write(tmp_path, "[api]\n")))


def test_load_config_wrong_types_reverts(tmp_path: Path) -> None:
    problems = _problems(
        _write(
            tmp_path,
            '[node]\ndata_dir = "d"\n[metrics]\nenabled = "yes"\n[compute]\nthreads = 1.5\n'
            'device = "tpu"\n[p2p]\nlisten = "x"\nbootstrap = ["not-a-multiaddr"]\n'
            "[log]\nlevel = 3\n",
        )
    )
    text = "\n".join(problems)
    assert "metrics.enabled: must be true or false" in text
    assert "compute.threads: must be an integer" in text
    assert "compute.device: must be" in text
    assert "p2p.listen: must be a list" in text
    assert "p2p.bootstrap: 'not-a-multiaddr' is not a multiaddr" in text
    assert "log.level: must be one of" in text


def test_load_config_inline_secret_reverts(tmp_path: Path) -> None:
    problems = _problems(
        _write(tmp_path, '[node]\ndata_dir = "d"\n[chain]\npassword = "hunter2"\n')
    )
    assert any("chain.password: secrets are never read from the config" in p for p in problems)
    assert not any("hunter2" in p for p in problems)


def test_load_config_missing_keystore_and_password_reverts(tmp_path: Path) -> None:
    problems = _problems(
        _write(
            tmp_path,
            '[node]\ndata_dir = "d"\n[chain]\nkeystore = "k.json"\npassword_file = "p.txt"\n',
        )
    )
    assert any("chain.keystore: file not found" in p for p in problems)
    assert any("chain.password_file: file not found" in p for p in problems)
    env_problems = _problems(
        _write(tmp_path, '[node]\ndata_dir = "d"\n[chain]\npassword_env = "TAO_PW"\n'),
        environ={},
    )
    assert any("TAO_PW is not set" in p for p in env_problems)


def test_load_config_keystore_with_password_env_succeeds(tmp_path: Path) -> None:
    (tmp_path / "k.json").write_text("{}")
    path = _write(
        tmp_path, '[node]\ndata_dir = "d"\n[chain]\nkeystore = "k.json"\npassword_env = "PW"\n'
    )
    config = load_config(path, environ={"PW": "s3cr3t-value"})
    assert config.chain.keystore == tmp_path / "k.json"
    assert "s3cr3t-value" not in str(config.redacted())


def test_deploy_example_configs_are_valid_succeeds() -> None:
    configs = sorted((ROOT / "deploy" / "configs").glob("*.toml"))
    assert len(configs) >= 4
    for path in configs:
        config = load_config(path, environ={}, check_files=False)
        assert config.node.roles, path
        assert config.chain.keystore is not None, path


PEER = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("listen", "/ip4/300.0.0.1/tcp/4001", "base address '300.0.0.1' is not IPv4"),
        ("listen", "/ip4/127.0.0.1/tcp/99999", "not in range"),
        ("listen", "/ip4/127.0.0.1/udp/4001", "listens on /ip4|ip6/<address>/tcp/<port> only"),
        ("listen", "/ip4/127.0.0.1", "listens on /ip4|ip6/<address>/tcp/<port> only"),
        ("bootstrap", "/ip4/127.0.0.1/tcp/4001", "/tcp/<port>/p2p/<peer id>"),
        ("bootstrap", "/ip4/127.0.0.1/tcp/4001/p2p/notapeer", "Invalid CID"),
        ("bootstrap", f"/ip4/300.0.0.1/tcp/4001/p2p/{PEER}", "is not IPv4"),
        ("bootstrap", f"/ip4/127.0.0.1/tcp/70000/p2p/{PEER}", "not in range"),
    ],
)
def test_load_config_invalid_multiaddr_reverts(
    tmp_path: Path, key: str, value: str, problem: str
) -> None:
    problems = _problems(_write(tmp_path, f'[node]\ndata_dir = "d"\n[p2p]\n{key} = ["{value}"]\n'))
    assert any(f"p2p.{key}: " in p and problem in p for p in problems), problems


def test_load_config_valid_multiaddrs_succeeds(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[node]\ndata_dir = "d"\n[p2p]\nlisten = ["/ip4/0.0.0.0/tcp/4001", "/ip6/::1/tcp/0"]\n'
        f'bootstrap = ["/ip4/10.0.0.1/tcp/4001/p2p/{PEER}",\n'
        f'  "/dns4/seed.example/tcp/1/p2p/{PEER}"]\n',
    )
    config = load_config(path)
    assert len(config.p2p.bootstrap) == 2


def test_load_config_password_file_mode_reverts(tmp_path: Path) -> None:
    (tmp_path / "k.json").write_text("{}")
    password = tmp_path / "p.txt"
    password.write_text("pw\n")
    text = '[node]\ndata_dir = "d"\n[chain]\nkeystore = "k.json"\npassword_file = "p.txt"\n'
    for mode in (0o644, 0o640, 0o604):
        password.chmod(mode)
        problems = _problems(_write(tmp_path, text))
        assert any(f"chain.password_file: {password} has mode {mode:04o}" in p for p in problems), (
            problems
        )
    # The honest operator who followed the docs is not refused.
    password.chmod(0o600)
    assert load_config(_write(tmp_path, text)).chain.password_file == password

"""``taonode contracts deploy`` on both backends (keystore and dev key), and its usage errors."""

from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from eth_account import Account

from taonode.chain.anvil import AnvilChain
from taonode.chain.deploy import Contracts, Deployment
from taonode.chain.localchain import dev_key
from taonode.cli import main
from taonode.exitcodes import EXIT_OK, EXIT_USAGE
from tests.chain.helpers import TEST_PARAMS, Env

ON_CHAIN = pytest.mark.asyncio(loop_scope="session")


@ON_CHAIN
async def test_deploy_keystore_succeeds(env: Env, tmp_path: Path) -> None:
    keystore = tmp_path / "deployer.json"
    keystore.write_text(json.dumps(Account.encrypt(dev_key(0), "hunter2")))
    password = tmp_path / "pw"
    password.write_text("hunter2\n")
    password.chmod(0o600)
    params_file = tmp_path / "params.json"
    params = replace(TEST_PARAMS, k=4, committeeSize=5, quorum=3)
    params_file.write_text(json.dumps(asdict(params)))
    out = tmp_path / "deployment.json"
    rpc = env.chain.url if isinstance(env.chain, AnvilChain) else "embedded"
    argv = ["contracts", "deploy", "--rpc", rpc, "--keystore", str(keystore)]
    argv += ["--password-file", str(password), "--params", str(params_file), "--out", str(out)]
    assert await asyncio.to_thread(main, argv) == EXIT_OK
    deployment = Deployment.load(out)
    assert deployment.deployer == Account.from_key(dev_key(0)).address
    assert deployment.params.k == 4
    assert deployment.params.treasury == deployment.deployer
    if isinstance(env.chain, AnvilChain):
        assert deployment.chain_id == 31337
        c = Contracts.connect(env.chain.w3, deployment)
        assert await c.coordinator.k() == 4
        assert await c.coordinator.committee_size() == 5
        assert await c.stakes.coordinator() == c.coordinator.address
        assert await c.coordinator.models() == c.models.address


@ON_CHAIN
async def test_deploy_dev_key_succeeds(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "d.json"
    rpc = env.chain.url if isinstance(env.chain, AnvilChain) else "embedded"
    argv = ["contracts", "deploy", "--rpc", rpc, "--dev-key", "1", "--out", str(out)]
    assert await asyncio.to_thread(main, argv) == EXIT_OK
    assert Deployment.load(out).deployer == Account.from_key(dev_key(1)).address


def test_deploy_bad_params_reverts(tmp_path: Path) -> None:
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"committeeSize": 4, "quorum": 2}))
    assert main(["contracts", "deploy", "--rpc", "embedded", "--params", str(bad)]) == EXIT_USAGE
    bad.write_text(json.dumps({"nope": 1}))
    assert main(["contracts", "deploy", "--rpc", "embedded", "--params", str(bad)]) == EXIT_USAGE


def test_deploy_missing_key_reverts(tmp_path: Path) -> None:
    assert main(["contracts", "deploy", "--rpc", "http://127.0.0.1:9"]) == EXIT_USAGE
    keystore = tmp_path / "k.json"
    keystore.write_text(json.dumps(Account.encrypt(dev_key(0), "pw")))
    argv = ["contracts", "deploy", "--rpc", "embedded", "--keystore", str(keystore)]
    assert main(argv) == EXIT_USAGE  # no password given


def test_deployment_roundtrip_succeeds() -> None:
    d = Deployment(
        chain_id=1,
        block=7,
        deployer=Account.from_key(dev_key(0)).address,
        model_registry=Account.from_key(dev_key(1)).address,
        stake_registry=Account.from_key(dev_key(2)).address,
        coordinator=Account.from_key(dev_key(3)).address,
        params=TEST_PARAMS,
        compiler="0.8.28",
    )
    assert Deployment.from_json(json.loads(json.dumps(d.to_json()))) == d
    with pytest.raises(ValueError, match="version"):
        Deployment.from_json({**d.to_json(), "version": 99})

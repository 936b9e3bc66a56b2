"""Every role a separate ``taonode --role … --config …`` process on anvil over real libp2p.

One honest prover and one cheating prover (``--unsafe-adversary``, refused off local chains), a
challenger and three voters. Mid-dispute the cheating prover and the challenger are SIGKILLed
and restarted, and the RPC stops answering for a few seconds: the honest job still finalizes
and the cheat is still slashed by the committee.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from taonode.api.tensors import tensor_to_json
from taonode.chain.anvil import AnvilChain, free_port
from taonode.chain.deploy import Contracts, DeployParams, deploy
from taonode.chain.tx import DirectTransactor
from taonode.devnet import calibrate_profile, inputs_like, prepare_model
from taonode.keys import create_keystore
from taonode.modelstore import add_model
from taonode.p2p.identity import load_or_create, peer_id_of
from taonode.runtime.profile import save_profile
from taonode.signer import LocalSigner
from tests.node.daemon import ROOT, Daemon

ETHER = 10**18
PASSWORD = "multi-process test password"
STATUS_FINALIZED, STATUS_REJECTED = 3, 4
OUTCOME_CHALLENGER_WON = 2
PARAMS = DeployParams(
    challengeWindow=40,
    # Room for a SIGKILLed party to restart (40-60 s on a loaded 2-core box; anvil mines on
    # its own clock meanwhile, and the SIGSTOP below now really stops it: the real binary).
    moveTimeout=200,
    voteWindow=40,
    k=4,
    committeeSize=3,
    quorum=2,
    minStake=ETHER,
    unbondDelay=20,
    maxNodes=64,
)


@dataclass
class NodeSetup:
    name: str
    roles: tuple[str, ...]
    config: Path
    api_port: int
    extra_args: tuple[str, ...] = ()


def _write_node(
    base: Path,
    name: str,
    roles: tuple[str, ...],
    key: bytes,
    rpc: str,
    deployment: Path,
    program: Path,
    profile: Path,
    p2p_port: int,
    p2p_key: Path,
    bootstrap: list[str],
) -> NodeSetup:
    home = base / name
    home.mkdir()
    keystore = home / "key.json"
    create_keystore(keystore, PASSWORD, private_key=key, scrypt_n=2**4)
    password = home / "password"
    password.write_text(PASSWORD)
    password.chmod(0o600)
    if name != "prover":  # the prover adds it with `taonode model add` (registering it)
        add_model(home / "models", program, profile)
    api_port = free_port()
    config = home / "node.toml"
    config.write_text(
        f'[node]\ndata_dir = "{home / "data"}"\nmodels_dir = "{home / "models"}"\n'
        f"roles = {json.dumps(list(roles))}\nname = {json.dumps(name)}\n"
        f"shutdown_stage_timeout_s = 3.0\n"
        f'[api]\nport = {api_port}\n[log]\nformat = "json"\nlevel = "info"\n'
        f'[chain]\nrpc = "{rpc}"\nchain_id = 31337\nkeystore = "{keystore}"\n'
        f'password_file = "{password}"\ndeployment = "{deployment}"\nconfirmations = 0\n'
        f"poll_interval_s = 0.25\ntx_timeout_s = 60.0\n"
        f'[p2p]\nlisten = ["/ip4/127.0.0.1/tcp/{p2p_port}"]\n'
        f'bootstrap = {json.dumps(bootstrap)}\nkey_file = "{p2p_key}"\n'
        f"[voter]\nstake_eth = 5.0\n"
    )
    return NodeSetup(name, roles, config, api_port)


def _post(port: int, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as resp:
        out: dict[str, Any] = json.loads(resp.read())
    return out


async def _until(what: str, check: Callable[[], Any], limit_s: float) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.anvil
async def test_multiprocess_roles_on_anvil_with_crashes_and_rpc_outage_succeeds(
    tmp_path: Path,
) -> None:
    # Interval mining: deadlines count blocks, and an idle anvil mines none.
    chain = await AnvilChain.start(num_keys=8, block_time=0.3)
    daemons: dict[str, Daemon] = {}
    try:
        transactor = DirectTransactor(chain.w3, LocalSigner(chain.keys[0]))
        deployment = await deploy(chain.w3, transactor, PARAMS)
        deployment_file = tmp_path / "deployment.json"
        deployment.save(deployment_file)
        model, example = await asyncio.to_thread(prepare_model, "transformer", tmp_path)
        profile = await asyncio.to_thread(calibrate_profile, model, example, PARAMS.k)
        profile_file = tmp_path / "profile.json"
        save_profile(profile, profile_file)
        contracts = Contracts.connect(chain.w3, deployment, transactor)

        layout: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
            ("prover", ("prover",), ()),
            ("cheater", ("prover",), ("--unsafe-adversary", "fp16-weights")),
            ("challenger", ("challenger",), ()),
            ("voter-1", ("voter",), ()),
            ("voter-2", ("voter",), ()),
            ("voter-3", ("voter",), ()),
        ]
        ports = [free_port() for _ in layout]
        keys = {name: tmp_path / f"{name}.p2p.key" for name, _, _ in layout}
        addrs = {
            name: f"/ip4/127.0.0.1/tcp/{port}/p2p/{peer_id_of(load_or_create(keys[name]))}"
            for (name, _, _), port in zip(layout, ports, strict=True)
        }
        program = tmp_path / "transformer.pt2"
        nodes: dict[str, NodeSetup] = {}
        for index, ((name, roles, extra), port) in enumerate(zip(layout, ports, strict=True)):
            setup = _write_node(
                tmp_path,
                name,
                roles,
                chain.keys[1 + index],
                chain.url,
                deployment_file,
                program,
                profile_file,
                port,
                keys[name],
                [addr for other, addr in addrs.items() if other != name],
            )
            setup.extra_args = extra
            nodes[name] = setup
        # The honest prover registers the model through the command an operator runs.
        added = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "taonode",
                "model",
                "add",
                str(program),
                "--profile",
                str(profile_file),
                "--config",
                str(nodes["prover"].config),
                "--uri",
                "test",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        assert added.returncode == 0, added.stderr
        assert "registered on chain" in added.stdout
        assert await contracts.models.profile_of(model.model_id) == profile.profile_id

        def start(name: str) -> Daemon:
            setup = nodes[name]
            args = [a for role in setup.roles for a in ("--role", role)]
            daemons[name] = Daemon(setup.config, *args, *setup.extra_args)
            return daemons[name]

        for name in nodes:
            start(name)
        for name, daemon in daemons.items():
            assert await asyncio.to_thread(daemon.wait_port, 120) == nodes[name].api_port

        stakes = contracts.stakes
        voters = [n for n in nodes if n.startswith("voter")]
        voter_addresses = [
            LocalSigner(chain.keys[1 + list(nodes).index(n)]).address for n in voters
        ]

        async def registered() -> bool:
            return all([await stakes.stake_of(a) > 0 for a in voter_addresses])

        await _until("voters registered", registered, 60)

        body = {
            "model_id": "0x" + model.model_id.hex(),
            "inputs": {k: tensor_to_json(v) for k, v in inputs_like(model, example, 501).items()},
        }
        honest = await asyncio.to_thread(_post, nodes["prover"].api_port, "/v1/infer", body)
        body["inputs"] = {k: tensor_to_json(v) for k, v in inputs_like(model, example, 502).items()}
        cheat = await asyncio.to_thread(_post, nodes["cheater"].api_port, "/v1/infer", body)
        honest_id = bytes.fromhex(honest["job_id"][2:])
        cheat_id = bytes.fromhex(cheat["job_id"][2:])
        coordinator = contracts.coordinator

        async def in_game() -> bool:
            info = await coordinator.dispute_of(cheat_id)
            return info.round >= 1

        await _until("the cheat's dispute reaching round 1", in_game, 90)

        # Crash both parties mid-dispute, and take the RPC away for a few seconds.
        for name in ("cheater", "challenger"):
            daemons[name].proc.send_signal(signal.SIGKILL)
            daemons[name].proc.wait(10)
        anvil_pid = chain.pid
        os.kill(anvil_pid, signal.SIGSTOP)
        await asyncio.sleep(4)
        os.kill(anvil_pid, signal.SIGCONT)
        for name in ("cheater", "challenger"):
            start(name)
            await asyncio.to_thread(daemons[name].wait_port, 120)

        async def settled() -> bool:
            h = await coordinator.result_of(honest_id)
            c = await coordinator.result_of(cheat_id)
            return h.status == STATUS_FINALIZED and c.status in (STATUS_REJECTED, 5)

        try:
            await _until("both jobs settled", settled, 240)
        except AssertionError:
            h = await coordinator.result_of(honest_id)
            info = await coordinator.dispute_of(cheat_id)
            tails = {
                n: [x[:300] for x in daemons[n].lines[-12:]] for n in ("cheater", "challenger")
            }
            raise AssertionError(f"honest {h}, cheat dispute {info}, logs {tails}") from None
        tally = await coordinator.tally_of(cheat_id)
        assert tally.outcome == OUTCOME_CHALLENGER_WON, tally
        assert tally.slash_votes >= PARAMS.quorum
        # The restarted challenger resumed from its store (its views rebuilt from the events it
        # had seen) and sent no second challenge.
        events = [json.loads(line) for line in daemons["challenger"].lines if line.startswith("{")]
        rebuilt = [e for e in events if e.get("event") == "protocol state rebuilt"]
        assert rebuilt, "the restarted challenger never rebuilt its state"
        assert int(str(rebuilt[0]["events"])) > 0
        assert int(str(rebuilt[0]["open_jobs"])) >= 1
        journaled = [e for e in events if e.get("event") == "tx_journaled"]
        assert not any(str(e.get("key", "")).startswith("challenge:") for e in journaled)

        for daemon in daemons.values():
            daemon.proc.send_signal(signal.SIGTERM)
        for name, daemon in daemons.items():
            try:
                code = await asyncio.to_thread(daemon.proc.wait, 30)
            except Exception:
                code = None
            useful = [line for line in daemon.lines if "Failed to open TCP stream" not in line]
            assert code == 0, (name, useful[-25:])
    finally:
        for daemon in daemons.values():
            daemon.stop()
        await chain.close()

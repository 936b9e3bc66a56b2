"""Attacks on the honest prover's side, played on the reference CNN (floating-point inputs,
13 ops, a short game): NaN farming, a false challenger against a prover that is killed and
restarted mid-dispute, and data-availability griefing. One devnet plays them all."""

from __future__ import annotations

import asyncio
import io
import time

import pytest

from taonode.adversary.builtin import FalseChallengerRestart
from taonode.adversary.strategy import ETHER
from taonode.devnet import Devnet, DevnetOptions, Scenario
from taonode.protocol.dispute import Outcome, ResultStatus

# One devnet for the whole module: its wall time is the module's (see the report).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]
REPORTS: dict[int, str] = {}


@pytest.fixture(scope="module")
def devnet() -> Devnet:
    out = io.StringIO()
    net = Devnet(
        DevnetOptions(
            model="cnn",
            cheats=(),
            adversaries=("nan-farming", "false-challenger-restart", "da-griefing"),
            honest=True,
            challengers=1,
            voters=3,
            timeout_s=300,
        ),
        out,
    )
    started = time.monotonic()
    asyncio.run(net.run())
    REPORTS[id(net)] = out.getvalue()
    print(f"\nnumeric devnet: {time.monotonic() - started:.0f}s wall")
    print(REPORTS[id(net)])
    return net


def _scenario(devnet: Devnet, name: str) -> Scenario:
    scenario = next(s for s in devnet.scenarios if s.name == name)
    if scenario.error is not None or scenario.outcome is None:
        # Not an AssertionError: an xfail mark (raises=AssertionError) must not swallow it.
        raise RuntimeError(f"{name}: {scenario.error}\n{REPORTS.get(id(devnet), '')}")
    return scenario


def _checked(devnet: Devnet, name: str) -> Scenario:
    scenario = _scenario(devnet, name)
    outcome = scenario.outcome
    assert outcome is not None
    assert not outcome.honest_losers, f"{name}: honest parties lost {outcome.honest_losers}"
    assert scenario.strategy.attacker_lost(outcome), (
        f"{name}: attacker net {outcome.attacker_net / ETHER:+.3f} ETH"
    )
    return scenario


def test_honest_job_finalizes_and_nobody_loses(devnet: Devnet) -> None:
    scenario = _checked(devnet, "honest")
    view = scenario.view
    assert view is not None
    assert view.status is ResultStatus.FINALIZED
    assert view.dispute is None


def test_nan_farming_farms_no_bond(devnet: Devnet) -> None:
    _checked(devnet, "nan-farming")


def test_false_challenger_loses_against_a_prover_killed_mid_dispute(devnet: Devnet) -> None:
    scenario = _checked(devnet, "false-challenger-restart")
    strategy = scenario.strategy
    assert isinstance(strategy, FalseChallengerRestart)
    assert strategy.kills == 1, "the prover was never killed mid-dispute"
    view = scenario.view
    assert view is not None
    ended = view.dispute or (view.history[-1] if view.history else None)
    assert ended is not None
    assert ended.outcome is Outcome.PROVER_WON
    assert ended.reason == "vote"
    outcome = scenario.outcome
    assert outcome is not None
    assert outcome.attacker_net == -ETHER


def test_da_griefing_does_not_slash_an_honest_prover(devnet: Devnet) -> None:
    scenario = _checked(devnet, "da-griefing")
    view = scenario.view
    assert view is not None
    ended = view.dispute or (view.history[-1] if view.history else None)
    assert ended is not None
    assert ended.outcome is Outcome.PROVER_WON

"""Every built-in attack of issue 11 on the embedded chain, through the real contracts and the
real role code, against honest challengers and voters: each must end with the attacker losing
and no honest party losing anything (protocol balance changes per job, from the contracts'
events). One devnet plays them all at once; each test reads its own scenario.

Protocol v2 queued challenges: a prover that wins a vote is not finalized at once; the result
re-opens for a renewed window and finalizes only when that window closes undisputed.
"""

from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

import pytest

from taonode.adversary.strategy import ETHER
from taonode.devnet import Devnet, DevnetOptions, Scenario
from taonode.protocol.dispute import Outcome, ResultStatus

EXTERNAL = Path(__file__).with_name("external_strategy.py")
# On the reference Transformer (test_numeric.py plays the rest on the CNN, whose inputs are
# floating point).
ATTACKS = (
    "carry-over-tamper",
    "unbound-output",
    "wrong-num-ops",
    "self-challenge-shield",
    "self-challenge-throw",
    "withhold-steering",
    "sybil-voter",
    "false-challenger",
)

# One devnet for the whole module: its wall time is the module's (see the report).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(720)]
REPORTS: dict[int, str] = {}


@pytest.fixture(scope="module")
def devnet() -> Devnet:
    out = io.StringIO()
    net = Devnet(
        DevnetOptions(
            cheats=(),
            adversaries=(*ATTACKS, f"{EXTERNAL}:GarbageMoves"),
            honest=False,
            challengers=1,
            voters=3,
            timeout_s=420,
        ),
        out,
    )
    started = time.monotonic()
    asyncio.run(net.run())
    REPORTS[id(net)] = out.getvalue()
    print(f"\nadversary devnet: {time.monotonic() - started:.0f}s wall")
    print(REPORTS[id(net)])
    return net


def _scenario(devnet: Devnet, name: str) -> Scenario:
    scenario = next(s for s in devnet.scenarios if s.name == name)
    if scenario.error is not None or scenario.outcome is None:
        # Not an AssertionError: an xfail mark (raises=AssertionError) must not swallow it.
        raise RuntimeError(f"{name}: {scenario.error}\n{REPORTS.get(id(devnet), '')}")
    return scenario


def _attacker_loses_and_no_honest_party_loses(devnet: Devnet, name: str) -> Scenario:
    scenario = _scenario(devnet, name)
    outcome = scenario.outcome
    assert outcome is not None
    assert not outcome.honest_losers, f"{name}: honest parties lost {outcome.honest_losers}"
    assert scenario.strategy.attacker_lost(outcome), (
        f"{name}: attacker net {outcome.attacker_net / ETHER:+.3f} ETH, "
        f"statuses {[v.status.value if v else None for v in outcome.views]}"
    )
    return scenario


def test_carry_over_tamper_loses(devnet: Devnet) -> None:
    _attacker_loses_and_no_honest_party_loses(devnet, "carry-over-tamper")


def test_unbound_output_loses(devnet: Devnet) -> None:
    _attacker_loses_and_no_honest_party_loses(devnet, "unbound-output")


def test_wrong_num_ops_loses(devnet: Devnet) -> None:
    _attacker_loses_and_no_honest_party_loses(devnet, "wrong-num-ops")


def test_self_challenge_shield_loses(devnet: Devnet) -> None:
    _attacker_loses_and_no_honest_party_loses(devnet, "self-challenge-shield")


def test_self_challenge_throw_loses(devnet: Devnet) -> None:
    _attacker_loses_and_no_honest_party_loses(devnet, "self-challenge-throw")


def test_withhold_steering_loses(devnet: Devnet) -> None:
    _attacker_loses_and_no_honest_party_loses(devnet, "withhold-steering")


def test_sybil_voter_loses(devnet: Devnet) -> None:
    scenario = _attacker_loses_and_no_honest_party_loses(devnet, "sybil-voter")
    view = scenario.view
    assert view is not None
    assert view.dispute is not None
    assert view.dispute.outcome is Outcome.CHALLENGER_WON
    assert view.status is ResultStatus.REJECTED


def test_false_challenger_loses_its_bond(devnet: Devnet) -> None:
    scenario = _attacker_loses_and_no_honest_party_loses(devnet, "false-challenger")
    outcome = scenario.outcome
    assert outcome is not None
    view = scenario.view
    assert view is not None
    # The vote went the prover's way, the result re-opened, and the renewed window closed.
    assert view.history, "the false challenge left no ended dispute"
    assert view.history[-1].outcome is Outcome.PROVER_WON
    assert view.status is ResultStatus.FINALIZED
    # At least the challenger bond: after the re-open the liar may challenge (and lose) again.
    assert outcome.attacker_net <= -ETHER
    assert outcome.attacker_net % ETHER == 0  # whole bonds only, nothing else moved
    # A forfeited challenger bond never goes to the prover (DESIGN v2); it loses nothing.
    assert sum(v for a, v in outcome.nets.items() if a.lower() == view.prover.lower()) >= 0


def test_strategy_from_an_unseen_file_loses(devnet: Devnet) -> None:
    scenario = _attacker_loses_and_no_honest_party_loses(devnet, "garbage-moves")
    view = scenario.view
    assert view is not None
    assert view.dispute is not None
    assert view.dispute.outcome is Outcome.CHALLENGER_WON


def test_report_has_an_adversary_section(devnet: Devnet) -> None:
    report: str = REPORTS.get(id(devnet), "")
    assert "adversary: protocol balance change per party" in report
    for name in (*ATTACKS, "garbage-moves"):
        assert name in report

"""End to end on the embedded chain: the devnet's nodes (real libp2p, stores, sender, watcher)
play an honest job and cheating provers, and each ends the way the protocol says."""

from __future__ import annotations

import io

import pytest

from taonode.devnet import Devnet, DevnetOptions
from taonode.protocol.dispute import Outcome, ResultStatus


@pytest.mark.slow
async def test_devnet_honest_finalizes_and_cheats_are_slashed_succeeds() -> None:
    out = io.StringIO()
    devnet = Devnet(
        DevnetOptions(
            cheats=("fp16-weights", "perturb-1e-3", "withhold-data", "silent-mid-dispute"),
            challengers=1,
            voters=4,
            timeout_s=240,
        ),
        out,
    )
    code = await devnet.run()
    report = out.getvalue()
    assert code == 0, report
    by_name = {s.name: s for s in devnet.scenarios}

    honest = by_name["honest"].view
    assert honest is not None
    assert honest.status is ResultStatus.FINALIZED
    assert honest.dispute is None

    for name in ("fp16-weights", "perturb-1e-3", "withhold-data"):
        view = by_name[name].view
        assert view is not None, name
        assert view.status is ResultStatus.REJECTED, name
        assert view.dispute is not None
        assert view.dispute.outcome is Outcome.CHALLENGER_WON, name
        assert view.dispute.reason == "vote", name
        # The committee judged exactly one op, inside the model.
        assert view.dispute.leaf_op is not None
        assert 0 <= view.dispute.leaf_op < view.num_ops
        assert len(view.dispute.votes) >= 2

    silent = by_name["silent-mid-dispute"].view
    assert silent is not None
    assert silent.dispute is not None
    assert silent.dispute.outcome is Outcome.CHALLENGER_WON
    assert silent.dispute.reason == "prover_timeout"
    assert "devnet: PASS" in report

"""Results: commit, fund, finalize, challenge (window edges), withdraw; Merkle vectors on chain."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_utils.crypto import keccak

from taonode.chain.bindings.coordinator import Credited, ResultCommitted, ResultFinalized
from taonode.chain.states import Phase, ResultStatus
from taonode.chain.tx import ContractRevert
from tests.chain.helpers import (
    CHALLENGER,
    CLIENT,
    ETHER,
    MODEL_ID,
    MODEL_OPS,
    PROFILE_ID,
    PROVER,
    Env,
    Trace,
    assert_solvent,
    h,
    open_job,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "merkle.json"
JOB = h("job")


async def test_commit_result_succeeds(env: Env) -> None:
    await env.register_model()
    trace = Trace.honest(10)
    receipt = await env.commit(JOB, trace)
    (ev,) = env.c.coordinator.events_of(receipt, ResultCommitted)
    assert (ev.job_id, ev.prover, ev.model_id, ev.profile_id) == (
        JOB,
        env.addr(PROVER),
        MODEL_ID,
        PROFILE_ID,
    )
    assert (ev.trace_root, ev.num_ops) == (trace.root, 10)
    assert ev.window_end == receipt["blockNumber"] + env.params.challengeWindow
    assert (ev.input_digest, ev.output_digest) == (trace.digests[0], trace.digests[-1])
    r = await env.c.coordinator.result_of(JOB)
    assert (r.prover, r.num_ops, r.status, r.attempts) == (
        env.addr(PROVER),
        10,
        ResultStatus.PENDING,
        0,
    )
    assert r.window_end == ev.window_end
    assert r.commitment == keccak(trace.root + trace.digests[0] + trace.digests[-1])
    co = env.c.coordinator
    assert await co.commitment_for(trace.root, trace.digests[0], trace.digests[-1]) == r.commitment
    assert await env.c.coordinator.dispute_id_of(JOB) == bytes(32)
    assert await env.c.coordinator.total_bonds() == env.params.proverBond
    await assert_solvent(env)


async def test_commit_result_wrong_bond_reverts(env: Env) -> None:
    await env.register_model()
    co = env.as_(PROVER).coordinator
    with pytest.raises(ContractRevert, match="WrongBond"):
        await co.commit_result(JOB, MODEL_ID, PROFILE_ID, h(1), h(2), h(3), value=1)


async def test_commit_result_duplicate_reverts(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4), fee=0)
    with pytest.raises(ContractRevert, match="ResultExists"):
        await env.commit(JOB, Trace.honest(4))


async def test_commit_result_unknown_model_reverts(env: Env) -> None:
    co = env.as_(PROVER).coordinator
    with pytest.raises(ContractRevert, match="UnknownModel"):
        await co.commit_result(
            JOB, h("nope"), PROFILE_ID, h(1), h(2), h(3), value=env.params.proverBond
        )


async def test_commit_result_stale_profile_reverts(env: Env) -> None:
    """Once a proposed profile is active, the previous one can no longer be named."""
    await env.register_model()
    await env.as_(CLIENT).models.propose_profile(MODEL_ID, h("p2"), "")
    await env.mine(env.params.profileDelay)
    with pytest.raises(ContractRevert, match="ProfileMismatch"):
        await env.commit(JOB, Trace.honest(MODEL_OPS))
    await env.commit(JOB, Trace.honest(MODEL_OPS), profile=h("p2"))


async def test_commit_result_not_active_profile_reverts(env: Env) -> None:
    """Attack: a prover names a profile that is not the model's active one (a looser profile
    it made up, or one proposed but still in its timelock): refused."""
    await env.register_model()
    with pytest.raises(ContractRevert, match="ProfileMismatch"):
        await env.commit(JOB, Trace.honest(MODEL_OPS), profile=h("loose"))
    await env.as_(CLIENT).models.propose_profile(MODEL_ID, h("loose"), "")
    await env.mine(env.params.profileDelay - 2)  # the proposal lands one block before active
    with pytest.raises(ContractRevert, match="ProfileMismatch"):
        await env.commit(JOB, Trace.honest(MODEL_OPS), profile=h("loose"))
    # the honest prover, naming the active profile meanwhile, is not affected
    receipt = await env.commit(JOB, Trace.honest(MODEL_OPS))
    (ev,) = env.c.coordinator.events_of(receipt, ResultCommitted)
    assert ev.profile_id == PROFILE_ID


async def test_commit_result_num_ops_from_registry_succeeds(env: Env) -> None:
    """Attack: a prover commits a trace of another length (N + 1 sent the honest challenger
    past the model's end). commitResult has no numOps: N is the registry's, and a first move
    with the shorter trace's proofs does not fit."""
    await env.register_model()  # registered with MODEL_OPS ops
    short = Trace.honest(MODEL_OPS - 6)
    co = env.as_(PROVER).coordinator
    await co.commit_result(
        JOB,
        MODEL_ID,
        PROFILE_ID,
        short.digests[0],
        short.digests[-1],
        short.root,
        value=env.params.proverBond,
    )
    r = await env.c.coordinator.result_of(JOB)
    assert r.num_ops == MODEL_OPS
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    cuts = await co.expected_cuts(JOB)
    assert cuts[:2] == [0, MODEL_OPS]
    digests = [short.digests[min(c, short.num_ops)] for c in cuts]
    with pytest.raises(ContractRevert, match="WrongProofLength"):
        await co.prover_move(JOB, digests, short.move([min(c, short.num_ops) for c in cuts])[1])


async def test_fund_job_succeeds(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4), fee=ETHER // 4)
    fee = await env.c.coordinator.fee_of(JOB)
    assert (fee.payer, fee.amount) == (env.addr(CLIENT), ETHER // 4)
    await assert_solvent(env)


async def test_fund_job_twice_reverts(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4))
    with pytest.raises(ContractRevert, match="AlreadyFunded"):
        await env.as_(CLIENT).coordinator.fund_job(JOB, value=1)


async def test_fund_job_unknown_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="UnknownResult"):
        await env.as_(CLIENT).coordinator.fund_job(JOB, value=1)


async def test_finalize_succeeds(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4), fee=ETHER // 10)
    await env.mine(env.params.challengeWindow + 1)
    receipt = await env.as_(CLIENT).coordinator.finalize(JOB)
    (ev,) = env.c.coordinator.events_of(receipt, ResultFinalized)
    assert (ev.prover, ev.fee) == (env.addr(PROVER), ETHER // 10)
    (cr,) = env.c.coordinator.events_of(receipt, Credited)
    assert cr.amount == env.params.proverBond + ETHER // 10
    assert (await env.c.coordinator.result_of(JOB)).status == ResultStatus.FINALIZED
    assert await env.c.coordinator.pending(env.addr(PROVER)) == env.params.proverBond + ETHER // 10
    await assert_solvent(env)
    await env.as_(PROVER).coordinator.withdraw()
    assert await env.c.coordinator.pending(env.addr(PROVER)) == 0
    assert await env.balance(env.c.coordinator.address) == 0
    await assert_solvent(env)


async def test_finalize_inside_window_reverts(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4))
    await env.mine(env.params.challengeWindow - 2)
    with pytest.raises(ContractRevert, match="WindowOpen"):
        await env.c.coordinator.finalize(JOB)


async def test_finalize_twice_reverts(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4))
    await env.mine(env.params.challengeWindow + 1)
    await env.c.coordinator.finalize(JOB)
    with pytest.raises(ContractRevert, match="NotPending"):
        await env.c.coordinator.finalize(JOB)


async def test_finalize_disputed_reverts(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4))
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    await env.mine(env.params.challengeWindow + 1)
    with pytest.raises(ContractRevert, match="NotPending"):
        await env.c.coordinator.finalize(JOB)


async def test_finalize_unknown_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="UnknownResult"):
        await env.c.coordinator.finalize(JOB)


async def test_challenge_succeeds(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4))
    await env.mine(env.params.challengeWindow - 2)
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    d = await env.c.coordinator.dispute_of(JOB)
    assert (d.challenger, d.a, d.b, d.phase) == (env.addr(CHALLENGER), 0, 4, Phase.PROVER_MOVE)
    assert (await env.c.coordinator.result_of(JOB)).status == ResultStatus.DISPUTED
    assert await env.c.coordinator.expected_cuts(JOB) == [0, 4, 1, 2]
    await assert_solvent(env)


async def test_challenge_after_window_reverts(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4))
    await env.mine(env.params.challengeWindow + 1)
    with pytest.raises(ContractRevert, match="WindowClosed"):
        await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)


async def test_challenge_twice_reverts(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4))
    await env.as_(CHALLENGER).coordinator.challenge(JOB, value=env.params.challengerBond)
    with pytest.raises(ContractRevert, match="NotPending"):
        await env.as_(CLIENT).coordinator.challenge(JOB, value=env.params.challengerBond)


async def test_challenge_wrong_bond_reverts(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4))
    with pytest.raises(ContractRevert, match="WrongBond"):
        await env.as_(CHALLENGER).coordinator.challenge(JOB, value=1)


async def test_challenge_by_prover_reverts(env: Env) -> None:
    await open_job(env, JOB, Trace.honest(4))
    with pytest.raises(ContractRevert, match="SelfChallenge"):
        await env.as_(PROVER).coordinator.challenge(JOB, value=env.params.challengerBond)


async def test_withdraw_nothing_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="NothingToWithdraw"):
        await env.as_(PROVER).coordinator.withdraw()


async def test_params_readable_succeeds(env: Env) -> None:
    co, p = env.c.coordinator, env.params
    assert await co.challenge_window() == p.challengeWindow
    assert await co.move_timeout() == p.moveTimeout
    assert await co.vote_window() == p.voteWindow
    assert await co.prover_bond() == p.proverBond
    assert await co.challenger_bond() == p.challengerBond
    assert await co.k() == p.k
    assert await co.committee_size() == p.committeeSize
    assert await co.quorum() == p.quorum
    assert await co.voter_reward_bps() == p.voterRewardBps
    assert await co.non_voter_penalty() == p.nonVoterPenalty
    assert await co.treasury() == env.addr(0)
    assert await co.models() == env.c.models.address
    assert await co.stakes() == env.c.stakes.address
    assert await env.c.stakes.min_stake() == p.minStake
    assert await env.c.stakes.unbond_delay() == p.unbondDelay
    assert await env.c.stakes.max_nodes() == p.maxNodes
    assert await env.c.stakes.coordinator() == co.address


async def test_verify_proof_vectors_succeeds(env: Env) -> None:
    """Every tree of the runtime's normative vectors verifies on chain."""
    trees = json.loads(VECTORS.read_text())["trees"]
    assert trees
    co = env.c.coordinator
    for tree in trees:
        root = bytes.fromhex(tree["root"][2:])
        for i, (value, proof) in enumerate(zip(tree["values"], tree["proofs"], strict=True)):
            v = bytes.fromhex(value[2:])
            p = [bytes.fromhex(x[2:]) for x in proof]
            assert await co.verify_proof(root, i, v, p), (tree["size"], i)
            if tree["size"] > 1:
                # the same value at another index, or a tampered sibling, does not verify
                assert not await co.verify_proof(root, i ^ 1, v, p)
                bad = [bytes([x[0] ^ 1]) + x[1:] if j == 0 else x for j, x in enumerate(p)]
                assert not await co.verify_proof(root, i, v, bad)

"""Committee draw statistics and re-entrancy on withdraw (attacker contract)."""

from __future__ import annotations

from collections import Counter

import pytest

from taonode.chain.bindings.attacker import ReentrancyAttacker
from taonode.chain.deploy import deploy_contract
from taonode.chain.tx import ContractRevert
from tests.chain.helpers import (
    CHALLENGER,
    DEPLOYER,
    ETHER,
    MODEL_ID,
    PROFILE_ID,
    PROVER,
    Env,
    Trace,
    assert_solvent,
    h,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

DRAWS = 240
CHI2_4DOF_P001 = 18.47  # chi-square critical value, 4 degrees of freedom, p = 0.001


async def test_preview_committee_follows_stake_succeeds(env: Env) -> None:
    """Over many seeds: the parties never sit (although they hold most stake), members are
    distinct, and the first seat — drawn before any repeat rejection — follows the voters'
    stake (chi-square, fixed seeds so the test is deterministic)."""
    stakes = [1, 2, 3, 4, 6]
    voters = await env.register_voters(stakes)
    for who in (PROVER, CHALLENGER):
        await env.as_(who).stakes.register(b"p", [], value=50 * ETHER)
    co = env.c.coordinator
    first: Counter[str] = Counter()
    seats: Counter[str] = Counter()
    for i in range(DRAWS):
        members = await co.preview_committee(h(f"seed{i}"), env.addr(PROVER), env.addr(CHALLENGER))
        assert len(members) == env.params.committeeSize
        assert len(set(members)) == len(members)
        assert env.addr(PROVER) not in members
        assert env.addr(CHALLENGER) not in members
        first[members[0]] += 1
        seats.update(members)
    total = sum(stakes)
    chi2 = 0.0
    for who, stake in zip(voters, stakes, strict=True):
        expected = DRAWS * stake / total
        chi2 += (first[env.addr(who)] - expected) ** 2 / expected
    assert chi2 < CHI2_4DOF_P001, (chi2, first)
    # inclusion (any seat) grows with stake
    inclusion = [seats[env.addr(v)] for v in voters]
    assert inclusion[0] < inclusion[2] < inclusion[4], inclusion


async def test_sample_excluding_skips_parties_succeeds(env: Env) -> None:
    """The registry maps stake units past the excluded nodes' ranges exactly."""
    ids = await env.register_voters([1, 2, 3])  # units: a=[0,1) b=[1,3) c=[3,6)
    st = env.c.stakes
    a, b, c = (env.addr(i) for i in ids)
    assert await st.eligible_stake(b, b) == 4 * ETHER
    got = [await st.sample_excluding(r * ETHER, b, b) for r in range(4)]
    assert got == [a, c, c, c]
    got = [await st.sample_excluding(r * ETHER, c, a) for r in range(2)]
    assert got == [b, b]


async def test_sample_excluding_no_eligible_stake_reverts(env: Env) -> None:
    ids = await env.register_voters([1])
    with pytest.raises(ContractRevert, match="NoStake"):
        await env.c.stakes.sample_excluding(0, env.addr(ids[0]), env.addr(PROVER))


async def deploy_attacker(env: Env) -> ReentrancyAttacker:
    tx = env.as_(DEPLOYER).coordinator.transactor
    assert tx is not None
    address, _ = await deploy_contract(tx, "ReentrancyAttacker", [], [])
    return ReentrancyAttacker(env.chain.w3, address, tx)


async def test_withdraw_reentrancy_coordinator_reverts(env: Env) -> None:
    """The attacker, paid by withdraw(), re-enters withdraw(): the re-entry reverts and the
    attacker is paid exactly once."""
    await env.register_model()
    attacker = await deploy_attacker(env)
    co = env.c.coordinator
    trace = Trace.honest(4)
    commit = co._tx(
        "commitResult",
        [h("job"), MODEL_ID, PROFILE_ID, h(1), h(2), trace.root],
    ).data
    bond = env.params.proverBond
    await attacker.forward(co.address, commit, value=bond)
    await env.mine(env.params.challengeWindow + 1)
    await co.finalize(h("job"))
    assert await co.pending(attacker.address) == bond
    await attacker.attack(co.address)
    assert await attacker.received() == bond
    assert await attacker.reentries() == 0
    assert await attacker.reentry_failures() == 1
    assert await co.pending(attacker.address) == 0
    assert await env.balance(co.address) == 0
    await assert_solvent(env)


async def test_withdraw_reentrancy_stake_registry_reverts(env: Env) -> None:
    attacker = await deploy_attacker(env)
    st = env.c.stakes
    register = st._tx("register", [b"evil", []]).data
    await attacker.forward(st.address, register, value=2 * ETHER)
    unbond = st._tx("unbond", [2 * ETHER]).data
    await attacker.forward(st.address, unbond)
    await env.mine(env.params.unbondDelay)
    await attacker.attack(st.address)
    assert await attacker.received() == 2 * ETHER
    assert await attacker.reentry_failures() == 1
    assert await env.balance(st.address) == 0
    await assert_solvent(env)


async def test_forward_bubbles_revert_reverts(env: Env) -> None:
    """Sanity for the attacker itself: a failing forwarded call surfaces the custom error."""
    attacker = await deploy_attacker(env)
    data = env.c.stakes._tx("unbond", [1]).data
    with pytest.raises(ContractRevert, match="NotRegistered"):
        await attacker.forward(env.c.stakes.address, data)

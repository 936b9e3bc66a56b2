"""Model registry and stake registry: success and revert paths."""

from __future__ import annotations

import pytest

from taonode.chain.bindings.model_registry import ModelRegistered, ProfileProposed
from taonode.chain.bindings.stake_registry import NodeRegistered, Slashed, Unbonding, Withdrawn
from taonode.chain.tx import ContractRevert
from taonode.commands.model_add import register_on_chain
from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME
from tests.chain.helpers import (
    CLIENT,
    ETHER,
    FIRST_VOTER,
    MODEL_ID,
    MODEL_OPS,
    PROFILE_ID,
    PROVER,
    Env,
    h,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_register_model_succeeds(env: Env) -> None:
    receipt = await env.as_(CLIENT).models.register_model(MODEL_ID, PROFILE_ID, 12, "ipfs://m")
    (ev,) = env.c.models.events_of(receipt, ModelRegistered)
    assert (ev.model_id, ev.owner, ev.profile_id, ev.num_ops, ev.uri) == (
        MODEL_ID,
        env.addr(CLIENT),
        PROFILE_ID,
        12,
        "ipfs://m",
    )
    assert await env.c.models.profile_of(MODEL_ID) == PROFILE_ID
    assert await env.c.models.num_ops_of(MODEL_ID) == 12
    assert tuple(await env.c.models.terms_of(MODEL_ID)) == (PROFILE_ID, 12)
    assert await env.c.models.owner_of(MODEL_ID) == env.addr(CLIENT)
    assert await env.c.models.uri_of(MODEL_ID) == "ipfs://m"
    assert await env.c.models.profile_delay() == env.params.profileDelay


async def test_register_model_duplicate_reverts(env: Env) -> None:
    await env.register_model()
    with pytest.raises(ContractRevert, match="ModelExists"):
        await env.as_(PROVER).models.register_model(MODEL_ID, h("other"), MODEL_OPS + 1, "")


async def test_register_model_zero_id_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="ZeroId"):
        await env.c.models.register_model(bytes(32), PROFILE_ID, 3, "")


async def test_register_model_bad_num_ops_reverts(env: Env) -> None:
    for n in (0, 2**32 - 1):
        with pytest.raises(ContractRevert, match="BadNumOps"):
            await env.c.models.register_model(MODEL_ID, PROFILE_ID, n, "")


async def test_propose_profile_succeeds(env: Env) -> None:
    """The proposed profile is not active before its delay, and active from then on."""
    await env.register_model()
    models = env.c.models
    receipt = await env.as_(CLIENT).models.propose_profile(MODEL_ID, h("p2"), "ipfs://2")
    (ev,) = env.c.models.events_of(receipt, ProfileProposed)
    active_from = receipt["blockNumber"] + env.params.profileDelay
    assert (ev.model_id, ev.profile_id, ev.active_from) == (MODEL_ID, h("p2"), active_from)
    assert tuple(await models.proposal_of(MODEL_ID)) == (h("p2"), active_from)
    assert await models.profile_of(MODEL_ID) == PROFILE_ID
    await env.mine(active_from - await env.block())
    assert await env.block() == active_from
    assert await models.profile_of(MODEL_ID) == h("p2")
    assert await models.profile_of(MODEL_ID, block=active_from - 1) == PROFILE_ID
    # a later proposal keeps the active one until its own delay has passed
    await env.as_(CLIENT).models.propose_profile(MODEL_ID, h("p3"), "")
    assert await models.profile_of(MODEL_ID) == h("p2")
    await env.mine(env.params.profileDelay)
    assert await models.profile_of(MODEL_ID) == h("p3")


async def test_propose_profile_replaced_restarts_delay_succeeds(env: Env) -> None:
    """Replacing a proposal that is not active yet restarts the timelock: an owner cannot use
    an old proposal's elapsed delay for a new profile."""
    await env.register_model()
    owner = env.as_(CLIENT).models
    await owner.propose_profile(MODEL_ID, h("p2"), "")
    await env.mine(env.params.profileDelay - 2)
    receipt = await owner.propose_profile(MODEL_ID, h("p3"), "")
    assert await env.c.models.profile_of(MODEL_ID) == PROFILE_ID
    await env.mine(env.params.profileDelay - 1)
    assert await env.c.models.profile_of(MODEL_ID) == PROFILE_ID
    await env.mine(1)
    assert await env.block() == receipt["blockNumber"] + env.params.profileDelay
    assert await env.c.models.profile_of(MODEL_ID) == h("p3")


async def test_propose_profile_not_owner_reverts(env: Env) -> None:
    await env.register_model()
    with pytest.raises(ContractRevert, match="NotModelOwner"):
        await env.as_(PROVER).models.propose_profile(MODEL_ID, h("p2"), "")


async def test_propose_profile_unknown_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="UnknownModel"):
        await env.c.models.propose_profile(h("nope"), h("p2"), "")
    await env.register_model()
    with pytest.raises(ContractRevert, match="ZeroId"):
        await env.as_(CLIENT).models.propose_profile(MODEL_ID, bytes(32), "")


async def test_transfer_model_succeeds(env: Env) -> None:
    await env.register_model()
    await env.as_(CLIENT).models.transfer_model(MODEL_ID, env.addr(PROVER))
    assert await env.c.models.owner_of(MODEL_ID) == env.addr(PROVER)
    await env.as_(PROVER).models.propose_profile(MODEL_ID, h("p3"), "")
    with pytest.raises(ContractRevert, match="NotModelOwner"):
        await env.as_(CLIENT).models.propose_profile(MODEL_ID, h("p4"), "")


async def test_model_add_registers_num_ops_succeeds(env: Env) -> None:
    """``taonode model add``'s chain step registers N and refuses a registration whose N
    disagrees with the local model; a matching one proposes the new profile (timelock)."""
    me = env.addr(CLIENT)
    registry = env.as_(CLIENT).models
    code, _ = await register_on_chain(registry, me, MODEL_ID, PROFILE_ID, MODEL_OPS, "")
    assert code == EXIT_OK
    assert await env.c.models.num_ops_of(MODEL_ID) == MODEL_OPS
    code, message = await register_on_chain(registry, me, MODEL_ID, h("p2"), MODEL_OPS + 1, "")
    assert code == EXIT_RUNTIME
    assert f"{MODEL_OPS} ops" in message
    assert tuple(await env.c.models.proposal_of(MODEL_ID)) == (bytes(32), 0)
    code, message = await register_on_chain(registry, me, MODEL_ID, h("p2"), MODEL_OPS, "")
    assert code == EXIT_OK
    assert "proposed" in message
    assert (await env.c.models.proposal_of(MODEL_ID)).profile_id == h("p2")
    assert await env.c.models.profile_of(MODEL_ID) == PROFILE_ID


async def test_register_succeeds(env: Env) -> None:
    who = FIRST_VOTER
    receipt = await env.as_(who).stakes.register(
        b"peer", ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1"], value=2 * ETHER
    )
    (ev,) = env.c.stakes.events_of(receipt, NodeRegistered)
    assert (ev.node, ev.index, ev.stake, ev.peer_id) == (env.addr(who), 1, 2 * ETHER, b"peer")
    info = await env.c.stakes.node_info(env.addr(who))
    assert (info.index_, info.stake, info.unbonding) == (1, 2 * ETHER, 0)
    peer = await env.c.stakes.peer_of(env.addr(who))
    assert peer.peer_id == b"peer"
    assert peer.addrs == ["/ip4/127.0.0.1/tcp/1", "/ip4/127.0.0.1/udp/1/quic-v1"]
    assert await env.c.stakes.total_stake() == 2 * ETHER
    assert await env.c.stakes.node_at(1) == env.addr(who)


async def test_register_low_stake_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="StakeTooLow"):
        await env.as_(FIRST_VOTER).stakes.register(b"p", [], value=ETHER - 1)


async def test_register_twice_reverts(env: Env) -> None:
    await env.register_voters([1])
    with pytest.raises(ContractRevert, match="AlreadyRegistered"):
        await env.as_(FIRST_VOTER).stakes.register(b"p", [], value=ETHER)


async def test_register_peer_record_too_large_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="PeerRecordTooLarge"):
        await env.as_(FIRST_VOTER).stakes.register(b"p", ["/x"] * 9, value=ETHER)


async def test_update_peer_succeeds(env: Env) -> None:
    await env.register_voters([1])
    await env.as_(FIRST_VOTER).stakes.update_peer(b"new", ["/dns4/a/tcp/1"])
    peer = await env.c.stakes.peer_of(env.addr(FIRST_VOTER))
    assert (peer.peer_id, peer.addrs) == (b"new", ["/dns4/a/tcp/1"])


async def test_update_peer_unregistered_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="NotRegistered"):
        await env.as_(FIRST_VOTER).stakes.update_peer(b"new", [])


async def test_top_up_succeeds(env: Env) -> None:
    await env.register_voters([1])
    await env.as_(FIRST_VOTER).stakes.top_up(value=3 * ETHER)
    assert await env.c.stakes.stake_of(env.addr(FIRST_VOTER)) == 4 * ETHER
    assert await env.c.stakes.total_stake() == 4 * ETHER


async def test_top_up_unregistered_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="NotRegistered"):
        await env.as_(FIRST_VOTER).stakes.top_up(value=ETHER)


async def test_unbond_then_withdraw_succeeds(env: Env) -> None:
    await env.register_voters([3])
    voter = env.as_(FIRST_VOTER).stakes
    receipt = await voter.unbond(2 * ETHER)
    (ev,) = env.c.stakes.events_of(receipt, Unbonding)
    assert (ev.stake, ev.unbonding) == (ETHER, 2 * ETHER)
    assert await env.c.stakes.total_stake() == ETHER
    with pytest.raises(ContractRevert, match="NothingToWithdraw"):
        await voter.withdraw()
    await env.mine(env.params.unbondDelay)
    before = await env.balance(env.c.stakes.address)
    receipt = await voter.withdraw()
    (w,) = env.c.stakes.events_of(receipt, Withdrawn)
    assert w.amount == 2 * ETHER
    assert await env.balance(env.c.stakes.address) == before - 2 * ETHER


async def test_unbond_leaving_dust_reverts(env: Env) -> None:
    await env.register_voters([2])
    with pytest.raises(ContractRevert, match="StakeTooLow"):
        await env.as_(FIRST_VOTER).stakes.unbond(ETHER + 1)


async def test_unbond_too_much_reverts(env: Env) -> None:
    await env.register_voters([2])
    with pytest.raises(ContractRevert, match="BadAmount"):
        await env.as_(FIRST_VOTER).stakes.unbond(3 * ETHER)


async def test_slash_not_coordinator_reverts(env: Env) -> None:
    await env.register_voters([2])
    with pytest.raises(ContractRevert, match="NotCoordinator"):
        await env.c.stakes.slash(env.addr(FIRST_VOTER), ETHER, env.addr(PROVER))


async def test_bind_coordinator_twice_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="AlreadyBound"):
        await env.c.stakes.bind_coordinator(env.addr(PROVER))


async def test_sample_follows_stake_succeeds(env: Env) -> None:
    """Stake units map to their owner in registration order (the Fenwick search)."""
    ids = await env.register_voters([1, 2, 3])
    owners = [await env.c.stakes.sample(r * ETHER) for r in range(6)]
    expected = [ids[0], ids[1], ids[1], ids[2], ids[2], ids[2]]
    assert owners == [env.addr(i) for i in expected]
    # wraps modulo the total stake
    assert await env.c.stakes.sample(6 * ETHER) == env.addr(ids[0])


async def test_sample_no_stake_reverts(env: Env) -> None:
    with pytest.raises(ContractRevert, match="NoStake"):
        await env.c.stakes.sample(0)


async def test_slash_events_have_fields_succeeds(env: Env) -> None:
    """The Slashed event type decodes (exercised for real in the dispute tests)."""
    assert Slashed.EVENT_NAME == "Slashed"

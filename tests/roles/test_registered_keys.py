"""The p2p layer's ``is_registered`` predicate, backed by the real StakeRegistry on the embedded
chain: only registered voters pass, a later registration is picked up by the next poll, and
the assembled node gates votes (not node records) with it."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from taonode.chain.embedded import EmbeddedChain
from taonode.p2p.envelope import (
    EnvelopeError,
    NodeRecord,
    Rejection,
    TopicKinds,
    Validator,
    ValidatorConfig,
    VoteMessage,
    seal,
    sign_vote_with,
)
from taonode.p2p.node import P2PConfig, P2PNode
from taonode.protocol.votes import Verdict
from taonode.roles.registered import RegisteredKeys
from taonode.signer import LocalSigner
from tests.chain.helpers import FIRST_VOTER, TEST_PARAMS, Env, make_env


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    chain = EmbeddedChain(num_keys=FIRST_VOTER + 3)
    try:
        yield await make_env(chain, TEST_PARAMS)
    finally:
        await chain.close()


async def test_registered_keys_follow_the_stake_registry(env: Env) -> None:
    keys = RegisteredKeys(env.c.stakes)
    await keys.start()
    assert keys.ready()
    assert len(keys) == 0
    await env.register_voters([1, 2])
    first, second, third = (env.addr(FIRST_VOTER + i) for i in range(3))
    assert not keys(first)  # not polled yet: refused until the next poll
    await keys.refresh()
    assert keys(first)
    assert keys(second.lower())  # any spelling of the address
    assert not keys(third)
    assert not keys(env.addr(0))  # the deployer never staked


async def test_validator_refuses_unstaked_votes_and_passes_staked_ones(env: Env) -> None:
    await env.register_voters([1])
    keys = RegisteredKeys(env.c.stakes)
    await keys.refresh()
    domain = env.domain
    validator = Validator(
        ValidatorConfig(registered_kinds=frozenset({VoteMessage.KIND})),
        vote_domain=domain,
        is_registered=keys,
    )
    dispute = os.urandom(32)
    staked = env.signers[FIRST_VOTER]
    unstaked = LocalSigner(os.urandom(32))
    for signer, ok in ((staked, True), (unstaked, False)):
        sig = sign_vote_with(signer, domain, dispute, Verdict.WITHIN_TOLERANCE)
        data = seal(
            signer, TopicKinds.VOTES, VoteMessage(dispute, int(Verdict.WITHIN_TOLERANCE), sig)
        )
        if ok:
            assert validator.validate(TopicKinds.VOTES, data).sender == signer.address
        else:
            with pytest.raises(EnvelopeError) as err:
                validator.validate(TopicKinds.VOTES, data)
            assert err.value.reason is Rejection.NOT_REGISTERED
    # Node records are not gated: provers publish them without a stake.
    record = NodeRecord(peer_id="p", roles=("prover",), devices=("cpu",), models=(), addrs=())
    assert validator.validate(TopicKinds.NODES, seal(unstaked, TopicKinds.NODES, record))


async def test_p2p_node_takes_the_predicate(env: Env, tmp_path: Path) -> None:
    keys = RegisteredKeys(env.c.stakes)
    node = P2PNode(
        P2PConfig(key_file=tmp_path / "n.key"),
        LocalSigner(os.urandom(32)),
        CollectorRegistry(),
        is_registered=keys,
    )
    assert node.validator.is_registered is keys
    node.set_registered(None)
    assert node.validator.is_registered is None

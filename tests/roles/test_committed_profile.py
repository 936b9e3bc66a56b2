"""Judging against the committed profile (issue 11, item 8): a result is judged with the profile
whose id it names on chain, fetched by id (verified) when the node lacks it, and never with the
node's own profile instead."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest
from eth_hash.auto import keccak

from taonode.modelstore import ModelStoreError, add_model, add_profile, load_models
from taonode.protocol.decisions import Adjudicate, Assessment, Evaluate
from taonode.protocol.dispute import JobView, ResultStatus
from taonode.protocol.votes import Verdict
from taonode.roles.challenger import ChallengerService
from taonode.roles.compute import ComputeWorker
from taonode.roles.context import ProfileUnavailable
from taonode.roles.profiles import ProfileBook, parse_profile_bytes
from taonode.roles.voter import VoterService
from taonode.runtime.profile import Profile, ProfileError, SegmentProfile, save_profile
from tests.roles.network import store_frontiers
from tests.roles.rolekit import (
    FAST,
    FORGED_OP,
    PROVER,
    Clock,
    Directory,
    Transport,
    Views,
    World,
    adjudicate,
    blob_store,
    leaf_view,
    party,
    prover_store,
)

pytestmark = pytest.mark.slow
HONEST_OP = 3


def tight(profile: Profile) -> Profile:
    """Every op threshold 0: any honest rounding error is an empirical violation."""
    return dataclasses.replace(
        profile, ops=tuple(dataclasses.replace(o, threshold=0.0) for o in profile.ops)
    )


def loose(profile: Profile) -> Profile:
    """Segment thresholds a million times wider: a 1 % rewrite looks within tolerance."""
    segments = {
        k: {key: SegmentProfile(s.max, s.count, s.threshold * 1e6) for key, s in table.items()}
        for k, table in profile.segments.items()
    }
    return dataclasses.replace(profile, segments=segments)


def local_profile(world: World) -> Profile:
    judge = world.served.judge
    profile = getattr(judge, "profile", None)
    assert isinstance(profile, Profile)
    return profile


def book(
    world: World, tmp: Path, *profiles: Profile, remote: Transport | None = None
) -> ProfileBook:
    return ProfileBook(
        {world.model.model_id: world.served},
        4,
        profiles=profiles,
        remote=remote,
        store_dir=tmp / "profiles",
    )


def test_profile_bytes_are_checked_against_their_id_before_use_reverts(world: World) -> None:
    q = local_profile(world)
    data = q.canonical()
    assert parse_profile_bytes(data, q.profile_id, world.model) == q
    with pytest.raises(ProfileError, match="do not hash"):
        parse_profile_bytes(b"{not json at all", q.profile_id, world.model)
    with pytest.raises(ProfileError, match="exceeds"):
        parse_profile_bytes(b" " * (5 << 20), q.profile_id, world.model)
    pretty = json.dumps(q.to_json(), indent=1).encode()
    with pytest.raises(ProfileError, match="not canonical"):
        parse_profile_bytes(pretty, bytes(keccak(pretty)), world.model)
    other = dataclasses.replace(q, model_id=b"\x07" * 32)
    with pytest.raises(ProfileError, match="profile is for model"):
        parse_profile_bytes(other.canonical(), other.profile_id, world.model)


async def test_voter_judges_with_the_committed_profile_not_its_local_one_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    q = local_profile(world)
    p = tight(q)
    assert p.profile_id != q.profile_id
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    judges = book(world, tmp_path, p)
    # The node's current local profile is Q; the result names P: judged with P.
    under_p, _ = await adjudicate(
        tmp_path,
        world,
        remote,
        digests,
        HONEST_OP,
        compute,
        "p",
        profile_id=p.profile_id,
        judges=judges,
    )
    under_q, _ = await adjudicate(
        tmp_path,
        world,
        remote,
        digests,
        HONEST_OP,
        compute,
        "q",
        profile_id=q.profile_id,
        judges=judges,
    )
    assert under_q is Verdict.WITHIN_TOLERANCE
    assert under_p is Verdict.EMPIRICAL_VIOLATION


async def test_unknown_profile_is_fetched_by_id_from_a_peer_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    p = tight(local_profile(world))
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    remote.raw[("prover-peer", p.profile_id)] = p.canonical()
    judges = book(world, tmp_path, remote=remote)
    assert judges.get(p.profile_id) is None
    verdict, _ = await adjudicate(
        tmp_path,
        world,
        remote,
        digests,
        HONEST_OP,
        compute,
        profile_id=p.profile_id,
        judges=judges,
    )
    assert verdict is Verdict.EMPIRICAL_VIOLATION
    assert judges.get(p.profile_id) == p
    # Kept by id across restarts.
    assert (tmp_path / "profiles" / f"{p.profile_id.hex()}.json").read_bytes() == p.canonical()
    assert book(world, tmp_path).get(p.profile_id) == p


@pytest.mark.parametrize("lie", ["nothing", "another profile", "garbage"])
async def test_unknown_profile_is_never_silently_replaced_reverts(
    tmp_path: Path, world: World, compute: ComputeWorker, lie: str
) -> None:
    q = local_profile(world)
    p = tight(q)
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    if lie == "another profile":
        remote.raw[("prover-peer", p.profile_id)] = q.canonical()
    elif lie == "garbage":
        remote.raw[("prover-peer", p.profile_id)] = b"\x00" * 64
    clock = Clock()
    views = Views(clock)
    for judges in (book(world, tmp_path, remote=remote), None):
        me = party(
            tmp_path,
            f"voter-{judges is None}",
            world,
            remote,
            views,
            Directory({PROVER: ["prover-peer"]}),
            compute,
            judges,
        )
        job_id = os.urandom(32)
        views.views[job_id] = leaf_view(
            job_id, world.model.model_id, p.profile_id, HONEST_OP, digests, [me.address]
        )
        voter = VoterService(me.ctx, me.store, None, direct_vote_margin=10, retry=FAST)
        with pytest.raises(ProfileUnavailable):
            await voter.adjudicate(
                Adjudicate(job_id, HONEST_OP, digests[HONEST_OP], digests[HONEST_OP + 1])
            )
        assert voter.verdict(job_id) is None
        assert me.store.results() == []


async def test_challenger_assesses_with_the_committed_profile_succeeds(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # The result deviates by a 1 % rewrite: outside Q's end-to-end threshold, inside P's.
    q = local_profile(world)
    p = loose(q)
    remote = Transport()
    store, digests = prover_store(tmp_path, world)
    remote.stores["prover-peer"] = store
    clock = Clock()
    views = Views(clock)
    me = party(
        tmp_path,
        "challenger",
        world,
        remote,
        views,
        Directory({PROVER: ["prover-peer"]}),
        compute,
        book(world, tmp_path, p),
    )
    challenger = ChallengerService(me.ctx, me.store, 1.0, retry=FAST)
    outcomes = {}
    for profile in (p, q):
        job_id = os.urandom(32)
        views.views[job_id] = JobView(
            job_id=job_id,
            prover=PROVER,
            model_id=world.model.model_id,
            profile_id=profile.profile_id,
            input_digest=digests[0],
            output_digest=digests[-1],
            trace_root=b"\x00" * 32,
            num_ops=world.model.num_ops,
            window_end=10_000,
            status=ResultStatus.PENDING,
        )
        await challenger.evaluate(Evaluate(job_id))
        outcomes[profile.profile_id] = challenger.assessment(job_id)
    assert outcomes[q.profile_id] is Assessment.DEVIATES
    assert outcomes[p.profile_id] is Assessment.WITHIN_TOLERANCE
    assert world.model.num_ops > FORGED_OP


def test_model_store_holds_several_profiles_per_model_by_id_succeeds(
    tmp_path: Path, world: World
) -> None:
    q = local_profile(world)
    p = tight(q)
    current = tmp_path / "q.json"
    save_profile(q, current)
    models = tmp_path / "models"
    add_model(models, world.program, current)
    further = tmp_path / "p.json"
    save_profile(p, further)  # pretty-printed: stored canonical under its id
    assert add_profile(models, further) == p
    assert (models / "profiles" / f"{p.profile_id.hex()}.json").read_bytes() == p.canonical()
    (stored,) = load_models(models)
    assert stored.profile == q
    assert stored.profiles == (p,)


@pytest.mark.parametrize("damage", ["renamed", "edited", "other model"])
def test_model_store_refuses_a_profile_file_that_is_not_its_id_reverts(
    tmp_path: Path, world: World, damage: str
) -> None:
    q = local_profile(world)
    p = tight(q)
    current = tmp_path / "q.json"
    save_profile(q, current)
    models = tmp_path / "models"
    add_model(models, world.program, current)
    (models / "profiles").mkdir()
    if damage == "renamed":
        (models / "profiles" / f"{q.profile_id.hex()}.json").write_bytes(p.canonical())
        match = "keccak"
    elif damage == "edited":
        data = p.canonical().replace(b'"margin":4.0', b'"margin":4.5')
        assert data != p.canonical()
        (models / "profiles" / f"{keccak(p.canonical()).hex()}.json").write_bytes(data)
        match = "keccak"
    else:
        other = dataclasses.replace(p, model_id=b"\x07" * 32)
        (models / "profiles" / f"{other.profile_id.hex()}.json").write_bytes(other.canonical())
        match = "not stored"
    with pytest.raises(ModelStoreError, match=match):
        load_models(models)
    with pytest.raises(ModelStoreError, match="is not stored"):
        add_profile(tmp_path / "empty-store", current)


async def test_rule_break_is_voted_even_when_the_named_profile_is_unknown_reverts(
    tmp_path: Path, world: World, compute: ComputeWorker
) -> None:
    # The leaf rule needs no profile: a prover naming a profile nobody serves still loses a
    # provable break (here an extra name in S_4).
    frontiers = [dict(f) for f in world.frontiers]
    frontiers[HONEST_OP + 1]["smuggled"] = frontiers[HONEST_OP + 1]["add"]
    remote = Transport()
    store = blob_store(tmp_path / "prover-blobs")
    digests, _ = store_frontiers(store, frontiers)
    remote.stores["prover-peer"] = store
    unknown = tight(local_profile(world)).profile_id
    verdict, _ = await adjudicate(
        tmp_path,
        world,
        remote,
        digests,
        HONEST_OP,
        compute,
        profile_id=unknown,
        judges=book(world, tmp_path, remote=remote),
    )
    assert verdict is Verdict.THEORETICAL_VIOLATION

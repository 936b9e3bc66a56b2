"""A small TAO network for role-level attack tests: the embedded chain with the contracts, the
reference transformer with its calibrated profile, one prover, one challenger and a committee
of voters, each a real role node (libp2p on loopback, own stores, journaling sender, watcher).

``commit_forged`` posts a result whose frontier manifests the test wrote itself, the way a
cheating prover would: the tensors and manifests go into the prover's blob store (served to
peers as usual), the per-cut frontier digests into its job record (its dispute moves post
them), and ``commitResult`` goes through its own sender.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from prometheus_client import CollectorRegistry

from taonode.chain.anvil import free_port
from taonode.chain.deploy import Contracts, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import BlockClock
from taonode.chain.tx import DirectTransactor
from taonode.devnet import DEVNET_PARAMS, ETHER, calibrate_profile, prepare_model
from taonode.protocol.dispute import JobView, ResultStatus
from taonode.protocol.manifest import FrontierManifest
from taonode.roles.assemble import RoleNode, RoleNodeSpec, build_role_node
from taonode.roles.context import ServedModel
from taonode.roles.judge import ProfileJudge
from taonode.runtime.digest import tensor_digest
from taonode.runtime.graph import Model
from taonode.runtime.merkle import merkle_root
from taonode.runtime.profile import Profile
from taonode.runtime.wire import encode_tensor
from taonode.service import Component, SupervisionResult, supervise
from taonode.signer import LocalSigner
from taonode.store.blobs import BlobStore
from taonode.store.state import Job


@dataclass
class Network:
    chain: EmbeddedChain
    model: Model
    example: tuple[torch.Tensor, ...]
    profile: Profile
    served: ServedModel
    nodes: list[RoleNode]
    contracts: Contracts

    @property
    def prover(self) -> RoleNode:
        return self.nodes[0]

    @property
    def challenger(self) -> RoleNode:
        return self.nodes[1]

    @property
    def voters(self) -> list[RoleNode]:
        return self.nodes[2:]

    async def wait_resolved(self, job_id: bytes, timeout_s: float = 240.0) -> JobView:
        closed = (ResultStatus.FINALIZED, ResultStatus.REJECTED, ResultStatus.VOIDED)
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        views: list[JobView | None] = []
        while loop.time() < end:
            # Any node's view will do: each folds the same chain events (one node's watcher
            # falling behind must not hide the outcome).
            views = [n.driver.state.views.get(job_id) for n in self.nodes]
            for view in views:
                if view is not None and view.status in closed:
                    return view
            await asyncio.sleep(0.2)
        raise AssertionError(f"job not resolved in {timeout_s} s: {views}")


@contextlib.asynccontextmanager
async def network(workdir: Path, voters: int = 3) -> AsyncIterator[Network]:
    chain = EmbeddedChain(num_keys=3 + voters)
    deployer = LocalSigner(chain.keys[0])
    transactor = DirectTransactor(chain.w3, deployer)
    deployment = await deploy(chain.w3, transactor, DEVNET_PARAMS)
    model, example = await asyncio.to_thread(prepare_model, "transformer", workdir)
    profile = await asyncio.to_thread(calibrate_profile, model, example, DEVNET_PARAMS.k)
    contracts = Contracts.connect(chain.w3, deployment, transactor)
    await contracts.models.register_model(
        model.model_id, profile.profile_id, model.num_ops, "test:transformer"
    )
    served = ServedModel(model, profile.profile_id, ProfileJudge(model, profile, DEVNET_PARAMS.k))
    layout = [("prover", "prover"), ("challenger", "challenger")] + [
        (f"voter-{i}", "voter") for i in range(voters)
    ]
    nodes: list[RoleNode] = []
    components: list[Component] = []
    bootstrap: list[str] = []
    for index, (name, role) in enumerate(layout):
        port = free_port()
        spec = RoleNodeSpec(
            name=name,
            roles=frozenset({role}),
            data_dir=workdir / name,
            signer=LocalSigner(chain.keys[1 + index]),
            deployment=deployment,
            models={model.model_id: served},
            listen=(f"/ip4/127.0.0.1/tcp/{port}",),
            bootstrap=tuple(bootstrap),
            poll_interval_s=0.2,
            voter_stake_wei=10 * ETHER,
            start_block=deployment.block,
        )
        node = await build_role_node(spec, chain.w3, CollectorRegistry())
        bootstrap.append(f"/ip4/127.0.0.1/tcp/{port}/p2p/{node.p2p.peer_id}")
        nodes.append(node)
        components.extend(node.components)
    components.append(BlockClock(chain, 0.25))
    stop = asyncio.Event()
    running: asyncio.Task[SupervisionResult] = asyncio.create_task(
        supervise(components, stop, start_timeout_s=60, stop_timeout_s=10)
    )
    try:
        net = Network(chain, model, example, profile, served, nodes, contracts)
        stakes = contracts.stakes
        for _ in range(600):
            assert not running.done(), running.result()
            staked = [await stakes.stake_of(n.address) for n in net.voters]
            if all(s > 0 for s in staked) and all(n.driver.ready() for n in nodes):
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("network not ready")
        yield net
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 30)
        await chain.close()


def store_frontiers(
    blobs: BlobStore, frontiers: Sequence[Mapping[str, torch.Tensor]]
) -> tuple[list[bytes], list[str]]:
    """Put every tensor and the manifest of every cut into ``blobs``; returns the frontier
    digests (one per cut) and every blob digest stored (hex, for pinning)."""
    digests: list[bytes] = []
    stored: list[str] = []
    for values in frontiers:
        entries: dict[str, bytes] = {}
        for name, tensor in values.items():
            digest = tensor_digest(tensor)
            if not blobs.has(digest.hex()):
                blobs.put(encode_tensor(tensor), expected=digest.hex())
            entries[name] = digest
            stored.append(digest.hex())
        manifest = FrontierManifest.from_digests(entries)
        if not blobs.has(manifest.digest.hex()):
            blobs.put(manifest.encode(), expected=manifest.digest.hex())
        digests.append(manifest.digest)
        stored.append(manifest.digest.hex())
    return digests, stored


async def commit_forged(
    net: Network, job_id: bytes, frontiers: Sequence[Mapping[str, torch.Tensor]]
) -> list[bytes]:
    """Commit a result whose cut ``c`` holds ``frontiers[c]`` (any tensors, any names).

    Returns the frontier digests committed (one per cut).
    """
    node = net.prover
    assert node.prover is not None
    digests, blobs = store_frontiers(node.blobs, frontiers)
    store = node.store
    hexid = job_id.hex()
    await store.run(store.pin, sorted(set(blobs)), f"job:{hexid}")
    root = merkle_root(digests)
    data = {
        "prover": node.address,
        "frontier_digests": [d.hex() for d in digests],
        "input_digest": digests[0].hex(),
        "output_digest": digests[-1].hex(),
        "trace_root": root.hex(),
        "num_ops": len(digests) - 1,
    }
    await store.run(store.put_job, Job(hexid, net.model.model_id.hex(), "committed", data))
    ctx = node.prover.ctx
    tx = ctx.contracts.coordinator.commit_result_tx(
        job_id,
        net.model.model_id,
        net.served.profile_id,
        digests[0],
        digests[-1],
        root,
        value=ctx.params.prover_bond,
    )
    await ctx.sender.submit(f"commit:{hexid}", tx)
    return digests

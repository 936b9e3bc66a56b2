"""Five nodes in five OS processes on 127.0.0.1: the issue's end-to-end scenario.

One scenario instead of several tests: each process costs about a second of imports on the
shared 2-core machine, so the steps share the same five peers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from taonode.p2p.envelope import TopicKinds
from tests.p2p.procs import PeerProc, wait_until

N = 5
TOPIC = TopicKinds.RESULTS
PER_NODE = 40  # 5 × 40 = 200 messages


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[list[PeerProc]]:
    procs: list[PeerProc] = []
    try:
        for i in range(N):
            # Every node bootstraps to all earlier ones: a full graph, and redial targets.
            boot = tuple(p.addr for p in procs)
            procs.append(await PeerProc.spawn(tmp_path / f"node{i}.key", bootstrap=boot))
        yield procs
    finally:
        for p in procs:
            await p.kill()


def _count(metrics: dict[str, float], name: str, **labels: str) -> float:
    key = name + (json.dumps(labels, sort_keys=True) if labels else "")
    return metrics.get(key, 0.0)


async def _received(p: PeerProc) -> set[tuple[str, int]]:
    out = await p.cmd("received", topic=TOPIC)
    return {(s, n) for s, n in out["items"]}


@pytest.mark.slow
async def test_five_processes_end_to_end(peers: list[PeerProc]) -> None:
    addresses = [(await p.cmd("info"))["address"] for p in peers]

    # -- mesh forms: everyone connected to everyone
    async def full_mesh() -> bool:
        for p in peers:
            if len((await p.cmd("peers"))["peers"]) < N - 1:
                return False
        return True

    await wait_until(full_mesh, 20)
    for p in peers:
        await p.cmd("sub", topic=TOPIC)
    await asyncio.sleep(1.5)  # one heartbeat: GRAFTs settle the topic mesh

    # -- 200 paced messages, 40 from each node at 25/s, all delivered to every other node
    await asyncio.gather(
        *(
            p.cmd("pub", topic=TOPIC, count=PER_NODE, base=i * 1000, rate=25)
            for i, p in enumerate(peers)
        )
    )
    expected = {(addresses[i], i * 1000 + k) for i in range(N) for k in range(PER_NODE)}

    async def all_delivered() -> bool:
        for i, p in enumerate(peers):
            want = {e for e in expected if e[0] != addresses[i]}
            if await _received(p) != want:
                return False
        return True

    await wait_until(all_delivered, 20)

    # -- hostile messages from node 4, rejected and counted by reason at the others
    dispute = os.urandom(32)
    members = addresses[:3]  # node 4 is not a member
    for p in peers[:4]:
        await p.cmd("committee", dispute=dispute.hex(), members=members)
    await asyncio.sleep(1.5)
    await peers[4].cmd("hostile", topic=TOPIC, dispute=dispute.hex())
    reasons = ["bad_signature", "schema", "oversize", "stale", "replay", "not_member"]

    async def all_rejected() -> bool:
        for p in peers[:4]:
            m = (await p.cmd("metrics"))["metrics"]
            if any(_count(m, "taonode_p2p_rejected_total", reason=r) < 1 for r in reasons):
                return False
        return True

    await wait_until(all_rejected, 15)
    # Only the first copy of the replayed envelope (n_ops=4) was valid, and it got through.
    expected.add((addresses[4], 4))
    for i, p in enumerate(peers[:4]):
        assert await _received(p) == {e for e in expected if e[0] != addresses[i]}
    # ... and the nodes keep working, including the one that misbehaved.
    await peers[4].cmd("pub", topic=TOPIC, count=1, base=9000)
    await peers[0].cmd("pub", topic=TOPIC, count=1, base=9001)

    async def healthy() -> bool:
        for i, p in enumerate(peers):
            got = await _received(p)
            for j, base in ((4, 9000), (0, 9001)):
                if j != i and (addresses[j], base) not in got:
                    return False
        return True

    await wait_until(healthy, 15)

    # -- 64 MB blob with digest check; a corrupted blob and a missing one
    server, client = peers[1], peers[3]
    good = (await server.cmd("put_blob", size=64 * 1024 * 1024))["digest"]
    bad = (await server.cmd("put_blob", size=1024, corrupt=True))["digest"]
    out = await client.cmd("fetch", peer=server.peer_id, digest=good, timeout_s=60)
    assert out.get("size") == 64 * 1024 * 1024, out
    assert (await client.cmd("fetch", peer=server.peer_id, digest=bad))[
        "error"
    ] == "digest_mismatch"
    missing = "ab" * 32
    assert (await client.cmd("fetch", peer=server.peer_id, digest=missing))["error"] == "not_found"

    # -- a peer killed (SIGKILL) and restarted with its key file and port rejoins
    victim = peers[2]
    old_id, port, key_file = victim.peer_id, victim.port, victim.key_file
    await victim.kill()
    boot = (peers[0].addr, peers[1].addr)
    reborn = await PeerProc.spawn(key_file, port=port, bootstrap=boot)
    peers[2] = reborn
    assert reborn.peer_id == old_id
    await reborn.cmd("sub", topic=TOPIC)

    async def rejoined() -> bool:
        # Nodes 3 and 4 have it as a bootstrap peer: their redial loop brings it back.
        return len((await reborn.cmd("peers"))["peers"]) == N - 1

    await wait_until(rejoined, 30)
    await asyncio.sleep(1.5)
    await peers[4].cmd("pub", topic=TOPIC, count=1, base=9100)

    async def reborn_receives() -> bool:
        return (addresses[4], 9100) in await _received(reborn)

    await wait_until(reborn_receives, 15)

    # -- orderly shutdown on SIGTERM: exit code 0 means no thread outlived the p2p node
    codes = await asyncio.gather(*(p.terminate() for p in peers))
    assert codes == [0] * N

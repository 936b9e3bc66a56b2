"""The asyncio bridge over real libp2p hosts (in one process, each in its own trio thread)."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import blake3
import pytest

from taonode.p2p.blob import BlobBusy, BlobDigestMismatch, BlobNotFound, BlobTooLarge
from taonode.p2p.envelope import ResultAnnouncement, TopicKinds, VoteMessage, seal
from taonode.p2p.identity import KeyFileError, load_or_create, peer_id_of
from taonode.p2p.node import P2PError, P2PNode, RequestError
from taonode.signer import LocalSigner
from tests.p2p.conftest import DictStore, NodeFactory, metric

RESULTS = TopicKinds.RESULTS


def _result(n: int) -> ResultAnnouncement:
    return ResultAnnouncement(
        job_id=n.to_bytes(32, "big"),
        model_id=b"\x02" * 32,
        profile_id=b"\x03" * 32,
        input_digest=b"\x04" * 32,
        output_digest=b"\x05" * 32,
        trace_root=b"\x06" * 32,
        n_ops=n,
    )


async def _pair(make_node: NodeFactory, **kw: object) -> tuple[P2PNode, P2PNode]:
    a = await make_node("a", **kw)
    b = await make_node("b", bootstrap=(a.listen_addrs[0],))
    events = b.peer_events()
    if a.peer_id not in await b.peers():
        ev = await asyncio.wait_for(events.get(), 10)
        assert ev.peer_id == a.peer_id
        assert ev.connected
    return a, b


def test_key_file_is_private_and_stable(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "p2p.key"
    kp = load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert peer_id_of(load_or_create(path)) == peer_id_of(kp)
    assert peer_id_of(kp).startswith("12D3KooW")  # ed25519
    path.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_or_create(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(KeyFileError, match="expected 32"):
        load_or_create(path)


async def test_publish_subscribe_typed_and_counted(make_node: NodeFactory) -> None:
    a, b = await _pair(make_node)
    sub_b = await b.subscribe(RESULTS, ResultAnnouncement)
    await a.subscribe(RESULTS)
    await asyncio.sleep(0.3)  # subscription announcements cross
    for i in range(5):
        await a.publish(RESULTS, _result(i))
    got = [await sub_b.get(5) for _ in range(5)]
    assert [r.body.n_ops for r in got] == list(range(5))
    assert {r.sender for r in got} == {a.signer.address}
    assert {r.peer_id for r in got} == {a.peer_id}
    assert metric(b, "taonode_p2p_messages_in_total", kind="ResultAnnouncement") == 5
    assert metric(a, "taonode_p2p_messages_out_total", kind="ResultAnnouncement") == 5
    assert metric(b, "taonode_p2p_peers_connected") == 1


async def test_hostile_gossip_is_rejected_and_node_keeps_going(make_node: NodeFactory) -> None:
    a, b = await _pair(make_node)
    sub_b = await b.subscribe(RESULTS)
    await a.subscribe(RESULTS)
    await asyncio.sleep(0.3)
    good = seal(a.signer, RESULTS, _result(1))
    forged = bytearray(seal(a.signer, RESULTS, _result(2)))
    forged[-2] ^= 0xFF
    await a.publish_bytes(RESULTS, b"\x01junk")
    await a.publish_bytes(RESULTS, bytes(forged))
    await a.publish_bytes(RESULTS, good)
    await a.publish_bytes(RESULTS, good)  # new libp2p seqno, same envelope: a replay
    got = await sub_b.get(5)
    assert got.body == _result(1)
    await a.publish(RESULTS, _result(3))
    assert (await sub_b.get(5)).body == _result(3)
    assert sub_b.queue.empty()
    assert metric(b, "taonode_p2p_rejected_total", reason="malformed") == 1
    assert metric(b, "taonode_p2p_rejected_total", reason="bad_signature") == 1
    assert metric(b, "taonode_p2p_rejected_total", reason="replay") == 1


async def test_non_member_vote_never_reaches_the_subscriber(make_node: NodeFactory) -> None:
    a, b = await _pair(make_node)
    dispute = os.urandom(32)
    topic = TopicKinds.VOTES
    b.set_committee(dispute, {b.signer.address})  # a is not a member
    sub = await b.subscribe(topic, VoteMessage)
    await a.subscribe(topic)
    await asyncio.sleep(0.3)
    await a.publish(topic, VoteMessage(dispute, 3, b"\x01" * 65))
    with pytest.raises(TimeoutError):
        await sub.get(0.5)
    assert metric(b, "taonode_p2p_rejected_total", reason="not_member") == 1


async def test_blob_fetch_verified_missing_corrupt_and_capped(make_node: NodeFactory) -> None:
    store = DictStore()
    payload = os.urandom(3 * 1024 * 1024 + 17)  # several chunks plus a tail
    digest = blake3.blake3(payload).digest()
    store.blobs[digest] = payload
    corrupt_digest = blake3.blake3(b"other").digest()
    store.blobs[corrupt_digest] = b"not the bytes that hash to it"
    a, b = await _pair(make_node, blob_source=store)

    assert await b.fetch_blob(a.peer_id, digest) == payload
    with pytest.raises(BlobNotFound):
        await b.fetch_blob(a.peer_id, b"\x00" * 32)
    with pytest.raises(BlobDigestMismatch):
        await b.fetch_blob(a.peer_id, corrupt_digest)
    with pytest.raises(BlobTooLarge):
        await b.fetch_blob(a.peer_id, digest, max_bytes=1024)
    assert metric(b, "taonode_p2p_blob_bytes_total", direction="in") == len(payload)
    assert metric(a, "taonode_p2p_blob_bytes_total", direction="out") == len(payload) + 29
    assert metric(b, "taonode_p2p_blob_failures_total", reason="digest_mismatch") == 1
    assert metric(b, "taonode_p2p_blob_fetch_seconds_count") == 1


async def test_blob_server_bounds_concurrent_transfers(make_node: NodeFactory) -> None:
    store = DictStore()
    payload = os.urandom(8 * 1024 * 1024)
    digest = blake3.blake3(payload).digest()
    store.blobs[digest] = payload
    a, b = await _pair(make_node, blob_source=store, max_concurrent_serves=1)
    results = await asyncio.gather(
        *(b.fetch_blob(a.peer_id, digest) for _ in range(3)), return_exceptions=True
    )
    assert any(r == payload for r in results)
    assert any(isinstance(r, BlobBusy) for r in results)


async def test_pluggable_verifier(make_node: NodeFactory) -> None:
    store = DictStore()
    store.blobs[b"\x07" * 32] = b"payload"
    a, b = await make_node("a", blob_source=store), None
    b = await make_node("b", blob_verifier=lambda d, p: p == b"payload")
    await b.connect(a.listen_addrs[0])
    assert await b.fetch_blob(a.peer_id, b"\x07" * 32) == b"payload"


async def test_request_response_and_errors_surface(make_node: NodeFactory) -> None:
    a, b = await _pair(make_node)

    async def echo(peer: str, data: bytes) -> bytes:
        if data == b"boom":
            raise ValueError("handler exploded")
        return peer.encode() + b":" + data

    a.set_handler("/tao/test/echo/1", echo)
    assert await b.request(a.peer_id, "/tao/test/echo/1", b"hi") == f"{b.peer_id}:hi".encode()
    with pytest.raises(RequestError, match="handler exploded"):
        await b.request(a.peer_id, "/tao/test/echo/1", b"boom")
    with pytest.raises(RequestError):
        await b.request(a.peer_id, "/tao/test/unknown/1", b"hi", timeout_s=3)
    # The node is still fine after the failures.
    assert await b.request(a.peer_id, "/tao/test/echo/1", b"again") == f"{b.peer_id}:again".encode()


async def test_stop_is_orderly_and_calls_after_stop_fail(make_node: NodeFactory) -> None:
    a = await make_node("a")
    sub = await a.subscribe(RESULTS)
    await a.stop()
    assert not a.running
    with pytest.raises(StopAsyncIteration):
        await sub.__anext__()
    with pytest.raises(P2PError):
        await a.publish(RESULTS, _result(1))
    await a.stop()  # idempotent


async def test_cancelled_call_does_not_wedge_the_bridge(make_node: NodeFactory) -> None:
    a = await make_node("a")
    signer = LocalSigner(os.urandom(32))
    assert signer.address
    with pytest.raises(TimeoutError):
        # An unroutable peer: the dial hangs until we give up from asyncio.
        await asyncio.wait_for(
            a.connect("/ip4/10.255.255.1/tcp/4001/p2p/" + a.peer_id, timeout_s=30), 0.3
        )
    assert await a.peers() == []

"""Job data over real blob stores and two real libp2p hosts on loopback: a prover's stored
trace is fetched from it and proven against the commitment; tampered blobs and manifests are
rejected and never stored."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import blake3
import pytest
import torch
from prometheus_client import CollectorRegistry
from torch import nn

from taonode.p2p.node import P2PConfig, P2PNode
from taonode.protocol.manifest import FrontierManifest
from taonode.roles.jobdata import (
    BlobKind,
    BlobServer,
    DataUnavailable,
    JobData,
    StoredTrace,
    blob_digest,
    store_trace,
    verify_as,
    verify_blob,
)
from taonode.runtime.commit import Commitment, commit
from taonode.runtime.execute import Trace, run_traced
from taonode.runtime.graph import Model, export
from taonode.signer import LocalSigner
from taonode.store.blobs import BlobStore

Verifier = Callable[[bytes, bytes], bool]


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = nn.Linear(8, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(torch.relu(self.fc1(x)))
        return out


@dataclass
class Job:
    model: Model
    trace: Trace
    commitment: Commitment


@pytest.fixture(scope="module")
def job(tmp_path_factory: pytest.TempPathFactory) -> Job:
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    model = export(Tiny(), (x,), tmp_path_factory.mktemp("model") / "tiny.pt2")
    trace = run_traced(model, {model.input_names[0]: x})
    return Job(model, trace, commit(model, trace))


def blob_store(root: Path) -> BlobStore:
    return BlobStore(root, digest=lambda b: blob_digest(b).hex())


class Tampering:
    """The serving peer's store, with chosen digests answering other bytes (a cheating or
    broken peer). Everything else comes from the real store."""

    def __init__(self, inner: BlobStore) -> None:
        self.inner = inner
        self.swap: dict[str, bytes] = {}

    def has(self, digest: str) -> bool:
        return digest in self.swap or self.inner.has(digest)

    def put(self, data: bytes, *, expected: str | None = None) -> str:
        return self.inner.put(data, expected=expected)

    def get(self, digest: str) -> bytes:
        return self.swap[digest] if digest in self.swap else self.inner.get(digest)


@dataclass
class Pair:
    prover_store: BlobStore
    served: Tampering
    stored: StoredTrace
    prover: P2PNode
    fetcher_store: BlobStore
    fetcher: JobData


async def start_pair(tmp_path: Path, job: Job, fetch_verifier: Verifier) -> tuple[Pair, P2PNode]:
    prover_store = blob_store(tmp_path / "prover-blobs")
    stored = store_trace(prover_store, job.model, job.trace, job.commitment)
    served = Tampering(prover_store)
    prover = P2PNode(
        P2PConfig(key_file=tmp_path / "prover.key"),
        LocalSigner(os.urandom(32)),
        CollectorRegistry(),
        blob_source=BlobServer(served),
        blob_verifier=verify_blob,
    )
    await prover.start()
    remote = P2PNode(
        P2PConfig(key_file=tmp_path / "fetcher.key", bootstrap=(prover.listen_addrs[0],)),
        LocalSigner(os.urandom(32)),
        CollectorRegistry(),
        blob_verifier=fetch_verifier,
    )
    try:
        await remote.start()
        for _ in range(200):
            if prover.peer_id in await remote.peers():
                break
            await asyncio.sleep(0.05)
        else:
            raise AssertionError("the two hosts did not connect")
    except BaseException:
        await remote.stop()
        await prover.stop()
        raise
    fetcher_store = blob_store(tmp_path / "fetcher-blobs")
    data = JobData(fetcher_store, remote, timeout_s=10)
    return Pair(prover_store, served, stored, prover, fetcher_store, data), remote


@pytest.fixture
async def pair(tmp_path: Path, job: Job) -> AsyncIterator[Pair]:
    """The fetching host verifies blobs in transport, as every node does."""
    p, remote = await start_pair(tmp_path, job, verify_blob)
    yield p
    await remote.stop()
    await p.prover.stop()


@pytest.fixture
async def lax_pair(tmp_path: Path, job: Job) -> AsyncIterator[Pair]:
    """The fetching host accepts any bytes in transport, so what rejects a tampered blob here
    is :class:`JobData`'s own check."""
    p, remote = await start_pair(tmp_path, job, lambda _digest, _payload: True)
    yield p
    await remote.stop()
    await p.prover.stop()


async def test_jobdata_frontier_fetched_from_peer_and_verified_succeeds(
    pair: Pair, job: Job
) -> None:
    model, trace, commitment = job.model, job.trace, job.commitment
    assert len(pair.stored.frontier_digests) == model.num_ops + 1
    peers = [pair.prover.peer_id]
    for cut in range(model.num_ops + 1):
        digest = commitment.frontier_digests[cut]
        assert not pair.fetcher_store.has(digest.hex())
        tensors = await pair.fetcher.frontier(digest, peers)
        expected = dict(commitment.frontier_entries(model, cut))
        assert set(tensors) == set(expected)
        for name, tensor in tensors.items():
            assert torch.equal(tensor, trace.values[name])
            # Fetched once, now served from the local store (verified again on read).
            assert pair.fetcher_store.has(expected[name].hex())
        assert pair.fetcher_store.has(digest.hex())
    # The outputs the chain commits to are the model's outputs.
    final = await pair.fetcher.frontier(commitment.frontier_digests[-1], [])
    for name in model.outputs:
        assert torch.equal(final[name], trace.values[name])


async def test_jobdata_corrupt_blob_from_peer_rejected_not_stored_reverts(
    lax_pair: Pair, job: Job
) -> None:
    pair = lax_pair
    output = job.model.outputs[0]
    digest = job.commitment.tensor_digests[output]
    good = pair.prover_store.get(digest.hex())
    bad = bytearray(good)
    bad[-1] ^= 0x01  # one flipped bit in the tensor data
    pair.served.swap[digest.hex()] = bytes(bad)
    peers = [pair.prover.peer_id]
    with pytest.raises(DataUnavailable):
        await pair.fetcher.blob(digest, peers)
    assert not pair.fetcher_store.has(digest.hex())
    # Through a manifest too: the tensor a frontier names is proven against its digest.
    manifest = await pair.fetcher.manifest(job.commitment.frontier_digests[-1], peers)
    with pytest.raises(DataUnavailable):
        await pair.fetcher.tensors(manifest, [output], peers)
    assert not pair.fetcher_store.has(digest.hex())
    # The honest bytes are accepted once the peer serves them.
    del pair.served.swap[digest.hex()]
    assert await pair.fetcher.blob(digest, peers) == good
    assert pair.fetcher_store.has(digest.hex())


async def test_jobdata_corrupt_blob_rejected_by_transport_reverts(pair: Pair, job: Job) -> None:
    digest = job.commitment.tensor_digests[job.model.input_names[0]]
    pair.served.swap[digest.hex()] = b"\x00" * 64
    with pytest.raises(DataUnavailable):
        await pair.fetcher.blob(digest, [pair.prover.peer_id])
    assert not pair.fetcher_store.has(digest.hex())


async def test_jobdata_manifest_not_matching_frontier_digest_reverts(
    lax_pair: Pair, job: Job
) -> None:
    pair = lax_pair
    commitment, model = job.commitment, job.model
    wanted = commitment.frontier_digests[1]
    # A well-formed manifest, but of another cut: it does not hash to the frontier asked for.
    other = FrontierManifest(tuple(commitment.frontier_entries(model, model.num_ops)))
    assert other.digest != wanted
    pair.served.swap[wanted.hex()] = other.encode()
    peers = [pair.prover.peer_id]
    with pytest.raises(DataUnavailable):
        await pair.fetcher.manifest(wanted, peers)
    with pytest.raises(DataUnavailable):
        await pair.fetcher.frontier(wanted, peers)
    assert not pair.fetcher_store.has(wanted.hex())
    # With the honest manifest served again, the frontier is proven and fetched.
    del pair.served.swap[wanted.hex()]
    tensors = await pair.fetcher.frontier(wanted, peers)
    assert set(tensors) == {name for name, _ in commitment.frontier_entries(model, 1)}


DEEP = b"[" * 100_000 + b"]" * 100_000  # segfaults the C JSON decoder under py_ecc's limit


async def _deep_blob_is_unavailable(p: Pair, job: Job) -> None:
    """A peer answers a frontier digest (and a tensor digest) with 100,000-deep JSON: the
    fetcher bounds the bytes before any decoder sees them, reports the blob unavailable, and
    fetches honest data afterwards."""
    # py_ecc's setting is what made this a crash; the bounds must hold under it even though
    # the entry points restore a sane limit.
    sys.setrecursionlimit(100_000)
    frontier = job.commitment.frontier_digests[1]
    tensor = job.commitment.tensor_digests[job.model.input_names[0]]
    p.served.swap[frontier.hex()] = DEEP
    p.served.swap[tensor.hex()] = DEEP
    peers = [p.prover.peer_id]
    with pytest.raises(DataUnavailable):
        await p.fetcher.manifest(frontier, peers)
    with pytest.raises(DataUnavailable):
        await p.fetcher.blob(tensor, peers)
    with pytest.raises(DataUnavailable):  # asked for as a manifest: too deep, never parsed
        await p.fetcher.blob(tensor, peers, BlobKind.MANIFEST)
    assert not p.fetcher_store.has(frontier.hex())
    del p.served.swap[frontier.hex()], p.served.swap[tensor.hex()]
    assert set(await p.fetcher.frontier(frontier, peers)) == {
        name for name, _ in job.commitment.frontier_entries(job.model, 1)
    }


async def test_jobdata_deeply_nested_blob_from_hostile_peer_is_unavailable_not_a_crash(
    pair: Pair, job: Job
) -> None:
    await _deep_blob_is_unavailable(pair, job)  # the transport's verifier refuses it


async def test_jobdata_deeply_nested_blob_refused_by_jobdata_itself(
    lax_pair: Pair, job: Job
) -> None:
    await _deep_blob_is_unavailable(lax_pair, job)  # JobData's kind-aware check refuses it


def test_verify_blob_checks_the_hash_before_parsing_and_bounds_manifests(job: Job) -> None:
    manifest = FrontierManifest(tuple(job.commitment.frontier_entries(job.model, 1)))
    data = manifest.encode()
    assert verify_blob(manifest.digest, data)
    assert verify_as(BlobKind.MANIFEST, manifest.digest, data)
    assert not verify_as(BlobKind.TENSOR, manifest.digest, data)  # a manifest is no tensor
    # Same entries, not canonical bytes (a space): refused, so one digest has one byte string.
    spaced = data.replace(b",", b", ", 1)
    assert not verify_as(BlobKind.MANIFEST, manifest.digest, spaced)
    # A BLAKE3 match of non-tensor bytes is not a tensor either.
    assert not verify_blob(blake3.blake3(DEEP).digest(), DEEP)
    assert not verify_as(BlobKind.MANIFEST, manifest.digest, DEEP)

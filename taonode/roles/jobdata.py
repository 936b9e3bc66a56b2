"""A job's data in the blob store and over the network.

Two kinds of blobs, both content-addressed and self-verifying:

* tensors: the canonical payload (``header ‖ data``) under its BLAKE3 tensor digest;
* frontier manifests: the ``(name, tensor digest)`` list under its keccak frontier digest.

The prover stores the whole trace (every tensor and the manifest of every cut 0..N) after
answering the client; challengers and voters fetch what they need by digest: first locally,
then from the peers that should have it, verifying each payload before it is used.
"""

from __future__ import annotations

import asyncio
import enum
import functools
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import structlog
import torch

from taonode.protocol.manifest import (
    MAX_MANIFEST_BYTES,
    FrontierManifest,
    ManifestError,
    decode_manifest,
)
from taonode.runtime.commit import Commitment
from taonode.runtime.execute import Trace
from taonode.runtime.graph import Model
from taonode.runtime.wire import (
    WireError,
    decode_tensor,
    encode_tensor,
    is_tensor_payload,
    payload_digest,
)

log = structlog.get_logger("taonode.jobdata")


class DataUnavailable(RuntimeError):
    """No peer served a blob that matches its digest."""


class LocalBlobs(Protocol):
    def has(self, digest: str) -> bool: ...

    def put(self, data: bytes, *, expected: str | None = None) -> str: ...

    def get(self, digest: str) -> bytes: ...


class RemoteBlobs(Protocol):
    async def fetch_blob(
        self, peer_id: str, digest: bytes, *, max_bytes: int | None = None
    ) -> bytes: ...


class BlobKind(enum.Enum):
    """What a fetcher expects under a digest; it decides how the bytes are checked."""

    TENSOR = "tensor"
    MANIFEST = "manifest"


def blob_digest(payload: bytes) -> bytes:
    """The digest a blob is stored under: BLAKE3 for tensors, the frontier digest for manifests.

    Raises ``ValueError`` for bytes that are neither (they are never stored or served).
    Manifests are parsed only after :func:`~taonode.protocol.manifest.check_shape` bounded them.
    """
    if is_tensor_payload(payload):
        return payload_digest(payload)
    return decode_manifest(payload).digest


def verify_as(kind: BlobKind, digest: bytes, payload: bytes) -> bool:
    """Check ``payload`` against ``digest`` as the expected kind, hash before any parse.

    A tensor is accepted on its BLAKE3 digest alone (never decoded here); a manifest, whose
    frontier digest covers the entries rather than the bytes, is shape-checked with fixed
    depth/size/entry limits, parsed, proven against the digest, and must be byte-canonical.
    Stops a hostile peer from crashing or stalling the fetcher with crafted bytes under a
    digest it was asked for.
    """
    try:
        if kind is BlobKind.TENSOR:
            return payload_digest(payload) == digest and is_tensor_payload(payload)
        manifest = decode_manifest(payload, digest)
        return manifest.encode() == payload
    except (ManifestError, WireError, ValueError):
        return False


def verify_blob(digest: bytes, payload: bytes) -> bool:
    """Kind-agnostic check (the p2p layer's verifier): a BLAKE3 match first, no parse; only
    then the bounded manifest check."""
    if payload_digest(payload) == digest:
        return is_tensor_payload(payload)
    return verify_as(BlobKind.MANIFEST, digest, payload)


@dataclass(frozen=True)
class StoredTrace:
    frontier_digests: tuple[bytes, ...]
    blobs: tuple[str, ...]
    """Hex digests of everything stored for the job (for pinning)."""


def store_trace(
    blobs: LocalBlobs,
    model: Model,
    trace: Trace,
    commitment: Commitment,
    *,
    workers: int = 8,
) -> StoredTrace:
    """Put every committed tensor and every frontier manifest of a trace into the blob store.

    Each put is fsynced, so the puts run on ``workers`` threads: the file system batches
    concurrent syncs (one at a time, a MiniLM trace of 175 blobs took ~1.3-2 s here; on 8
    threads ~0.15 s). Tensors go in before the manifests that name them, and everything is
    stored before this returns (the result is committed on chain only afterwards).
    """
    tensors: dict[str, torch.Tensor] = {}
    for name, tensor in trace.values.items():
        tensors.setdefault(commitment.tensor_digests[name].hex(), tensor)
    manifests: dict[str, FrontierManifest] = {}
    for cut in range(model.num_ops + 1):
        manifest = FrontierManifest(tuple(commitment.frontier_entries(model, cut)))
        manifests.setdefault(commitment.frontier_digests[cut].hex(), manifest)

    def put_tensor(digest: str) -> None:
        if not blobs.has(digest):
            blobs.put(encode_tensor(tensors[digest]), expected=digest)

    def put_manifest(digest: str) -> None:
        if not blobs.has(digest):
            blobs.put(manifests[digest].encode(), expected=digest)

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="store-trace") as pool:
        # list() re-raises the first failure of each phase.
        list(pool.map(put_tensor, tensors))
        list(pool.map(put_manifest, manifests))
    return StoredTrace(commitment.frontier_digests, (*tensors, *manifests))


class JobData:
    """Fetches manifests and tensors by digest: the local store first, then peers."""

    def __init__(
        self,
        local: LocalBlobs,
        remote: RemoteBlobs | None,
        *,
        max_blob_bytes: int = 256 * 1024 * 1024,
        timeout_s: float = 30.0,
    ) -> None:
        self.local = local
        self.remote = remote
        self.max_blob_bytes = max_blob_bytes
        self.timeout_s = timeout_s

    async def blob(
        self, digest: bytes, peers: Sequence[str], kind: BlobKind = BlobKind.TENSOR
    ) -> bytes:
        """The verified bytes of ``digest`` as ``kind``; :class:`DataUnavailable` if no source
        (local store, then each peer) has bytes that pass :func:`verify_as`."""
        hexd = digest.hex()
        # Size first: a manifest is small, so a peer cannot make us take 256 MiB for one.
        limit = MAX_MANIFEST_BYTES if kind is BlobKind.MANIFEST else self.max_blob_bytes
        # Hashing (and a manifest's bounded parse) runs off the event loop.
        check = functools.partial(verify_as, kind, digest)
        if self.local.has(hexd):
            payload = await asyncio.to_thread(self.local.get, hexd)
            if await asyncio.to_thread(check, payload):
                return payload
        if self.remote is not None:
            for peer in peers:
                try:
                    payload = await asyncio.wait_for(
                        self.remote.fetch_blob(peer, digest, max_bytes=limit),
                        self.timeout_s,
                    )
                except Exception as exc:  # any peer failure: try the next one
                    log.debug("blob fetch failed", peer=peer, digest=hexd[:16], error=repr(exc))
                    continue
                if await asyncio.to_thread(check, payload):
                    await asyncio.to_thread(
                        functools.partial(self.local.put, expected=hexd), payload
                    )
                    return payload
        raise DataUnavailable(f"blob {hexd[:16]}… unavailable from {len(peers)} peer(s)")

    async def manifest(self, frontier_digest: bytes, peers: Sequence[str]) -> FrontierManifest:
        payload = await self.blob(frontier_digest, peers, BlobKind.MANIFEST)
        return decode_manifest(payload, frontier_digest)

    async def tensors(
        self, manifest: FrontierManifest, names: Iterable[str], peers: Sequence[str]
    ) -> dict[str, torch.Tensor]:
        wanted = list(names)
        digests = [manifest.tensor_digest(name) for name in wanted]
        payloads = await asyncio.gather(*(self.blob(d, peers, BlobKind.TENSOR) for d in digests))
        return {
            name: decode_tensor(payload, digest)
            for name, digest, payload in zip(wanted, digests, payloads, strict=True)
        }

    async def frontier(
        self, frontier_digest: bytes, peers: Sequence[str], names: Iterable[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The tensors of a frontier (all of them, or only ``names``), proven against its digest."""
        manifest = await self.manifest(frontier_digest, peers)
        return await self.tensors(manifest, manifest.names() if names is None else names, peers)


class BlobServer:
    """The p2p layer's blob source over the local store; ``serves(digest, peer)`` decides, per
    asking peer, whether a blob is handed out (the prover's behaviour: always, when honest)."""

    def __init__(
        self, local: LocalBlobs, serves: Callable[[bytes, str | None], bool] | None = None
    ) -> None:
        self.local = local
        self.serves = serves

    def for_peer(self, peer: str | None) -> _PeerBlobSource:
        return _PeerBlobSource(self, peer)

    def get(self, digest: bytes, peer: str | None = None) -> bytes | None:
        if self.serves is not None and not self.serves(digest, peer):
            return None
        hexd = digest.hex()
        try:
            return self.local.get(hexd) if self.local.has(hexd) else None
        except Exception:  # a corrupt or vanished blob is "not found" to the peer
            return None


@dataclass(frozen=True)
class _PeerBlobSource:
    server: BlobServer
    peer: str | None

    def get(self, digest: bytes) -> bytes | None:
        return self.server.get(digest, self.peer)

"""Fixtures: in-process P2P nodes on 127.0.0.1, always stopped, with a thread-leak check."""

from __future__ import annotations

import os
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from taonode.p2p.node import P2PConfig, P2PNode
from taonode.protocol.votes import VoteDomain
from taonode.signer import LocalSigner

DOMAIN = VoteDomain(chain_id=31337, verifying_contract="0x" + "22" * 20)

NodeFactory = Callable[..., Awaitable[P2PNode]]


class DictStore:
    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}

    def get(self, digest: bytes) -> bytes | None:
        return self.blobs.get(digest)


@pytest.fixture
async def make_node(tmp_path: Path) -> AsyncIterator[NodeFactory]:
    before = {t.ident for t in threading.enumerate()}
    nodes: list[P2PNode] = []

    async def factory(name: str = "n", **kwargs: Any) -> P2PNode:
        store = kwargs.pop("blob_source", None)
        verifier = kwargs.pop("blob_verifier", None)
        registered = kwargs.pop("is_registered", None)
        signer = kwargs.pop("signer", None) or LocalSigner(os.urandom(32))
        cfg = P2PConfig(
            key_file=tmp_path / f"{name}-{len(nodes)}.key", vote_domain=DOMAIN, **kwargs
        )
        extra: dict[str, Any] = {}
        if verifier is not None:
            extra["blob_verifier"] = verifier
        node = P2PNode(
            cfg, signer, CollectorRegistry(), blob_source=store, is_registered=registered, **extra
        )
        nodes.append(node)
        await node.start()
        return node

    yield factory
    for n in nodes:
        await n.stop()
    leaked = [t for t in threading.enumerate() if t.ident not in before]
    assert not leaked, f"threads left behind: {leaked}"


def metric(node: P2PNode, name: str, **labels: str) -> float:
    value = node.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)

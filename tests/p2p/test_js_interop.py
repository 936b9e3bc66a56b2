"""Interop with js-libp2p: a JS peer and a taonode exchange signed envelopes over GossipSub.

The JS peer (``tests/p2p/js/peer.mjs``, exact package versions in its package-lock.json) knows
nothing about envelopes: it relays the bytes it is given and prints what it receives.  The
envelope it publishes was sealed here with a chain key, so the py side runs the full validation;
what it prints is validated here too.  Both dial directions are covered.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from taonode.p2p.envelope import ResultAnnouncement, TopicKinds, Validator, seal
from taonode.signer import LocalSigner
from tests.p2p.conftest import NodeFactory

JS_DIR = Path(__file__).parent / "js"
TOPIC = TopicKinds.RESULTS


def _msg(n: int) -> ResultAnnouncement:
    return ResultAnnouncement(
        job_id=n.to_bytes(32, "big"),
        model_id=b"\x0a" * 32,
        profile_id=b"\x0b" * 32,
        input_digest=b"\x0c" * 32,
        output_digest=b"\x0d" * 32,
        trace_root=b"\x0e" * 32,
        n_ops=n,
    )


class JsPeer:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.addr = ""
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for raw in self.proc.stdout:
            line = raw.decode().strip()
            if line.startswith("MSG "):
                _, topic, hexdata = line.split(" ", 2)
                self.messages.put_nowait((topic, bytes.fromhex(hexdata)))


JsFactory = Callable[..., Awaitable[JsPeer]]


@pytest.fixture
async def js_peer_factory() -> AsyncIterator[JsFactory]:
    node_bin = shutil.which("node")
    assert node_bin, "Node.js is required for the interop test"
    assert (JS_DIR / "node_modules").is_dir(), "run `make node` (npm ci in tests/p2p/js)"
    peers: list[JsPeer] = []

    async def spawn(*args: str) -> JsPeer:
        proc = await asyncio.create_subprocess_exec(
            node_bin,
            str(JS_DIR / "peer.mjs"),
            "--topic",
            TOPIC,
            *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=JS_DIR,
        )
        peer = JsPeer(proc)
        peers.append(peer)
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 30)).decode().strip()
        assert line.startswith("READY "), line
        peer.addr = line.split(" ", 1)[1]
        peer._reader = asyncio.create_task(peer._read())
        return peer

    yield spawn
    for p in peers:
        if p.proc.returncode is None:
            assert p.proc.stdin is not None
            p.proc.stdin.close()  # the peer stops on EOF
            try:
                await asyncio.wait_for(p.proc.wait(), 10)
            except TimeoutError:
                p.proc.kill()
                await p.proc.wait()
        if p._reader is not None:
            await p._reader


@pytest.mark.parametrize("who_dials", ["js", "py"])
async def test_js_and_py_exchange_envelopes(
    make_node: NodeFactory, js_peer_factory: JsFactory, who_dials: str
) -> None:
    spawn = js_peer_factory
    py = await make_node("py")
    sub = await py.subscribe(TOPIC, ResultAnnouncement)
    js_key = LocalSigner(os.urandom(32))
    from_js = seal(js_key, TOPIC, _msg(7))
    if who_dials == "js":
        js: JsPeer = await spawn("--dial", py.listen_addrs[0], "--publish", from_js.hex())
    else:
        js = await spawn("--publish", from_js.hex())
        await py.connect(js.addr)

    # JS → py: the envelope passes the full validation (the chain signature is js_key's).
    got = await sub.get(20)
    assert got.body == _msg(7)
    assert got.sender == js_key.address
    assert got.peer_id != py.peer_id

    # py → JS: publish until the JS mesh has us (gossip is lossy until then).
    validator = Validator()
    for i in range(40):
        await py.publish(TOPIC, _msg(100 + i))
        try:
            topic, data = await asyncio.wait_for(js.messages.get(), 0.5)
        except TimeoutError:
            continue
        env = validator.validate(topic, data)
        assert env.sender == py.signer.address
        assert isinstance(env.body, ResultAnnouncement)
        break
    else:
        pytest.fail("the JS peer never received the py envelope")

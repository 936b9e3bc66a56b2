"""A remote-controlled P2P peer in its own OS process, for multi-process tests and benchmarks.

Not used by the node.  Reads one JSON command per line on stdin, answers one line on stdout
prefixed with ``@@`` (log lines go elsewhere or are ignored).  SIGTERM stops it in order;
on exit it reports whether any thread outlived the p2p node (exit code 3 if so).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import blake3
import structlog
from prometheus_client import CollectorRegistry

from taonode.p2p.blob import BlobError
from taonode.p2p.committee import CommitteeChannel, CommitteeRound
from taonode.p2p.envelope import (
    _HEADER,
    ResultAnnouncement,
    TopicKinds,
    VoteMessage,
    seal,
    sign_vote_with,
)
from taonode.p2p.node import P2PConfig, P2PNode, Received
from taonode.protocol.votes import Verdict, VoteDomain
from taonode.signer import LocalSigner

Json = dict[str, Any]


def result_msg(n: int) -> ResultAnnouncement:
    return ResultAnnouncement(
        job_id=n.to_bytes(32, "big"),
        model_id=b"\x02" * 32,
        profile_id=b"\x03" * 32,
        input_digest=b"\x04" * 32,
        output_digest=b"\x05" * 32,
        trace_root=b"\x06" * 32,
        n_ops=n,
    )


class Blobs:
    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}

    def get(self, digest: bytes) -> bytes | None:
        return self.blobs.get(digest)


class Peer:
    def __init__(self, node: P2PNode, domain: VoteDomain, blobs: Blobs) -> None:
        self.node = node
        self.domain = domain
        self.received: dict[str, list[tuple[str, int, float]]] = defaultdict(list)
        self.blobs = blobs.blobs
        self.rounds: dict[bytes, CommitteeRound] = {}
        self.channel = CommitteeChannel(node)  # a voter joins the vote topic at start-up
        self.tasks: set[asyncio.Task[None]] = set()

    async def _pump(self, topic: str) -> None:
        sub = await self.node.subscribe(topic)
        async for item in sub:
            self._record(topic, item)

    def _record(self, topic: str, item: Received[Any]) -> None:
        n = item.body.n_ops if isinstance(item.body, ResultAnnouncement) else -1
        # Receive time and the sender's timestamp give one-way latency (same host clock).
        self.received[topic].append((item.sender, n, time.time() * 1000 - item.timestamp_ms))

    def _spawn(self, coro: Any) -> None:
        t = asyncio.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)

    async def handle(self, cmd: Json) -> Json:
        op = cmd["op"]
        node = self.node
        if op == "info":
            return {
                "peer_id": node.peer_id,
                "addrs": node.listen_addrs,
                "address": node.signer.address,
            }
        if op == "mesh":  # diagnostics: the router's view of a topic
            ps = node._pubsub
            return {
                "mesh": len(ps.router.mesh.get(cmd["topic"], ())),
                "topic_peers": len(ps.peer_topics.get(cmd["topic"], ())),
                "peers": len(await node.peers()),
            }
        if op == "peers":
            return {"peers": await node.peers()}
        if op == "sub":
            self._spawn(self._pump(cmd["topic"]))
            await asyncio.sleep(0)
            return {}
        if op == "pub":
            # Paced on a schedule (not sleep-after-send) so the rate holds under load.
            rate = cmd.get("rate", 0)
            loop = asyncio.get_running_loop()
            t0 = loop.time()
            for i in range(cmd["count"]):
                await node.publish(cmd["topic"], result_msg(cmd.get("base", 0) + i))
                if rate:
                    await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - loop.time()))
            return {"seconds": loop.time() - t0}
        if op == "received":
            rec = self.received.get(cmd["topic"], [])
            return {"items": [[s, n] for s, n, _ in rec], "lat_ms": [x[2] for x in rec]}
        if op == "metrics":
            out: dict[str, float] = {}
            for fam in node.registry.collect():
                for s in fam.samples:
                    key = s.name + ("" if not s.labels else json.dumps(s.labels, sort_keys=True))
                    out[key] = s.value
            return {"metrics": out}
        if op == "committee":
            dispute = bytes.fromhex(cmd["dispute"])
            rnd = self.channel.join(dispute, cmd["members"])
            await rnd.__aenter__()
            self.rounds[dispute] = rnd
            return {}
        if op == "vote":
            # "Leaf reached": join the dispute and cast at once (the bench's round).
            dispute = bytes.fromhex(cmd["dispute"])
            rnd = self.channel.join(dispute, cmd["members"])
            await rnd.__aenter__()
            self.rounds[dispute] = rnd
            await rnd.cast(Verdict(cmd["verdict"]))
            return {"cast_at": time.time()}
        if op == "cast":
            rnd = self.rounds[bytes.fromhex(cmd["dispute"])]
            await rnd.cast(Verdict(cmd["verdict"]))
            return {}
        if op == "collect":
            rnd = self.rounds[bytes.fromhex(cmd["dispute"])]
            res = await rnd.collect(cmd["quorum"], cmd["timeout"])
            return {"ok": res.quorum_reached, "n": len(res.votes), "elapsed": res.elapsed_s}
        if op == "leave":
            rnd = self.rounds.pop(bytes.fromhex(cmd["dispute"]))
            await rnd.__aexit__(None, None, None)
            return {}
        if op == "put_blob":
            payload = os.urandom(cmd["size"])
            digest = blake3.blake3(payload).digest()
            if cmd.get("corrupt"):
                payload = payload[:-1] + bytes([payload[-1] ^ 1])
            self.blobs[digest] = payload
            return {"digest": digest.hex()}
        if op == "fetch":
            t0 = time.perf_counter()
            try:
                data = await node.fetch_blob(cmd["peer"], bytes.fromhex(cmd["digest"]))
            except BlobError as e:
                return {"error": e.reason, "seconds": time.perf_counter() - t0}
            return {"size": len(data), "seconds": time.perf_counter() - t0}
        if op == "hostile":
            return await self.hostile(cmd["topic"], bytes.fromhex(cmd["dispute"]))
        if op == "lag":
            return await measure_lag(cmd["seconds"])
        raise ValueError(f"unknown op {op}")

    async def hostile(self, topic: str, dispute: bytes) -> Json:
        """Publish one envelope per rejection reason, straight onto the wire."""
        node, signer = self.node, self.node.signer
        forged = bytearray(seal(signer, topic, result_msg(1)))
        forged[-3] ^= 0xFF
        bad_body = b'{"job_id":"0xzz"}'
        hdr = _HEADER.pack(1, 2, int(time.time() * 1000), os.urandom(16), b"\1" * 20, len(bad_body))
        schema = hdr + bad_body + b"\0" * 65
        huge = seal(signer, topic, result_msg(2)) + b"\0" * (100 * 1024)
        stale = seal(signer, topic, result_msg(3), now_ms=int(time.time() * 1000) - 3_600_000)
        replay = seal(signer, topic, result_msg(4))
        sig = sign_vote_with(signer, self.domain, dispute, Verdict.WITHIN_TOLERANCE)
        vote_topic = TopicKinds.VOTES
        nonmember = seal(signer, vote_topic, VoteMessage(dispute, 3, sig))
        for data in (bytes(forged), schema, huge, stale, replay, replay):
            await node.publish_bytes(topic, data)
        await node.publish_bytes(vote_topic, nonmember)
        return {}


async def measure_lag(seconds: float) -> Json:
    """Event-loop lag: how late a 10 ms sleep wakes up, sampled for ``seconds``."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    end = loop.time() + seconds
    while loop.time() < end:
        t0 = loop.time()
        await asyncio.sleep(0.01)
        lags.append((loop.time() - t0 - 0.01) * 1000)
    lags.sort()
    return {
        "p50_ms": lags[len(lags) // 2],
        "p99_ms": lags[int(len(lags) * 0.99)],
        "max_ms": lags[-1],
    }


async def amain(args: argparse.Namespace) -> int:
    domain = VoteDomain(chain_id=31337, verifying_contract="0x" + "22" * 20)
    cfg = P2PConfig(
        key_file=Path(args.key_file),
        listen=(f"/ip4/127.0.0.1/tcp/{args.port}",),
        bootstrap=tuple(args.bootstrap),
        vote_domain=domain,
    )
    seed = bytes.fromhex(args.chain_key) if args.chain_key else os.urandom(32)
    blobs = Blobs()
    node = P2PNode(cfg, LocalSigner(seed), CollectorRegistry(), blob_source=blobs)
    peer = Peer(node, domain, blobs)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)  # signals only set the stop event
    await node.start()
    await peer.channel.start()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    def answer(obj: Json) -> None:
        sys.stdout.write("@@" + json.dumps(obj) + "\n")
        sys.stdout.flush()

    async def serve(cmd: Json) -> None:
        try:
            out = await peer.handle(cmd)
            out["id"] = cmd.get("id")
        except Exception as e:
            out = {"id": cmd.get("id"), "exception": repr(e)}
        answer(out)

    async def read_commands() -> None:
        while True:
            line = await reader.readline()
            if not line:
                break
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                break
            # Commands run concurrently so that a long "collect" does not block "cast".
            peer._spawn(serve(cmd))
        stop.set()

    answer({"id": "ready", "peer_id": node.peer_id, "addrs": node.listen_addrs})
    cmd_task = asyncio.create_task(read_commands())
    await stop.wait()
    cmd_task.cancel()
    for t in list(peer.tasks):
        t.cancel()
    await peer.channel.stop()
    await node.stop()
    others = [t.name for t in threading.enumerate() if t is not threading.main_thread()]
    sys.stderr.write(f"threads after stop: {others}\n")
    return 3 if others else 0


# ----------------------------------------------------------------------------------------------
# Driver side: spawn and command a peer process (tests, bench).

ROOT = Path(__file__).resolve().parents[2]


class PeerProc:
    """One peer process; ``cmd`` sends a command and awaits its answer."""

    def __init__(self, proc: asyncio.subprocess.Process, key_file: Path, port: int) -> None:
        self.proc = proc
        self.key_file = key_file
        self.port = port
        self.peer_id = ""
        self.addr = ""
        self._ids = itertools.count()
        self._waiting: dict[str, asyncio.Future[Json]] = {}
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def spawn(
        cls, key_file: Path, *, port: int = 0, bootstrap: tuple[str, ...] = ()
    ) -> PeerProc:
        args = ["-m", "taonode.p2p.peerproc", "--key-file", str(key_file), "--port", str(port)]
        for b in bootstrap:
            args += ["--bootstrap", b]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        # Each process logs next to its key file (read it when a test fails).
        with open(key_file.with_suffix(".log"), "ab") as log:  # noqa: ASYNC230 (instant)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=env,
            )
        self = cls(proc, key_file, port)
        ready: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._waiting["ready"] = ready
        self._reader = asyncio.create_task(self._read())
        info = await asyncio.wait_for(ready, 30)
        self.peer_id = info["peer_id"]
        self.addr = info["addrs"][0]
        self.port = int(self.addr.split("/tcp/")[1].split("/")[0])
        return self

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            if not line.startswith(b"@@"):
                continue
            msg = json.loads(line[2:])
            fut = self._waiting.pop(str(msg.get("id")), None)
            if fut is not None and not fut.done():
                fut.set_result(msg)
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError("peer process exited"))

    async def cmd(self, op: str, timeout_s: float = 30, **kw: Any) -> Json:
        cid = str(next(self._ids))
        fut: asyncio.Future[Json] = asyncio.get_running_loop().create_future()
        self._waiting[cid] = fut
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, "id": cid, **kw}).encode() + b"\n")
        await self.proc.stdin.drain()
        out = await asyncio.wait_for(fut, timeout_s)
        if "exception" in out:
            raise RuntimeError(f"{op}: {out['exception']}")
        return out

    async def terminate(self, timeout_s: float = 10) -> int:
        """SIGTERM, then wait; returns the exit code (SIGKILL after the timeout)."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout_s)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await self._reader
        assert self.proc.returncode is not None
        return self.proc.returncode

    async def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
        await self.proc.wait()
        if self._reader is not None:
            await self._reader


async def wait_until(pred: Any, timeout_s: float, interval_s: float = 0.1) -> None:
    """Poll the async predicate until true; raises TimeoutError with the last state."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while True:
        if await pred():
            return
        if loop.time() > end:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--key-file", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--bootstrap", action="append", default=[])
    ap.add_argument("--chain-key", default="")
    args = ap.parse_args(argv)
    # Logs to stderr: stdout carries the answers.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    return asyncio.run(amain(args))


if __name__ == "__main__":
    sys.exit(main())

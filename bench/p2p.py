"""P2P benchmark: committee vote rounds, blob throughput, event-loop lag under a gossip flood.

    python -m bench.p2p [--voters 7 21] [--rounds 10] [--quick]

Voters and the blob server run as separate OS processes on 127.0.0.1; the aggregator (the node
under measurement) runs in this process, so its asyncio loop is the one whose lag is reported.
Prints a table and writes ``bench/results/p2p.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import structlog
from prometheus_client import CollectorRegistry

from taonode.p2p.committee import CommitteeChannel
from taonode.p2p.envelope import ResultAnnouncement, TopicKinds
from taonode.p2p.node import P2PConfig, P2PNode
from taonode.p2p.peerproc import PeerProc, measure_lag, wait_until
from taonode.protocol.votes import VoteDomain
from taonode.signer import LocalSigner

DOMAIN = VoteDomain(chain_id=31337, verifying_contract="0x" + "22" * 20)
RESULTS_DIR = Path(__file__).parent / "results"


async def _lag_until(stop: asyncio.Event) -> dict[str, float]:
    """How late a 10 ms sleep wakes up, sampled until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    while not stop.is_set():
        t0 = loop.time()
        await asyncio.sleep(0.01)
        lags.append((loop.time() - t0 - 0.01) * 1000)
    return {"p50_ms": _pct(lags, 0.5), "p99_ms": _pct(lags, 0.99), "max_ms": max(lags)}


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


async def _aggregator(tmp: Path) -> P2PNode:
    cfg = P2PConfig(key_file=tmp / "agg.key", vote_domain=DOMAIN)
    node = P2PNode(cfg, LocalSigner(os.urandom(32)), CollectorRegistry())
    await node.start()
    return node


async def _spawn_voters(tmp: Path, agg: P2PNode, n: int) -> list[PeerProc]:
    procs: list[PeerProc] = []
    for i in range(n):
        # Each voter dials the aggregator and up to three earlier voters: a sparse, connected graph.
        boot = (agg.listen_addrs[0], *(p.addr for p in random.sample(procs, min(3, len(procs)))))
        procs.append(await PeerProc.spawn(tmp / f"v{n}-{i}.key", bootstrap=boot))

    async def connected() -> bool:
        return len(await agg.peers()) >= n

    await wait_until(connected, 60)
    await asyncio.sleep(2)  # let identify, subscriptions and a heartbeat settle
    return procs


async def _raw_burst(voters: list[PeerProc]) -> dict[str, Any]:
    """The floor under a vote round: every voter publishes one plain envelope at once on a
    warm topic; one-way latency (sender timestamp → delivery) as seen by voter 0."""
    topic = TopicKinds.RESULTS
    for v in voters:
        await v.cmd("sub", topic=topic)
    await asyncio.sleep(2)
    await asyncio.gather(
        *(v.cmd("pub", topic=topic, count=1, base=i) for i, v in enumerate(voters))
    )
    await asyncio.sleep(5)
    out = await voters[0].cmd("received", topic=topic)
    lat = sorted(out["lat_ms"])
    return {
        "expected": len(voters) - 1,
        "delivered_in_5s": len(lat),
        "p50_ms": _pct(lat, 0.5) if lat else None,
        "max_ms": lat[-1] if lat else None,
    }


async def vote_rounds(tmp: Path, agg: P2PNode, n: int, rounds: int, gap_s: float) -> dict[str, Any]:
    voters = await _spawn_voters(tmp, agg, n)
    channel = CommitteeChannel(agg)
    await channel.start()
    await asyncio.sleep(1.5)  # a heartbeat: the vote topic's mesh includes the aggregator
    try:
        addrs = [(await v.cmd("info"))["address"] for v in voters]
        raw = await _raw_burst(voters)
        quorum = n // 2 + 1
        times: list[float] = []
        failures = 0
        for _ in range(rounds):
            dispute = os.urandom(32)
            # "Leaf reached": the aggregator and every voter learn the committee at once.
            t0 = time.perf_counter()
            async with channel.join(dispute, addrs) as rnd:
                sends = [
                    v.cmd("vote", dispute=dispute.hex(), members=addrs, verdict=3) for v in voters
                ]
                send_all = asyncio.gather(*sends)
                result = await rnd.collect(quorum, timeout_s=10)
                elapsed = time.perf_counter() - t0
                await send_all
            if result.quorum_reached:
                times.append(elapsed)
            else:
                failures += 1
            await asyncio.gather(*(v.cmd("leave", dispute=dispute.hex()) for v in voters))
            # Back-to-back rounds stall at 21 processes on 2 cores (the previous round's traffic
            # takes ~10 s to drain, measured); disputes are minutes apart in practice.
            await asyncio.sleep(gap_s)
        return {
            "voters": n,
            "quorum": quorum,
            "rounds": rounds,
            "gap_s": gap_s,
            "failed_rounds": failures,
            "p50_ms": _pct(times, 0.5) * 1000 if times else None,
            "p95_ms": _pct(times, 0.95) * 1000 if times else None,
            "max_ms": max(times) * 1000 if times else None,
            "raw_gossip": raw,
        }
    finally:
        await channel.stop()
        await asyncio.gather(*(v.terminate() for v in voters))


async def blob_throughput(tmp: Path, size_mb: int, repeats: int) -> dict[str, Any]:
    server = await PeerProc.spawn(tmp / "blob-server.key")
    client = await PeerProc.spawn(tmp / "blob-client.key", bootstrap=(server.addr,))
    try:
        digest = (await server.cmd("put_blob", size=size_mb * 1024 * 1024))["digest"]
        await asyncio.sleep(0.5)
        rates: list[float] = []
        for _ in range(repeats):
            out = await client.cmd("fetch", peer=server.peer_id, digest=digest, timeout_s=120)
            if "error" in out:
                raise RuntimeError(f"blob fetch failed: {out}")
            rates.append(out["size"] / out["seconds"] / 1e6)
        return {
            "size_mb": size_mb,
            "repeats": repeats,
            "median_MBps": statistics.median(rates),
            "best_MBps": max(rates),
        }
    finally:
        await asyncio.gather(server.terminate(), client.terminate())


async def flood_lag(tmp: Path, agg: P2PNode, count: int, senders: int) -> dict[str, Any]:
    """Lag of this process's asyncio loop while its p2p thread takes a gossip flood.

    ``senders`` processes each publish ``count / senders`` messages at 150/s, just under the
    per-peer spam limit (200/s), so the messages reach this node instead of being dropped.
    """
    procs = [
        await PeerProc.spawn(tmp / f"flood{i}.key", bootstrap=(agg.listen_addrs[0],))
        for i in range(senders)
    ]
    try:
        sub = await agg.subscribe(TopicKinds.RESULTS, ResultAnnouncement)
        for p in procs:
            await p.cmd("sub", topic=TopicKinds.RESULTS)
        await asyncio.sleep(2)
        idle = await measure_lag(1.0)
        received = 0
        per = count // senders
        all_in = asyncio.Event()

        async def drain() -> None:
            nonlocal received
            async for _ in sub:
                received += 1
                if received >= per * senders:
                    all_in.set()

        drainer = asyncio.create_task(drain())
        stop = asyncio.Event()
        lag_task = asyncio.create_task(_lag_until(stop))
        t0 = time.perf_counter()
        await asyncio.gather(
            *(
                p.cmd(
                    "pub",
                    topic=TopicKinds.RESULTS,
                    count=per,
                    base=i * per,
                    rate=150,
                    timeout_s=120,
                )
                for i, p in enumerate(procs)
            )
        )
        send_s = time.perf_counter() - t0
        # Lag is sampled until the backlog is drained (or 15 s), not just while sending.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 15)
        drain_s = time.perf_counter() - t0
        stop.set()
        loaded = await lag_task
        drainer.cancel()
        sub.close()
        return {
            "messages_sent": per * senders,
            "senders": senders,
            "messages_delivered": received,
            "send_seconds": send_s,
            "drain_seconds": drain_s,
            "idle_p99_ms": idle["p99_ms"],
            "flood_p50_ms": loaded["p50_ms"],
            "flood_p99_ms": loaded["p99_ms"],
            "flood_max_ms": loaded["max_ms"],
        }
    finally:
        await asyncio.gather(*(p.terminate() for p in procs))


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    out: dict[str, Any] = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}",
        # The bench host is shared: its load says how much the numbers can be trusted.
        "loadavg_start": os.getloadavg(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    with tempfile.TemporaryDirectory(prefix="bench-p2p-") as d:
        tmp = Path(d)
        agg = await _aggregator(tmp)
        try:
            out["votes"] = [
                await vote_rounds(tmp, agg, n, args.rounds, args.round_gap) for n in args.voters
            ]
            out["blob"] = await blob_throughput(tmp, args.blob_mb, args.blob_repeats)
            out["flood"] = await flood_lag(tmp, agg, args.flood, args.flood_senders)
        finally:
            await agg.stop()
    out["loadavg_end"] = os.getloadavg()
    return out


def render(res: dict[str, Any]) -> str:
    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.0f}"

    rows = ["| measurement | result | target |", "|---|---|---|"]
    targets = {7: "p50 ≤ 300 ms", 21: "p50 ≤ 1000 ms"}
    for v in res["votes"]:
        r = v["raw_gossip"]
        rows.append(
            f"| plain gossip burst, {v['voters']} processes each publish 1 at once "
            f"({r['delivered_in_5s']}/{r['expected']} delivered in 5 s) "
            f"| one-way p50 {f(r['p50_ms'])} ms, max {f(r['max_ms'])} ms | (floor) |"
        )
        rows.append(
            f"| vote round, {v['voters']} voter processes → quorum {v['quorum']} "
            f"({v['rounds']} rounds {v['gap_s']:.0f} s apart, {v['failed_rounds']} missed) "
            f"| p50 {f(v['p50_ms'])} ms, p95 {f(v['p95_ms'])} ms | {targets.get(v['voters'], '')} |"
        )
    b = res["blob"]
    rows.append(
        f"| blob fetch {b['size_mb']} MB, process to process, digest checked "
        f"| {b['median_MBps']:.0f} MB/s median, {b['best_MBps']:.0f} best | ≥ 100 MB/s |"
    )
    fl = res["flood"]
    rows.append(
        f"| asyncio loop lag, {fl['messages_sent']}-message gossip flood from "
        f"{fl['senders']} processes, sent in {fl['send_seconds']:.1f} s, "
        f"drained in {fl['drain_seconds']:.1f} s "
        f"({fl['messages_delivered']} delivered) | p50 {fl['flood_p50_ms']:.1f} ms, "
        f"p99 {fl['flood_p99_ms']:.1f} ms, max {fl['flood_max_ms']:.1f} ms "
        f"(idle p99 {fl['idle_p99_ms']:.1f}) | |"
    )
    la, lb = res["loadavg_start"], res["loadavg_end"]
    rows.append(f"\n{res['machine']}; load average {la[0]:.1f} at start, {lb[0]:.1f} at end")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--voters", type=int, nargs="+", default=[7, 21])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--round-gap", type=float, default=10.0, help="seconds between rounds")
    ap.add_argument("--blob-mb", type=int, default=64)
    ap.add_argument("--blob-repeats", type=int, default=3)
    ap.add_argument("--flood", type=int, default=2000)
    ap.add_argument("--flood-senders", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="7 voters, 3 rounds, 16 MB, 500 msgs")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "p2p.json")
    args = ap.parse_args(argv)
    if args.quick:
        args.voters, args.rounds, args.blob_mb, args.flood = [7], 3, 16, 500
        args.round_gap = 2.0
    res = asyncio.run(amain(args))
    print(render(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

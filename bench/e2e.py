"""The node end to end (issue 8's benchmarks).

* ``challenger`` — challenger cost: what a challenger runs per sampled result (the traced
  re-execution and the end-to-end comparison against the calibrated profile, exactly the two
  calls of ``ChallengerService._reexecute``) divided by a plain inference
  (``ExportedProgram.module()``); medians of interleaved runs. Target ≤ 1.2×.
* ``prover`` — prover throughput: sequential jobs through a real prover node on the embedded
  chain (in-process py-evm, which runs on the node's event loop; ``--prover-chain anvil``) via
  ``ProverService.infer`` and ``POST /v1/infer`` with JSON tensors, against a plain torch loop
  over the same exported module. "response" counts until the last answer; "sustained" until
  every result is also hashed, stored and committed on chain (the background work shares the
  CPU). "infer ms": one job's response latency with no background work pending, next to one
  plain forward ("plain ms"). Target ≥ 0.9×.
* ``dispute`` — a devnet on anvil (``taonode.devnet.Devnet``, ``chain="anvil"``) with one
  honest job and one cheating prover (``perturb-1e-3`` by default): wall time from submission
  to resolution and the gas all nodes spent on each job.

Run: ``python -m bench.e2e`` (``--quick``: fewer runs and jobs, transformer only).
Writes ``bench/results/e2e.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import torch
from prometheus_client import CollectorRegistry

from taonode.api.app import ApiServer, build_app
from taonode.api.tensors import tensor_to_json
from taonode.chain.anvil import AnvilChain, free_port
from taonode.chain.deploy import Contracts, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import BlockClock, LocalChain
from taonode.chain.tx import DirectTransactor
from taonode.devnet import (
    DEVNET_PARAMS,
    Devnet,
    DevnetOptions,
    calibrate_profile,
    inputs_like,
    prepare_model,
)
from taonode.roles.assemble import RoleNode, RoleNodeSpec, build_role_node
from taonode.roles.context import ServedModel
from taonode.roles.judge import ProfileJudge
from taonode.runtime.execute import run_plain, run_traced
from taonode.runtime.graph import Model
from taonode.runtime.profile import Profile
from taonode.service import ReadinessProbe, SupervisionResult, supervise
from taonode.signer import LocalSigner

RESULTS = Path(__file__).with_name("results") / "e2e.json"
MODELS = ("transformer", "minilm")


@dataclass
class Prepared:
    name: str
    model: Model
    example: tuple[torch.Tensor, ...]
    profile: Profile
    prepare_s: float


def prepare(name: str, workdir: Path) -> Prepared:
    started = time.perf_counter()
    model, example = prepare_model(name, workdir)
    profile = calibrate_profile(model, example, DEVNET_PARAMS.k)
    return Prepared(name, model, tuple(example), profile, time.perf_counter() - started)


def _median_s(fn: Callable[[], Any], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# -- challenger cost --------------------------------------------------------------------------


def challenger_cost(p: Prepared, runs: int) -> dict[str, Any]:
    model = p.model
    judge = ProfileJudge(model, p.profile, DEVNET_PARAMS.k)
    inputs = inputs_like(model, p.example, 1000)
    claimed = {n: run_traced(model, inputs).values[n] for n in model.outputs}
    module = model.program.module()

    def plain() -> None:
        with torch.no_grad():
            module(*(inputs[n] for n in model.input_names))

    def reexecute() -> None:
        trace = run_traced(model, inputs)
        own = {name: trace.values[name] for name in model.outputs}
        judge.end_to_end_excess(claimed, own)

    plain()
    reexecute()  # warm both paths
    plain_t: list[float] = []
    chall_t: list[float] = []
    for _ in range(runs):  # interleaved, so drift in host load hits both alike
        plain_t.append(_median_s(plain, 1))
        chall_t.append(_median_s(reexecute, 1))
    p_s, c_s = statistics.median(plain_t), statistics.median(chall_t)
    return {
        "model": p.name,
        "ops": model.num_ops,
        "runs": runs,
        "plain_s": p_s,
        "challenger_s": c_s,
        "ratio": c_s / p_s,
        "target": 1.2,
    }


# -- prover throughput ------------------------------------------------------------------------


@dataclass
class ProverNode:
    node: RoleNode
    url: str


@contextlib.asynccontextmanager
async def prover_node(p: Prepared, workdir: Path, chain_kind: str) -> AsyncIterator[ProverNode]:
    """One prover node on a local chain, as the devnet builds it, with its HTTP API."""
    chain: LocalChain
    if chain_kind == "anvil":
        chain = await AnvilChain.start(num_keys=3)
    else:
        chain = EmbeddedChain(num_keys=3)
    transactor = DirectTransactor(chain.w3, LocalSigner(chain.keys[0]))
    deployment = await deploy(chain.w3, transactor, DEVNET_PARAMS)
    contracts = Contracts.connect(chain.w3, deployment, transactor)
    await contracts.models.register_model(
        p.model.model_id, p.profile.profile_id, p.model.num_ops, f"bench:{p.name}"
    )
    judge = ProfileJudge(p.model, p.profile, DEVNET_PARAMS.k)
    spec = RoleNodeSpec(
        name="prover",
        roles=frozenset({"prover"}),
        data_dir=workdir / f"prover-{p.name}",
        signer=LocalSigner(chain.keys[1]),
        deployment=deployment,
        models={p.model.model_id: ServedModel(p.model, p.profile.profile_id, judge)},
        listen=(f"/ip4/127.0.0.1/tcp/{free_port()}",),
        poll_interval_s=0.2,
        start_block=deployment.block,
    )
    node = await build_role_node(spec, chain.w3, CollectorRegistry())
    probe = ReadinessProbe(node.components)
    api = ApiServer(build_app(node.routes, probe, CollectorRegistry(), dict), "127.0.0.1", 0)
    stop = asyncio.Event()
    running: asyncio.Task[SupervisionResult] = asyncio.create_task(
        supervise(
            [*node.components, api, BlockClock(chain, 0.25)],
            stop,
            start_timeout_s=60,
            stop_timeout_s=10,
        )
    )
    try:
        for _ in range(600):
            if api.bound_port is not None and probe.ready():
                break
            if running.done():
                raise RuntimeError(f"prover node stopped: {running.result()}")
            await asyncio.sleep(0.1)
        else:
            raise RuntimeError(f"prover node not ready: {probe.states()}")
        yield ProverNode(node, f"http://127.0.0.1:{api.bound_port}")
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(running, 30)
        await _close(chain)


async def _close(chain: LocalChain) -> None:
    """Close the chain, bounded: ``AnvilChain.close`` was seen to hang here (no timer pending,
    the anvil process still running) after a prover node on it stopped, once in three runs."""
    try:
        await asyncio.wait_for(chain.close(), 20)
    except TimeoutError:
        print("warning: closing the chain timed out; terminating anvil", flush=True)
        proc = getattr(chain, "_proc", None)
        if proc is not None and proc.returncode is None:
            proc.kill()


async def _committed(node: RoleNode, job_ids: Sequence[bytes]) -> int:
    assert node.prover is not None
    await node.prover.settle_background()
    count = 0
    for job_id in job_ids:
        job = await node.store.run(node.store.get_job, job_id.hex())
        count += job is not None and job.status == "committed"
    return count


async def prover_throughput(
    p: Prepared, jobs: int, workdir: Path, chain_kind: str
) -> dict[str, Any]:
    model = p.model
    inputs = [inputs_like(model, p.example, 2000 + i) for i in range(jobs)]
    module = model.program.module()

    def plain_loop() -> None:
        with torch.no_grad():
            for x in inputs:
                module(*(x[n] for n in model.input_names))

    def plain_one(x: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            module(*(x[n] for n in model.input_names))

    plain_loop()  # warm
    t = time.perf_counter()
    plain_loop()
    plain_s = time.perf_counter() - t
    # The plain loop through run_plain as well (what the runtime calls "plain").
    t = time.perf_counter()
    for x in inputs:
        run_plain(model, x)
    run_plain_s = time.perf_counter() - t

    async with prover_node(p, workdir, chain_kind) as pn:
        prover = pn.node.prover
        assert prover is not None
        await prover.infer(model.model_id, inputs[0])  # warm the worker
        await prover.settle_background()

        # Response-path latency alone: each job answered with the previous one's background
        # work (hashing, storing, committing) already finished.
        isolated: list[float] = []
        for x in inputs[: min(8, jobs)]:
            t = time.perf_counter()
            await prover.infer(model.model_id, x)
            isolated.append(time.perf_counter() - t)
            await prover.settle_background()
        plain_times = []
        for x in inputs[: min(8, jobs)]:
            t = time.perf_counter()
            plain_one(x)
            plain_times.append(time.perf_counter() - t)
        plain_latency = statistics.median(plain_times)

        t = time.perf_counter()
        ids = [(await prover.infer(model.model_id, x)).job_id for x in inputs]
        service_response_s = time.perf_counter() - t
        committed = await _committed(pn.node, ids)
        service_sustained_s = time.perf_counter() - t

        bodies = [
            {
                "model_id": "0x" + model.model_id.hex(),
                "inputs": {k: tensor_to_json(v) for k, v in x.items()},
            }
            for x in inputs
        ]
        http_ids: list[bytes] = []
        async with aiohttp.ClientSession() as session:
            t = time.perf_counter()
            for body in bodies:
                async with session.post(f"{pn.url}/v1/infer", json=body) as resp:
                    reply = await resp.json()
                    if resp.status != 200:
                        raise RuntimeError(f"infer failed: {resp.status} {reply}")
                    http_ids.append(bytes.fromhex(str(reply["job_id"])[2:]))
            http_response_s = time.perf_counter() - t
            http_committed = await _committed(pn.node, http_ids)
            http_sustained_s = time.perf_counter() - t

    def rate(seconds: float) -> float:
        return jobs / seconds

    plain_rate = rate(plain_s)
    return {
        "model": p.name,
        "chain": chain_kind,
        "jobs": jobs,
        "plain_jobs_per_s": plain_rate,
        "run_plain_jobs_per_s": rate(run_plain_s),
        "service_response_jobs_per_s": rate(service_response_s),
        "service_sustained_jobs_per_s": rate(service_sustained_s),
        "http_response_jobs_per_s": rate(http_response_s),
        "http_sustained_jobs_per_s": rate(http_sustained_s),
        "service_response_ratio": rate(service_response_s) / plain_rate,
        "service_sustained_ratio": rate(service_sustained_s) / plain_rate,
        "http_response_ratio": rate(http_response_s) / plain_rate,
        "http_sustained_ratio": rate(http_sustained_s) / plain_rate,
        "plain_latency_ms": plain_latency * 1e3,
        "service_isolated_latency_ms": statistics.median(isolated) * 1e3,
        "committed": committed + http_committed,
        "target": 0.9,
    }


# -- disputes on anvil ------------------------------------------------------------------------


async def dispute(model: str, cheat: str, voters: int, timeout_s: float) -> dict[str, Any]:
    out = io.StringIO()
    devnet = Devnet(
        DevnetOptions(
            chain="anvil",
            model=model,
            cheats=(cheat,),
            challengers=1,
            voters=voters,
            timeout_s=timeout_s,
        ),
        out,
    )
    started = time.perf_counter()
    code = await devnet.run()
    total_s = time.perf_counter() - started
    rows = []
    for s in devnet.scenarios:
        v = s.view
        d = v.dispute if v is not None else None
        rows.append(
            {
                "scenario": s.name,
                "passed": s.passed,
                "wall_s": (s.ended - s.started) if s.ended is not None else None,
                "gas": devnet.gas_by_job.get(s.job_id, 0) if s.job_id else 0,
                "rounds": (d.round + (1 if d.leaf_op is not None else 0)) if d else 0,
                "leaf_op": d.leaf_op if d else None,
                "outcome": d.outcome.value if d and d.outcome else None,
                "reason": d.reason if d else None,
                "error": s.error,
            }
        )
    return {
        "model": model,
        "cheat": cheat,
        "exit_code": code,
        "devnet_total_s": total_s,
        "scenarios": rows,
        "log_tail": out.getvalue().splitlines()[-14:],
    }


# -- main -------------------------------------------------------------------------------------


def _table(title: str, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def _dump_tasks() -> None:
    """``kill -USR1 <pid>``: print every asyncio task's stack (to find a stuck await)."""
    for task in asyncio.all_tasks():
        task.print_stack(limit=12)


async def _run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    with contextlib.suppress(NotImplementedError, RuntimeError):
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _dump_tasks)
    models = ["transformer"] if args.quick else list(args.models)
    runs = 5 if args.quick else args.runs
    jobs = 8 if args.quick else args.jobs
    doc: dict[str, Any] = {"challenger": [], "prover": [], "dispute": []}
    prepared: dict[str, Prepared] = {}
    for name in models:
        if "challenger" in args.parts or "prover" in args.parts:
            prepared[name] = await asyncio.to_thread(prepare, name, workdir)
            print(f"{name}: exported and calibrated in {prepared[name].prepare_s:.1f}s", flush=True)
        if "challenger" in args.parts:
            doc["challenger"].append(await asyncio.to_thread(challenger_cost, prepared[name], runs))
        if "prover" in args.parts:
            doc["prover"].append(
                await prover_throughput(prepared[name], jobs, workdir, args.prover_chain)
            )
        if "dispute" in args.parts:
            result = await dispute(name, args.cheat, args.voters, args.devnet_timeout)
            doc["dispute"].append(result)
            print(f"{name}: devnet on anvil exit {result['exit_code']}", flush=True)
    return doc


def _print(doc: dict[str, Any]) -> None:
    if doc["challenger"]:
        _table(
            "challenger cost (re-execution + comparison ÷ plain inference; target ≤ 1.2×)",
            ["model", "ops", "plain ms", "challenger ms", "ratio"],
            [
                [
                    r["model"],
                    str(r["ops"]),
                    f"{r['plain_s'] * 1e3:.2f}",
                    f"{r['challenger_s'] * 1e3:.2f}",
                    f"{r['ratio']:.2f}×",
                ]
                for r in doc["challenger"]
            ],
        )
    if doc["prover"]:
        _table(
            "prover throughput, jobs/s (ratio to the plain torch loop; target ≥ 0.9×)",
            [
                "model",
                "chain",
                "jobs",
                "plain ms",
                "infer ms",
                "plain",
                "service resp",
                "service sust",
                "http resp",
                "http sust",
            ],
            [
                [
                    r["model"],
                    r["chain"],
                    str(r["jobs"]),
                    f"{r['plain_latency_ms']:.1f}",
                    f"{r['service_isolated_latency_ms']:.1f}",
                    f"{r['plain_jobs_per_s']:.1f}",
                    f"{r['service_response_jobs_per_s']:.1f} ({r['service_response_ratio']:.2f}×)",
                    f"{r['service_sustained_jobs_per_s']:.1f} "
                    f"({r['service_sustained_ratio']:.2f}×)",
                    f"{r['http_response_jobs_per_s']:.1f} ({r['http_response_ratio']:.2f}×)",
                    f"{r['http_sustained_jobs_per_s']:.1f} ({r['http_sustained_ratio']:.2f}×)",
                ]
                for r in doc["prover"]
            ],
        )
    if doc["dispute"]:
        rows = []
        for d in doc["dispute"]:
            for s in d["scenarios"]:
                rows.append(
                    [
                        d["model"],
                        s["scenario"] + ("" if s["passed"] else " [FAIL]"),
                        str(s["rounds"]),
                        "-" if s["leaf_op"] is None else str(s["leaf_op"]),
                        f"{s['outcome'] or 'finalized'} ({s['reason'] or '-'})",
                        str(s["gas"]),
                        "-" if s["wall_s"] is None else f"{s['wall_s']:.1f}",
                        f"{d['devnet_total_s']:.0f}",
                    ]
                )
        _table(
            "disputes on anvil (gas: all nodes' transactions for the job)",
            ["model", "scenario", "rounds", "op", "outcome", "gas", "wall s", "devnet s"],
            rows,
        )


def _units(args: argparse.Namespace) -> list[tuple[str, str]]:
    models = ["transformer"] if args.quick else list(args.models)
    return [(m, part) for m in models for part in args.parts]


def _child(args: argparse.Namespace, model: str, part: str, out: Path) -> dict[str, Any]:
    """One (model, part) in a fresh interpreter.

    web3 8.0.0's ``HTTPSessionManager`` takes a process-wide ``threading.Lock`` through an
    executor for every request; a request cancelled while that acquire is pending (as stopping
    a node does) leaks the lock, and every later anvil request in the process hangs.
    """
    cmd = [sys.executable, "-m", "bench.e2e", "--child", "--models", model, "--parts", part]
    cmd += ["--runs", str(args.runs), "--jobs", str(args.jobs), "--cheat", args.cheat]
    cmd += ["--voters", str(args.voters), "--devnet-timeout", str(args.devnet_timeout)]
    cmd += ["--threads", str(args.threads), "--prover-chain", args.prover_chain, "--out", str(out)]
    if args.quick:
        cmd.append("--quick")
    limit = 900.0
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
    except subprocess.TimeoutExpired:
        print(f"{model}/{part}: timed out after {limit:.0f}s", flush=True)
        return {}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(model + ":")]
    for line in lines:
        print(line, flush=True)
    if done.returncode not in (0, 1) or not out.exists():
        print(f"{model}/{part}: failed (exit {done.returncode})", flush=True)
        print("\n".join(done.stderr.splitlines()[-10:]), flush=True)
        return {}
    doc: dict[str, Any] = json.loads(out.read_text())
    return doc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="transformer only, 5 runs, 8 jobs")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=("challenger", "prover", "dispute"),
        default=["challenger", "prover", "dispute"],
    )
    parser.add_argument("--runs", type=int, default=20, help="challenger-cost repetitions")
    parser.add_argument("--jobs", type=int, default=32, help="prover-throughput jobs")
    parser.add_argument(
        "--prover-chain",
        choices=("anvil", "embedded"),
        default="embedded",
        help="chain under the prover-throughput node (anvil: the run stalled in 2 of 5 tries)",
    )
    parser.add_argument("--cheat", default="perturb-1e-3")
    parser.add_argument("--voters", type=int, default=4)
    parser.add_argument("--devnet-timeout", type=float, default=240.0)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    if args.child:
        with tempfile.TemporaryDirectory() as tmp:
            doc = asyncio.run(_run(args, Path(tmp)))
        args.out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
        sys.stdout.flush()
        # Not a normal exit: web3's session-pool threads can sit forever on the leaked lock
        # (see _child), and the interpreter would wait for them at exit.
        os._exit(0)
    doc = {"challenger": [], "prover": [], "dispute": []}
    missing: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index, (model, part) in enumerate(_units(args)):
            child = _child(args, model, part, Path(tmp) / f"{index}.json")
            if not child.get(part):
                missing.append(f"{model}/{part}")
            for key in doc:
                doc[key].extend(child.get(key, []))
    _print(doc)
    ok = not missing and all(d["exit_code"] == 0 for d in doc["dispute"])
    command = "python -m bench.e2e " + " ".join(argv if argv is not None else [])
    doc.update(
        {
            "benchmark": "e2e",
            "host": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "torch_threads": args.threads,
            "command": command.strip(),
            "missing": missing,
            "wall_s": time.perf_counter() - started,
        }
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    if missing:
        print(f"\nmissing: {', '.join(missing)}")
    print(f"\ntotal {doc['wall_s']:.0f}s; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

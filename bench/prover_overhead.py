"""Prover overhead: plain forward vs traced forward + commitments (issue 3 benchmark).

For each model it times, interleaved, ``--runs`` repetitions of

* ``plain``  — ``ExportedProgram.module()`` forward (what an untraced server runs);
* ``traced`` — :func:`taonode.runtime.execute.run_traced` (keeps every op output, no hashing):
  the client-visible latency;
* ``commit`` — :func:`taonode.runtime.commit.commit` on that trace (BLAKE3 of every op output,
  frontier digests, trace root): the prover runs it after answering the client.

Reported: medians of wall-clock time, latency overhead ``traced/plain - 1`` and total work
overhead ``(traced + commit)/plain - 1``; the same ratios in process CPU time (all threads),
which is less sensitive to other load on a shared host.
Run: ``python -m bench.prover_overhead`` (``--quick``: smoke run). Writes
``bench/results/prover_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from taonode.runtime import graph
from taonode.runtime.commit import commit
from taonode.runtime.execute import run_traced
from taonode.runtime.models.bert import BertConfig, BertEncoder, example_inputs, minilm

RESULTS = Path(__file__).with_name("results") / "prover_overhead.json"


def _large(batch: int, seq: int) -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=8192,
        hidden_size=1024,
        num_hidden_layers=2,
        num_attention_heads=16,
        intermediate_size=4096,
        max_position_embeddings=512,
    )
    model = BertEncoder(cfg).eval()
    return model, example_inputs(batch, seq, cfg.vocab_size)


def _time(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    """Wall-clock and process CPU seconds (all threads) of ``fn()``."""
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - t, time.process_time() - c, out


def bench_model(
    name: str,
    factory: Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]],
    runs: int,
    hash_threads: int,
    workdir: Path,
) -> dict[str, Any]:
    module, example = factory()
    model = graph.export(module, example, workdir / f"{name}.pt2")
    inputs = dict(zip(model.input_names, example, strict=True))
    plain_module = model.program.module()
    wall: dict[str, list[float]] = {"plain": [], "traced": [], "commit": []}
    cpu: dict[str, list[float]] = {"plain": [], "traced": [], "commit": []}
    trace_bytes = 0
    with torch.no_grad():
        plain_module(*example)  # warm-up both paths
        run_traced(model, inputs)
        for i in range(runs):
            order = ("plain", "traced") if i % 2 == 0 else ("traced", "plain")
            for which in order:
                if which == "plain":
                    dt, dc, _ = _time(lambda: plain_module(*example))
                    wall["plain"].append(dt)
                    cpu["plain"].append(dc)
                    continue
                dt, dc, trace = _time(lambda: run_traced(model, inputs))
                wall["traced"].append(dt)
                cpu["traced"].append(dc)
                t0, c0 = time.perf_counter(), time.process_time()
                commit(model, trace, threads=hash_threads)
                wall["commit"].append(time.perf_counter() - t0)
                cpu["commit"].append(time.process_time() - c0)
                trace_bytes = sum(t.nbytes for t in trace.values.values())
                del trace
    med = {k: statistics.median(v) for k, v in wall.items()}
    cmed = {k: statistics.median(v) for k, v in cpu.items()}
    plain, traced, hashing = med["plain"], med["traced"], med["commit"]
    return {
        "model": name,
        "ops": model.num_ops,
        "parameters": model.parameter_count(),
        "inputs": {k: list(v.shape) for k, v in inputs.items()},
        "trace_mb": trace_bytes / 1e6,
        "runs": runs,
        "plain_s": plain,
        "traced_s": traced,
        "commit_s": hashing,
        "latency_overhead": traced / plain - 1,
        "work_overhead": (traced + hashing) / plain - 1,
        "cpu_plain_s": cmed["plain"],
        "cpu_traced_s": cmed["traced"],
        "cpu_commit_s": cmed["commit"],
        "cpu_latency_overhead": cmed["traced"] / cmed["plain"] - 1,
        "cpu_work_overhead": (cmed["traced"] + cmed["commit"]) / cmed["plain"] - 1,
        "hash_gb_per_s": trace_bytes / hashing / 1e9,
        "wall_samples": wall,
        "cpu_samples": cpu,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--hash-threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="small shapes, 3 runs (smoke test)")
    parser.add_argument("--only", choices=("minilm", "large"), help="run one of the two models")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = 3 if args.quick else args.runs
    b, s = (2, 16) if args.quick else (16, 128)
    lb, ls = (1, 16) if args.quick else (8, 128)
    models: list[tuple[str, Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]]] = [
        (f"minilm-b{b}-s{s}", lambda: minilm(b, s)),
        (f"bert-h1024-l2-b{lb}-s{ls}", lambda: _large(lb, ls)),
    ]
    if args.only:
        models = [m for m in models if m[0].startswith("minilm") == (args.only == "minilm")]
    import tempfile

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, factory in models:
            results.append(bench_model(name, factory, runs, args.hash_threads, Path(tmp)))
    header = (
        f"{'model':28} {'ops':>4} {'trace MB':>9} {'plain s':>8} {'traced s':>9} "
        f"{'commit s':>9} {'latency':>8} {'work':>7} {'cpu lat':>8} {'cpu work':>8} "
        f"{'hash GB/s':>9}"
    )
    print(header)
    for r in results:
        print(
            f"{r['model']:28} {r['ops']:4d} {r['trace_mb']:9.1f} {r['plain_s']:8.3f} "
            f"{r['traced_s']:9.3f} {r['commit_s']:9.3f} {r['latency_overhead']:+8.1%} "
            f"{r['work_overhead']:+7.1%} {r['cpu_latency_overhead']:+8.1%} "
            f"{r['cpu_work_overhead']:+8.1%} {r['hash_gb_per_s']:9.2f}"
        )
    doc = {
        "benchmark": "prover_overhead",
        "host": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "torch_threads": args.threads,
        "hash_threads": args.hash_threads,
        "command": "python -m bench.prover_overhead" + (" --quick" if args.quick else ""),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

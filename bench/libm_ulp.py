"""Accuracy of the element-wise kernels reachable on this host, against an FP64 reference.

For every CPU kernel path (``ATEN_CPU_CAPABILITY`` = default / avx2 / avx512 where supported,
each with oneDNN on and off: PyTorch routes GELU to oneDNN when it is enabled and to its own
vectorised code otherwise) and, if it compiles here, torch.compile (inductor, C++ codegen), a
subprocess evaluates each op on dense grids and random inputs and reports

* ``ulp``: max ``|y − y_ref| / ulp(y_ref)`` (ulp of the exact value; FP32 spacing);
* ``abs_u``: max ``|y − y_ref| / u`` for functions bounded in [−1, 1] (erf, tanh) and, for
  GELU, the error on ``1 + erf`` (``|y − y_ref| / (|x|/2) / u``);
* ``r``: max ``|y − y_ref| / B`` with the bounds of :mod:`taonode.runtime.bounds` (must be ≤ 1).

Run: ``python -m bench.libm_ulp`` (``--quick`` for fewer points). Writes
``bench/results/libm_ulp.json``; the table in docs/bounds.md comes from it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

U = 2.0**-24
OUT = Path("bench/results/libm_ulp.json")


def _ulp(ref: Tensor) -> Tensor:
    a = ref.abs().clamp(min=2.0**-126)
    return torch.pow(2.0, torch.floor(torch.log2(a)) - 23)


def _grid(n: int, lo: float, hi: float, g: torch.Generator) -> Tensor:
    lin = torch.linspace(lo, hi, n, dtype=torch.float64)
    rnd = torch.rand(n // 4, generator=g, dtype=torch.float64) * (hi - lo) + lo
    return torch.cat([lin, rnd]).float()


def _inputs(n: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(0)
    small = torch.logspace(-30, 0, n // 4, dtype=torch.float64).float()
    return {
        "wide": torch.cat([_grid(n, -12, 12, g), small, -small]),
        "exp": torch.cat([_grid(n, -87, 88, g), small, -small]),
        "pos": torch.cat([_grid(n, 1e-6, 100, g), torch.logspace(-37, 37, n // 4).float()]),
        "trig": torch.cat([_grid(n, -100, 100, g), small, -small]),
    }


def _ops() -> dict[str, tuple[str, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]]:
    s2 = 1 / math.sqrt(2)
    return {
        "exp": ("exp", torch.exp, torch.exp),
        "log": ("pos", torch.log, torch.log),
        "tanh": ("wide", torch.tanh, torch.tanh),
        "sigmoid": ("exp", torch.sigmoid, torch.sigmoid),
        "erf": ("wide", torch.erf, torch.erf),
        "sin": ("trig", torch.sin, torch.sin),
        "cos": ("trig", torch.cos, torch.cos),
        "rsqrt": ("pos", torch.rsqrt, torch.rsqrt),
        "sqrt": ("pos", torch.sqrt, torch.sqrt),
        "silu": ("exp", F.silu, F.silu),
        "gelu": ("wide", F.gelu, lambda x: 0.5 * x * (1 + torch.erf(x * s2))),
        "gelu_tanh": ("wide", lambda x: F.gelu(x, approximate="tanh"), None),  # type: ignore[dict-item]
    }


_TARGETS = {"gelu_tanh": "aten.gelu.default"}


def _measure(compiled: bool, n: int) -> dict[str, Any]:
    from taonode.runtime.bounds import reference_and_bound
    from taonode.runtime.check import normalized_error

    torch.set_num_threads(1)
    xs = _inputs(n)
    out: dict[str, Any] = {}
    for name, (dom, f32, _f64) in _ops().items():
        x = xs[dom]
        fn: Callable[[Tensor], Tensor] = torch.compile(f32) if compiled else f32
        y = fn(x).double()
        kwargs = {"approximate": "tanh"} if name == "gelu_tanh" else {}
        target = _TARGETS.get(name, f"aten.{name}.default")
        ref, bound = reference_and_bound(target, (x.double(),), kwargs)
        fin = torch.isfinite(ref) & torch.isfinite(y)
        err = (y - ref).abs()[fin]
        ulp = (err / _ulp(ref[fin])).max()
        row: dict[str, float] = {"ulp": float(ulp)}
        if name in ("erf", "tanh"):
            row["abs_u"] = float(err.max() / U)
        if name.startswith("gelu"):
            xd = x.double()[fin]
            row["abs_u"] = float((err / (0.5 * xd.abs()).clamp(min=1e-300) / U).max())
        row["r"] = float(normalized_error(y.float(), ref, bound).max())
        out[name] = row
    # softmax: per-weight error (rows of several lengths and spreads)
    g = torch.Generator().manual_seed(1)
    worst_ulp, worst_r = 0.0, 0.0
    for length, spread in ((64, 3.0), (384, 10.0), (1024, 30.0)):
        z = (torch.randn(64, length, generator=g) * spread).float()
        sm: Callable[[Tensor], Tensor] = lambda t: torch.softmax(t, -1)  # noqa: E731
        y = (torch.compile(sm) if compiled else sm)(z).double()
        ref, bound = reference_and_bound("aten._softmax.default", (z.double(), -1, False), {})
        big = ref > 1e-30
        worst_ulp = max(worst_ulp, float(((y - ref).abs()[big] / _ulp(ref[big])).max()))
        worst_r = max(worst_r, float(normalized_error(y.float(), ref, bound).max()))
    out["softmax"] = {"ulp": worst_ulp, "r": worst_r}
    return out


def _worker(args: argparse.Namespace) -> int:
    with torch.backends.mkldnn.flags(enabled=args.mkldnn == "on"):
        ops = _measure(args.compiled, args.n)
    res = {
        "capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn": args.mkldnn,
        "compiled": args.compiled,
        "ops": ops,
    }
    print(json.dumps(res))
    return 0


def _paths() -> list[tuple[str, dict[str, str], list[str]]]:
    cap = torch.backends.cpu.get_cpu_capability().lower()
    caps = ["default"] + [
        c for c in ("avx2", "avx512") if c == cap or (c, cap) == ("avx2", "avx512")
    ]
    paths = []
    for c in caps:
        for mk in ("on", "off"):
            paths.append((f"{c}/onednn-{mk}", {"ATEN_CPU_CAPABILITY": c}, ["--mkldnn", mk]))
    paths.append(("inductor", {}, ["--compiled"]))
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.libm_ulp", description=__doc__)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mkldnn", default="on", choices=("on", "off"))
    p.add_argument("--compiled", action="store_true")
    p.add_argument("--n", type=int, default=1_000_000)
    args = p.parse_args(argv)
    if args.worker:
        return _worker(args)
    n = 100_000 if args.quick else args.n
    results: dict[str, Any] = {"torch": torch.__version__, "paths": {}}
    for label, env, extra in _paths():
        cmd = [sys.executable, "-m", "bench.libm_ulp", "--worker", "--n", str(n), *extra]
        try:
            proc = subprocess.run(
                cmd, env={**os.environ, **env}, capture_output=True, text=True, timeout=900
            )
        except subprocess.TimeoutExpired:
            results["paths"][label] = {"error": "timed out"}
            continue
        if proc.returncode != 0:
            results["paths"][label] = {"error": proc.stderr.strip().splitlines()[-1:]}
            continue
        results["paths"][label] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(label, json.dumps(results["paths"][label]["ops"]), flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``taonode bench NAME [args…]``: run one of the benchmarks of a source checkout (``bench/``).

Each prints a table and writes JSON under ``bench/results/``; ``taonode bench NAME --help``
shows its options.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from taonode.exitcodes import EXIT_USAGE

BENCHMARKS = {
    "detect": "detect",
    "gas": "gas",
    "p2p": "p2p",
    "prover-overhead": "prover_overhead",
    "e2e": "e2e",
}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "bench", help="run a benchmark (detect, gas, p2p, prover-overhead, e2e)"
    )
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # The benchmarks live next to the package in a source checkout, not inside it.
    checkout = Path(__file__).resolve().parents[2]
    if not (checkout / "bench" / "__init__.py").is_file():
        print("taonode bench: needs a source checkout (bench/ next to taonode/)", file=sys.stderr)
        return EXIT_USAGE
    if str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    module = importlib.import_module(f"bench.{BENCHMARKS[args.name]}")
    code: int = module.main(list(args.args))
    return code

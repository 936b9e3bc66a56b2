"""``taonode trace``: run a model op by op and write its trace directory."""

from __future__ import annotations

import argparse
import sys

from taonode.commands.argtypes import device, out_path
from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from taonode.runtime.commit import commit
from taonode.runtime.execute import run_traced
from taonode.runtime.graph import ModelError, load
from taonode.runtime.tracedir import TraceFormatError, read_inputs, save_trace


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("trace", help="run a model op by op and write its trace")
    parser.add_argument("--model", required=True, help="the .pt2 file")
    parser.add_argument(
        "--input", required=True, help="safetensors file named by the model's inputs"
    )
    parser.add_argument("--out", type=out_path, required=True, help="trace directory to write")
    parser.add_argument("--device", type=device, default="cpu", help="cpu (default) or cuda[:N]")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        model = load(args.model)
        inputs = read_inputs(args.input, model)
    except (ModelError, TraceFormatError) as exc:
        print(f"taonode trace: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        trace = run_traced(model, inputs, args.device)
        c = commit(model, trace, threads=2)
        save_trace(model, trace, args.out, c)
    except (RuntimeError, OSError) as exc:
        print(f"taonode trace: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    print(f"wrote {args.out}: {model.num_ops} ops, trace_root 0x{c.trace_root.hex()}")
    print(f"output_digest 0x{c.output_digest.hex()}")
    return EXIT_OK

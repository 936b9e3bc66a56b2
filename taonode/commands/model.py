"""``taonode model``: export a PyTorch model to ``.pt2``, describe an exported one, and add
one (with its profile) to a node."""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

import torch

from taonode.commands.argtypes import int_at_least, out_path
from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from taonode.runtime.check import unbounded_ops
from taonode.runtime.graph import Factory, Model, ModelError, export, load
from taonode.runtime.tracedir import write_inputs


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("model", help="export a model to .pt2 or describe one")
    verbs = parser.add_subparsers(dest="model_command", metavar="VERB", required=True)

    exp = verbs.add_parser("export", help="torch.export a model (static shapes) to a .pt2 file")
    src = exp.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--factory",
        metavar="MODULE:FUNC",
        help="a function returning (module, example_inputs tuple)",
    )
    src.add_argument("--hf", metavar="DIR", help="a local Hugging Face BERT-style model directory")
    src.add_argument(
        "--reference",
        choices=("cnn", "transformer", "unet", "minilm"),
        help="one of taonode's reference models",
    )
    exp.add_argument(
        "--batch", type=int_at_least(1), default=2, help="--hf/minilm: batch size (default 2)"
    )
    exp.add_argument(
        "--seq", type=int_at_least(1), default=16, help="--hf/minilm: sequence length (16)"
    )
    exp.add_argument(
        "--no-pool", action="store_true", help="--hf: output hidden states, not embeddings"
    )
    exp.add_argument("--out", type=out_path, required=True, help="the .pt2 file to write")
    exp.add_argument(
        "--example-out",
        type=out_path,
        help="also write the example inputs here (safetensors, for trace)",
    )
    exp.set_defaults(func=run_export)

    info = verbs.add_parser("info", help="model id, op count, op histogram, parameter count")
    info.add_argument("model", help="a .pt2 file")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.set_defaults(func=run_info)

    from taonode.commands.model_add import register_verb

    register_verb(verbs)


def _factory(args: argparse.Namespace) -> Factory:
    from taonode.runtime.models import REFERENCE_MODELS, bert

    if args.reference == "minilm":
        return lambda: bert.minilm(args.batch, args.seq)
    if args.reference:
        return REFERENCE_MODELS[args.reference]
    if args.hf:
        directory = Path(args.hf)

        def from_hf() -> tuple[torch.nn.Module, tuple[torch.Tensor, ...]]:
            m = bert.load_hf_bert(directory, pool=not args.no_pool)
            return m, bert.example_inputs(args.batch, args.seq, m.config.vocab_size)

        return from_hf
    module_name, _, func = str(args.factory).partition(":")
    if not module_name or not func:
        raise ModelError("--factory must be MODULE:FUNC")
    fn = getattr(importlib.import_module(module_name), func)
    if not callable(fn):
        raise ModelError(f"{args.factory} is not callable")
    return fn  # type: ignore[no-any-return]


def run_export(args: argparse.Namespace) -> int:
    try:
        module, example = _factory(args)()
    except (ImportError, AttributeError, ModelError, ValueError, OSError) as exc:
        print(f"taonode model export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(example, tuple) or not all(isinstance(t, torch.Tensor) for t in example):
        print(
            "taonode model export: the factory must return (module, tuple of tensors)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    try:
        model = export(module, example, args.out)
    except Exception as exc:  # torch.export raises many types; report, do not crash
        print(f"taonode model export: export failed: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    if args.example_out:
        write_inputs(args.example_out, dict(zip(model.input_names, example, strict=True)))
    print(f"wrote {args.out}: model_id 0x{model.model_id.hex()}, {model.num_ops} ops")
    missing = unbounded_ops(model)
    if missing:
        print(f"empirical only (no theoretical bound): {', '.join(missing)}")
    return EXIT_OK


def describe(model: Model) -> dict[str, object]:
    return {
        "model_id": "0x" + model.model_id.hex(),
        "num_ops": model.num_ops,
        "parameters": model.parameter_count(),
        "inputs": [
            {"name": s.name, "shape": list(s.shape), "dtype": str(s.dtype).removeprefix("torch.")}
            for s in model.inputs
        ],
        "outputs": list(model.outputs),
        "op_histogram": model.op_histogram(),
        "empirical_only": unbounded_ops(model),
    }


def run_info(args: argparse.Namespace) -> int:
    try:
        model = load(args.model)
    except ModelError as exc:
        print(f"taonode model info: {exc}", file=sys.stderr)
        return EXIT_USAGE
    info = describe(model)
    if args.json:
        print(json.dumps(info, indent=1))
        return EXIT_OK
    print(f"model_id    {info['model_id']}")
    print(f"ops         {model.num_ops}")
    print(f"parameters  {model.parameter_count():,}")
    for s in model.inputs:
        print(f"input       {s.name} {list(s.shape)} {str(s.dtype).removeprefix('torch.')}")
    print("op histogram:")
    for target, count in model.op_histogram().items():
        print(f"  {count:5d}  {target}")
    missing = unbounded_ops(model)
    print(f"empirical only: {', '.join(missing) if missing else 'none'}")
    return EXIT_OK

"""``taonode calibrate``: calibrate an empirical tolerance profile for a model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from taonode.commands.argtypes import device, finite_float, int_at_least, k_factor, out_path
from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from taonode.runtime.execute import generate_inputs
from taonode.runtime.graph import ModelError, load
from taonode.runtime.profile import DEFAULT_MARGIN, ProfileError, calibrate, save_profile
from taonode.runtime.tracedir import TraceFormatError, read_inputs
from taonode.runtime.variants import ALL_VARIANTS, get_variants


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("calibrate", help="calibrate an empirical tolerance profile")
    parser.add_argument("--model", required=True, help="the .pt2 file")
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--inputs", help="a directory of input .safetensors files")
    src.add_argument(
        "--generate", type=int_at_least(1), metavar="N", help="generate N random inputs"
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        default=list(ALL_VARIANTS),
        choices=list(ALL_VARIANTS),
        help="execution variants (default: all)",
    )
    parser.add_argument(
        "--k", type=k_factor, nargs="+", default=[2, 4], help="game branching factors (default 2 4)"
    )
    parser.add_argument(
        "--margin", type=finite_float(1.0), default=DEFAULT_MARGIN, help="safety margin (≥ 1)"
    )
    parser.add_argument("--device", type=device, default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--seed", type=int_at_least(0), default=0, help="--generate: first seed")
    parser.add_argument("--out", type=out_path, required=True, help="profile JSON to write")
    parser.set_defaults(func=run)


def _progress(stage: str, done: int, total: int) -> None:
    # A progress line on a terminal only; logs and pipes stay quiet.
    if sys.stderr.isatty():
        end = "\n" if done == total else ""
        print(f"\rcalibrating {stage}: {done}/{total}", end=end, file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        model = load(args.model)
        if args.inputs:
            files = sorted(Path(args.inputs).glob("*.safetensors"))
            if not files:
                raise ModelError(f"{args.inputs}: no .safetensors files")
            inputs = [read_inputs(f, model) for f in files]
        else:
            if args.generate < 1:
                raise ModelError("--generate needs N >= 1")
            inputs = [generate_inputs(model, args.seed + i) for i in range(args.generate)]
        variants = get_variants(args.variants)
        if args.margin < 1:
            raise ModelError("--margin must be >= 1")
    except (ModelError, TraceFormatError, KeyError) as exc:
        print(f"taonode calibrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        profile = calibrate(
            model, inputs, variants, args.k, args.margin, torch.device(args.device), _progress
        )
    except (ProfileError, RuntimeError) as exc:
        print(f"taonode calibrate: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    save_profile(profile, args.out)
    print(f"wrote {args.out}: profile_id 0x{profile.profile_id.hex()}")
    return EXIT_OK

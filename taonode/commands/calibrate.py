"""``taonode calibrate``: calibrate an empirical tolerance profile for a model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from taonode.chain.deploy import Deployment, DeployParams
from taonode.commands.argtypes import device, finite_float, int_at_least, k_factor, out_path
from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE
from taonode.runtime.execute import generate_inputs
from taonode.runtime.graph import ModelError, load
from taonode.runtime.profile import DEFAULT_MARGIN, ProfileError, calibrate, save_profile
from taonode.runtime.tracedir import TraceFormatError, read_inputs
from taonode.runtime.variants import ALL_VARIANTS, get_variants

# Every k a profile is calibrated for by default, the deployment default among them: a profile
# without the deployment's k leaves every challenger unable to judge (issue 13).
DEFAULT_KS = sorted({2, 4, DeployParams().k})


def game_ks(args: argparse.Namespace) -> list[int]:
    """k from the deployment when given one (the only game parameter a profile depends on)."""
    if args.deployment is not None:
        try:
            return [Deployment.load(args.deployment).params.k]
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"--deployment {args.deployment}: {exc}") from None
    if args.config is not None:
        from taonode.config import ConfigError, load_config
        from taonode.service import StartupError
        from taonode.wiring import deployment_k

        try:
            return [deployment_k(load_config(args.config))]
        except ConfigError as exc:
            raise ModelError(f"--config: {'; '.join(exc.problems)}") from None
        except StartupError as exc:
            raise ModelError(f"--config: {exc}") from None
    ks = list(args.k or DEFAULT_KS)
    if any(not 2 <= k <= 255 for k in ks):
        raise ModelError("--k: every k must be in 2..255")
    return ks


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
    game = parser.add_mutually_exclusive_group()
    game.add_argument(
        "--k",
        type=k_factor,
        nargs="+",
        help=f"game branching factors (default {' '.join(map(str, DEFAULT_KS))}, which "
        "includes the `contracts deploy` default)",
    )
    game.add_argument(
        "--deployment",
        type=Path,
        help="a deployment file: calibrate for its k (the profile must cover it)",
    )
    game.add_argument("--config", help="a node configuration: calibrate for its deployment's k")
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
        ks = game_ks(args)
        if args.margin < 1:
            raise ModelError("--margin must be >= 1")
    except (ModelError, TraceFormatError, KeyError) as exc:
        print(f"taonode calibrate: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        profile = calibrate(
            model, inputs, variants, ks, args.margin, torch.device(args.device), _progress
        )
    except (ProfileError, RuntimeError) as exc:
        print(f"taonode calibrate: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    save_profile(profile, args.out)
    covered = " ".join(map(str, ks))
    print(f"wrote {args.out}: profile_id 0x{profile.profile_id.hex()} (k = {covered})")
    return EXIT_OK

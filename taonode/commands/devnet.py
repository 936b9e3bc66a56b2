"""``taonode devnet``: a local network playing honest and cheating jobs end to end."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from taonode.exitcodes import EXIT_USAGE
from taonode.logs import configure_logging


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    # Choices are checked in _run: importing torch and the chain stack here would slow down
    # every `taonode` invocation.
    parser = sub.add_parser(
        "devnet",
        help="run a local chain, a prover, challengers and a committee through honest and "
        "cheating jobs; exit 0 only if every honest job finalized and every cheat was slashed",
    )
    parser.add_argument("--chain", choices=("embedded", "anvil"), default="embedded")
    parser.add_argument("--model", default="transformer", help="cnn, transformer, unet or minilm")
    parser.add_argument("--challengers", type=int, default=2)
    parser.add_argument("--voters", type=int, default=5)
    parser.add_argument(
        "--cheats",
        default=None,
        help="comma-separated built-in strategies to run (default: the classic cheating "
        "provers; 'none' for only the honest job and --adversary ones)",
    )
    parser.add_argument(
        "--adversary",
        action="append",
        default=[],
        metavar="STRATEGY",
        help="also run this strategy: a built-in name or FILE.py:NAME (repeatable; "
        "docs/adversary.md)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for all jobs")
    parser.add_argument("--workdir", type=Path, help="keep node data here (default: temporary)")
    parser.add_argument("--log-level", dest="devnet_log_level", default="error")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from taonode.adversary.builtin import BUILTIN
    from taonode.adversary.load import StrategyError, load_strategy
    from taonode.devnet import DEFAULT_CHEATS, DevnetOptions, devnet_models, run_devnet

    if args.model not in devnet_models():
        print(f"taonode devnet: unknown model {args.model!r} (one of {sorted(devnet_models())})")
        return EXIT_USAGE

    cheats = (
        tuple(DEFAULT_CHEATS)
        if args.cheats is None
        else tuple(c for c in args.cheats.split(",") if c and c != "none")
    )
    unknown = [c for c in cheats if c not in BUILTIN]
    try:
        adversaries = tuple(load_strategy(spec) for spec in args.adversary)
    except StrategyError as exc:
        print(f"taonode devnet: {exc}")
        return EXIT_USAGE
    if unknown or args.challengers < 1 or args.voters < 3:
        print(
            f"taonode devnet: unknown cheats {unknown}"
            if unknown
            else "taonode devnet: needs at least 1 challenger and 3 voters"
        )
        return EXIT_USAGE
    configure_logging("console", args.devnet_log_level)
    options = DevnetOptions(
        chain=args.chain,
        model=args.model,
        challengers=args.challengers,
        voters=args.voters,
        cheats=cheats,
        adversaries=adversaries,
        timeout_s=args.timeout,
        workdir=args.workdir,
    )
    return asyncio.run(run_devnet(options))

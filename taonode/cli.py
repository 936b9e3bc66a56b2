"""The ``taonode`` command line.

Without a subcommand it runs the daemon (``taonode --role voter --config node.toml``); each
subcommand lives in its own module under :mod:`taonode.commands` and registers itself here.

Exit codes: 0 clean stop / success, 1 runtime failure, 2 usage or configuration error,
3 ``check`` rejected the trace.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from taonode import __version__
from taonode.exitcodes import EXIT_USAGE

COMMANDS = (
    "config",
    "devnet",
    "model",
    "trace",
    "check",
    "calibrate",
    "profile",
    "keys",
    "contracts",
    "bench",
)
ROLES = ("prover", "challenger", "voter")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="taonode",
        description="TAO node: prove, challenge and adjudicate ML inference results.",
        epilog="exit codes: 0 clean stop, 1 runtime failure, 2 usage/config error, "
        "3 check rejected",
    )
    parser.add_argument("--version", action="version", version=f"taonode {__version__}")
    parser.add_argument(
        "--role",
        action="append",
        choices=ROLES,
        dest="roles",
        help="role to run (repeatable); overrides [node] roles",
    )
    parser.add_argument("--config", help="node configuration (TOML)")
    parser.add_argument("--log-format", choices=("json", "console"), help="log output format")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="minimum log level"
    )
    # Tests and local networks only (refused unless the chain id is a local one).
    parser.add_argument("--unsafe-cheat", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"taonode.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is not None:
        code: int = args.func(args)
        return code
    if args.config is None:
        parser.error("the daemon needs --config FILE (or give a COMMAND)")
    from taonode.node import run_daemon

    return run_daemon(
        config_path=args.config,
        roles=tuple(args.roles) if args.roles else None,
        log_format=args.log_format,
        log_level=args.log_level,
        cheat=args.unsafe_cheat,
    )

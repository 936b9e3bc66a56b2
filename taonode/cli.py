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

COMMANDS: dict[str, str] = {
    "config": "validate and show node configurations",
    "devnet": "run a local network through honest and cheating jobs",
    "model": "export, inspect and add models",
    "trace": "run a model op by op and write its trace",
    "check": "check a trace against the theoretical bounds and a profile",
    "calibrate": "calibrate an empirical tolerance profile",
    "profile": "show and merge tolerance profiles",
    "keys": "create, import and inspect encrypted keystores",
    "contracts": "build and deploy the TAO contracts",
    "bench": "run benchmarks",
}
ROLES = ("prover", "challenger", "voter")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser(selected: str | None = None) -> argparse.ArgumentParser:
    """The full parser for ``selected`` (or for none): only the chosen command's module is
    imported, so ``taonode --version`` or ``config validate`` never pay for torch."""
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
    # Tests and local networks only (refused unless the chain id is a local one); documented
    # in docs/adversary.md and the runbook's dev-only flags, hidden from --help.
    parser.add_argument("--unsafe-adversary", metavar="STRATEGY", help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, summary in COMMANDS.items():
        if name == selected:
            importlib.import_module(f"taonode.commands.{name}").register(sub)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


def _selected_command(argv: Sequence[str]) -> str | None:
    for token in argv:
        if token in COMMANDS:
            return token
    return None


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_selected_command(arguments))
    args = parser.parse_args(arguments)
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
        adversary=args.unsafe_adversary,
    )

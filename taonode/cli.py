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
from taonode.exitcodes import EXIT_RUNTIME, EXIT_USAGE
from taonode.runtime.safejson import restore_recursion_limit

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
        # One line: the problem first, where to read more second (``--help`` has the usage).
        print(f"{self.prog}: error: {message} (usage: {self.prog} --help)", file=sys.stderr)
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
    # The command's imports are done: undo py_ecc's sys.setrecursionlimit(100000), under which
    # deep recursion (a 100,000-deep JSON document) overflows the C stack instead of raising.
    restore_recursion_limit()
    if args.command is not None:
        try:
            code: int = args.func(args)
        except KeyboardInterrupt:
            print(f"taonode {args.command}: interrupted", file=sys.stderr)
            return EXIT_RUNTIME
        except Exception as exc:
            # The last resort: commands check their inputs themselves (exit 2); anything that
            # still escapes is reported as one line, never as a traceback to an operator.
            first = str(exc).splitlines()[0] if str(exc) else ""
            print(f"taonode {args.command}: failed: {type(exc).__name__}: {first}", file=sys.stderr)
            return EXIT_RUNTIME
        return code
    if args.config is None:
        parser.error("the daemon needs --config FILE (or give a COMMAND)")
    from taonode.node import run_daemon

    restore_recursion_limit()
    return run_daemon(
        config_path=args.config,
        roles=tuple(args.roles) if args.roles else None,
        log_format=args.log_format,
        log_level=args.log_level,
        adversary=args.unsafe_adversary,
    )

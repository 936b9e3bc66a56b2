"""A subcommand whose implementation has not landed yet: it says so and exits with 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from taonode.exitcodes import EXIT_USAGE


def placeholder(
    name: str, summary: str
) -> Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]:
    def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
        parser = sub.add_parser(name, help=f"{summary} (not available in this build)")
        parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)

        def run(args: argparse.Namespace) -> int:
            print(f"taonode {name}: not available in this build yet", file=sys.stderr)
            return EXIT_USAGE

        parser.set_defaults(func=run)

    return register

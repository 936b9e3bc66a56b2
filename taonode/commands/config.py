"""``taonode config validate FILE``: check a node configuration without starting anything."""

from __future__ import annotations

import argparse
import json
import sys

from taonode.config import ConfigError, load_config
from taonode.exitcodes import EXIT_OK, EXIT_USAGE


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("config", help="validate and show node configurations")
    actions = parser.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    validate = actions.add_parser("validate", help="check a config file; exit 0 if valid")
    validate.add_argument("file", help="node configuration (TOML)")
    validate.add_argument(
        "--show", action="store_true", help="print the effective configuration as JSON"
    )
    validate.set_defaults(func=_validate)


def _validate(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(exc.report(), file=sys.stderr)
        return EXIT_USAGE
    if args.show:
        print(json.dumps(config.redacted(), indent=2, sort_keys=True))
    else:
        print(f"{args.file}: ok (roles: {', '.join(config.node.roles) or 'none'})")
    return EXIT_OK

"""``taonode keys``: create, import and inspect encrypted keystores.

Passwords and private keys are never taken from the command line (they would land in shell
history and ``ps``): a password comes from ``--password-file``, ``--password-env`` or a prompt;
an imported key from ``--private-key-file`` or a prompt.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from taonode.exitcodes import EXIT_OK, EXIT_USAGE
from taonode.keys import (
    DEFAULT_SCRYPT_N,
    KeystoreError,
    PasswordSource,
    create_keystore,
    keystore_address,
    parse_private_key,
)


def _add_password_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--password-file", type=Path, help="read the password from this file")
    group.add_argument("--password-env", metavar="VAR", help="read the password from $VAR")
    parser.add_argument(
        "--scrypt-n",
        type=int,
        default=DEFAULT_SCRYPT_N,
        help=argparse.SUPPRESS,  # a lower work factor is for tests only
    )


def _password(args: argparse.Namespace) -> str:
    source = PasswordSource(file=args.password_file, env=args.password_env, prompt=True)
    return source.read(confirm=True)


def run(args: argparse.Namespace) -> int:
    try:
        if args.keys_command == "show":
            print(keystore_address(args.file))
            return EXIT_OK
        if args.keys_command == "new":
            address = create_keystore(args.out, _password(args), scrypt_n=args.scrypt_n)
        elif args.keys_command == "import":
            if args.private_key_file is not None:
                try:
                    text = args.private_key_file.read_text(encoding="utf-8")
                except OSError as exc:
                    raise KeystoreError(f"cannot read {args.private_key_file}: {exc}") from exc
            else:
                text = getpass.getpass("Private key (hex): ")
            key = parse_private_key(text)
            address = create_keystore(
                args.out, _password(args), private_key=key, scrypt_n=args.scrypt_n
            )
        else:
            print("taonode keys: give a subcommand (new, show, import)", file=sys.stderr)
            return EXIT_USAGE
    except KeystoreError as exc:
        print(f"taonode keys: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (EOFError, KeyboardInterrupt):
        print("taonode keys: aborted", file=sys.stderr)
        return EXIT_USAGE
    print(address)
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("keys", help="create, import and inspect encrypted keystores")
    keys_sub = parser.add_subparsers(dest="keys_command", metavar="SUBCOMMAND")

    new = keys_sub.add_parser("new", help="create a new key in an encrypted V3 keystore")
    new.add_argument("--out", type=Path, required=True, help="keystore file to create (0600)")
    _add_password_args(new)

    show = keys_sub.add_parser("show", help="print a keystore's address (no password needed)")
    show.add_argument("file", type=Path)

    imp = keys_sub.add_parser("import", help="encrypt an existing private key into a keystore")
    imp.add_argument("--out", type=Path, required=True, help="keystore file to create (0600)")
    imp.add_argument(
        "--private-key-file", type=Path, help="file holding the hex key (default: prompt)"
    )
    _add_password_args(imp)

    parser.set_defaults(func=run, keys_command=None)

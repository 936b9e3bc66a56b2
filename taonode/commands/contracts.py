"""``taonode contracts``: build (compile + bindings) and deploy the TAO contracts.

* ``taonode contracts build [--check]`` compiles ``contracts/`` with the pinned solc-js into
  ``taonode/chain/artifacts/`` and regenerates ``taonode/chain/bindings/``; ``--check`` writes
  nothing and exits 1 when the committed files differ from a fresh build.
* ``taonode contracts deploy --rpc URL|embedded [--keystore FILE] [--params FILE] [--out FILE]``
  deploys ModelRegistry, StakeRegistry and TaoCoordinator and writes the deployment file
  (:mod:`taonode.chain.deploy`). The keystore's password comes from ``--password-file`` or
  ``$TAONODE_KEYSTORE_PASSWORD``, never from the command line. ``--dev-key N`` signs with local
  dev key ``N`` (embedded chain and anvil only; refused on chains that are not local).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE

LOCAL_CHAIN_IDS = (31337, 131277322940537)  # anvil, eth-tester


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("contracts", help="build and deploy the TAO contracts")
    actions = parser.add_subparsers(dest="contracts_command", metavar="ACTION", required=True)

    build = actions.add_parser("build", help="compile with the pinned solc-js, regenerate bindings")
    build.add_argument(
        "--check", action="store_true", help="compare with a fresh build; write nothing"
    )
    build.set_defaults(func=run)

    deploy = actions.add_parser("deploy", help="deploy the contracts, write a deployment file")
    deploy.add_argument("--rpc", required=True, help="JSON-RPC URL, or 'embedded'")
    deploy.add_argument("--keystore", type=Path, help="encrypted JSON keystore of the deployer")
    deploy.add_argument(
        "--password-file",
        type=Path,
        help="file holding the keystore password (else $TAONODE_KEYSTORE_PASSWORD)",
    )
    deploy.add_argument("--dev-key", type=int, help="local chains only: sign with dev key N")
    deploy.add_argument("--params", type=Path, help="JSON file of deployment parameters")
    deploy.add_argument("--out", type=Path, help="deployment file to write (default: stdout)")
    deploy.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.contracts_command == "build":
        return _build(check=args.check)
    return _deploy(args)


def _build(*, check: bool) -> int:
    from taonode.chain.artifacts import ARTIFACTS_DIR
    from taonode.chain.build import BuildError, compile_contracts
    from taonode.chain.codegen import BINDINGS_DIR, write_bindings

    try:
        if not check:
            print(compile_contracts(), end="")
            for path in write_bindings():
                print(f"wrote {path}")
            return EXIT_OK
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            compile_contracts(out / "artifacts")
            drift = [
                f"artifacts/{p.name}"
                for p in sorted((out / "artifacts").glob("*.json"))
                if not (ARTIFACTS_DIR / p.name).exists()
                or p.read_bytes() != (ARTIFACTS_DIR / p.name).read_bytes()
            ]
            drift += [
                f"bindings/{p.name}"
                for p in write_bindings(out / "bindings")
                if p.read_text() != (BINDINGS_DIR / p.name).read_text()
            ]
    except BuildError as e:
        print(f"taonode contracts build: {e}", file=sys.stderr)
        return EXIT_RUNTIME
    if drift:
        print("out of date: " + ", ".join(drift), file=sys.stderr)
        return EXIT_RUNTIME
    print("artifacts and bindings are up to date")
    return EXIT_OK


def _load_key(args: argparse.Namespace) -> bytes | str:
    """The deployer's private key, or an error message."""
    from eth_account import Account

    from taonode.chain.localchain import dev_key

    if args.keystore is not None and args.dev_key is not None:
        return "give either --keystore or --dev-key"
    if args.keystore is not None:
        if args.password_file is not None:
            password = args.password_file.read_text().rstrip("\n")
        elif "TAONODE_KEYSTORE_PASSWORD" in os.environ:
            password = os.environ["TAONODE_KEYSTORE_PASSWORD"]
        else:
            return "the keystore needs --password-file or $TAONODE_KEYSTORE_PASSWORD"
        try:
            keystore: dict[str, Any] = json.loads(args.keystore.read_text())
            return bytes(Account.decrypt(keystore, password))
        except (OSError, ValueError) as e:
            return f"cannot open keystore {args.keystore}: {e}"
    if args.dev_key is not None or args.rpc == "embedded":
        return dev_key(args.dev_key or 0)
    return "a deployer key is needed: --keystore FILE (or --dev-key N on a local chain)"


def _deploy(args: argparse.Namespace) -> int:
    from taonode.chain.deploy import DeployParams

    key = _load_key(args)
    if isinstance(key, str):
        print(f"taonode contracts deploy: {key}", file=sys.stderr)
        return EXIT_USAGE
    try:
        params = DeployParams.load(args.params) if args.params else DeployParams()
        params.validate()
    except (OSError, ValueError, TypeError) as e:
        print(f"taonode contracts deploy: bad --params: {e}", file=sys.stderr)
        return EXIT_USAGE
    try:
        doc = asyncio.run(_deploy_async(args.rpc, key, params, local_only=args.dev_key is not None))
    except _UsageError as e:
        print(f"taonode contracts deploy: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # an unreachable RPC, a revert, a timeout: report, exit 1
        print(f"taonode contracts deploy: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_RUNTIME
    text = json.dumps(doc, indent=2) + "\n"
    if args.out is not None:
        args.out.write_text(text)
        print(f"wrote {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return EXIT_OK


class _UsageError(Exception):
    pass


async def _deploy_async(rpc: str, key: bytes, params: Any, *, local_only: bool) -> dict[str, Any]:
    from web3 import AsyncWeb3
    from web3.providers.rpc import AsyncHTTPProvider

    from taonode.chain.deploy import deploy
    from taonode.chain.embedded import EmbeddedChain
    from taonode.chain.tx import DirectTransactor
    from taonode.signer import LocalSigner

    w3: AsyncWeb3[Any]
    if rpc == "embedded":
        w3 = EmbeddedChain(num_keys=0, fund=[key]).w3  # a throwaway in-process chain
    else:
        w3 = AsyncWeb3(AsyncHTTPProvider(rpc))
    try:
        chain_id = int(await w3.eth.chain_id)
        if local_only and chain_id not in LOCAL_CHAIN_IDS:
            raise _UsageError(f"--dev-key refused on chain {chain_id} (not a local chain)")
        deployment = await deploy(w3, DirectTransactor(w3, LocalSigner(key)), params)
        return deployment.to_json()
    finally:
        if rpc != "embedded":
            await w3.provider.disconnect()

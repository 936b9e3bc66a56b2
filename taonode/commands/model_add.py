"""``taonode model add``: put a model and its profile into a node's model store and register
them on chain (model id → profile id), so the node can serve, challenge and judge it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE


def register_verb(verbs: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    add = verbs.add_parser(
        "add", help="add a .pt2 with its profile to a node and register both on chain"
    )
    add.add_argument("model", type=Path, help="the exported .pt2")
    add.add_argument("--profile", type=Path, required=True, help="its calibrated profile JSON")
    add.add_argument("--config", required=True, help="the node's configuration (TOML)")
    add.add_argument("--uri", default="", help="metadata URI recorded on chain")
    add.add_argument("--no-register", action="store_true", help="only copy into the model store")
    add.set_defaults(func=run_add)


def run_add(args: argparse.Namespace) -> int:
    from taonode.config import ConfigError, load_config
    from taonode.modelstore import ModelStoreError, add_model
    from taonode.service import StartupError
    from taonode.wiring import deployment_k, models_dir

    try:
        config = load_config(args.config)
        # A profile the deployment cannot use is refused before it is stored or registered.
        stored = add_model(models_dir(config), args.model, args.profile, deployment_k(config))
    except ConfigError as exc:
        print("invalid configuration:\n  " + "\n  ".join(exc.problems), file=sys.stderr)
        return EXIT_USAGE
    except (ModelStoreError, StartupError) as exc:
        print(f"taonode model add: {exc}", file=sys.stderr)
        return EXIT_USAGE
    model_id, profile_id = stored.model.model_id, stored.profile.profile_id
    print(f"stored 0x{model_id.hex()} with profile 0x{profile_id.hex()} in {stored.path.parent}")
    if args.no_register or config.chain.rpc == "embedded":
        # The embedded development chain registers its models itself at start-up.
        return EXIT_OK
    try:
        return asyncio.run(_register(config, model_id, profile_id, args.uri))
    except StartupError as exc:
        print(f"taonode model add: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _register(config: object, model_id: bytes, profile_id: bytes, uri: str) -> int:
    from taonode.chain.deploy import Contracts
    from taonode.chain.tx import ContractRevert, DirectTransactor
    from taonode.config import NodeConfig
    from taonode.wiring import connect_chain

    assert isinstance(config, NodeConfig)
    parts = await connect_chain(config)
    contracts = Contracts.connect(
        parts.w3, parts.deployment, DirectTransactor(parts.w3, parts.signer)
    )
    registry = contracts.models
    owner = await registry.owner_of(model_id)
    try:
        if int(owner, 16) == 0:
            await registry.register_model(model_id, profile_id, uri)
            print(f"registered on chain by {parts.signer.address}")
        elif await registry.profile_of(model_id) == profile_id:
            print("already registered with this profile")
        elif owner.lower() == str(parts.signer.address).lower():
            await registry.update_profile(model_id, profile_id, uri)
            print("profile updated on chain")
        else:
            print(
                f"taonode model add: model registered by {owner} with another profile; "
                "only its owner can change it",
                file=sys.stderr,
            )
            return EXIT_RUNTIME
    except ContractRevert as exc:
        print(f"taonode model add: the registry refused: {exc}", file=sys.stderr)
        return EXIT_RUNTIME
    return EXIT_OK

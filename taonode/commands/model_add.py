"""``taonode model add``: put a model and its profile into a node's model store and register
them on chain (model id → profile id), so the node can serve, challenge and judge it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from taonode.exitcodes import EXIT_OK, EXIT_RUNTIME, EXIT_USAGE

if TYPE_CHECKING:
    from taonode.chain.bindings import ModelRegistry


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
        print(exc.report("taonode model add: "), file=sys.stderr)
        return EXIT_USAGE
    except (ModelStoreError, StartupError) as exc:
        print(f"taonode model add: {exc}", file=sys.stderr)
        return EXIT_USAGE
    model_id, profile_id = stored.model.model_id, stored.profile.profile_id
    num_ops = stored.model.num_ops
    print(
        f"stored 0x{model_id.hex()} ({num_ops} ops) with profile 0x{profile_id.hex()} "
        f"in {stored.path.parent}"
    )
    if args.no_register or config.chain.rpc == "embedded":
        # The embedded development chain registers its models itself at start-up.
        return EXIT_OK
    try:
        return asyncio.run(_register(config, model_id, profile_id, num_ops, args.uri))
    except StartupError as exc:
        print(f"taonode model add: {exc}", file=sys.stderr)
        return EXIT_USAGE


async def _register(
    config: object, model_id: bytes, profile_id: bytes, num_ops: int, uri: str
) -> int:
    from taonode.chain.deploy import Contracts
    from taonode.chain.tx import ContractRevert, DirectTransactor
    from taonode.config import NodeConfig
    from taonode.wiring import connect_chain

    assert isinstance(config, NodeConfig)
    parts = await connect_chain(config)
    contracts = Contracts.connect(
        parts.w3, parts.deployment, DirectTransactor(parts.w3, parts.signer)
    )
    try:
        code, message = await register_on_chain(
            contracts.models, str(parts.signer.address), model_id, profile_id, num_ops, uri
        )
    except ContractRevert as exc:
        code, message = EXIT_RUNTIME, f"taonode model add: the registry refused: {exc}"
    print(message, file=sys.stderr if code != EXIT_OK else sys.stdout)
    return code


async def register_on_chain(
    registry: ModelRegistry,
    me: str,
    model_id: bytes,
    profile_id: bytes,
    num_ops: int,
    uri: str,
) -> tuple[int, str]:
    """Register the model (with its op count) or propose its profile; refuse a registration
    whose op count disagrees with the local model. Returns (exit code, one-line message)."""
    owner = await registry.owner_of(model_id)
    if int(owner, 16) == 0:
        await registry.register_model(model_id, profile_id, num_ops, uri)
        return EXIT_OK, f"registered on chain by {me} ({num_ops} ops)"
    registered_ops = await registry.num_ops_of(model_id)
    if registered_ops != num_ops:
        # The coordinator takes N from the registry: serving this model against that
        # registration would put every dispute index off by the difference.
        return EXIT_RUNTIME, (
            f"taonode model add: the registry says model 0x{model_id.hex()} has "
            f"{registered_ops} ops, the local model has {num_ops}; refusing to use it"
        )
    proposed, active_from = await registry.proposal_of(model_id)
    if await registry.profile_of(model_id) == profile_id:
        return EXIT_OK, "already registered with this profile"
    if proposed == profile_id:
        return EXIT_OK, f"this profile is proposed on chain, active from block {active_from}"
    if owner.lower() != me.lower():
        return EXIT_RUNTIME, (
            f"taonode model add: model registered by {owner} with another profile; "
            "only its owner can propose a new one"
        )
    await registry.propose_profile(model_id, profile_id, uri)
    _, active_from = await registry.proposal_of(model_id)
    return EXIT_OK, f"profile proposed on chain, active from block {active_from} (timelock)"

"""From a validated config to the parts the roles need: the chain connection, the node's key,
the deployment, the served models. Used by the composition root (:mod:`taonode.node`).

``[chain] rpc = "embedded"`` is a development mode: the node starts its own in-process chain,
deploys the contracts, registers its models, mines a block every poll interval, and (without a
keystore) signs with a public dev key. Any other RPC needs a keystore and a deployment file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from web3 import AsyncWeb3

from taonode.chain.deploy import Contracts, Deployment, DeployParams, deploy
from taonode.chain.embedded import EmbeddedChain
from taonode.chain.localchain import BlockClock, dev_key
from taonode.chain.rpc import http_web3
from taonode.chain.tx import DirectTransactor, TxRequest
from taonode.chainbinding import ChainIdentity, bind_fresh_embedded_chain, bind_rpc_chain
from taonode.config import NodeConfig
from taonode.keys import KeystoreError, PasswordSource, load_node_signer
from taonode.logs import get_logger
from taonode.modelstore import ModelStoreError, StoredModel, check_profile_k, load_models
from taonode.roles.context import ServedModel
from taonode.roles.judge import ProfileJudge
from taonode.service import Component, StartupError
from taonode.signer import LocalSigner, Signer

log = get_logger("taonode.wiring")
GWEI = 10**9
ETHER = 10**18


@dataclass
class ChainParts:
    w3: AsyncWeb3[Any]
    signer: Signer
    deployment: Deployment
    components: list[Component] = field(default_factory=list)


def models_dir(config: NodeConfig) -> Path:
    return config.node.models_dir or config.node.data_dir / "models"


def deployment_k(config: NodeConfig) -> int:
    """The branching factor the node's deployment uses (what every profile must cover)."""
    if config.chain.rpc == "embedded" or config.chain.deployment is None:
        return DeployParams().k  # the embedded chain deploys with the defaults
    try:
        return Deployment.load(config.chain.deployment).params.k
    except (OSError, ValueError, KeyError) as exc:
        raise StartupError(f"chain.deployment: {config.chain.deployment}: {exc}") from None


def load_signer(config: NodeConfig) -> Signer:
    chain = config.chain
    if chain.keystore is None:
        raise StartupError("chain.keystore: a keystore is required to run roles on a real RPC")
    try:
        return load_node_signer(
            chain.keystore, PasswordSource(file=chain.password_file, env=chain.password_env)
        )
    except KeystoreError as exc:
        raise StartupError(f"chain.keystore: {exc}") from None


def load_served(config: NodeConfig, k: int) -> tuple[list[StoredModel], dict[bytes, ServedModel]]:
    try:
        stored = load_models(models_dir(config))
        for s in stored:
            check_profile_k(s.profile, k, s.path.with_name(s.path.stem + ".profile.json"), s.path)
    except ModelStoreError as exc:
        raise StartupError(f"models: {exc}") from None
    served = {
        s.model.model_id: ServedModel(
            s.model,
            s.profile.profile_id,
            ProfileJudge(s.model, s.profile, k, config.compute.device),
        )
        for s in stored
    }
    return stored, served


async def connect_chain(config: NodeConfig) -> ChainParts:
    chain = config.chain
    if chain.rpc == "embedded":
        return await _embedded(config)
    if not chain.rpc.startswith("http"):
        raise StartupError(f"chain.rpc: only http(s) RPC endpoints are supported, got {chain.rpc}")
    if chain.deployment is None:
        raise StartupError("chain.deployment: a deployment file is required with a real RPC")
    try:
        deployment = Deployment.load(chain.deployment)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise StartupError(f"chain.deployment: {chain.deployment}: {exc}") from None
    signer = load_signer(config)
    w3 = http_web3(chain.rpc, timeout_s=10.0)
    try:
        chain_id = int(await w3.eth.chain_id)
    except Exception as exc:
        raise StartupError(f"chain.rpc: {chain.rpc} does not answer: {exc}") from None
    if chain_id != chain.chain_id or chain_id != deployment.chain_id:
        raise StartupError(
            f"chain.chain_id: the RPC reports {chain_id}, the config says {chain.chain_id}, "
            f"the deployment was made on {deployment.chain_id}"
        )
    bind_rpc_chain(config.node.data_dir, await _identity(w3, chain_id))
    return ChainParts(w3, signer, deployment)


async def _identity(w3: AsyncWeb3[Any], chain_id: int) -> ChainIdentity:
    try:
        genesis = await w3.eth.get_block(0)
    except Exception as exc:
        raise StartupError(f"chain.rpc: cannot read the genesis block: {exc}") from None
    return ChainIdentity(chain_id, "0x" + bytes(genesis["hash"]).hex())


async def _embedded(config: NodeConfig) -> ChainParts:
    chain = EmbeddedChain(num_keys=4)
    # A new chain on every start: the previous run's journal and cursor must not be resumed.
    identity = await _identity(chain.w3, int(await chain.w3.eth.chain_id))
    bind_fresh_embedded_chain(config.node.data_dir, identity)
    deployer = LocalSigner(chain.keys[0])
    transactor = DirectTransactor(chain.w3, deployer)
    deployment = await deploy(chain.w3, transactor, DeployParams())
    if config.chain.keystore is not None:
        signer = load_signer(config)
        # Fund the configured key from the dev account so it can post bonds and stake.
        await transactor.send(TxRequest(signer.address, b"", 1000 * ETHER, label="fund"))
    else:
        signer = LocalSigner(dev_key(1))
        log.warning(
            "embedded development chain: signing with a public dev key", address=signer.address
        )
    contracts = Contracts.connect(chain.w3, deployment, transactor)
    _, served = load_served(config, deployment.params.k)
    for model_id, entry in served.items():
        await contracts.models.register_model(
            model_id, entry.profile_id, entry.model.num_ops, "embedded"
        )
    clock = BlockClock(chain, config.chain.poll_interval_s)
    return ChainParts(chain.w3, signer, deployment, [clock])

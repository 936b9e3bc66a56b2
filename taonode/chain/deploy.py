"""Deploy the TAO contracts and describe the deployment in a JSON file nodes load.

Deployment file (``version`` 1)::

    {"version": 1, "chainId": 31337, "block": 1, "deployer": "0x…",
     "contracts": {"ModelRegistry": "0x…", "StakeRegistry": "0x…", "TaoCoordinator": "0x…"},
     "params": {"challengeWindow": 20, …}, "compiler": "0.8.28+commit…"}

``block`` is the block of the first deployment transaction (watchers start there). All
windows/timeouts are in blocks; amounts in wei.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from eth_abi import abi
from eth_typing import ChecksumAddress
from eth_utils.address import to_checksum_address
from web3 import AsyncWeb3

from taonode.chain.artifacts import load_artifact
from taonode.chain.bindings import ModelRegistry, StakeRegistry, TaoCoordinator
from taonode.chain.tx import Transactor, TxRequest
from taonode.runtime import safejson

DEPLOYMENT_VERSION = 1
DEPLOY_JSON_LIMITS = safejson.JsonLimits(max_bytes=1 << 20, max_depth=8, max_elements=10_000)
ETHER = 10**18


@dataclass(frozen=True)
class DeployParams:
    """Every protocol parameter (fixed at deployment, readable on chain). Blocks and wei."""

    challengeWindow: int = 20
    moveTimeout: int = 10
    voteWindow: int = 10
    proverBond: int = ETHER
    challengerBond: int = ETHER
    k: int = 8
    committeeSize: int = 5
    quorum: int = 3
    voterRewardBps: int = 2000
    nonVoterPenalty: int = ETHER // 10
    treasury: str = ""  # empty: the deployer
    minStake: int = ETHER
    unbondDelay: int = 50
    maxNodes: int = 1024
    profileDelay: int = 100  # blocks from ModelRegistry.proposeProfile until the profile is active

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> DeployParams:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown deployment parameters: {sorted(unknown)}")
        return cls(**raw)

    @classmethod
    def load(cls, path: Path) -> DeployParams:
        return cls.from_dict(safejson.load_file(path, DEPLOY_JSON_LIMITS))

    def validate(self) -> None:
        if not 2 <= self.k <= 255:
            raise ValueError("k must be in 2..255")
        if not 1 <= self.committeeSize <= 32:
            raise ValueError("committeeSize must be in 1..32")
        if not (self.committeeSize < 2 * self.quorum and self.quorum <= self.committeeSize):
            raise ValueError("quorum must be a majority of committeeSize")
        if self.maxNodes <= 0 or self.maxNodes & (self.maxNodes - 1):
            raise ValueError("maxNodes must be a power of two")
        if not 0 <= self.profileDelay < 2**64:
            raise ValueError("profileDelay must be a block count (0 .. 2^64 - 1)")
        for name in ("challengeWindow", "moveTimeout", "voteWindow", "proverBond", "minStake"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")


@dataclass(frozen=True)
class Deployment:
    chain_id: int
    block: int
    deployer: ChecksumAddress
    model_registry: ChecksumAddress
    stake_registry: ChecksumAddress
    coordinator: ChecksumAddress
    params: DeployParams
    compiler: str

    def to_json(self) -> dict[str, Any]:
        return {
            "version": DEPLOYMENT_VERSION,
            "chainId": self.chain_id,
            "block": self.block,
            "deployer": self.deployer,
            "contracts": {
                "ModelRegistry": self.model_registry,
                "StakeRegistry": self.stake_registry,
                "TaoCoordinator": self.coordinator,
            },
            "params": asdict(self.params),
            "compiler": self.compiler,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Deployment:
        if raw.get("version") != DEPLOYMENT_VERSION:
            raise ValueError(f"unsupported deployment file version {raw.get('version')!r}")
        c = raw["contracts"]
        return cls(
            chain_id=int(raw["chainId"]),
            block=int(raw["block"]),
            deployer=to_checksum_address(raw["deployer"]),
            model_registry=to_checksum_address(c["ModelRegistry"]),
            stake_registry=to_checksum_address(c["StakeRegistry"]),
            coordinator=to_checksum_address(c["TaoCoordinator"]),
            params=DeployParams.from_dict(raw["params"]),
            compiler=str(raw["compiler"]),
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Deployment:
        return cls.from_json(safejson.load_file(path, DEPLOY_JSON_LIMITS))


@dataclass(frozen=True)
class Contracts:
    """The three deployed contracts, bound to one sender (or read-only)."""

    models: ModelRegistry
    stakes: StakeRegistry
    coordinator: TaoCoordinator

    @classmethod
    def connect(
        cls, w3: AsyncWeb3[Any], deployment: Deployment, transactor: Transactor | None = None
    ) -> Contracts:
        return cls(
            ModelRegistry(w3, deployment.model_registry, transactor),
            StakeRegistry(w3, deployment.stake_registry, transactor),
            TaoCoordinator(w3, deployment.coordinator, transactor),
        )

    def as_(self, transactor: Transactor) -> Contracts:
        """The same contracts, sending as another account."""
        return Contracts(
            self.models.with_transactor(transactor),
            self.stakes.with_transactor(transactor),
            self.coordinator.with_transactor(transactor),
        )


def creation_tx(name: str, types: list[str], args: list[Any]) -> TxRequest:
    art = load_artifact(name)
    return TxRequest(None, art.bytecode + abi.encode(types, args), label=f"deploy {name}")


async def deploy_contract(
    transactor: Transactor, name: str, types: list[str], args: list[Any]
) -> tuple[ChecksumAddress, int]:
    receipt = await transactor.send(creation_tx(name, types, args))
    address = receipt["contractAddress"]
    if address is None:
        raise RuntimeError(f"{name}: no contract address in the receipt")
    return to_checksum_address(address), int(receipt["blockNumber"])


async def deploy(w3: AsyncWeb3[Any], transactor: Transactor, params: DeployParams) -> Deployment:
    """Deploy ModelRegistry, StakeRegistry and TaoCoordinator, then bind the coordinator."""
    params.validate()
    treasury = params.treasury or transactor.address
    models, block = await deploy_contract(
        transactor, "ModelRegistry", ["uint64"], [params.profileDelay]
    )
    stakes, _ = await deploy_contract(
        transactor,
        "StakeRegistry",
        ["uint256", "uint64", "uint32"],
        [params.minStake, params.unbondDelay, params.maxNodes],
    )
    p = params
    coordinator, _ = await deploy_contract(
        transactor,
        "TaoCoordinator",
        [
            "address",
            "address",
            "(uint64,uint64,uint64,uint128,uint128,uint8,uint8,uint8,uint16,uint128,address)",
        ],
        [
            models,
            stakes,
            (
                p.challengeWindow,
                p.moveTimeout,
                p.voteWindow,
                p.proverBond,
                p.challengerBond,
                p.k,
                p.committeeSize,
                p.quorum,
                p.voterRewardBps,
                p.nonVoterPenalty,
                to_checksum_address(treasury),
            ),
        ],
    )
    await StakeRegistry(w3, stakes, transactor).bind_coordinator(coordinator)
    return Deployment(
        chain_id=int(await w3.eth.chain_id),
        block=block,
        deployer=transactor.address,
        model_registry=models,
        stake_registry=stakes,
        coordinator=coordinator,
        params=DeployParams(**{**asdict(params), "treasury": to_checksum_address(treasury)}),
        compiler=load_artifact("TaoCoordinator").compiler_version,
    )

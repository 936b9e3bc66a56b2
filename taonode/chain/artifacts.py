"""Compiled contract artifacts (ABI + bytecode) committed under ``taonode/chain/artifacts/``.

They are produced by ``contracts/build.js`` (pinned solc-js, see :mod:`taonode.chain.build`);
``tests/chain/test_artifacts.py`` recompiles and fails when they drift from the sources.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_utils.crypto import keccak

ARTIFACTS_DIR = Path(__file__).with_name("artifacts")
CONTRACT_NAMES = ("ModelRegistry", "StakeRegistry", "TaoCoordinator", "ReentrancyAttacker")


@dataclass(frozen=True)
class Artifact:
    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    compiler_version: str


@functools.cache
def load_artifact(name: str) -> Artifact:
    raw = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text())
    return Artifact(
        name=raw["contractName"],
        abi=raw["abi"],
        bytecode=bytes.fromhex(raw["bytecode"][2:]),
        deployed_bytecode=bytes.fromhex(raw["deployedBytecode"][2:]),
        compiler_version=raw["compiler"]["version"],
    )


def canonical_type(param: dict[str, Any]) -> str:
    """The ABI type of a parameter as it appears in a signature (tuples expanded)."""
    typ = str(param["type"])
    if typ.startswith("tuple"):
        inner = ",".join(canonical_type(c) for c in param["components"])
        return f"({inner}){typ[len('tuple') :]}"
    return typ


@dataclass(frozen=True)
class ErrorSpec:
    contract: str
    name: str
    types: tuple[str, ...]
    names: tuple[str, ...]


@functools.cache
def error_specs() -> dict[bytes, ErrorSpec]:
    """Custom errors of every contract by 4-byte selector."""
    specs: dict[bytes, ErrorSpec] = {}
    for contract in CONTRACT_NAMES:
        for item in load_artifact(contract).abi:
            if item["type"] != "error":
                continue
            types = tuple(canonical_type(p) for p in item["inputs"])
            selector = keccak(text=f"{item['name']}({','.join(types)})")[:4]
            specs[selector] = ErrorSpec(
                contract, item["name"], types, tuple(p["name"] for p in item["inputs"])
            )
    return specs

"""The committed artifacts and bindings match a fresh build with the pinned compiler."""

from __future__ import annotations

from pathlib import Path

import pytest

from taonode.chain.artifacts import ARTIFACTS_DIR, CONTRACT_NAMES, load_artifact
from taonode.chain.build import compile_contracts
from taonode.chain.codegen import BINDINGS_DIR, write_bindings


@pytest.mark.slow
def test_compile_contracts_no_drift_succeeds(tmp_path: Path) -> None:
    out = tmp_path / "artifacts"
    compile_contracts(out)
    fresh = sorted(p.name for p in out.glob("*.json"))
    assert fresh == sorted(p.name for p in ARTIFACTS_DIR.glob("*.json"))
    for name in fresh:
        assert (out / name).read_bytes() == (ARTIFACTS_DIR / name).read_bytes(), (
            f"{name} drifted from contracts/: run `taonode contracts build` and commit"
        )


def test_write_bindings_no_drift_succeeds(tmp_path: Path) -> None:
    for path in write_bindings(tmp_path):
        committed = BINDINGS_DIR / path.name
        assert path.read_text() == committed.read_text(), (
            f"bindings/{path.name} drifted: run `taonode contracts build` and commit"
        )


def test_load_artifact_pinned_compiler_succeeds() -> None:
    for name in CONTRACT_NAMES:
        art = load_artifact(name)
        assert art.compiler_version.startswith("0.8.28+")
        assert art.bytecode
        assert art.deployed_bytecode
        assert len(art.deployed_bytecode) <= 24_576  # EIP-170


def test_compile_contracts_bad_source_reverts(tmp_path: Path) -> None:
    """A broken build raises (the wrapper surfaces compiler errors)."""
    from taonode.chain import build

    broken = tmp_path / "contracts"
    (broken / "src").mkdir(parents=True)
    (broken / "test").mkdir()
    (broken / "src" / "Bad.sol").write_text("pragma solidity 0.8.28; contract Bad { function }")
    (broken / "build.js").write_text((build.CONTRACTS_DIR / "build.js").read_text())
    (broken / "node_modules").symlink_to(build.CONTRACTS_DIR / "node_modules")
    with pytest.raises(build.BuildError, match=r"Bad\.sol"):
        build.compile_contracts(tmp_path / "out", contracts_dir=broken)

"""Compile the contracts with the pinned solc-js (``contracts/package.json``) via node."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from taonode.chain.artifacts import ARTIFACTS_DIR

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTRACTS_DIR = REPO_ROOT / "contracts"


class BuildError(RuntimeError):
    """The compiler or node is missing, or the sources do not compile."""


def compile_contracts(
    out_dir: Path = ARTIFACTS_DIR, *, contracts_dir: Path = CONTRACTS_DIR, timeout: float = 300.0
) -> str:
    """Compile contracts/src and contracts/test into ``out_dir``; returns the compiler log."""
    node = shutil.which("node")
    if node is None:
        raise BuildError("node is not on PATH (needed to run solc-js)")
    if not (contracts_dir / "node_modules" / "solc").is_dir():
        raise BuildError(f"solc-js is not installed: run `npm ci` in {contracts_dir}")
    proc = subprocess.run(
        [node, str(contracts_dir / "build.js"), "--out", str(out_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise BuildError(proc.stderr.strip() or proc.stdout.strip())
    return proc.stdout


def generate_bindings(out_dir: Path | None = None) -> list[Path]:
    """Regenerate the typed bindings from the artifacts in :data:`ARTIFACTS_DIR`."""
    from taonode.chain.codegen import write_bindings

    return write_bindings(out_dir)

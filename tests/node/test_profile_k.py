"""Defaults that agree: a profile must cover the deployment's k (issue 13).

With ``contracts deploy`` at k = 8 and a profile calibrated for 2 and 4 only, a challenger
could not judge any sub-segment and lost its bond to the cheat. ``calibrate`` now calibrates
for the deployment's k when given the deployment (and covers the deploy default otherwise);
``model add`` and node start refuse a profile without it, naming the command that fixes it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_utils.address import to_checksum_address

from taonode.chain.deploy import Deployment, DeployParams
from taonode.cli import main
from taonode.commands.calibrate import DEFAULT_KS
from taonode.devnet import calibrate_profile, prepare_model
from taonode.runtime.graph import Model
from taonode.runtime.profile import load_profile, save_profile
from tests.node.daemon import ROOT

ZERO = "0x" + "00" * 19 + "01"


def _deployment(path: Path, k: int) -> Path:
    zero = to_checksum_address(ZERO)
    Deployment(31337, 1, zero, zero, zero, zero, DeployParams(k=k), "test").save(path)
    return path


@pytest.fixture(scope="module")
def model_k2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Model, Path, Path]:
    """The reference transformer with a profile for k = 2 only."""
    work = tmp_path_factory.mktemp("profile-k")
    model, example = prepare_model("transformer", work)
    profile = work / "profile-k2.json"
    save_profile(calibrate_profile(model, example, 2), profile)
    return model, work / "transformer.pt2", profile


def test_calibrate_default_covers_deploy_default_k_succeeds() -> None:
    assert DeployParams().k in DEFAULT_KS


def test_calibrate_reads_k_from_deployment_succeeds(
    tmp_path: Path, model_k2: tuple[Model, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    model, program, _ = model_k2
    deployment = _deployment(tmp_path / "deployment.json", 3)
    out = tmp_path / "profile.json"
    argv = ["calibrate", "--model", str(program), "--generate", "1", "--variants", "default"]
    code = main([*argv, "--deployment", str(deployment), "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert set(load_profile(out, model).segments) == {3}
    # --k and --deployment contradict each other: refused by the parser (exit 2).
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--deployment", str(deployment), "--k", "2", "--out", str(out)])
    assert exit_info.value.code == 2


def _config(tmp_path: Path, rpc: str, deployment: Path | None) -> Path:
    chain = f'rpc = "{rpc}"\nchain_id = 31337\n'
    if deployment is not None:
        chain += f'deployment = "{deployment}"\n'
    path = tmp_path / "node.toml"
    path.write_text(
        f'[node]\ndata_dir = "{tmp_path / "data"}"\nroles = ["prover"]\n'
        f"shutdown_stage_timeout_s = 2.0\n"
        f'[api]\nport = 0\n[log]\nformat = "json"\n[chain]\n{chain}'
    )
    return path


def test_model_add_profile_without_deployment_k_refused(
    tmp_path: Path, model_k2: tuple[Model, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, program, profile = model_k2
    deployment = _deployment(tmp_path / "deployment.json", 8)
    # The RPC is never reached: the profile is refused before anything is stored or sent.
    config = _config(tmp_path, "http://127.0.0.1:9", deployment)
    code = main(["model", "add", str(program), "--profile", str(profile), "--config", str(config)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "k = 8" in err
    assert "taonode calibrate" in err
    assert "--deployment" in err
    assert not (tmp_path / "data" / "models").exists()


def test_model_add_profile_with_deployment_k_accepted_succeeds(
    tmp_path: Path, model_k2: tuple[Model, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # The honest counterpart: the same profile is fine for a k = 2 deployment.
    model, program, profile = model_k2
    deployment = _deployment(tmp_path / "deployment.json", 2)
    config = _config(tmp_path, "http://127.0.0.1:9", deployment)
    argv = ["model", "add", str(program), "--profile", str(profile), "--config", str(config)]
    assert main([*argv, "--no-register"]) == 0, capsys.readouterr().err
    assert (tmp_path / "data" / "models" / f"{model.model_id.hex()}.pt2").is_file()


def test_node_start_profile_without_deployment_k_refused(
    tmp_path: Path, model_k2: tuple[Model, Path, Path]
) -> None:
    model, program, profile = model_k2
    # A model store filled by hand (or before a redeploy): the node refuses to start with it.
    # The embedded chain deploys with the defaults (k = 8).
    models = tmp_path / "data" / "models"
    models.mkdir(parents=True)
    (models / f"{model.model_id.hex()}.pt2").write_bytes(program.read_bytes())
    (models / f"{model.model_id.hex()}.profile.json").write_text(profile.read_text())
    config = _config(tmp_path, "embedded", None)
    done = subprocess.run(
        [sys.executable, "-m", "taonode", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("taonode: models: "), last
    assert "k = 8" in last
    assert "taonode calibrate" in last
    errors = [json.loads(x) for x in done.stderr.splitlines() if x.startswith("{")]
    assert any(e.get("event") == "start-up failed" for e in errors)

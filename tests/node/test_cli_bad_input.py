"""Every command turns a bad file or option into exit 2 and one clear line, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from taonode.cli import main
from taonode.exitcodes import EXIT_USAGE
from tests.node.daemon import ROOT

MODEL_ID = "0x" + "ab" * 32


def _profile(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": "taonode-profile",
        "version": 1,
        "model_id": MODEL_ID,
        "margin": 4.0,
        "variants": ["default"],
        "hardware": [],
        "calibration_inputs": [],
        "ops": [
            {
                "index": 0,
                "name": "linear",
                "type": "aten.linear.default",
                "max": 0.1,
                "p999": 0.1,
                "p99": 0.1,
                "mean": 0.05,
                "count": 10,
                "threshold": 0.4,
            }
        ],
        "segments": {"2": {"0:1": {"max": 0.1, "count": 1, "threshold": 0.4}}},
    }
    doc.update(changes)
    return doc


def _files(tmp: Path) -> dict[str, str]:
    corrupt = tmp / "corrupt.pt2"
    corrupt.write_bytes(b"PK\x03\x04 this is not a zip archive at all")
    trace = tmp / "trace"
    trace.mkdir()
    (trace / "manifest.json").write_text("{}")
    inputs = tmp / "inputs.safetensors"
    inputs.write_bytes(b"\x00" * 16)
    good_profile = tmp / "good.profile.json"
    good_profile.write_text(json.dumps(_profile()))
    nan_op = _profile()
    nan_op["ops"][0]["threshold"] = 1e400  # decodes as inf: an always-passing check
    inf_profile = tmp / "inf.profile.json"
    inf_profile.write_text(json.dumps(nan_op).replace("Infinity", "1e400"))
    literal = tmp / "nan.profile.json"
    literal.write_text(json.dumps(_profile(margin=float("nan"))))  # what --margin nan wrote
    zero_seg = tmp / "zero.profile.json"
    zero_seg.write_text(
        json.dumps(_profile(segments={"2": {"0:1": {"max": 0, "count": 1, "threshold": 0.0}}}))
    )
    negative = _profile()
    negative["ops"][0]["threshold"] = -0.5
    neg_profile = tmp / "neg.profile.json"
    neg_profile.write_text(json.dumps(negative))
    deep = tmp / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    small_deep = tmp / "small-deep.json"
    small_deep.write_text("[" * 30_000 + "]" * 30_000)  # under the keystore's 64 KiB limit
    deep_toml = tmp / "deep.toml"
    deep_toml.write_text("a = " + "[" * 5000 + "]" * 5000 + "\n")
    config = tmp / "node.toml"
    config.write_text(f'[node]\ndata_dir = "{tmp / "data"}"\n')
    return {
        "corrupt": str(corrupt),
        "trace": str(trace),
        "inputs": str(inputs),
        "good_profile": str(good_profile),
        "inf_profile": str(inf_profile),
        "nan_profile": str(literal),
        "zero_profile": str(zero_seg),
        "neg_profile": str(neg_profile),
        "deep": str(deep),
        "deep_toml": str(deep_toml),
        "small_deep": str(small_deep),
        "config": str(config),
        "missing_dir": str(tmp / "no" / "such" / "dir" / "out"),
        "out": str(tmp / "out"),
    }


CALIBRATE = ["calibrate", "--model", "{corrupt}", "--generate", "1", "--out", "{out}"]
TRACE = ["trace", "--model", "{corrupt}", "--input", "{inputs}", "--out", "{out}"]
EXPORT = ["model", "export", "--reference", "minilm", "--out", "{out}.pt2"]
CASES: list[tuple[str, list[str], str]] = [
    ("model info: corrupt .pt2", ["model", "info", "{corrupt}"], "not a usable .pt2"),
    (
        "check: corrupt .pt2",
        ["check", "--model", "{corrupt}", "--trace", "{trace}"],
        "not a usable .pt2",
    ),
    ("trace: corrupt .pt2", TRACE, "not a usable .pt2"),
    ("calibrate: corrupt .pt2", CALIBRATE, "not a usable .pt2"),
    (
        "model add: corrupt .pt2",
        ["model", "add", "{corrupt}", "--profile", "{good_profile}", "--config", "{config}"],
        "not a usable .pt2",
    ),
    ("trace: missing CUDA device", [*TRACE, "--device", "cuda:99"], "cuda:99"),
    ("trace: unknown device", [*TRACE, "--device", "tpu"], 'must be "cpu"'),
    (
        "check: missing CUDA device",
        ["check", "--model", "{corrupt}", "--trace", "{trace}", "--device", "cuda:99"],
        "cuda:99",
    ),
    ("calibrate: --k 0", [*CALIBRATE, "--k", "0"], "must be ≥ 2"),
    ("calibrate: --k 1", [*CALIBRATE, "--k", "1"], "must be ≥ 2"),
    ("calibrate: --k 300", [*CALIBRATE, "--k", "300"], "must be ≤ 255"),
    ("calibrate: --margin nan", [*CALIBRATE, "--margin", "nan"], "finite"),
    ("calibrate: --margin inf", [*CALIBRATE, "--margin", "inf"], "finite"),
    ("calibrate: --margin 0.5", [*CALIBRATE, "--margin", "0.5"], "must be ≥ 1"),
    ("calibrate: --generate 0", [*CALIBRATE[:4], "0", *CALIBRATE[5:]], "must be ≥ 1"),
    ("calibrate: --out in a missing folder", [*CALIBRATE[:-1], "{missing_dir}"], "does not exist"),
    ("trace: --out in a missing folder", [*TRACE[:-1], "{missing_dir}"], "does not exist"),
    ("export: --seq -1", [*EXPORT, "--seq", "-1"], "must be ≥ 1"),
    ("export: --batch 0", [*EXPORT, "--batch", "0"], "must be ≥ 1"),
    ("export: --out in a missing folder", [*EXPORT[:-1], "{missing_dir}"], "does not exist"),
    ("profile show: inf threshold", ["profile", "show", "{inf_profile}"], "finite"),
    ("profile show: NaN literal", ["profile", "show", "{nan_profile}"], "NaN is not valid JSON"),
    ("profile show: zero segment threshold", ["profile", "show", "{zero_profile}"], "> 0"),
    ("profile show: negative op threshold", ["profile", "show", "{neg_profile}"], "≥ 0"),
    ("profile show: 100,000-deep JSON", ["profile", "show", "{deep}"], "nested deeper"),
    (
        "profile merge: --out in a missing folder",
        ["profile", "merge", "{good_profile}", "--out", "{missing_dir}"],
        "does not exist",
    ),
    ("keys show: 30,000-deep keystore", ["keys", "show", "{small_deep}"], "nested deeper"),
    ("keys show: oversized keystore", ["keys", "show", "{deep}"], "the limit is 65536"),
    (
        "config validate: deeply nested TOML",
        ["config", "validate", "{deep_toml}"],
        "nested too deeply",
    ),
]
if not torch.cuda.is_available():
    CASES.append(
        ("trace: --device cuda without CUDA", [*TRACE, "--device", "cuda"], "CUDA is not available")
    )


@pytest.mark.parametrize(("label", "argv", "expected"), CASES, ids=[c[0] for c in CASES])
def test_cli_bad_file_or_option_exit_2_one_line_reverts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, argv: list[str], expected: str
) -> None:
    files = _files(tmp_path)
    args = [a.format(**files) for a in argv]
    with pytest.raises(SystemExit) as exited:
        raise SystemExit(main(args))
    err = capsys.readouterr().err
    assert exited.value.code == EXIT_USAGE, (label, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, (label, err)
    assert expected in lines[0], (label, lines[0])
    assert "Traceback" not in err
    # Nothing was written where the command was refused.
    assert not Path(files["out"]).exists()


def test_cli_deep_json_file_subprocess_no_crash_reverts(tmp_path: Path) -> None:
    # As an operator runs it: py_ecc has raised the recursion limit in this process too.
    deep = tmp_path / "deep.profile.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    result = subprocess.run(
        [sys.executable, "-m", "taonode", "profile", "show", str(deep)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert "nested deeper" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_good_profile_still_loads_succeeds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _files(tmp_path)
    assert main(["profile", "show", files["good_profile"]]) == 0
    assert MODEL_ID in capsys.readouterr().out

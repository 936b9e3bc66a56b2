from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from taonode.cli import main
from taonode.exitcodes import EXIT_OK, EXIT_REJECTED, EXIT_USAGE
from taonode.protocol.schedule import subsegment
from taonode.protocol.votes import Verdict
from taonode.runtime.downgrades import CastWeights, OpRewrite, PerturbLayer
from taonode.runtime.execute import Trace, generate_inputs, run_segment_values, run_traced
from taonode.runtime.profile import (
    Profile,
    ProfileError,
    calibrate,
    check_trace_with_profile,
    compare_traces,
    game_segments,
    load_profile,
    merge_profiles,
    profile_from_json,
    save_profile,
    select_subsegment,
)
from taonode.runtime.tracedir import save_trace
from taonode.runtime.variants import ALL_VARIANTS, get_variants
from tests.runtime.conftest import Exported

CALIB = ("default", "splitk", "permuted", "decomposed")


@pytest.fixture(scope="module")
def profile(exported: dict[str, Exported]) -> Profile:
    e = exported["transformer"]
    return calibrate(e.model, [generate_inputs(e.model, 0)], get_variants(list(CALIB)), ks=(2, 4))


def test_calibrate_deterministic_succeeds(exported: dict[str, Exported], profile: Profile) -> None:
    e = exported["transformer"]
    again = calibrate(e.model, [generate_inputs(e.model, 0)], get_variants(list(CALIB)), ks=(2, 4))
    assert again.profile_id == profile.profile_id
    assert len(profile.ops) == e.model.num_ops
    assert set(profile.segments[4]) == set(game_segments(e.model.num_ops, 4))
    # linear ops see real (non-zero) variation below the theoretical bound
    lin = [o for o in profile.ops if o.type == "aten.linear.default"]
    assert all(0 < o.stats.max < 1 and 0 < o.threshold <= 1 for o in lin)
    emb = [o for o in profile.ops if o.type == "aten.embedding.default"]
    assert all(o.threshold == 0 for o in emb)


def test_profile_round_trip_and_id_stable_succeeds(profile: Profile, tmp_path: Path) -> None:
    save_profile(profile, tmp_path / "p.json")
    loaded = load_profile(tmp_path / "p.json")
    assert loaded == profile
    assert loaded.profile_id == profile.profile_id
    doc = json.loads((tmp_path / "p.json").read_text())
    doc["ops"][0]["threshold"] += 0.001
    assert profile_from_json(doc).profile_id != profile.profile_id


def test_profile_other_model_reverts(
    exported: dict[str, Exported], profile: Profile, tmp_path: Path
) -> None:
    save_profile(profile, tmp_path / "p.json")
    with pytest.raises(ProfileError, match="is for model"):
        load_profile(tmp_path / "p.json", exported["cnn"].model)
    other = replace(profile, model_id=bytes(32))
    with pytest.raises(ProfileError, match="different models"):
        merge_profiles(profile, other)
    with pytest.raises(ProfileError):
        profile_from_json({"format": "taonode-profile", "version": 1, "ops": "x"})


def test_merge_profiles_takes_the_looser_succeeds(
    exported: dict[str, Exported], profile: Profile
) -> None:
    e = exported["transformer"]
    other = calibrate(
        e.model, [generate_inputs(e.model, 1)], get_variants(["default", "batch"]), ks=(4,)
    )
    merged = merge_profiles(profile, other)
    for m, a, b in zip(merged.ops, profile.ops, other.ops, strict=True):
        assert m.stats.max == max(a.stats.max, b.stats.max)
        assert m.stats.count == a.stats.count + b.stats.count
        assert m.threshold >= max(a.threshold, b.threshold) or m.threshold == 1.0
    assert set(merged.segments) == {2, 4}
    assert merged.variants == ("default", "splitk", "permuted", "decomposed", "batch")


def test_check_with_profile_honest_held_out_variants_succeeds(
    exported: dict[str, Exported], profile: Profile
) -> None:
    e = exported["transformer"]
    x = generate_inputs(e.model, 77)  # held out: not a calibration input
    for name in ("threads2", "batch", "default"):
        v = ALL_VARIANTS[name]
        with v.active():
            trace = run_traced(e.model, x, executor=v)
        checks = check_trace_with_profile(e.model, trace, profile)
        assert all(c.verdict is Verdict.WITHIN_TOLERANCE for c in checks), name


@pytest.mark.parametrize(
    "downgrade",
    [
        CastWeights("bf16-weights", dtype=torch.bfloat16),
        OpRewrite("tf32", kind="tf32"),
        PerturbLayer("perturb-1e-4", rel=1e-4),
    ],
    ids=lambda d: d.name,
)
def test_check_with_profile_downgrade_caught_and_localized_reverts(
    exported: dict[str, Exported], profile: Profile, downgrade: CastWeights
) -> None:
    e = exported["transformer"]
    checks = check_trace_with_profile(
        e.model, downgrade.run(e.model, generate_inputs(e.model, 78)), profile
    )
    bad = [c for c in checks if c.verdict is not Verdict.WITHIN_TOLERANCE]
    assert bad, f"{downgrade.name} accepted"
    assert bad[0].index == downgrade.first_op(e.model)


def test_empirical_region_catches_what_theory_accepts_reverts(
    exported: dict[str, Exported], profile: Profile
) -> None:
    """An output pushed to 90% of the theoretical bound passes theory but not the profile."""
    e = exported["transformer"]
    i = next(op.index for op in e.model.ops if op.target == "aten.linear.default")
    from taonode.runtime.bounds import reference_and_bound
    from taonode.runtime.execute import op_call_fp64

    target, args, kwargs = op_call_fp64(e.model, i, e.trace.op_inputs(e.model, i))
    ref, bound = reference_and_bound(target, args, kwargs)
    values = dict(e.trace.values)
    values[e.model.ops[i].name] = (ref + 0.9 * bound / (1 + 2.0**-20) * 0.99).float()
    checks = check_trace_with_profile(e.model, Trace(values), profile)
    assert checks[i].verdict is Verdict.EMPIRICAL_VIOLATION


def test_select_subsegment_finds_faulty_segment_succeeds(
    exported: dict[str, Exported], profile: Profile
) -> None:
    e = exported["transformer"]
    n = e.model.num_ops
    fault = 15
    values = dict(e.trace.values)
    name = e.model.ops[fault].outputs[0]
    t = values[name].clone()
    t.view(-1)[0] += 1e-3 * float(t.abs().max())
    values[name] = t
    values.update(
        run_segment_values(
            e.model, fault + 1, n, {k: values[k] for k in e.model.frontiers[fault + 1]}
        )
    )
    prover = Trace(values)
    a, b = 0, n
    while b - a > 1:
        k = 4
        bounds = [subsegment(a, b, k, j) for j in range(min(k, b - a))]
        frontiers = {c: prover.frontier(e.model, c) for seg in bounds for c in seg}
        choice = select_subsegment(e.model, profile, k, a, b, frontiers)
        assert choice.a <= fault < choice.b
        a, b = choice.a, choice.b
    assert a == fault
    top = compare_traces(e.model, profile, 4, prover)
    assert top.a <= fault < top.b
    assert top.excess > 1


def test_cli_calibrate_show_merge_check_succeeds(
    exported: dict[str, Exported], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    e = exported["cnn"]
    p1, p2, pm = (str(tmp_path / f) for f in ("a.json", "b.json", "m.json"))
    base = ["calibrate", "--model", str(e.path), "--generate", "1", "--k", "4"]
    assert main([*base, "--variants", "default", "splitk", "--out", p1]) == EXIT_OK
    assert main([*base, "--variants", "permuted", "--seed", "5", "--out", p2]) == EXIT_OK
    assert main(["profile", "merge", p1, p2, "--out", pm]) == EXIT_OK
    capsys.readouterr()
    assert main(["profile", "show", pm]) == EXIT_OK
    assert "aten.conv2d.default" in capsys.readouterr().out
    save_trace(e.model, e.trace, tmp_path / "tr")
    assert (
        main(["check", "--model", str(e.path), "--trace", str(tmp_path / "tr"), "--profile", pm])
        == EXIT_OK
    )
    bad = CastWeights("fp16", dtype=torch.float16).run(e.model, e.inputs)
    save_trace(e.model, bad, tmp_path / "bad")
    rc = main(["check", "--model", str(e.path), "--trace", str(tmp_path / "bad"), "--profile", pm])
    assert rc == EXIT_REJECTED
    other = str(exported["unet"].path)
    assert (
        main(["check", "--model", other, "--trace", str(tmp_path / "tr"), "--profile", pm])
        == EXIT_USAGE
    )


def test_detect_quick_study_succeeds(tmp_path: Path) -> None:
    from bench import detect

    assert detect.main(["--quick", "--out", str(tmp_path / "d.json")]) == 0
    doc = json.loads((tmp_path / "d.json").read_text())
    (res,) = doc["results"]
    assert all(h["false_positives"] == 0 for h in res["honest"].values())
    for name in ("bf16-weights", "tf32", "perturb-1e-4", "skip-layer", "other-model"):
        d = res["downgrades"][name]
        assert d["detected"] == d["runs"] == d["localized"], name

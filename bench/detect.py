"""The detection study (issue 4): honest runs accepted, downgrades caught and localised.

For each model: calibrate a profile on ``--calib`` generated inputs with the calibration
variants, then on held-out inputs (other seeds) check

* honest traces of *every* variant, including the held-out ones (``threads2``, ``batch``):
  false positives;
* each simulated downgrade (:mod:`taonode.runtime.downgrades`): detected (any op out of its
  region), localised (the first flagged op is the op where the downgrade starts), and by which
  region (theoretical, or only empirical); and through the protocol: does a challenger's
  end-to-end comparison open a dispute, and does the k-ary game (segment thresholds) end at an op
  the committee judges a violation;
* tightness: theoretical bound ÷ empirical threshold per op type (median, worst).

Run: ``python -m bench.detect`` (``--quick`` for a smoke run). Writes
``bench/results/detect.json`` and prints the tables. ``main(argv) -> int`` is what
``taonode bench detect`` calls.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench import adversary
from taonode.protocol.schedule import num_subsegments, subsegment
from taonode.protocol.votes import Verdict
from taonode.runtime import graph
from taonode.runtime.check import OpCheck
from taonode.runtime.downgrades import Downgrade, all_downgrades
from taonode.runtime.execute import Trace, generate_inputs, run_traced
from taonode.runtime.models import REFERENCE_MODELS, minilm
from taonode.runtime.profile import (
    Profile,
    calibrate,
    check_op_with_profile,
    check_trace_with_profile,
    end_to_end_deviation,
    select_subsegment,
)
from taonode.runtime.variants import ALL_VARIANTS, get_variants

RESULTS = Path(__file__).with_name("results") / "detect.json"
CALIB_VARIANTS = ("default", "splitk", "permuted", "decomposed")
HELD_OUT_VARIANTS = ("threads2", "batch")
FACTORIES: dict[str, Callable[[], tuple[torch.nn.Module, tuple[torch.Tensor, ...]]]] = {
    **REFERENCE_MODELS,
    "minilm": minilm,
}


def _first_bad(checks: Sequence[OpCheck]) -> OpCheck | None:
    return next((c for c in checks if c.verdict is not Verdict.WITHIN_TOLERANCE), None)


def play_game(model: graph.Model, profile: Profile, prover: Trace, k: int) -> int:
    """The challenger's side of the k-ary dispute game against ``prover``'s trace: pick the
    sub-segment with the largest excess until one op remains; returns that op's index."""
    a, b = 0, model.num_ops
    while b - a > 1:
        cuts = {c for j in range(num_subsegments(a, b, k)) for c in subsegment(a, b, k, j)}
        frontiers = {c: prover.frontier(model, c) for c in cuts}
        choice = select_subsegment(model, profile, k, a, b, frontiers)
        a, b = choice.a, choice.b
    return a


def tightness(profile: Profile) -> dict[str, dict[str, float]]:
    """Theoretical bound ÷ empirical threshold (= 1/threshold, thresholds are in units of B)."""
    ratios: dict[str, list[float]] = defaultdict(list)
    for op in profile.ops:
        if op.threshold > 0:
            ratios[op.type].append(1.0 / op.threshold)
    return {
        t: {"median": statistics.median(r), "worst": min(r), "ops": len(r)}
        for t, r in sorted(ratios.items())
    }


def study_model(
    name: str,
    calib: int,
    held_out: int,
    downgrades: Sequence[Downgrade],
    workdir: Path,
    ks: Sequence[int] = (4,),
) -> dict[str, Any]:
    module, example = FACTORIES[name]()
    model = graph.export(module, example, workdir / f"{name}.pt2")
    t0 = time.perf_counter()
    profile = calibrate(
        model,
        [generate_inputs(model, seed) for seed in range(calib)],
        get_variants(list(CALIB_VARIANTS)),
        ks=ks,
    )
    calib_s = time.perf_counter() - t0
    tests = [generate_inputs(model, 1000 + seed) for seed in range(held_out)]
    honest: dict[str, dict[str, Any]] = {}
    r_honest: dict[str, list[float]] = defaultdict(list)
    r_down: dict[str, list[float]] = defaultdict(list)
    own = [run_traced(model, x) for x in tests]  # the challenger's re-executions
    e2e = profile.end_to_end_threshold()
    for vname, variant in ALL_VARIANTS.items():
        fps = disputes = 0
        worst = 0.0
        for x, mine in zip(tests, own, strict=True):
            with variant.active():
                trace = run_traced(model, x, executor=variant)
            checks = check_trace_with_profile(model, trace, profile)
            fps += _first_bad(checks) is not None
            disputes += end_to_end_deviation(model, trace, mine) > e2e
            for c in checks:
                r_honest[c.target].append(c.stats.max)
            worst = max(
                worst,
                max(c.stats.max / max(profile.ops[c.index].threshold, 1e-300) for c in checks),
            )
        honest[vname] = {
            "runs": len(tests),
            "false_positives": fps,
            "challenger_disputes": disputes,
            "held_out": vname in HELD_OUT_VARIANTS,
            "worst_r_over_threshold": worst,
        }
    caught: dict[str, dict[str, Any]] = {}
    for d in downgrades:
        if not d.applies(model):
            caught[d.name] = {"applicable": False}
            continue
        expected = d.first_op(model)
        detected = localized = disputed = game_leaf_ok = 0
        regions: list[str] = []
        first_ops: list[int] = []
        for x, mine in zip(tests, own, strict=True):
            cheat = d.run(model, x)
            if end_to_end_deviation(model, cheat, mine) > e2e:
                disputed += 1
                # The committee judges the leaf op on the prover's own committed inputs.
                leaf = play_game(model, profile, cheat, ks[0])
                verdict = check_op_with_profile(
                    model,
                    leaf,
                    cheat.op_inputs(model, leaf),
                    cheat.op_outputs(model, leaf),
                    profile,
                ).verdict
                game_leaf_ok += verdict is not Verdict.WITHIN_TOLERANCE
            checks = check_trace_with_profile(model, cheat, profile)
            if expected is not None:
                r_down[checks[expected].target].append(checks[expected].stats.max)
            bad = _first_bad(checks)
            if bad is None:
                continue
            detected += 1
            localized += bad.index == expected
            regions.append(
                "theoretical" if bad.verdict is Verdict.THEORETICAL_VIOLATION else "empirical"
            )
            first_ops.append(bad.index)
        caught[d.name] = {
            "applicable": True,
            "runs": len(tests),
            "detected": detected,
            "localized": localized,
            "challenger_disputes": disputed,
            "game_leaf_slashes_prover": game_leaf_ok,
            "expected_op": expected,
            "flagged_ops": first_ops,
            "region": sorted(set(regions)),
        }
    adversary = _adversary(name, model, profile, tests) if name in ("cnn", "minilm") else None
    return {
        "model": name,
        "model_id": "0x" + model.model_id.hex(),
        "ops": model.num_ops,
        "calibration_inputs": calib,
        "held_out_inputs": held_out,
        "calibration_variants": list(CALIB_VARIANTS),
        "calibration_s": calib_s,
        "profile_id": "0x" + profile.profile_id.hex(),
        "end_to_end_threshold": profile.end_to_end_threshold(),
        "honest": honest,
        "downgrades": caught,
        "tightness": tightness(profile),
        "adversary": adversary,
        "r_honest": dict(r_honest),
        "r_downgraded_at_start_op": dict(r_down),
    }


def _adversary(
    name: str, model: graph.Model, profile: Profile, tests: Sequence[dict[str, torch.Tensor]]
) -> dict[str, Any]:
    """Bound-aware adversary (bench/adversary.py) in the theoretical and empirical regions."""
    out: dict[str, Any] = {}
    for region, prof in (("theoretical", None), ("empirical", profile)):
        samples = successes = accepted = 0
        metric: list[float] = []
        for x in tests:
            honest = run_traced(model, x).outputs(model)[0]
            goal: adversary.Goal
            success: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
            if name == "cnn":
                goal, success = adversary.classifier_goal, adversary.classifier_success
            else:
                goal, success = adversary.embedding_goal_for(honest), adversary.embedding_success
            res = adversary.attack(model, x, goal, success, prof)
            samples += res.samples
            successes += res.successes
            accepted += res.accepted
            metric.extend(res.metric)
        out[region] = {
            "goal": "flip argmax" if name == "cnn" else f"cosine shift >= {adversary.COSINE_GOAL}",
            "traces_accepted": accepted,
            "traces": len(tests),
            "samples": samples,
            "successes": successes,
            "success_rate": successes / max(samples, 1),
            "max_effect": max(metric) if metric else 0.0,
        }
    return out


def _print(results: list[dict[str, Any]]) -> None:
    print("honest runs (false positives / runs; * = variant held out of calibration)")
    for r in results:
        cells = [
            f"{v}{'*' if h['held_out'] else ''} {h['false_positives']}/{h['runs']}"
            f" (e2e {h['challenger_disputes']})"
            for v, h in r["honest"].items()
        ]
        print(f"  {r['model']:12} " + "  ".join(cells))
    print(
        "downgrades (op check: detected/runs localized/runs region | "
        "game: challenger disputes / leaf op judged a violation)"
    )
    names = list(results[0]["downgrades"])
    print(f"  {'downgrade':16}" + "".join(f"{r['model']:>30}" for r in results))
    for d in names:
        cells = []
        for r in results:
            c = r["downgrades"][d]
            if not c["applicable"]:
                cells.append(f"{'n/a':>30}")
            else:
                region = "/".join(x[:5] for x in c["region"]) or "-"
                game = f"{c['challenger_disputes']}/{c['game_leaf_slashes_prover']}"
                cell = f"{c['detected']}/{c['runs']} {c['localized']}/{c['runs']} {region} | {game}"
                cells.append(cell.rjust(30))
        print(f"  {d:16}" + "".join(cells))
    print("bound-aware adversary (success rate; max effect: flipped fraction or cosine shift)")
    for r in results:
        for region, a in (r.get("adversary") or {}).items():
            print(
                f"  {r['model']:12} {region:12} {a['successes']}/{a['samples']} "
                f"accepted {a['traces_accepted']}/{a['traces']} max effect {a['max_effect']:.3g}"
            )
    print("tightness: theoretical bound / empirical threshold (median, worst) per op type")
    for r in results:
        for t, s in r["tightness"].items():
            print(f"  {r['model']:12} {t:45} {s['median']:10.1f} {s['worst']:10.1f}")


def plot(results: list[dict[str, Any]], directory: Path) -> list[Path]:
    """PNG plots: r per op type (honest vs downgraded), tightness per op type."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    fig, axes = plt.subplots(len(results), 1, figsize=(10, 3.2 * len(results)), squeeze=False)
    for ax, r in zip(axes[:, 0], results, strict=True):
        types = sorted(set(r["r_honest"]) | set(r["r_downgraded_at_start_op"]))
        for i, t in enumerate(types):
            # r = 0 (bit-exact) and r = ∞ (non-finite output) are drawn at the plot's edges.
            hv = [min(max(v, 1e-9), 1e7) for v in r["r_honest"].get(t, [])]
            dv = [min(max(v, 1e-9), 1e7) for v in r["r_downgraded_at_start_op"].get(t, [])]
            ax.scatter([i - 0.15] * len(hv), hv, s=8, c="tab:blue", alpha=0.5)
            ax.scatter([i + 0.15] * len(dv), dv, s=12, c="tab:red", marker="x")
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_ylim(5e-10, 2e7)
        ax.set_xticks(range(len(types)), [t.split(".")[1] for t in types], rotation=30, fontsize=7)
        ax.set_ylabel("r = |Y-Yref|/B")
        ax.set_title(f"{r['model']}: honest (blue) vs downgraded at its start op (red)")
    fig.tight_layout()
    path = directory / "r_distribution.png"
    fig.savefig(path, dpi=110)
    written.append(path)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(10, 4))
    labels, med, worst = [], [], []
    for r in results:
        for t, s in r["tightness"].items():
            labels.append(f"{r['model']}:{t.split('.')[1]}")
            med.append(s["median"])
            worst.append(s["worst"])
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], med, width=0.4, label="median")
    ax.bar([x + 0.2 for x in xs], worst, width=0.4, label="worst")
    ax.set_yscale("log")
    ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=6)
    ax.set_ylabel("theoretical bound / empirical threshold")
    ax.legend()
    fig.tight_layout()
    path = directory / "tightness.png"
    fig.savefig(path, dpi=110)
    written.append(path)
    plt.close(fig)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="TAO detection study")
    parser.add_argument("--models", nargs="+", default=list(FACTORIES), choices=list(FACTORIES))
    parser.add_argument("--calib", type=int, default=4, help="calibration inputs per model")
    parser.add_argument("--held-out", type=int, default=2, help="held-out test inputs")
    parser.add_argument("--quick", action="store_true", help="transformer only, 1+1 inputs")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--plots", type=Path, help="also write PNG plots here (needs matplotlib)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    models, calib, held = args.models, args.calib, args.held_out
    if args.quick:
        models, calib, held = ["transformer"], 1, 1
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            results.append(study_model(name, calib, held, all_downgrades(), Path(tmp)))
    _print(results)
    doc = {
        "benchmark": "detect",
        "torch": torch.__version__,
        "command": "python -m bench.detect" + (" --quick" if args.quick else ""),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {args.out}")
    if args.plots:
        for path in plot(results, args.plots):
            print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
